"""Coverage of the cross-validation intervals on many simulated cohorts of known truth.

Many generator cohorts (``data.synthetic.simulate_cohort``: the synthetic cohort's clinical
table and outcomes, no images rendered) of the cpu profile's size, 197 patients; on each, the
Cox anchor and the Fong score under repeated stratified 5-fold CV exactly as
``evaluation.run_cv_protocol`` fits them (``evaluation.runs.fit_predict_anchor``, the splits
of ``protocols.cv_split_ids`` with seed 0). For each cohort, the CV Harrell C of overall
survival of Cox and of Fong and the paired difference Cox − Fong get two 95% intervals:

- ``corrected_t``: :func:`crlm_lib.evaluation.cv_interval`, the Nadeau–Bengio corrected
  repeated-CV t interval over the per-(repeat, fold) estimates (the CV tables' default);
- ``conditional_bootstrap``: :func:`crlm_lib.evaluation.bootstrap_scores` /
  :func:`~crlm_lib.evaluation.paired_difference`, the percentile bootstrap over patients
  with the out-of-fold predictions held fixed (conditional on the fitted models).

Both are computed with every repeat (``--repeats``, default 3; the clinical anchors have 5)
and with the first repeat alone (1 repeat x 5 folds: the image models' setting on the cpu profile).

Truth, the procedure's expected C: the population Harrell C (OS, one ``--population`` cohort
of 20,000 patients from its own seed, the generator's censoring) of the model fitted on a
fresh generator cohort of the CV training size (``n (K-1) / K`` = 158), averaged over
``--truth-fits`` such training cohorts (its Monte-Carlo SE is printed). Coverage is the share
of cohorts whose interval holds it, with a Wilson 95% binomial interval.

Predictions and truth fits are cached in ``--cache`` (one pickle per cohort and per training
cohort), so a second run only scores. ``--workers`` joblib processes (at most 2 here).

Usage::

    nice -n 10 python benchmarks/interval_coverage.py                # 100 cohorts, 3 repeats
    nice -n 10 python benchmarks/interval_coverage.py --cohorts 10 --truth-fits 10

Prints the truths, then one row per (quantity, repeats, method): coverage with its Wilson
interval, mean width, mean and SD of the estimate. A run at the defaults and its reading:
``docs/performance.md``, "Coverage of the cross-validation intervals".

Every number is about the synthetic generator, not patients.
"""

from __future__ import annotations

import argparse
import math
import pickle
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

MODELS = ("cox", "fong")
#: Seeds: CV cohorts ``COHORT_SEED0 + i``, truth training cohorts ``TRUTH_SEED0 + m``, the
#: population ``POPULATION_SEED`` (none is the generator's fit seed or a notebook's seed 0).
COHORT_SEED0, TRUTH_SEED0, POPULATION_SEED = 5_000, 7_000, 9_999


def generator_cohort(n: int, seed: int, prefix: str = ""):
    """A :class:`crlm_lib.types.Cohort` of ``n`` generator patients (clinical table and
    outcomes; no images, no oracle), patient IDs prefixed with ``prefix``."""
    from crlm_lib.data import synthetic as S
    from crlm_lib.data.clinical import outcomes, validate_clinical
    from crlm_lib.types import Cohort

    sim = S.simulate_cohort(n, seed, oracle_curves=False)
    clin = validate_clinical(sim.clinical)
    clin.index = [f"{prefix}{i}" for i in clin.index.astype(str)]
    return Cohort(clinical=clin, outcomes=outcomes(clin), ids=list(clin.index))


def fit_predict_os(name: str, cohort, train_ids, test_ids) -> pd.DataFrame:
    """``evaluation.runs.fit_predict_anchor`` for ``"cox"`` and ``"fong"`` with the overall
    survival head only (the one scored here; half the fits): the same anchor classes, the same
    predictors (``encode_predictors`` standardised on the training rows, the Fong score)."""
    from crlm_lib.data.clinical import encode_predictors
    from crlm_lib.models.clinical import CoxPH, FongScore

    train_ids, test_ids = list(train_ids), list(test_ids)
    ref, test = cohort.clinical.loc[train_ids], cohort.clinical.loc[test_ids]
    if name == "fong":
        model, x_tr, x_te = FongScore(), ref, test
    else:
        model = CoxPH()
        x_tr, x_te = (
            encode_predictors(ref, reference=ref)[0],
            encode_predictors(test, reference=ref)[0],
        )
    out = cohort.outcomes.loc[train_ids]
    model.fit(x_tr, out["os_years"].to_numpy(), out["os_event"].to_numpy())
    return model.predict_frame(x_te, test_ids, cohort.outcomes)


def _skip_lifelines_summary() -> None:
    """Skip lifelines' ``describe()`` of the training frame in ``CoxPHFitter.fit`` (the
    "central values" of its partial-effect plots; half of a fit's time here, no part of the
    coefficients or the curves). :func:`check_identical` shows the predictions unchanged."""
    from lifelines.fitters.coxph_fitter import SemiParametricPHFitter

    SemiParametricPHFitter._compute_central_values_of_raw_training_data = (
        lambda self, df, strata=None, name="baseline": pd.DataFrame(index=["baseline"])
    )


