"""Time and peak memory of one 4D-ACFNet training step (forward + backward, batch size 1).

Compares, at the same widths:

- ``acfnet`` (efficient form: the CT stem and the first spatial conv once per patient),
- ``acfnet efficient=False`` (the straightforward form: 12 copies of the CT through the stem),
- ``cnn3d`` (the plain 3D CNN: same stem, no time),

at the smoke size on CPU and, when CUDA is available, at the paper size 40x128x128. Peak
memory is ``torch.cuda.max_memory_allocated`` on GPU. On CPU only the growth of the process's
``ru_maxrss`` during the timed steps is printed (``tracemalloc`` does not see ATen's
allocations, and ``ru_maxrss`` is a process-wide high-water mark, so variants run later see
less growth): treat CPU memory numbers as indicative only.

Targets: efficient ACFNet within 2x of the 3D CNN and >= 5x faster than the 12-copy form.

``--resnets`` times instead the 3D ResNet baselines and STG at the cpu profile (batch 8,
16x32x32, width 8) with Hara et al.'s stem (7x7x7, stride 1 along the slices, 2 in-plane; the
default, ``models.common.HARA_STEM_STRIDE``) against MONAI's default stride-1 stem. Measured
step times of both comparisons: ``docs/performance.md``, "Training step forms".

Usage: ``python benchmarks/train_step.py [--repeats 5] [--cpu-size 16 32 32] [--no-gpu]
[--resnets]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from crlm_lib.config import get_profile
from crlm_lib.data.lesions import FEATURE_NAMES
from crlm_lib.losses import total_loss
from crlm_lib.models import build_model, count_parameters
from crlm_lib.train import build_optimizer

VARIANTS = {
    "acfnet": ("acfnet", {}),
    "acfnet_12copies": ("acfnet", {"efficient": False}),
    "cnn3d": ("cnn3d", {}),
}


def _batch(shape: tuple[int, int, int], n_clinical: int, device: str) -> dict:
    g = torch.Generator().manual_seed(0)
    batch = {
        "ct": torch.rand(1, 1, *shape, generator=g) * 2 - 1,
        "masks": (torch.rand(1, 5, *shape, generator=g) > 0.5).float(),
        "lesion_features": torch.randn(1, 16, len(FEATURE_NAMES), generator=g),
        "lesion_mask": torch.arange(16).view(1, -1) < 3,
        "clinical": torch.randn(1, n_clinical, generator=g),
        "survival_bin": torch.tensor([3]),
        "os_years": torch.tensor([3.5]),
        "recurrence_target": (torch.arange(12) >= 2).float().view(1, -1),
    }
    return {k: v.to(device) for k, v in batch.items()}


def time_step(name: str, options: dict, shape, profile: str, device: str, repeats: int) -> dict:
    """Median seconds and peak memory (MiB) of one training step of one variant."""
    torch.manual_seed(0)
    model = build_model(name, 8, get_profile(profile), **options).to(device).train()
    opt = build_optimizer(model, lr=1e-4)
    batch = _batch(shape, 8, device)

    def step() -> None:
        loss, _ = total_loss(model(batch), batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        extra = ""
    else:
        peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        extra = " (CPU: ru_maxrss growth, indicative)"
    times.sort()
    return {
        "seconds": times[len(times) // 2],
        "peak_mib": peak,
        "params": count_parameters(model),
        "extra": extra,
    }


def report(shape, profile: str, device: str, repeats: int) -> dict:
    """Print one table (variant, step time, peak memory) and the ratios; return the numbers."""
    print(f"\n== {device}, input 1x1x{'x'.join(map(str, shape))}, widths of profile {profile!r}")
    res = {}
    for label, (name, opts) in VARIANTS.items():
        res[label] = r = time_step(name, opts, shape, profile, device, repeats)
        print(
            f"{label:>16}: {r['seconds'] * 1e3:9.1f} ms/step  peak {r['peak_mib']:8.1f} MiB"
            f"{r['extra']}  params {r['params']:,}"
        )
    a, c, s = res["acfnet"], res["cnn3d"], res["acfnet_12copies"]
    print(f"acfnet / cnn3d time   : {a['seconds'] / c['seconds']:.2f}x   (goal <= 2x)")
    print(f"12-copy / acfnet time : {s['seconds'] / a['seconds']:.2f}x   (goal >= 5x)")
    if device == "cuda":
        print(f"12-copy / acfnet peak : {s['peak_mib'] / max(a['peak_mib'], 1e-9):.2f}x")
        print(f"acfnet / cnn3d peak   : {a['peak_mib'] / max(c['peak_mib'], 1e-9):.2f}x")
    return res


def _stem_batch(b: int, shape: tuple[int, int, int], n_clinical: int, n_les: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "ct": torch.rand(b, 1, *shape, generator=g) * 2 - 1,
        "masks": (torch.rand(b, 5, *shape, generator=g) > 0.5).float(),
        "clinical": torch.randn(b, n_clinical, generator=g),
        "survival_bin": torch.randint(0, 12, (b,), generator=g),
        "os_years": torch.rand(b, generator=g) * 14,
        "recurrence_target": (torch.rand(b, 12, generator=g) > 0.5).float(),
        "lesion_features": torch.randn(b, 16, n_les, generator=g),
        "lesion_mask": torch.rand(b, 16, generator=g) > 0.5,
        "dfs_years": torch.rand(b, generator=g) * 10,
        "dfs_event": torch.ones(b),
    }


def report_stems(repeats: int) -> None:
    """ResNet baselines and STG at the cpu profile: Hara et al.'s stem against MONAI's."""
    from crlm_lib.models.common import HARA_STEM_STRIDE

    profile = get_profile("cpu")
    b, shape = (
        profile.train.batch_size,
        (profile.preprocess.depth,) + (profile.preprocess.size,) * 2,
    )
    batch = _stem_batch(b, shape, 8, len(FEATURE_NAMES))
    print(f"\n== cpu, batch {b}x1x{'x'.join(map(str, shape))}, widths of profile 'cpu'")
    for name in ("resnet18_3d", "resnet50_3d", "stg", "stg_lite"):
        ms = {}
        for stride in (HARA_STEM_STRIDE, 1):
            torch.manual_seed(0)
            opts = {"n_lesion_features": len(FEATURE_NAMES)} if name.startswith("stg") else {}
            model = build_model(name, 8, profile, stem_stride=stride, **opts).train()
            opt = build_optimizer(model, lr=1e-3)

            def step(model=model, opt=opt) -> None:
                loss, _ = total_loss(model(batch), batch)
                opt.zero_grad()
                loss.backward()
                opt.step()

            step()
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                step()
                times.append(time.perf_counter() - t0)
            ms[stride] = sorted(times)[len(times) // 2] * 1e3
        hara, full = ms[HARA_STEM_STRIDE], ms[1]
        print(
            f"{name:>12}: Hara stem {hara:8.1f} ms/step  stride-1 stem {full:8.1f} ms/step  "
            f"({full / hara:.1f}x)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu-size", type=int, nargs=3, default=(16, 32, 32))
    parser.add_argument("--cpu-profile", default="smoke")
    parser.add_argument("--no-gpu", action="store_true")
    parser.add_argument("--resnets", action="store_true", help="ResNet/STG stems instead")
    args = parser.parse_args()
    if args.resnets:
        report_stems(args.repeats)
        return
    report(tuple(args.cpu_size), args.cpu_profile, "cpu", args.repeats)
    if torch.cuda.is_available() and not args.no_gpu:
        report((40, 128, 128), "paper", "cuda", args.repeats)


if __name__ == "__main__":
    main()
