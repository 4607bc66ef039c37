"""GPU smoke run of the paper profile: a few epochs of 4D-ACFNet at 40x128x128, then a resume.

Writes a small synthetic cohort at the paper profile's resolution (``--n`` patients, 256x256
slices), preprocesses it to 40x128x128, trains 4D-ACFNet with the paper profile's engine
settings (AdamW 1e-4, batch 1, bf16 autocast, pinned memory, ``num_workers`` workers) for
``--epochs - 1`` epochs, then calls the engine again with ``--epochs``: the second call must
resume from ``last.pt`` and run exactly one more epoch. Prints seconds per stage, training
samples/s and the peak GPU memory. Used by ``benchmarks/gpu_smoke.sh`` (under 8 minutes on
one GPU with the defaults); without a GPU it runs on CPU: ``--profile smoke --n 8 --epochs 2``
(``benchmarks/gpu_smoke.sh --cpu``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from crlm_lib.config import Paths, get_profile
from crlm_lib.data import preprocess, synthetic
from crlm_lib.evaluation import ModelSpec, as_cohort, fit_predict_torch, paper_split_ids
from crlm_lib.train import TIMING_FILE, amp_dtype


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="synthetic patients")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--model", default="acfnet")
    ap.add_argument("--work", default=None, help="folder for cohort, cache and run (default tmp)")
    ap.add_argument(
        "--profile", default="paper", help="sizes (paper: 40x128x128; smoke: the CPU check)"
    )
    args = ap.parse_args()
    prof = get_profile(args.profile)
    if not torch.cuda.is_available():  # CPU check of the script: no worker processes
        prof = prof.with_(train=replace(prof.train, num_workers=0))
    work = Path(args.work or tempfile.mkdtemp(prefix="crlm-gpu-smoke-"))
    paths = Paths(
        work, prof.name, work / "cohort", work / "cohort" / "clinical.csv",
        work / "cohort" / "oracle.csv", work / "processed", work / "runs", work / "results", True,
    )  # fmt: skip
    t0 = time.perf_counter()
    if not paths.clinical_csv.is_file():
        synthetic.write_cohort(
            paths.cohort_dir, args.n, 0, prof.synth, progress=False, n_jobs=os.cpu_count() or 2
        )
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    report = preprocess.preprocess_cohort(paths, prof, n_jobs=os.cpu_count() or 2, progress=False)
    t_pre = time.perf_counter() - t0
    n_ok = int(report["status"].isin(["done", "cached"]).sum())
    print(f"cohort: {args.n} patients in {t_synth:.0f} s; preprocessing {n_ok} in {t_pre:.0f} s")

    cohort = as_cohort(paths)
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    tr, va, te = paper_split_ids(cohort.ids, events, prof.seed)
    run_dir = paths.runs_dir / args.model
    spec = ModelSpec(args.model)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    _, hist = fit_predict_torch(spec, cohort, prof, (tr, va, te), run_dir, epochs=args.epochs - 1)
    t_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred, hist2 = fit_predict_torch(spec, cohort, prof, (tr, va, te), run_dir, epochs=args.epochs)
    t_resume = time.perf_counter() - t0
    epochs = [int(r["epoch"]) for r in hist2.records]
    assert epochs == list(range(1, args.epochs + 1)), f"resume did not continue: {epochs}"
    timing = json.loads((run_dir / TIMING_FILE).read_text())["epochs"]
    secs = [r["seconds"] for r in timing]
    print(
        f"train {args.model}: {len(tr)} train / {len(va)} val / {len(te)} test patients, "
        f"epochs {epochs} (last one resumed from last.pt)"
    )
    print(
        f"seconds per epoch: {', '.join(f'{s:.1f}' for s in secs)}; "
        f"train samples/s (last epoch, incl. validation): {len(tr) / secs[-1]:.2f}"
    )
    print(f"wall: first call {t_first:.0f} s, resumed call {t_resume:.0f} s")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"autocast: {amp_dtype(device, prof.train.amp)} (profile amp={prof.train.amp!r})")
    if torch.cuda.is_available():
        print(
            f"GPU {torch.cuda.get_device_name(0)}: peak allocated "
            f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB; "
            f"bf16 supported: {torch.cuda.is_bf16_supported()}"
        )
    else:
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(f"CPU: peak resident memory {peak_gib:.2f} GiB")
    print(f"predictions: {len(pred)} test patients; run folder {run_dir}")


if __name__ == "__main__":
    main()
