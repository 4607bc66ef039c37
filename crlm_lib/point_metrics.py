"""Point-prediction and calibration metrics that account for censoring, beside the papers' ones.

The papers' TAA / MAE / MSE (``metrics.paper_metrics``) compare a predicted year with the
follow-up time of every patient, censored or not, so a censored patient counts as if censoring
were death; restricted to observed deaths (``metrics.paper_metrics_observed``) they drop the
patients who live longest. This module adds, on the same predicted years and targets (whole-year
bins under the ``"argmax"`` rule, years under ``"median"``; ``metrics.target_years``):

- :func:`ipcw_point_metrics`: TAA / MAE / MSE over the observed events, each weighted by the
  inverse of its probability of being observed, ``1 / G(T_i)`` (inverse probability of
  censoring weighting, as Graf et al. 1999 weight the Brier score), normalised by the sum of
  the weights;
- :func:`hinge_mae`: the hinge MAE of Qi et al. (ICML 2023): a censored patient adds
  ``max(0, c_i - t_pred_i)``, an error only when the model predicts the event before the
  patient was last seen alive;
- :func:`d_calibration`: D-calibration (Haider et al., JMLR 2020): the predicted survival at the
  observed time, ``S_i(t_i)``, is uniform on [0, 1] for a calibrated model; its histogram over
  ten equal bins (a censored patient spread over the bins below ``S_i(c_i)``) is tested
  against the uniform with Pearson's chi-square;
- :func:`point_metrics` (every point metric of one predicted time per patient) and
  :func:`best_constant_years`: the best *constant* prediction "always year k", k chosen on the
  training patients, the row that shows what a model adds over a constant.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

from crlm_lib import metrics as M

__all__ = [
    "DCalibration",
    "HIGHER_IS_BETTER",
    "POINT_METRICS",
    "best_constant_years",
    "censoring_prob_at",
    "d_calibration",
    "d_calibration_histogram",
    "d_calibration_test",
    "hinge_mae",
    "ipcw_point_metrics",
    "point_metrics",
]

#: Keys of :func:`point_metrics`: the papers' (all patients, censored times as event times),
#: observed deaths only, IPCW and hinge versions.
POINT_METRICS: tuple[str, ...] = (
    "taa",
    "mae",
    "mse",
    "obs_taa",
    "obs_mae",
    "ipcw_taa",
    "ipcw_mae",
    "hinge_mae",
)
#: The point metrics where higher is better (the others are errors).
HIGHER_IS_BETTER: frozenset[str] = frozenset({"taa", "obs_taa", "ipcw_taa"})


def _arrays(pred_years, time, event, rule) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pred = np.asarray(pred_years, dtype=np.float64).ravel()
    target = M.target_years(time, rule).ravel()
    e = np.asarray(event).astype(bool).ravel()
    if not pred.shape == target.shape == e.shape:
        raise ValueError(
            f"arrays disagree: pred {pred.shape}, time {target.shape}, event {e.shape}"
        )
    return pred, target, e


def censoring_prob_at(censoring: M.CensoringKM, time_years: np.ndarray) -> np.ndarray:
    """``G(t)`` of a training censoring distribution at each time (``metrics.CensoringKM.prob``,
    scikit-survival's convention), with times beyond its support read at the support (where
    ``G > 0``): an event after the last training follow-up keeps a finite weight."""
    t = np.asarray(time_years, dtype=np.float64)
    return censoring.prob(np.minimum(t, censoring.support))


def ipcw_point_metrics(
    pred_years: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    censoring_prob: np.ndarray,
    rule: M.Rule = "argmax",
) -> dict[str, float]:
    """TAA, MAE and MSE over the observed events, weighted by ``1 / G(T_i)`` (IPCW).

    ``IPCW-MAE = sum_i d_i |t_pred_i - t_i| / G(t_i) / sum_i d_i / G(t_i)`` and the same
    weights for TAA (``|error| <= 1 year``) and MSE: under independent censoring the weighted
    events stand for the whole cohort, so these estimate the papers' metrics as if no one
    were censored, within the follow-up of the censoring distribution (events beyond it
    cannot be represented). ``G`` is the training patients' censoring Kaplan–Meier
    (:func:`censoring_prob_at`).

    Parameters
    ----------
    pred_years : array ``[N]``
        ``metrics.predicted_years`` / ``recurrence_years`` with the same ``rule``.
    time, event : arrays ``[N]`` (years; 1 = event)
    censoring_prob : array ``[N]``
        ``G(t_i)`` (read for the events only).
    rule : {"argmax", "median"}

    Returns
    -------
    dict ``taa``, ``mae``, ``mse`` (NaN without events), ``n_events``.

    Examples
    --------
    >>> ipcw_point_metrics([1, 1, 5], [1.5, 3.5, 2.5], [1, 1, 0], [1.0, 2 / 3, 1.0])
    {'taa': 0.4, 'mae': 1.2, 'mse': 2.4, 'n_events': 2}
    """
    pred, target, e = _arrays(pred_years, time, event, rule)
    g = np.asarray(censoring_prob, dtype=np.float64).ravel()
    if g.shape != pred.shape:
        raise ValueError(f"censoring_prob {g.shape} and pred_years {pred.shape} differ")
    if not e.any():
        return {"taa": math.nan, "mae": math.nan, "mse": math.nan, "n_events": 0}
    if not (g[e] > 0).all():
        raise ValueError("censoring_prob must be positive at every event time")
    w = 1.0 / g[e]
    err = pred[e] - target[e]
    return {
        "taa": float(np.average(np.abs(err) <= 1.0 + 1e-9, weights=w)),
        "mae": float(np.average(np.abs(err), weights=w)),
        "mse": float(np.average(err**2, weights=w)),
        "n_events": int(e.sum()),
    }


def hinge_mae(
    pred_years: np.ndarray, time: np.ndarray, event: np.ndarray, rule: M.Rule = "argmax"
) -> float:
    """Hinge MAE (Qi et al., ICML 2023): ``|t_pred - t|`` for an event,
    ``max(0, c - t_pred)`` for a patient censored at ``c``, averaged over all patients.

    A lower bound of the MAE the model would have without censoring: a censored patient
    predicted to die after ``c`` adds nothing. NaN for an empty set.

    Examples
    --------
    >>> hinge_mae([1, 1, 5], [1.5, 3.5, 2.5], [1, 1, 0])
    0.6666666666666666
    """
    pred, target, e = _arrays(pred_years, time, event, rule)
    if pred.size == 0:
        return math.nan
    err = np.where(e, np.abs(pred - target), np.maximum(0.0, target - pred))
    return float(err.mean())


def point_metrics(
    pred_years: np.ndarray,
    time: np.ndarray,
    event: np.ndarray,
    censoring_prob: np.ndarray,
    rule: M.Rule = "argmax",
) -> dict[str, float]:
    """Every point metric of :data:`POINT_METRICS` for one predicted time per patient.

    ``taa``, ``mae``, ``mse``: the papers' (``metrics.paper_metrics``: all patients, a censored
    time taken as the event time); ``obs_taa``, ``obs_mae``: observed events only;
    ``ipcw_*``: :func:`ipcw_point_metrics`; ``hinge_mae``: :func:`hinge_mae`.
    """
    papers = M.paper_metrics(pred_years, time, rule)
    observed = M.paper_metrics_observed(pred_years, time, event, rule)
    ipcw = ipcw_point_metrics(pred_years, time, event, censoring_prob, rule)
    return {
        "taa": papers["taa"],
        "mae": papers["mae"],
        "mse": papers["mse"],
        "obs_taa": observed["taa"],
        "obs_mae": observed["mae"],
        "ipcw_taa": ipcw["taa"],
        "ipcw_mae": ipcw["mae"],
        "hinge_mae": hinge_mae(pred_years, time, event, rule),
    }


def best_constant_years(
    train_time: np.ndarray,
    train_event: np.ndarray,
    train_censoring_prob: np.ndarray,
    rule: M.Rule = "argmax",
) -> dict[str, float]:
    """The best constant prediction "always year k" for each point metric, on training data.

    Candidates: the yearly bins ``k = 0..11`` (``"argmax"``; bin ``k`` is year ``k + 1``) or
    the quarter years ``0..12`` (``"median"``). For each key of :data:`POINT_METRICS` the
    ``k`` with the best training value (highest TAA, lowest error; the smallest ``k`` among
    ties). Applied to test patients, these give the constant row of a table: what a model
    adds over a constant.

    Returns
    -------
    dict metric -> k (years; a bin index under ``"argmax"``).
    """
    candidates = np.arange(12.0) if rule == "argmax" else np.arange(0.0, 12.01, 0.25)
    n = np.asarray(train_time).size
    scores = [
        point_metrics(np.full(n, k), train_time, train_event, train_censoring_prob, rule)
        for k in candidates
    ]
    best: dict[str, float] = {}
    for key in POINT_METRICS:
        values = np.array([s[key] for s in scores], dtype=np.float64)
        values = np.where(
            np.isfinite(values), values, -np.inf if key in HIGHER_IS_BETTER else np.inf
        )
        pick = np.argmax(values) if key in HIGHER_IS_BETTER else np.argmin(values)
        best[key] = float(candidates[pick])
    return best


class DCalibration(NamedTuple):
    """D-calibration: chi-square ``statistic`` against the uniform, its ``p_value`` (df = bins
    - 1; a small p is evidence of miscalibration) and the bin ``counts`` (lowest ``S`` first)."""

    statistic: float
    p_value: float
    counts: np.ndarray


def d_calibration_histogram(
    time: np.ndarray, event: np.ndarray, surv_at_years: np.ndarray, n_bins: int = 10
) -> np.ndarray:
    """The D-calibration histogram of Haider et al. (JMLR 2020), ``[n_bins]``.

    ``s_i = S_i(t_i)``, the predicted event-free probability at the patient's own time
    (``metrics.curve_at_times``: linear between year ends). An event adds 1 to the bin of
    ``s_i`` (bins ``[b/B, (b+1)/B)``, ``s = 1`` in the top one). A patient censored at ``c``
    has ``S(T)`` uniform on ``[0, s_i]`` if the model is right, so adds ``(s_i - l)/s_i`` to
    the bin ``[l, u)`` that holds ``s_i`` and ``(1/B)/s_i`` to every bin below it (1 in the
    lowest bin when ``s_i = 0``); each patient adds 1 in all.
    """
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    s = np.clip(M.curve_at_times(surv_at_years, t, own=True), 0.0, 1.0)
    width = 1.0 / n_bins
    bin_of = np.minimum(np.floor(s * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(bin_of[e], minlength=n_bins).astype(np.float64)
    for s_i, b in zip(s[~e], bin_of[~e], strict=True):
        if s_i <= 0.0:
            counts[0] += 1.0
            continue
        counts[b] += (s_i - b * width) / s_i
        counts[:b] += width / s_i
    return counts


def d_calibration_test(counts: np.ndarray) -> DCalibration:
    """Pearson's chi-square test of a D-calibration histogram against the uniform
    (``scipy.stats.chisquare``: expected ``sum(counts) / B`` per bin, ``B - 1`` df)."""
    counts = np.asarray(counts, dtype=np.float64)
    if counts.sum() <= 0:
        return DCalibration(math.nan, math.nan, counts)
    result = stats.chisquare(counts)
    return DCalibration(float(result.statistic), float(result.pvalue), counts)


def d_calibration(
    time: np.ndarray, event: np.ndarray, surv_at_years: np.ndarray, n_bins: int = 10
) -> DCalibration:
    """D-calibration of predicted curves (:func:`d_calibration_histogram`,
    :func:`d_calibration_test`): is ``S_i(t_i)`` uniform over the patients?

    Examples
    --------
    >>> surv = np.tile(np.linspace(0.95, 0.05, 12), (10, 1))
    >>> d = d_calibration(np.arange(1.0, 11.0), np.ones(10), surv)
    >>> d.counts.tolist(), round(d.p_value, 3)
    ([0.0, 0.0, 2.0, 1.0, 1.0, 1.0, 1.0, 2.0, 1.0, 1.0], 0.911)
    """
    return d_calibration_test(d_calibration_histogram(time, event, surv_at_years, n_bins))
