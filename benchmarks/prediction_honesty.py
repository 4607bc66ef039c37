"""How honest ``crlm predict`` is on patients whose truth is known: band coverage and the effect of
a missing clinical row, on held-out synthetic patients against the generator's true curves.

1. Writes a synthetic cohort (``--n`` patients, seed 0) and trains a ``--folds``-fold
   cross-validation of ``--model`` (``evaluation.run_cv_protocol``, ``--epochs`` epochs, the
   smoke grid by default): the fold runs are the ensemble ``crlm predict --run <cv folder>``
   uses.
2. Writes ``--heldout`` new patients from another seed (never seen by any fold) and scores
   each with the ensemble (``predict.predict_patient``) three times: with its clinical row,
   without it under ``--allow-missing``'s imputation (the missing predictors drawn from the
   training distribution, ``clinical_input.imputation_draws``), and without it with every
   predictor filled with its training mean (a plain mean fill, for comparison).
3. Prints and writes to ``<cv folder>/band_coverage.json`` (which the model card quotes):

   * the share of the true (oracle) 1/3/5-year overall and disease-free survival
     probabilities inside the nominal 90% band ``crlm predict`` shows (``ensemble.band_coverage``),
     per year and pooled: the split-conformal band (``conformal``), calibrated by the
     cross-validation on the training cohort's out-of-fold predictions against its true curves
     (``conformal.json``), target within 5 points of nominal; beside it the fold models'
     5th-95th percentile spread, the uncalibrated band;
   * the half-width a band calibrated on the training cohort's observed outcomes (IPCW) would
     need at 1/3/5 years (``conformal.outcome_halfwidth``): why a real cohort, which records
     outcomes and not probabilities, cannot calibrate a band for the true probability;
   * the mean absolute change of the 5-year overall survival when the clinical row is removed,
     for both imputations, and the mean 5-year survival with and without it.

Usage::

    python benchmarks/prediction_honesty.py [--n 30] [--folds 5] [--epochs 2] [--heldout 100]
        [--model acfnet] [--root /tmp/crlm-honesty]

At the defaults (smoke grid, 100 held-out patients, each scored three times by 5 models) a run
takes most of an hour on a busy 2-core machine; ``--heldout 40`` takes well under half of that,
at the price of a coverage estimate about 5 points noisier.
Every number is about the synthetic generator and a smoke-sized model, not patients.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib import atomic, conformal, ensemble
from crlm_lib.clinical_input import read_patient_clinical
from crlm_lib.config import Paths, get_profile
from crlm_lib.data import preprocess, synthetic
from crlm_lib.evaluation import as_specs, run_cv_protocol
from crlm_lib.pipeline import build_cohort
from crlm_lib.predict import PredictOptions, load_new_patients, load_runs, predict_patient
from crlm_lib.provenance import software_text

YEARS = (1, 3, 5)


def _paths(root: Path, name: str, profile: str) -> Paths:
    return Paths(
        root, profile, root / name, root / name / "clinical.csv", root / name / "oracle.csv",
        root / f"processed-{name}", root / "runs", root / "results", True,
    )  # fmt: skip


def train_ensemble(args: argparse.Namespace, root: Path) -> Path:
    """The cross-validation's fold runs; returns the CV model folder."""
    prof = get_profile(args.profile)
    prof = prof.with_(eval=replace(prof.eval, cv_folds=args.folds, cv_repeats_3d=1,
                                   cv_epochs_3d=args.epochs))  # fmt: skip
    paths = _paths(root, "cohort", prof.name)
    if not paths.clinical_csv.is_file():
        synthetic.write_cohort(paths.cohort_dir, args.n, 0, prof.synth, progress=False)
    preprocess.preprocess_cohort(paths, prof, n_jobs=1, progress=False)
    spec = as_specs([args.model])[0]
    cohort = build_cohort(paths, profile=prof)  # the cohort carries the reduced profile
    run_cv_protocol([spec], cohort, anchors=(), oracle=False, baselines=(),
                    n_boot=10, runs_dir=paths.runs_dir, controls=False)  # fmt: skip
    return paths.runs_dir / "cv" / spec.key


