"""What the synthetic test bench can show: population discrimination and out-of-sample calibration.

``population``: :func:`crlm_lib.evaluation.bench.image_increment` at 20,000 + 20,000 patients:
Harrell's C of the oracle and of Cox models on the clinical table, with the true image
quantities, and on SEG volumetrics, for the ``image_effect`` and ``null`` settings; the image
increment (target: >= +0.05 OS C under ``image_effect``, 0 under ``null``).

``calibration``: :func:`crlm_lib.data.synthetic.calibration_summary` on held-out seeds (not
the fit's :data:`FIT_SEED`), 4,000 patients each: Fong 1999's 5-year OS per score, the score
distribution, deaths and DFS events against the real cohort, median OS and recurrences within 2
years against their published targets.

``cv``: notebook 06's cross-validation (the profile's folds and epochs, one repeat of the image
models unless ``--repeats``, the anchors Fong, Cox and the radiomics Cox; image-permutation
controls on) repeated on several generator seeds, under ``image_effect`` and ``null``; prints,
per setting and model, the mean and SD over seeds of the OS and DFS Harrell C and of each image
model's permutation difference (model minus its CT-permuted self) and difference with Cox, the
number of seeds whose corrected repeated-CV t interval lies above 0, and where seed 0 (the
manuscript's cohort) sits among the seeds. Each (setting, seed) writes its cohort, cache, runs
and rows under ``--root`` (reused when run again); all rows, with their provenance, go to
``--out`` (default: ``benchmarks/results/synthetic_bench_cv.csv``, committed), which notebook 06
reads (``crlm_lib.evaluation.seeds``).

``fit``: refits the generator (:func:`crlm_lib.data.synthetic.fit_outcome_model`) and prints
the fitted parameters to paste into ``DEFAULT_MODEL``.

Usage::

    python benchmarks/synthetic_bench.py population [--n 20000]
    python benchmarks/synthetic_bench.py calibration [--seeds 1 2 3 4 5] [--n 4000]
    python benchmarks/synthetic_bench.py fit [--n 20000]
    python benchmarks/synthetic_bench.py cv [--seeds 0 1 2 3 4] [--models acfnet cnn3d aminn]
        [--profile cpu] [--repeats 1] [--root /tmp/crlm-bench] [--out rows.csv]
        [--executor dask:workers=2,threads=1]

Every number is about the synthetic generator, not patients.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

from crlm_lib.config import find_repo_root
from crlm_lib.data import synthetic as S
from crlm_lib.evaluation.bench import image_increment
from crlm_lib.evaluation.seeds import SEED_BENCH_FILE, SEED_COLUMNS, provenance_record


def calibration(seeds: list[int], n: int) -> pd.DataFrame:
    tables = []
    for seed in seeds:
        sim = S.simulate_cohort(n, seed, oracle_curves=False)
        cal = S.calibration_summary(sim.clinical)
        tables.append(cal.assign(seed=seed))
    return pd.concat(tables, ignore_index=True)


def cv_over_seeds(
    seeds: list[int],
    models: list[str],
    profile: str,
    root: Path,
    settings: tuple[str, ...] = tuple(S.SETTINGS),
    repeats: int | None = 1,
    anchors: tuple[str, ...] = ("fong", "cox", "cox_clinrad"),
    executor: str | None = None,
) -> pd.DataFrame:
    """Tidy rows ``setting, seed, model, metric, estimate, low, high`` of the CV on each seed:
    Harrell's C per head, the CT-permutation difference (``permutation_*``, model minus its
    permuted self) and the paired difference with Cox (``minus_cox_*``); ``low``/``high`` the
    corrected repeated-CV t interval of the protocol. ``repeats`` replaces the profile's
    ``cv_repeats_3d`` (the spread over seeds is what this script measures; ``None`` keeps it).
    Each (setting, seed) is written to ``<root>/<profile>-<setting>-seed<seed>/cv_rows.csv``
    and read back when run again."""
    from dataclasses import replace

    from crlm_lib.config import get_profile
    from crlm_lib.evaluation import run_cv_protocol
    from crlm_lib.pipeline import load_study

    rows = []
    for setting in settings:
        base = get_profile(profile)
        ev = base.eval if repeats is None else replace(base.eval, cv_repeats_3d=repeats)
        prof = base.with_(synth=replace(base.synth, setting=setting), eval=ev)
        for seed in seeds:
            where = root / f"{profile}-{setting}-seed{seed}"
            done = where / "cv_rows.csv"
            if done.is_file():
                # "null" is a setting here, not a missing value
                rows.append(pd.read_csv(done, keep_default_na=False, na_values=[""]))
                continue
            t0 = time.perf_counter()
            study = load_study(prof, seed=seed, root=where)
            res = run_cv_protocol(
                models, study, prof, seed=seed, anchors=anchors, runs_dir=where / "runs",
                executor=executor,
            )  # fmt: skip
            keep = ["os_c_harrell", "dfs_c_harrell"]
            cols = ["model", "metric", "estimate", "low", "high"]
            tidy = res.tidy[res.tidy["metric"].isin(keep)][cols]
            diff = res.differences
            diff = diff[diff["baseline"].isin(["ct-permuted", "cox"]) & diff["metric"].isin(keep)]
            prefix = diff["baseline"].map({"ct-permuted": "permutation_", "cox": "minus_cox_"})
            diff = diff.assign(metric=prefix + diff["metric"])
            both = pd.concat([tidy, diff[cols]], ignore_index=True)
            both = both.assign(setting=setting, seed=seed)
            both.to_csv(done, index=False)
            rows.append(both)
            print(f"{setting} seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    return pd.concat(rows, ignore_index=True)


def summarise_cv(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, min and max over seeds, the seeds whose 95% interval lies above / below 0
    (differences only), and seed 0's value and rank (1 = lowest): ``evaluation.seeds``."""
    from crlm_lib.evaluation.seeds import seed_rank, seed_summary

    ranks = seed_rank(tidy, 0).rename(columns={"estimate": "seed0", "rank": "seed0_rank"})
    return seed_summary(tidy).join(ranks[["seed0", "seed0_rank"]])