def cv_split(n: int, seed: int, folds: int, repeat: int, repeats: int):
    """The generator cohort ``seed`` and the splits of ``repeat`` (of ``repeats``) as
    ``run_cv_protocol`` draws them (``protocols.cv_split_ids``, seed 0: sklearn's
    ``RepeatedStratifiedKFold``, whose first repeats do not depend on ``repeats``)."""
    from crlm_lib.evaluation.protocols import cv_split_ids

    cohort = generator_cohort(n, seed)
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    splits = [s for s in cv_split_ids(cohort.ids, events, folds, repeats, 0) if s[0] == repeat]
    return cohort, splits


def cv_predictions(n: int, seed: int, folds: int, repeat: int, repeats: int) -> dict:
    """Out-of-fold Predictions frames (``repeat``, ``fold`` columns) of one CV repeat of every
    model of :data:`MODELS` on the generator cohort ``seed``."""
    _skip_lifelines_summary()
    cohort, splits = cv_split(n, seed, folds, repeat, repeats)
    return {
        name: pd.concat(
            [
                fit_predict_os(name, cohort, tr, te).assign(repeat=r, fold=f)
                for r, f, tr, te in splits
            ],
            ignore_index=True,
        )
        for name in MODELS
    }


def check_identical(n: int, seed: int, folds: int) -> float:
    """Largest difference between the OS curves of :func:`fit_predict_os` (lifelines summary
    skipped) and ``evaluation.runs.fit_predict_anchor`` on one fold of cohort ``seed``."""
    from crlm_lib.evaluation.runs import fit_predict_anchor
    from crlm_lib.types import SURV_COLS

    cohort, splits = cv_split(n, seed, folds, 0, 1)
    _, _, tr, te = splits[0]
    reference = {name: fit_predict_anchor(name, cohort, tr, te) for name in MODELS}
    _skip_lifelines_summary()
    return max(
        float(
            np.abs(fit_predict_os(name, cohort, tr, te)[SURV_COLS] - reference[name][SURV_COLS])
            .max()
            .max()
        )
        for name in MODELS
    )


def population_c(n_train: int, seed: int, population, blocks: int = 10) -> dict[str, float]:
    """Population Harrell C (OS) of each model fitted on a fresh generator cohort of
    ``n_train`` patients (seed ``seed``): the mean of ``harrell_metrics`` over ``blocks``
    equal blocks of ``population`` (the same population C as on the whole, without the
    quadratic cost of one 20,000-patient C)."""
    from crlm_lib.evaluation.bootstrap import harrell_metrics
    from crlm_lib.types import Cohort

    _skip_lifelines_summary()
    train = generator_cohort(n_train, seed, prefix="T")
    both = Cohort(
        clinical=pd.concat([train.clinical, population.clinical]),
        outcomes=pd.concat([train.outcomes, population.outcomes]),
        ids=train.ids + population.ids,
    )
    out = {}
    for name in MODELS:
        pred = fit_predict_os(name, both, train.ids, population.ids)
        parts = np.array_split(np.arange(len(pred)), blocks)
        out[name] = float(
            np.mean([harrell_metrics(pred.iloc[p], heads=("os",))["os_c_harrell"] for p in parts])
        )
    return out


def _harrell_os(pred: pd.DataFrame, _train) -> dict[str, float]:
    from crlm_lib.evaluation.bootstrap import harrell_metrics

    return harrell_metrics(pred, heads=("os",))


def cohort_intervals(frames: dict[str, list[pd.DataFrame]], n_boot: int) -> list[dict]:
    """Both intervals of Cox's C, Fong's C and Cox − Fong on one cohort, with every repeat
    and with the first one: rows ``quantity, repeats, method, estimate, low, high``."""
    from crlm_lib.evaluation import bootstrap_scores, cv_intervals, paired_difference

    rows, memo = [], {}
    boot = {"n_boot": n_boot, "seed": 0, "metric_fn": _harrell_os, "cache": memo}
    for repeats in sorted({len(frames["cox"]), 1}, reverse=True):
        cox, fong = frames["cox"][:repeats], frames["fong"][:repeats]
        for quantity, model, base in (
            ("cox", cox, None),
            ("fong", fong, None),
            ("cox - fong", cox, fong),
        ):
            new = cv_intervals(model, None, _harrell_os, baseline_by_repeat=base)
            old = (
                bootstrap_scores(model, None, **boot)
                if base is None
                else paired_difference(model, base, None, **boot)
            )
            for method, table in (("corrected_t", new), ("conditional_bootstrap", old)):
                r = table.set_index("metric").loc["os_c_harrell"]
                rows.append(
                    {"quantity": quantity, "repeats": repeats, "method": method,
                     "estimate": r["estimate"], "low": r["low"], "high": r["high"]}
                )  # fmt: skip
    return rows