def score_heldout(args: argparse.Namespace, root: Path, cv_dir: Path) -> pd.DataFrame:
    """Per held-out patient: the oracle's and the ensemble's 1/3/5-year values, with and
    without the clinical row."""
    prof = get_profile(args.profile)
    held = root / "heldout"
    if not (held / "clinical.csv").is_file():
        synthetic.write_cohort(held, args.heldout, 1000 + args.seed, prof.synth, progress=False)
    oracle = pd.read_csv(held / "oracle.csv", dtype={"Patient-ID": str}).set_index("Patient-ID")
    table = read_patient_clinical(held / "clinical.csv")
    runs = load_runs([cv_dir])
    draws = PredictOptions(n_imputations=32, seed=args.seed, report=False, heatmaps=False)
    mean_fill = replace(draws, n_imputations=0)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        patients, _ = load_new_patients([held], prof, work)
        for p in patients:
            full = predict_patient(runs, p, table.loc[[p.patient_id]], draws, prof)
            none = predict_patient(runs, p, None, draws, prof)
            filled = predict_patient(runs, p, None, mean_fill, prof)
            row = {"patient_id": p.patient_id, "os5_none_draws": none.surv[0, 4],
                   "os5_none_mean": filled.surv[0, 4]}  # fmt: skip
            spread = {"os": ensemble.band(full.surv_members),
                      "dfs": ensemble.band(full.rfs_members)}  # fmt: skip
            for y in YEARS:
                for head, curve in (("os", full.surv), ("dfs", full.rfs)):
                    row[f"{head}{y}_true"] = oracle.loc[p.patient_id, f"{head}_surv_y{y}"]
                    for k, part in enumerate(("pred", "lo", "hi")):
                        row[f"{head}{y}_{part}"] = curve[k, y - 1]
                    row[f"{head}{y}_spread_lo"] = spread[head][0][y - 1]
                    row[f"{head}{y}_spread_hi"] = spread[head][1][y - 1]
            rows.append(row)
    return pd.DataFrame(rows)


def _coverage(scores: pd.DataFrame, head: str, band: str = "") -> dict:
    """``ensemble.band_coverage`` of one head's band (``""``: the band ``crlm predict``
    shows; ``"spread_"``: the models' 5-95% spread)."""
    truth = scores[[f"{head}{y}_true" for y in YEARS]].to_numpy()
    low = scores[[f"{head}{y}_{band}lo" for y in YEARS]].to_numpy()
    high = scores[[f"{head}{y}_{band}hi" for y in YEARS]].to_numpy()
    return ensemble.band_coverage(truth, low, high, YEARS)


def outcome_band(cv_dir: Path) -> dict[int, float]:
    """Half-width of a band calibrated on the cohort's observed outcomes instead of the truth
    (``conformal.outcome_halfwidth`` on the pooled out-of-fold predictions, IPCW)."""
    from crlm_lib.types import Predictions

    folds = [p for p in ensemble.expand_run_dirs([cv_dir]) if p.name.startswith("r0_")]
    oof = conformal.pooled_out_of_fold(folds)
    curves = Predictions.from_frame(oof).curve("os")
    return conformal.outcome_halfwidth(curves, oof["os_years"], oof["os_event"], YEARS)


def summarise(scores: pd.DataFrame, n_models: int, method: str, cv_dir: Path) -> dict:
    """The numbers printed and written to ``band_coverage.json``."""
    cov = {head: _coverage(scores, head) for head in ("os", "dfs")}
    spread = {head: _coverage(scores, head, "spread_") for head in ("os", "dfs")}
    cal = conformal.load_calibration(ensemble.expand_run_dirs([cv_dir]))
    os5 = scores["os5_pred"]
    return {
        "method": method,
        "nominal": conformal.LEVEL if cal is not None else ensemble.BAND_LEVEL,
        "coverage": cov["os"]["pooled"],
        "coverage_by_year": cov["os"]["by_year"],
        "coverage_dfs": cov["dfs"]["pooled"],
        "coverage_dfs_by_year": cov["dfs"]["by_year"],
        "calibration_patients": None if cal is None else cal.n,
        "conformal_half_width_os": None
        if cal is None
        else {y: cal.half_width["os"][y - 1] for y in YEARS},  # fmt: skip
        "outcome_calibrated_half_width_os": outcome_band(cv_dir),
        "ensemble_spread": {
            "method": ensemble.band_method(n_models),
            "nominal": ensemble.BAND_LEVEL,
            "coverage": spread["os"]["pooled"],
            "coverage_by_year": spread["os"]["by_year"],
            "coverage_dfs": spread["dfs"]["pooled"],
            "mean_band_width_os5": float(
                (scores["os5_spread_hi"] - scores["os5_spread_lo"]).mean()
            ),
        },
        "mean_band_width_os5": float((scores["os5_hi"] - scores["os5_lo"]).mean()),
        "mean_abs_error_os5": float((os5 - scores["os5_true"]).abs().mean()),
        "n_values": cov["os"]["n"],
        "n_patients": len(scores),
        "n_models": n_models,
        "missing_row": {
            "mean_os5_with_row": float(os5.mean()),
            "draws": {
                "mean_abs_change_os5": float((scores["os5_none_draws"] - os5).abs().mean()),
                "mean_os5_without_row": float(scores["os5_none_draws"].mean()),
            },
            "training_mean_fill": {
                "mean_abs_change_os5": float((scores["os5_none_mean"] - os5).abs().mean()),
                "mean_os5_without_row": float(scores["os5_none_mean"].mean()),
            },
        },
        "software": software_text(),
    }