def write_results(tidy: pd.DataFrame, out: Path, meta: dict) -> None:
    """The rows and their provenance where notebook 06 reads them
    (``evaluation.seeds.SEED_BENCH_FILE`` / ``SEED_BENCH_META`` by default), atomically."""
    import json

    from crlm_lib import atomic

    atomic.write_csv(out, tidy[list(SEED_COLUMNS)], index=False)
    atomic.write_text(out.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("population", "calibration", "fit", "cv"))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--maxiter", type=int, default=600)
    ap.add_argument("--models", nargs="+", default=["acfnet", "cnn3d", "aminn"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--repeats", type=int, default=1, help="image-model CV repeats (cv)")
    ap.add_argument("--root", default="/tmp/crlm-bench")
    ap.add_argument(
        "--executor", default="local", help="cv: where the fits run (crlm_lib.executors)"
    )
    ap.add_argument(
        "--out",
        default=None,
        help="cv: where the rows go (default: the repository's " + str(SEED_BENCH_FILE) + ")",
    )
    ap.add_argument("--settings", nargs="+", default=list(S.SETTINGS), choices=list(S.SETTINGS))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    pd.set_option("display.width", 160)
    if args.what == "population":
        print(image_increment(args.n or 20_000).round(3).to_string())
    elif args.what == "calibration":
        cal = calibration(args.seeds, args.n or 4000)
        print(cal.round(3).to_string())
        ranged = cal[cal["low"].notna()]
        print(f"within range: {int(ranged['within'].sum())} of {len(ranged)}")
    elif args.what == "cv":
        root = Path(args.root)
        tidy = cv_over_seeds(
            args.seeds, args.models, args.profile, root, tuple(args.settings), args.repeats,
            executor=args.executor,
        )  # fmt: skip
        tidy.to_csv(root / "cv_over_seeds.csv", index=False)
        out = Path(args.out) if args.out else find_repo_root() / SEED_BENCH_FILE
        meta = provenance_record(
            args.profile, args.repeats, args.seeds, list(args.settings), args.models,
            executor=args.executor,
        )  # fmt: skip
        write_results(tidy, out, meta)
        print(f"rows: {out}")
        print(summarise_cv(tidy).round(3).to_string())
    else:
        model, report = S.fit_outcome_model(args.n or 20_000, maxiter=args.maxiter)
        print(model)
        print(report.round(4).to_string())
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
