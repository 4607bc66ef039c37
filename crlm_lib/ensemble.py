"""The ensemble behind ``crlm predict``: which run folders make it, what its band means, and
how well its models did in their own cross-validation.

Band (choice, stated wherever a band is shown)
----------------------------------------------
Where the runs are the folds of a cross-validation calibrated against known true curves
(``conformal.json``), ``crlm predict`` shows the split-conformal band of
:mod:`crlm_lib.conformal`, which holds the true probability at its nominal rate. Otherwise the
band is this module's *ensemble spread*: the 5th to 95th percentile (linear interpolation,
``numpy.percentile``) of the predictions of independently trained models, e.g. the fold models
of one cross-validation (a deep ensemble, Lakshminarayanan et al., NeurIPS 2017). It is a
nominal 90% band of how much the models disagree; it does not include the sampling error of the
training cohort nor the models' shared bias, so it is not a confidence interval for the
patient's true survival, and measured against the truth (``benchmarks/prediction_honesty.py``)
it holds far less than 90%; its sentence (:func:`band_method`) says so. One model has no band
(``None``), and the report says why instead of drawing a zero-width band. Test-time
augmentations of one model are averaged into that model's prediction, not counted as members:
they differ by ~1e-6 and would make one model look certain.

Risk-group cut points
---------------------
:func:`out_of_fold_cut_points`: for a cross-validation's fold runs, the tertiles of the
out-of-fold predicted risk of the cohort (each patient scored by a model that did not train on
it, as a new patient is scored), rather than the mean of the models' in-sample tertiles.

Cross-validated performance
---------------------------
:func:`cv_performance` reads what the runs' own folders hold: the pooled out-of-fold
predictions of a cross-validation's fold runs (``predictions.csv`` of each fold, with the test
patients' outcomes) give Harrell's C of each head with a 95% bootstrap interval and the
calibration in the large at 1/3/5 years (mean predicted survival against the Kaplan–Meier
estimate of the same patients); one run gives its test split's numbers (``metrics_ci.csv`` of
``crlm evaluate``), when present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib.conformal import pooled_out_of_fold
from crlm_lib.runfolder import RunFolder

__all__ = [
    "BAND_LEVEL",
    "BAND_PERCENTILES",
    "Performance",
    "band",
    "band_coverage",
    "band_method",
    "cv_performance",
    "expand_run_dirs",
    "out_of_fold_cut_points",
]

#: Percentiles of the band over ensemble members.
BAND_PERCENTILES: tuple[float, float] = (5.0, 95.0)
#: Nominal level of the band (share of members inside it).
BAND_LEVEL: float = (BAND_PERCENTILES[1] - BAND_PERCENTILES[0]) / 100.0
#: Fewest models that make a band.
MIN_MEMBERS: int = 2


def expand_run_dirs(paths: Sequence[str | Path]) -> list[Path]:
    """Run folders of ``paths``: a run folder (holding ``run.json``) stands for itself; a folder
    without one (a cross-validation's model folder, ``runs/<tag>/cv/<model>/``) stands for
    every subfolder holding a ``run.json`` (``r0_f0``, ``r0_f1``, ...), sorted. A path that is
    neither is returned as given, for the caller's own "not a run folder" error."""
    out: list[Path] = []
    for path in map(Path, paths):
        if (path / "run.json").is_file() or not path.is_dir():
            out.append(path)
            continue
        folds = sorted(p for p in path.iterdir() if (p / "run.json").is_file())
        out.extend(folds or [path])
    return out


def band(members: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(low, high)`` :data:`BAND_PERCENTILES` of ``members`` ``[M, ...]`` over axis 0, or
    ``None`` for fewer than :data:`MIN_MEMBERS` members (one model: no band)."""
    members = np.asarray(members, dtype=float)
    if len(members) < MIN_MEMBERS:
        return None
    low, high = np.percentile(members, BAND_PERCENTILES, axis=0)
    return low, high


def band_coverage(
    truth: np.ndarray, low: np.ndarray, high: np.ndarray, years: Sequence[int]
) -> dict[str, Any]:
    """Share of true values inside their band.

    Parameters
    ----------
    truth, low, high : np.ndarray
        ``[patients, len(years)]``: the true survival probability (the synthetic generator's
        oracle) and the band's limits at each year.
    years : sequence of int
        The years of the columns (keys of ``by_year``).

    Returns
    -------
    dict
        ``{"pooled": share, "by_year": {year: share}, "n": values}``; a value counts as inside
        when ``low <= truth <= high`` (closed band); NaN limits (no band) count as outside.
    """
    truth, low, high = (np.asarray(a, dtype=float) for a in (truth, low, high))
    inside = (low <= truth) & (truth <= high)
    return {
        "pooled": float(inside.mean()),
        "by_year": {int(y): float(inside[:, k].mean()) for k, y in enumerate(years)},
        "n": int(inside.size),
    }


def band_method(n_models: int) -> str:
    """The band's meaning in one sentence (report, ``predictions.csv``, console)."""
    if n_models < MIN_MEMBERS:
        return (
            "no band: one model cannot show how much independently trained models disagree "
            "(give a cross-validation folder, or several --run, for an ensemble band)"
        )
    lo, hi = BAND_PERCENTILES
    return (
        f"ensemble spread: {lo:g}th-{hi:g}th percentile of the {n_models} models' predictions "
        f"(nominal {BAND_LEVEL:.0%}); it shows how much the models disagree, not a confidence "
        "interval for the patient's true survival: no conformal calibration fits these runs "
        "(it needs a cross-validation on a cohort whose true curves are known)"
    )


@dataclass(frozen=True)
class Performance:
    """The ensemble's validation numbers as its run folders record them.

    ``source`` says where they come from (pooled out-of-fold predictions of N patients, or a
    test split); ``c_index`` maps ``"os"`` / ``"dfs"`` to ``(estimate, low, high)`` (Harrell's
    C, 95% bootstrap interval over patients); ``calibration`` maps the horizon in years to
    ``(mean predicted OS, Kaplan–Meier OS)`` of the same patients (empty when unknown).
    """

    source: str
    c_index: dict[str, tuple[float, float, float]]
    calibration: dict[int, tuple[float, float]]

    def lines(self) -> list[str]:
        """Plain-language lines for the report."""
        names = {"os": "overall survival", "dfs": "recurrence-free survival"}
        out = [
            f"Harrell's C, {names[h]}: {c:.2f} (95% CI {lo:.2f}-{hi:.2f})"
            if np.isfinite(lo)
            else f"Harrell's C, {names[h]}: {c:.2f}"
            for h, (c, lo, hi) in self.c_index.items()
        ]
        for year, (pred, obs) in self.calibration.items():
            out.append(
                f"Calibration at {year} years: mean predicted overall survival {pred:.0%}, "
                f"observed (Kaplan-Meier) {obs:.0%}"
            )
        return [*out, f"Source: {self.source}."]


def out_of_fold_cut_points(run_dirs: Sequence[str | Path]) -> tuple[dict, str] | None:
    """Risk-group cut points computed for the ensemble: the tertiles of the risk-group score
    (``training_reference.risk_group_scores``) of the pooled out-of-fold predictions of the
    first repeat's fold runs (``r0_f*``), each cohort patient scored by a model that did not
    train on it, as the ensemble scores a new patient. Returns ``({"os": [q1, q2], "dfs":
    [q1, q2]}, statement)``, or ``None`` when ``run_dirs`` are not the folds of one
    cross-validation (then :mod:`crlm_lib.predict` uses the mean of the models' own training
    tertiles, and says so)."""
    from crlm_lib.training_reference import risk_group_scores

    runs = [Path(r) for r in run_dirs]
    first = [r for r in runs if r.name.startswith("r0_")]
    pooled = pooled_out_of_fold(first) if len({r.parent for r in runs}) == 1 else None
    if pooled is None:
        return None
    scores = dict(zip(("os", "dfs"), risk_group_scores(pooled), strict=True))
    cuts = {h: [float(v) for v in np.quantile(s, [1 / 3, 2 / 3])] for h, s in scores.items()}
    return cuts, (
        f"tertiles of the out-of-fold predicted risk of the {len(pooled)} cross-validation "
        "patients (each scored by a model that did not train on it)"
    )


def _c_with_interval(pooled: pd.DataFrame, n_boot: int, seed: int) -> dict:
    from crlm_lib.evaluation.bootstrap import draws, harrell_metrics, percentile_interval

    point = harrell_metrics(pooled)
    reps = [harrell_metrics(pooled.iloc[idx]) for idx in draws(len(pooled), n_boot, seed)]
    out = {}
    for head in ("os", "dfs"):
        values = np.array([r[f"{head}_c_harrell"] for r in reps])
        lo, hi = percentile_interval(values, 0.05)
        out[head] = (float(point[f"{head}_c_harrell"]), lo, hi)
    return out


def _calibration(pooled: pd.DataFrame, years: Sequence[int] = (1, 3, 5)) -> dict:
    from lifelines import KaplanMeierFitter

    from crlm_lib.types import Predictions

    curves = Predictions.from_frame(pooled).curve("os")
    kmf = KaplanMeierFitter().fit(pooled["os_years"], pooled["os_event"])
    return {
        y: (float(curves[:, y - 1].mean()), float(kmf.predict(float(y))))
        for y in years
        if y <= float(pooled["os_years"].max())
    }


def _split_performance(run_dir: Path) -> Performance | None:
    tidy = RunFolder(run_dir).read_metrics_ci()
    if tidy is None:
        return None
    c = {
        h: tuple(float(tidy.loc[f"{h}_c_harrell", k]) for k in ("estimate", "low", "high"))
        for h in ("os", "dfs")
        if f"{h}_c_harrell" in tidy.index
    }
    rec = RunFolder(run_dir).read_record()
    n = len(rec.get("test_ids", []))
    return Performance(f"the run's test split ({n} patients, crlm evaluate)", c, {})


def cv_performance(run_dirs: Sequence[str | Path], n_boot: int = 200, seed: int = 0):
    """The :class:`Performance` the runs record (see module doc), or ``None`` when they
    record none (a single run never evaluated)."""
    runs = [Path(r) for r in run_dirs]
    pooled = pooled_out_of_fold(runs)
    if pooled is not None:
        source = (
            f"pooled out-of-fold predictions of the {len(runs)} models' test folds "
            f"({len(pooled)} patients, each scored by the model that did not train on it)"
        )
        return Performance(source, _c_with_interval(pooled, n_boot, seed), _calibration(pooled))
    if len(runs) == 1:
        return _split_performance(runs[0])
    return None
