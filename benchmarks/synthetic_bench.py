"""What the synthetic test bench can show: population discrimination and out-of-sample calibration.

``population``: on large simulated cohorts (default 20,000 patients to fit, 20,000 others to
score; images are not rendered, the phantom's geometry gives the image quantities exactly)
prints Harrell's C of OS and DFS for

- the full oracle: the true 5-year risk (:func:`crlm_lib.data.synthetic.true_survival`);
- Cox on the clinical table (``encode_predictors``, ridge 0.01), fitted on the first cohort:
  the clinical-only model at population size, the best a clinic's table allows a Cox model;
- Cox on the clinical table plus the true image-only quantities (total tumour volume, count,
  bilobar, remnant fraction, attenuation phenotype);
- Cox on SEG-style volumetrics (log total tumour volume, count, largest diameter, remnant
  fraction, Sasaki's tumour burden score) with and without the clinical table,

for the ``image_effect`` and ``null`` settings. The image increment is the second minus the
first Cox row (target: >= +0.05 OS C under ``image_effect``, 0 under ``null``).

``calibration``: :func:`crlm_lib.data.synthetic.calibration_summary` on held-out seeds (not
the fit's :data:`FIT_SEED`), 4,000 patients each: Fong 1999's 5-year OS per score, the score
distribution, deaths and DFS events against the real cohort, median OS and recurrences within 2
years against their published targets.

``cv``: notebook 06's cross-validation (the profile's folds, repeats and epochs; image-
permutation controls on) repeated on several generator seeds, under ``image_effect`` and
``null``; prints, per setting and model, the mean and SD over seeds of the OS and DFS Harrell C
and of each image model's permutation difference (model minus its CT-permuted self), and where
seed 0 (the manuscript's cohort) sits among the seeds. Each (setting, seed) writes its cohort,
cache and runs under ``--root`` (reused when run again).

``fit``: refits the generator (:func:`crlm_lib.data.synthetic.fit_outcome_model`) and prints
the fitted parameters to paste into ``DEFAULT_MODEL``.

Usage::

    python benchmarks/synthetic_bench.py population [--n 20000]
    python benchmarks/synthetic_bench.py calibration [--seeds 1 2 3 4 5] [--n 4000]
    python benchmarks/synthetic_bench.py fit [--n 20000]
    python benchmarks/synthetic_bench.py cv [--seeds 0 1 2 3 4] [--models acfnet cnn3d aminn]
        [--profile cpu] [--boot 100] [--root /tmp/crlm-bench]

Every number is about the synthetic generator, not patients.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib.data import synthetic as S
from crlm_lib.data.clinical import encode_predictors, outcomes, validate_clinical


def _concordance(time_years, event, risk) -> float:
    from lifelines.utils import concordance_index

    return float(concordance_index(time_years, -np.asarray(risk), event))


def _volumetrics(cov: pd.DataFrame) -> pd.DataFrame:
    """SEG-style volumetrics from the phantom's geometry (what the SEG measures)."""
    d_max = cov["true_max_diameter_cm"]
    n = cov["n_tumours"]
    return pd.DataFrame(
        {
            "log_tumour_volume": np.log(np.maximum(cov["tumour_volume_ml"], 0.1)),
            "n_tumours": n,
            "max_diameter_cm": d_max,
            "remnant_fraction": cov["remnant_fraction"],
            "tumour_burden_score": np.sqrt(d_max**2 + n**2),
        }
    )


def _cohort(n: int, seed: int, setting: str):
    sim = S.simulate_cohort(n, seed, S.outcome_model(setting), oracle_curves=False)
    cov = pd.DataFrame([sp.covariates for sp in sim.specs])
    cov["true_max_diameter_cm"] = [
        max(t.diameter_cm for t in sp.anatomy.tumours) for sp in sim.specs
    ]
    clin = validate_clinical(sim.clinical)
    out = outcomes(clin)
    s_os, s_dfs = S.true_survival(cov, np.array([S.RISK_HORIZON_YEARS]), S.outcome_model(setting))
    return clin, out, cov, 1 - s_os[:, 0], 1 - s_dfs[:, 0]


def _cox_scores(x_tr, out_tr, x_te, head: str) -> np.ndarray:
    from lifelines import CoxPHFitter

    cols = [f"x{j}" for j in range(x_tr.shape[1])]
    df = pd.DataFrame(x_tr, columns=cols)
    df["T"], df["E"] = out_tr[f"{head}_years"].to_numpy(), out_tr[f"{head}_event"].to_numpy()
    keep = [c for c in cols if df[c].std() > 0]
    cph = CoxPHFitter(penalizer=0.01).fit(df[[*keep, "T", "E"]], "T", "E")
    return cph.predict_log_partial_hazard(pd.DataFrame(x_te, columns=cols)[keep]).to_numpy()


