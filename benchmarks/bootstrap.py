"""Time of the cross-validation bootstrap, and its equality with a reference metrics module.

Notebook 06 bootstraps every model's pooled out-of-fold predictions (``profile.eval.bootstrap``
replicates of :func:`crlm_lib.evaluation.head_metrics`, per-fold IPCW). The metrics package
fits each training fold's censoring distribution once for all replicates
(:class:`crlm_lib.metrics.TrainingOutcomes`) and runs the IPCW metrics on validated arrays
(:mod:`crlm_lib.metrics.sksurv_fast`). The reference is the single-file metrics module of
commit ``--before-rev`` (default ``7b65951``), which refits the training fold's censoring
Kaplan–Meier four times per fold and head in every replicate and lets scikit-survival
validate every input.

This script builds a realistic frame set — a 197-patient simulated cohort (the cpu
profile's size; linear-hazard OS/DFS, 48 % deaths, 73 % DFS events), 5 x 5 repeated
stratified CV of the clinical anchors (Fong, Cox, random survival forest) and the oracle — and
times the bootstrap of each model with the metrics module of the working tree and with that of
``--before-rev`` (``git show REV:crlm_lib/metrics.py``, so it needs a git checkout), on the
same draws. It prints the seconds of both and the largest absolute difference between the two
bootstrap tables (estimate, low, high); ``--skip-before`` times the working tree only.

Usage::

    nice -n 10 python benchmarks/bootstrap.py                    # 100 replicates
    nice -n 10 python benchmarks/bootstrap.py --n-boot 500       # the cpu profile's count
    nice -n 10 python benchmarks/bootstrap.py --skip-before      # the current code only

The exit status is 1 when the tables differ by more than 1e-12. Measured times:
``docs/performance.md``, "Where the time goes, part by part" (the CV bootstrap).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib.config import get_profile
from crlm_lib.evaluation import Cohort, bootstrap_scores, head_metrics, run_cv_protocol
from crlm_lib.metrics import TrainingOutcomes

ROOT = Path(__file__).resolve().parents[1]
#: The commit before the censoring cache (the metrics module of the "before" timing).
BEFORE_REV = "7b65951"


def simulate_cohort(n: int, seed: int = 0) -> Cohort:
    """The clinical-only simulated cohort of ``tests/test_evaluate.py`` (linear-hazard OS/DFS,
    uniform censoring, the oracle's true curves), imported from there."""
    spec = importlib.util.spec_from_file_location(
        "_test_evaluate", ROOT / "tests" / "test_evaluate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.simulate_cohort(n, seed)


def metrics_before(rev: str):
    """The ``crlm_lib.metrics`` module of commit ``rev``, imported under another name."""
    text = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{rev}:crlm_lib/metrics.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp()) / "metrics_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("metrics_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["metrics_before"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=197, help="patients")
    ap.add_argument("--n-boot", type=int, default=100, help="replicates")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--before-rev", default=BEFORE_REV)
    ap.add_argument("--skip-before", action="store_true", help="time the current code only")
    args = ap.parse_args(argv)

    prof = get_profile("cpu")
    cohort = simulate_cohort(args.n)
    cv = run_cv_protocol(
        [], cohort, prof, anchors=("fong", "cox", "rsf"), n_boot=0, baselines=()
    )  # the out-of-fold frames; n_boot=0: no bootstrap here
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    from crlm_lib.evaluation.protocols import cv_split_ids

    splits = cv_split_ids(cohort.ids, events, prof.eval.cv_folds, args.repeats, 0)
    by_fold = {(r, f): cohort.outcomes.loc[tr] for r, f, tr, _ in splits}
    horizons = prof.eval.horizons_years
    frames = {k: v[: args.repeats] for k, v in cv.predictions.items()}
    n_frames = sum(len(v) for v in frames.values())
    print(
        f"{len(cohort.ids)} patients, {len(frames)} models, {n_frames} out-of-fold frames, "
        f"{prof.eval.cv_folds} folds, {args.n_boot} replicates, heads os + dfs"
    )

    def run(metric_fn, train) -> tuple[float, pd.DataFrame]:
        t0 = time.perf_counter()
        tables = []
        for key, fr in frames.items():
            tidy = bootstrap_scores(fr, train, n_boot=args.n_boot, seed=0, metric_fn=metric_fn)
            tables.append(tidy.assign(model=key))
        return time.perf_counter() - t0, pd.concat(tables, ignore_index=True)

    after_s, after = run(
        lambda p, t: head_metrics(p, t, horizons=horizons), TrainingOutcomes(by_fold)
    )
    print(
        f"after : {after_s:7.1f} s ({after_s / n_frames / (args.n_boot + 1) * 1e3:.1f} ms per frame and replicate)"
    )
    if args.skip_before:
        return 0
    old = metrics_before(args.before_rev)
    before_s, before = run(
        lambda p, t: old.all_metrics(p, t, horizons=horizons, heads=("os", "dfs")), by_fold
    )
    print(
        f"before: {before_s:7.1f} s ({before_s / n_frames / (args.n_boot + 1) * 1e3:.1f} ms per frame and replicate)"
    )
    cols = ["estimate", "low", "high"]
    a, b = after[cols].to_numpy(float), before[cols].to_numpy(float)
    same_nan = np.array_equal(np.isnan(a), np.isnan(b))
    diff = np.nanmax(np.abs(a - b))
    print(f"speed-up {before_s / after_s:.1f}x; max |after - before| = {diff:.3g} "
          f"over {a.size} numbers (NaN in the same places: {same_nan})")  # fmt: skip
    return 0 if same_nan and diff <= 1e-12 else 1


if __name__ == "__main__":
    sys.exit(main())
