"""Training throughput (samples/s) of 4D-ACFNet, the plain 3D CNN and the 3D ResNet-18.

One training step = forward + ``losses.total_loss`` + backward + AdamW step, exactly as
``crlm_lib.train.fit`` runs it (autocast from ``train.amp_dtype``: bf16 on a CUDA GPU that
supports it; ``channels_last_3d`` on CUDA). The models are timed interleaved in one process
(A, B, C, A, B, C ...) and medians are reported, with the ratios, because the machines are
shared.

Usage::

    python benchmarks/gpu_step.py                       # CUDA, paper size 40x128x128, B=1
    python benchmarks/gpu_step.py --batch-size 4 --amp off
    python benchmarks/gpu_step.py --device cpu --size 16 32 32 --profile cpu   # CPU check
    python benchmarks/gpu_step.py --device cpu --size 16 32 32 --profile cpu --batch-size 8 \
        --threads 1 --models acfnet acfnet_no_recon cnn3d   # where the cpu-size ratio goes

Not a test: it prints numbers (measured ones: ``docs/performance.md``, "Training step").
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from crlm_lib.config import get_profile
from crlm_lib.data.lesions import FEATURE_NAMES
from crlm_lib.devices import amp_dtype, autocast, channels_last_3d, to_device
from crlm_lib.losses import total_loss
from crlm_lib.models import build_model, count_parameters
from crlm_lib.train import build_optimizer

MODELS = ("acfnet", "cnn3d", "resnet18_3d")
#: Extra names ``--models`` accepts: registered models with ablation switches, to split a ratio
#: into its parts. ``acfnet_no_recon`` is 4D-ACFNet without switch D (no decoder, ReconEncoder
#: or Transformer): a "3D CNN + temporal layers", the floor a 4D-ACFNet step is compared with.
VARIANTS = {"acfnet_no_recon": ("acfnet", {"reconstruction": False})}


def make_batch(batch_size: int, shape, n_clinical: int) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "ct": torch.rand(batch_size, 1, *shape, generator=g) * 2 - 1,
        "masks": (torch.rand(batch_size, 5, *shape, generator=g) > 0.5).float(),
        "lesion_features": torch.randn(batch_size, 16, len(FEATURE_NAMES), generator=g),
        "lesion_mask": torch.arange(16).expand(batch_size, 16) < 3,
        "clinical": torch.randn(batch_size, n_clinical, generator=g),
        "survival_bin": torch.randint(0, 12, (batch_size,), generator=g),
        "recurrence_target": (torch.arange(12) >= 2).float().repeat(batch_size, 1),
        "recurrence_known": torch.ones(batch_size, 12),
        "os_years": torch.full((batch_size,), 3.5),
        "os_event": torch.ones(batch_size),
        "dfs_years": torch.full((batch_size,), 2.5),
        "dfs_event": torch.ones(batch_size),
        "recurrence_bin": torch.full((batch_size,), 2),
    }


class Stepper:
    """One model, its optimizer and a step function on a fixed batch."""

    def __init__(self, name: str, profile: str, device: torch.device, batch: dict, amp: str):
        torch.manual_seed(0)
        self.name = name
        base, options = VARIANTS.get(name, (name, {}))
        self.model = build_model(base, batch["clinical"].shape[1], get_profile(profile), **options)
        self.model.to(device).train()
        if device.type == "cuda":
            channels_last_3d(self.model)
        self.params = count_parameters(self.model)
        self.opt = build_optimizer(self.model, lr=1e-4)
        self.batch = to_device(batch, device)
        self.device = device
        self.dtype = amp_dtype(device, amp)

    def step(self) -> None:
        with autocast(self.device, self.dtype):
            loss, _ = total_loss(self.model(self.batch), self.batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def timed(self, steps: int) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--size", type=int, nargs=3, default=(40, 128, 128), metavar=("D", "H", "W"))
    ap.add_argument("--profile", default="paper", help="model widths (paper: width 16)")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"])
    ap.add_argument("--steps", type=int, default=5, help="steps per timed round")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    ap.add_argument(
        "--models", nargs="+", default=list(MODELS), help=f"also: {', '.join(VARIANTS)}"
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads (0: torch's default); 1 gives steadier ratios on a shared machine",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # speed numbers; training follows the profile
    batch = make_batch(args.batch_size, tuple(args.size), 8)
    steppers = [Stepper(m, args.profile, device, batch, args.amp) for m in args.models]
    for s in steppers:  # warm-up (cuDNN autotuning, allocator)
        s.timed(2)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times: dict[str, list[float]] = {s.name: [] for s in steppers}
    peaks: dict[str, float] = {}
    for _ in range(args.rounds):
        for s in steppers:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            times[s.name].append(s.timed(args.steps) / args.steps)
            if device.type == "cuda":
                peaks[s.name] = torch.cuda.max_memory_allocated() / 2**20
    dtype = steppers[0].dtype
    print(
        f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'})"
        f" input {args.batch_size}x1x{'x'.join(map(str, args.size))} widths={args.profile!r} "
        f"autocast={dtype} threads={torch.get_num_threads()} "
        f"rounds={args.rounds}x{args.steps} steps (interleaved, medians)"
    )
    med = {k: statistics.median(v) for k, v in times.items()}
    for s in steppers:
        extra = f"  peak {peaks[s.name]:8.0f} MiB" if s.name in peaks else ""
        print(
            f"{s.name:>16}: {med[s.name] * 1e3:8.1f} ms/step  "
            f"{args.batch_size / med[s.name]:8.2f} samples/s{extra}  params {s.params:,}"
        )
    for name in ("acfnet", *VARIANTS):
        if name not in med:
            continue
        for other in med:
            if other != name and not other.startswith("acfnet"):
                per_round = [a / b for a, b in zip(times[name], times[other])]
                print(
                    f"{name} / {other} step time: {statistics.median(per_round):.2f}x "
                    f"(rounds: {', '.join(f'{r:.2f}' for r in per_round)})"
                )


if __name__ == "__main__":
    main()
