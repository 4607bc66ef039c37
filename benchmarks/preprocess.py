"""Benchmark: preprocessing throughput on the synthetic cohort (not a test).

``python benchmarks/preprocess.py --profile cpu [--n N] [--n-jobs J]`` writes (or reuses) a
synthetic cohort of ``N`` patients in a temporary folder, then prints

* patients per second of the whole preprocessing (load DICOM + SEG, crop, CLAHE, resize,
  closing, lesion radiomics, atomic ``.npz`` write), and
* the ratio of that time to just reading the DICOM bytes (``pydicom.dcmread`` of every file).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pydicom

from crlm_lib.config import Paths, get_profile
from crlm_lib.data import preprocess, synthetic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--n-jobs", type=int, default=1)
    args = ap.parse_args()
    prof = get_profile(args.profile)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cohort = synthetic.write_cohort(root / "cohort", args.n, 0, prof.synth, progress=False)
        files = [p for p in cohort.rglob("*.dcm")]
        t0 = time.perf_counter()
        for f in files:
            pydicom.dcmread(f)
        t_read = time.perf_counter() - t0
        paths = Paths(
            root,
            prof.name,
            cohort,
            cohort / "clinical.csv",
            None,
            root / "processed",
            root / "runs",
            root / "results",
            True,
        )
        t0 = time.perf_counter()
        report = preprocess.preprocess_cohort(paths, prof, n_jobs=args.n_jobs, progress=False)
        t_all = time.perf_counter() - t0
    n_done = int((report["status"] == "done").sum())
    print(
        f"profile={prof.name} patients={args.n} done={n_done} files={len(files)} "
        f"n_jobs={args.n_jobs}"
    )
    print(f"read DICOM bytes: {t_read:.2f} s; whole preprocessing: {t_all:.2f} s")
    print(f"patients per second: {n_done / t_all:.2f}")
    print(f"ratio preprocessing / DICOM read: {t_all / t_read:.1f}x")


if __name__ == "__main__":
    main()