def wilson(hits: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``hits / n`` (95% by default)."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def coverage_table(rows: pd.DataFrame, truth: dict[str, float]) -> pd.DataFrame:
    """Per quantity, repeats and method: cohorts, coverage of ``truth`` with its Wilson
    interval, mean width, mean and SD of the estimate."""
    rows = rows.assign(truth=rows["quantity"].map(truth))
    rows["hit"] = (rows["low"] <= rows["truth"]) & (rows["truth"] <= rows["high"])
    out = []
    for (q, r, m), g in rows.groupby(["quantity", "repeats", "method"], sort=False):
        lo, hi = wilson(int(g["hit"].sum()), len(g))
        out.append(
            {"quantity": q, "repeats": r, "method": m, "cohorts": len(g),
             "coverage": g["hit"].mean(), "cov_low": lo, "cov_high": hi,
             "width": (g["high"] - g["low"]).mean(), "mean_estimate": g["estimate"].mean(),
             "sd_estimate": g["estimate"].std(ddof=1), "truth": truth[q]}
        )  # fmt: skip
    return pd.DataFrame(out)


def _cached(path: Path, make):
    if path.is_file():
        return pickle.loads(path.read_bytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = make()
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(pickle.dumps(value))
    tmp.replace(path)
    return value


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohorts", type=int, default=100)
    ap.add_argument("--n", type=int, default=197)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--truth-fits", type=int, default=100)
    ap.add_argument("--population", type=int, default=20_000)
    ap.add_argument("--n-boot", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/crlm-interval-coverage"))
    ap.add_argument("--stage", choices=("all", "predict"), default="all")
    args = ap.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    gap = check_identical(args.n, COHORT_SEED0, args.folds)
    print(f"OS curves, benchmark fit vs fit_predict_anchor: max |difference| = {gap:.1e}")
    if gap > 1e-12:
        raise SystemExit("the benchmark's fits differ from the library's")
    n_train = math.floor(args.n * (args.folds - 1) / args.folds)
    population = _cached(
        args.cache / f"population_{args.population}.pkl",
        lambda: generator_cohort(args.population, POPULATION_SEED, prefix="P"),
    )

    def cv_task(i: int, r: int):
        path = args.cache / f"cv_n{args.n}_k{args.folds}_seed{COHORT_SEED0 + i}_r{r}.pkl"
        return delayed(_cached)(
            path, lambda: cv_predictions(args.n, COHORT_SEED0 + i, args.folds, r, args.repeats)
        )

    def truth_task(m: int):
        path = args.cache / f"truth_{args.population}_n{n_train}_seed{TRUTH_SEED0 + m}.pkl"
        return delayed(_cached)(path, lambda: population_c(n_train, TRUTH_SEED0 + m, population))

    # every cohort's first repeat (the one-repeat results) first, then cohort by cohort
    half = args.truth_fits // 2
    tasks = [cv_task(i, 0) for i in range(args.cohorts)] + [truth_task(m) for m in range(half)]
    tasks += [cv_task(i, r) for i in range(args.cohorts) for r in range(1, args.repeats)]
    tasks += [truth_task(m) for m in range(half, args.truth_fits)]
    done = Parallel(n_jobs=args.workers, return_as="generator")(tasks)
    for k, _ in enumerate(done, 1):
        if k % 20 == 0 or k == len(tasks):
            print(f"{k}/{len(tasks)} tasks, {time.time() - t0:.0f} s", flush=True)
    if args.stage == "predict":
        return
    report(args, n_train, t0)


def report(args, n_train: int, t0: float) -> None:
    """Score the cached cohorts and print the coverage table."""
    truth_fits = [
        pickle.loads(
            (
                args.cache / f"truth_{args.population}_n{n_train}_seed{TRUTH_SEED0 + m}.pkl"
            ).read_bytes()
        )
        for m in range(args.truth_fits)
    ]
    fits = pd.DataFrame(truth_fits)
    fits["cox - fong"] = fits["cox"] - fits["fong"]
    truth = fits.mean().to_dict()
    for q, v in truth.items():
        print(
            f"truth {q}: {v:.4f} (Monte-Carlo SE {fits[q].std(ddof=1) / math.sqrt(len(fits)):.4f}, "
            f"SD over training sets {fits[q].std(ddof=1):.4f}, {len(fits)} fits)"
        )

    def frames(i: int) -> dict[str, list[pd.DataFrame]]:
        reps = [
            pickle.loads(
                (
                    args.cache / f"cv_n{args.n}_k{args.folds}_seed{COHORT_SEED0 + i}_r{r}.pkl"
                ).read_bytes()
            )
            for r in range(args.repeats)
        ]
        return {name: [rep[name] for rep in reps] for name in MODELS}

    scored = Parallel(n_jobs=args.workers)(
        delayed(cohort_intervals)(frames(i), args.n_boot) for i in range(args.cohorts)
    )
    rows = pd.DataFrame([r for cohort in scored for r in cohort])
    table = coverage_table(rows, truth)
    with pd.option_context("display.width", 160, "display.max_columns", 20):
        print(table.round(4).to_string(index=False))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