def _print(summary: dict, seconds: float) -> None:
    nominal = summary["nominal"]
    print(f"band: {summary['method']}")
    for head, key in (("overall survival", "coverage"), ("disease-free survival", "coverage_dfs")):
        by_year = ", ".join(f"{y} y {v:.0%}" for y, v in summary[f"{key}_by_year"].items())
        print(f"coverage of the true {head} (nominal {nominal:.0%}): {summary[key]:.1%} "
              f"({by_year}; {summary['n_values']} values, {summary['n_patients']} patients)")  # fmt: skip
    print(f"mean band width at 5 years (OS): {summary['mean_band_width_os5']:.3f}; mean |error| "
          f"of the 5-year OS point: {summary['mean_abs_error_os5']:.3f}")  # fmt: skip
    gap = abs(summary["coverage"] - nominal)
    verdict = "within 5 points of nominal" if gap <= 0.05 else "FAR from nominal"
    print(f"verdict: OS coverage {verdict} ({gap:.0%} off)")
    sp = summary["ensemble_spread"]
    print(f"for comparison, the models' 5-95% spread: OS {sp['coverage']:.1%}, DFS "
          f"{sp['coverage_dfs']:.1%} (mean width at 5 years {sp['mean_band_width_os5']:.3f})")  # fmt: skip
    width = ", ".join(f"{y} y {v:.2f}" for y, v in
                      summary["outcome_calibrated_half_width_os"].items())  # fmt: skip
    print(f"half-width of a band calibrated on observed outcomes instead (IPCW): {width}")
    miss = summary["missing_row"]
    print(f"5-year OS with the clinical row: mean {miss['mean_os5_with_row']:.3f}")
    for name, key in (
        ("draws (--allow-missing)", "draws"),
        ("training-mean fill", "training_mean_fill"),
    ):
        m = miss[key]
        print(f"without the row, {name}: mean |change| {m['mean_abs_change_os5']:.3f}, "
              f"mean 5-year OS {m['mean_os5_without_row']:.3f}")  # fmt: skip
    print(f"total {seconds:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=30, help="training cohort size")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--heldout", type=int, default=100, help="held-out patients")
    ap.add_argument("--model", default="acfnet")
    ap.add_argument("--profile", default="smoke")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--root", default=None, help="work folder (default: a new temporary one)")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    root = Path(args.root or tempfile.mkdtemp(prefix="crlm-honesty-"))
    start = time.perf_counter()
    cv_dir = train_ensemble(args, root)
    scores = score_heldout(args, root, cv_dir)
    runs = ensemble.expand_run_dirs([cv_dir])
    cal = conformal.load_calibration(runs)
    method = cal.method(len(runs)) if cal is not None else ensemble.band_method(len(runs))
    summary = summarise(scores, len(runs), method, cv_dir)
    atomic.write_json(cv_dir / "band_coverage.json", summary, indent=2)
    atomic.write_csv(cv_dir / "band_coverage_patients.csv", scores.round(4), index=False)
    _print(summary, time.perf_counter() - start)
    print(f"written: {cv_dir / 'band_coverage.json'}")
    assert np.isfinite(summary["coverage"])


if __name__ == "__main__":
    main()