def population(n: int, fit_seed: int, score_seed: int) -> pd.DataFrame:
    rows = []
    for setting in S.SETTINGS:
        clin_a, out_a, cov_a, _, _ = _cohort(n, fit_seed, setting)
        clin_b, out_b, cov_b, r_os, r_dfs = _cohort(n, score_seed, setting)
        x_a, _ = encode_predictors(clin_a, reference=clin_a)
        x_b, _ = encode_predictors(clin_b, reference=clin_a)
        img_a = cov_a[list(S.IMAGE_COVARIATES)].to_numpy(float)
        img_b = cov_b[list(S.IMAGE_COVARIATES)].to_numpy(float)
        img_a[:, 0], img_b[:, 0] = np.log(img_a[:, 0]), np.log(img_b[:, 0])
        vol_a, vol_b = _volumetrics(cov_a).to_numpy(), _volumetrics(cov_b).to_numpy()
        mu, sd = vol_a.mean(0), vol_a.std(0)
        vol_a, vol_b = (vol_a - mu) / sd, (vol_b - mu) / sd
        designs = {
            "Cox, clinical table": (x_a, x_b),
            "Cox, clinical + true image quantities": (
                np.hstack([x_a, img_a]),
                np.hstack([x_b, img_b]),
            ),
            "Cox, SEG volumetrics": (vol_a, vol_b),
            "Cox, clinical + SEG volumetrics": (np.hstack([x_a, vol_a]), np.hstack([x_b, vol_b])),
        }
        for head, oracle_risk in (("os", r_os), ("dfs", r_dfs)):
            t, e = out_b[f"{head}_years"].to_numpy(), out_b[f"{head}_event"].to_numpy()
            rows.append(
                (setting, head, "oracle (true 5-year risk)", _concordance(t, e, oracle_risk))
            )
            for name, (xa, xb) in designs.items():
                risk = _cox_scores(xa, out_a, xb, head)
                rows.append((setting, head, name, _concordance(t, e, risk)))
    tab = pd.DataFrame(rows, columns=["setting", "head", "model", "harrell_c"])
    return tab.pivot_table(
        index=["setting", "model"], columns="head", values="harrell_c", sort=False
    )


def calibration(seeds: list[int], n: int) -> pd.DataFrame:
    tables = []
    for seed in seeds:
        sim = S.simulate_cohort(n, seed, oracle_curves=False)
        cal = S.calibration_summary(sim.clinical)
        tables.append(cal.assign(seed=seed))
    return pd.concat(tables, ignore_index=True)


def cv_over_seeds(
    seeds: list[int], models: list[str], profile: str, n_boot: int, root: Path
) -> pd.DataFrame:
    """Tidy rows ``setting, seed, model, metric, estimate`` of the CV on each seed."""
    from dataclasses import replace

    from crlm_lib.config import get_profile
    from crlm_lib.evaluation import run_cv_protocol
    from crlm_lib.pipeline import load_study

    rows = []
    for setting in S.SETTINGS:
        base = get_profile(profile)
        prof = base.with_(synth=replace(base.synth, setting=setting))
        for seed in seeds:
            where = root / f"{profile}-{setting}-seed{seed}"
            study = load_study(prof, seed=seed, root=where)
            res = run_cv_protocol(
                models, study, prof, seed=seed, n_boot=n_boot, runs_dir=where / "runs"
            )
            keep = ["os_c_harrell", "dfs_c_harrell"]
            tidy = res.tidy[res.tidy["metric"].isin(keep)][["model", "metric", "estimate"]]
            diff = res.differences
            diff = diff[(diff["baseline"] == "ct-permuted") & diff["metric"].isin(keep)]
            diff = diff.assign(metric="permutation_" + diff["metric"])
            both = pd.concat([tidy, diff[["model", "metric", "estimate"]]], ignore_index=True)
            rows.append(both.assign(setting=setting, seed=seed))
            print(f"{setting} seed {seed}: done", flush=True)
    return pd.concat(rows, ignore_index=True)


def summarise_cv(tidy: pd.DataFrame) -> pd.DataFrame:
    """Mean, SD, min and max over seeds, and seed 0's value and rank (1 = lowest)."""
    g = tidy.groupby(["setting", "model", "metric"], sort=False)["estimate"]
    out = g.agg(["mean", "std", "min", "max", "count"])
    if (tidy["seed"] == 0).any():
        zero = tidy[tidy["seed"] == 0].set_index(["setting", "model", "metric"])["estimate"]
        out["seed0"] = zero
        out["seed0_rank"] = (
            g.rank()
            .where(tidy["seed"].to_numpy() == 0)
            .groupby([tidy["setting"], tidy["model"], tidy["metric"]], sort=False)
            .max()
        )
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=("population", "calibration", "fit", "cv"))
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--maxiter", type=int, default=600)
    ap.add_argument("--models", nargs="+", default=["acfnet", "cnn3d", "aminn"])
    ap.add_argument("--profile", default="cpu")
    ap.add_argument("--boot", type=int, default=100)
    ap.add_argument("--root", default="/tmp/crlm-bench")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    pd.set_option("display.width", 160)
    if args.what == "population":
        tab = population(args.n or 20_000, fit_seed=101, score_seed=102)
        print(tab.round(3).to_string())
        for setting in S.SETTINGS:
            gain = (
                tab.loc[(setting, "Cox, clinical + true image quantities")]
                - tab.loc[(setting, "Cox, clinical table")]
            )
            print(f"{setting}: image increment OS {gain['os']:+.3f}, DFS {gain['dfs']:+.3f}")
    elif args.what == "calibration":
        cal = calibration(args.seeds, args.n or 4000)
        print(cal.round(3).to_string())
        ranged = cal[cal["low"].notna()]
        print(f"within range: {int(ranged['within'].sum())} of {len(ranged)}")
    elif args.what == "cv":
        tidy = cv_over_seeds(args.seeds, args.models, args.profile, args.boot, Path(args.root))
        tidy.to_csv(Path(args.root) / "cv_over_seeds.csv", index=False)
        print(summarise_cv(tidy).round(3).to_string())
    else:
        model, report = S.fit_outcome_model(args.n or 20_000, maxiter=args.maxiter)
        print(model)
        print(report.round(4).to_string())
    print(f"{time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
