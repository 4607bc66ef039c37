"""Seconds one notebook start (``pipeline.load_study``) takes when the data step runs in full
and when it is reused through its manifest (``crlm_lib.data.manifest``).

    python benchmarks/data_step.py --profile smoke --root /tmp/work --repeats 3

``--root`` is a work folder (``config.resolve_paths``'s ``root``): the synthetic cohort of the
profile in ``<root>/data/raw/synthetic/<profile>`` is written and preprocessed first when
missing (that first build is not timed). Then, ``--repeats`` times each:

* full: ``ensure_data(reuse=False)`` + ``build_cohort``, what every notebook start did before
  the manifest (every DICOM header read, every source file hashed against the cache,
  ``report.csv`` and ``exclusions.csv`` rewritten);
* reused: ``load_study``, the manifest matching (one ``stat`` per file);
* check: ``manifest_matches`` alone.

Prints the median seconds of each and the number of files the manifest covers.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from crlm_lib.config import get_profile
from crlm_lib.data import manifest
from crlm_lib.pipeline import build_cohort, ensure_data, load_study


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, build the data once, print the timings."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    prof = get_profile(a.profile)
    paths = ensure_data(prof, seed=a.seed, root=a.root, reuse=False)  # the first build

    def full():
        ensure_data(prof, seed=a.seed, root=a.root, reuse=False)
        build_cohort(paths, profile=prof)

    full_s = _median_seconds(full, a.repeats)
    reused_s = _median_seconds(lambda: load_study(prof, seed=a.seed, root=a.root), a.repeats)
    check_s = _median_seconds(lambda: manifest.manifest_matches(paths, prof, a.seed), a.repeats)
    n_files = sum(1 for _ in manifest._visible_files(Path(paths.cohort_dir)))
    print(f"profile {prof.name}: {n_files} files under {paths.cohort_dir}")
    print(f"notebook start, data step in full: {full_s:.2f} s (median of {a.repeats})")
    print(f"notebook start, data step reused:  {reused_s:.2f} s")
    print(f"of which the manifest check:       {check_s:.3f} s")


if __name__ == "__main__":
    main()
