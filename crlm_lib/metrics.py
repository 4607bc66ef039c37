"""Metrics: the papers' TAA / MAE / MSE and the survival-analysis metrics the papers omit.

Every model of the project ends in the same two heads (``docs/interfaces.md``):

- ``survival_logits`` ``[N, 13]``: softmax over the year of death, ``p_k`` = probability of
  death in postoperative year ``k + 1`` (the interval ``[k, k + 1)`` years), ``k = 0..11``,
  and the 13th class, alive at 12 years, ``S(12)`` (``[N, 12]`` without it, the papers' form;
  ``models.heads.head_probabilities`` gives the 12 death-year bins and ``S(12)``);
- ``recurrence_logits`` ``[N, 12]``: logits of ``q_k`` = probability of recurrence by the end
  of year ``k + 1`` (non-decreasing by construction for the default hazard head, not for the
  papers' independent sigmoids).

This module turns those probabilities into

1. one predicted time per patient (:func:`predicted_years`, :func:`recurrence_years`), the
   **single rule used for every model**, and the papers' metrics on it
   (:func:`paper_metrics`: TAA, Eq. (5) of 4D-ACFNet / Eq. (3) of STAR, MAE, MSE);
2. risk scores and survival curves (:func:`risk_from_survival`, :func:`risk_from_recurrence`,
   :func:`survival_curve`, :func:`recurrence_free_curve`) and the censoring-aware metrics of
   the field computed by scikit-survival (:func:`survival_metrics`: Harrell's and Uno's
   C-index, integrated Brier score, cumulative/dynamic AUC);
3. :func:`all_metrics`, everything at once for one ``Predictions`` table written by
   :func:`crlm_lib.train.predict`.

Uncertainty (the patient-level percentile bootstrap of one metric or of every metric of a
protocol) lives in :mod:`crlm_lib.evaluation.bootstrap`, the library's one bootstrap engine.

Functions take **probabilities** (numpy); :func:`softmax` and :func:`sigmoid` convert logits.
All times are in **years** (the papers convert months to years, 4D-ACFNet section 4.1).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy import special
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv

from crlm_lib.config import N_YEARS
from crlm_lib.curves import (
    _as_pmf,
    _as_probs,
    beyond_horizon_mass,
    recurrence_free_curve,
    risk_from_recurrence,
    risk_from_survival,
    survival_curve,
    year_bin,
)
from crlm_lib.types import CV_COLS, Predictions, prob_columns

Rule = Literal["argmax", "median"]
#: Fixed horizon (years) of Uno's C and of the integrated Brier score.
HORIZON_YEARS: float = 5.0
RULES: tuple[str, ...] = ("argmax", "median")

__all__ = [
    "HORIZON_YEARS",
    "MetricWarning",
    "softmax",
    "sigmoid",
    "year_bin",
    "target_years",
    "beyond_horizon_mass",
    "predicted_years",
    "recurrence_years",
    "paper_metrics",
    "paper_metrics_observed",
    "risk_from_survival",
    "risk_from_recurrence",
    "survival_curve",
    "recurrence_free_curve",
    "curve_at_times",
    "survival_metrics",
    "CensoringKM",
    "TrainingOutcomes",
    "prob_columns",
    "all_metrics",
]


class MetricWarning(UserWarning):
    """A metric could not be estimated on these data and was returned as NaN."""


# --------------------------------------------------------------------------------------------
# logits -> probabilities
# --------------------------------------------------------------------------------------------


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax of ``logits`` along ``axis`` (``scipy.special.softmax``, numerically stable).

    Parameters
    ----------
    logits : array ``[N, 12]``
        ``survival_logits`` of a model.

    Returns
    -------
    array ``[N, 12]``
        Probability of death in each postoperative year; rows sum to 1.
    """
    return special.softmax(np.asarray(logits, dtype=np.float64), axis=axis)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function (``scipy.special.expit``): ``recurrence_logits`` -> probabilities."""
    return special.expit(np.asarray(logits, dtype=np.float64))


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; choose one of {RULES}")


# --------------------------------------------------------------------------------------------
# the one rule: probabilities -> predicted time
# --------------------------------------------------------------------------------------------


def target_years(true_years: np.ndarray, rule: Rule = "argmax") -> np.ndarray:
    """The target a predicted time is compared with under ``rule``.

    ``"argmax"``: the whole-year bin :func:`year_bin`; ``"median"``: the continuous time.
    """
    _check_rule(rule)
    y = np.asarray(true_years, dtype=np.float64)
    return year_bin(y) if rule == "argmax" else y


def _first_crossing(
    cum_at_year_end: np.ndarray, level: float, interpolate: bool, start: float
) -> np.ndarray:
    """Time at which a monotone curve known at year ends 1..12 first reaches ``level``.

    ``cum_at_year_end`` ``[N, 12]`` is non-decreasing (a cumulative probability), its value at
    time 0 is ``start``. Without interpolation the answer is the bin index ``k`` (0..11) of the
    first year end where the curve is ``>= level``; with it, the time in years found by linear
    interpolation within that year. ``12`` where the curve never reaches the level.
    """
    reached = cum_at_year_end >= level - 1e-12
    ever = reached.any(axis=1)
    k = np.where(ever, reached.argmax(axis=1), N_YEARS)
    if not interpolate:
        return k.astype(np.float64)
    out = np.full(cum_at_year_end.shape[0], float(N_YEARS))
    rows = np.flatnonzero(ever)
    kk = k[rows]
    hi = cum_at_year_end[rows, kk]
    lo = np.where(kk > 0, cum_at_year_end[rows, np.maximum(kk - 1, 0)], start)
    span = hi - lo
    frac = np.where(span > 0, (level - lo) / np.where(span > 0, span, 1.0), 0.0)
    out[rows] = kk + np.clip(frac, 0.0, 1.0)
    return out


def predicted_years(survival_probs: np.ndarray, rule: Rule = "argmax") -> np.ndarray:
    """Predicted time of death (years) from the survival head: THE rule used for every model.

    Parameters
    ----------
    survival_probs : array ``[N, 12]``
        Softmax of ``survival_logits`` (use :func:`softmax` on logits): ``p_k`` = probability
        of death in year ``k + 1``. Rows may sum to less than 1: the missing mass
        ``S(12) = 1 - sum_k p_k`` is the probability of surviving beyond the 12-year horizon
        (:func:`beyond_horizon_mass`; the anchors' and oracle's curves keep it there, and so
        does the deep models' 13th class; their papers' 12-class form has none).
    rule : {"argmax", "median"}
        ``"argmax"`` (default, the papers' reading): the most likely yearly bin,
        ``t_pred = argmax_k p_k`` in 0..11 **over the 12 death-year bins only**: the
        beyond-the-horizon mass ``S(12)`` is not a bin and never enters the argmax. (Folding
        it into the last bin makes the oracle and Cox predict "year 12" for every patient
        likely to live past 12 years: oracle TAA 0.29, MAE 4.75, below a constant "year 3".)
        A row whose 12 bins are all zero (certain survival past year 12) is predicted ``11``. The argmax is the mode of the death-year distribution;
        it is NOT the Bayes-optimal point prediction for MAE/MSE (the median/mean are), so the
        true curves need not score best on TAA/MAE/MSE. Compare with whole-year targets
        :func:`year_bin` (``min(floor(years), 11)``). Neither paper states its rule, and the
        published values cannot tell: with 20 test patients whole-year predictions move TAA in
        steps of 0.05, so published TAAs such as 0.175 or 0.925 cannot come from them, and
        some published rows are inconsistent within themselves (the manuscript's section on
        the published tables). A 12-way softmax classifier predicts its most likely class.

        ``"median"`` (the principled alternative): the median of the predicted distribution,
        the time where the survival curve ``S(t) = 1 - sum_{j<=k} p_j`` (known at year ends)
        crosses 0.5, by linear interpolation within the year, in continuous years; ``12`` if it
        never does (the beyond-horizon mass counts as survival, so a patient with
        ``S(12) >= 0.5`` is predicted 12). Compare with continuous years (:func:`target_years`).

    Returns
    -------
    array ``[N]`` float, years.

    Examples
    --------
    >>> p = np.zeros((1, 12)); p[0, [1, 2]] = [0.4, 0.6]
    >>> predicted_years(p).tolist(), predicted_years(p, "median").tolist()
    ([2.0], [2.1666666666666665])
    """
    _check_rule(rule)
    p = _as_pmf(survival_probs)
    if rule == "argmax":
        k = p.argmax(axis=1)
        return np.where(p.max(axis=1) > 0, k, N_YEARS - 1).astype(np.float64)
    cdf = np.cumsum(p, axis=1)  # F(end of year k+1) = 1 - S
    return _first_crossing(cdf, 0.5, interpolate=True, start=0.0)


def recurrence_years(recurrence_probs: np.ndarray, rule: Rule = "argmax") -> np.ndarray:
    """Predicted time of recurrence (years) from the recurrence head (the DFS variant).

    ``q_k = sigmoid(recurrence_logits)_k`` is the probability of recurrence by the end of year
    ``k + 1``. The papers' independent sigmoids need not be monotone, so the cumulative
    recurrence probability is taken as the running maximum ``Q_k = max_{j<=k} q_j`` (a no-op
    for the default hazard head, monotone by construction).

    Parameters
    ----------
    recurrence_probs : array ``[N, 12]``
    rule : {"argmax", "median"}
        ``"argmax"`` (whole-year, matches :func:`predicted_years`' default): the first year bin
        ``k`` (0..11) with ``Q_k >= 0.5``, i.e. recurrence predicted during year ``k + 1``;
        compare with ``year_bin(dfs_years)``. ``"median"``: the continuous time where ``Q``
        (0 at surgery) crosses 0.5, linearly interpolated within the year. Both give ``12``
        when ``Q`` never reaches 0.5 (no recurrence predicted within 12 years).

    Returns
    -------
    array ``[N]`` float, years.
    """
    _check_rule(rule)
    q = np.maximum.accumulate(_as_probs(recurrence_probs, "recurrence_probs"), axis=1)
    return _first_crossing(q, 0.5, interpolate=(rule == "median"), start=0.0)


# --------------------------------------------------------------------------------------------
# the papers' metrics
# --------------------------------------------------------------------------------------------


def paper_metrics(
    pred_years: np.ndarray, true_years: np.ndarray, rule: Rule = "argmax"
) -> dict[str, float]:
    """TAA, MAE and MSE of predicted against true times (4D-ACFNet Eq. (5), STAR Eq. (3)).

    ``TAA = 1/N sum_i 1(|t_pred_i - t_true_i| <= 1 year)``; STAR writes the threshold as 365
    days, which is the same criterion in years. ``MAE = mean |t_pred - t_true|`` and
    ``MSE = mean (t_pred - t_true)^2``, both in years (years^2).

    Which target: the papers compare "predicted and true recurrence/survival times" without
    saying which. We use the overall-survival time with the survival head
    (:func:`predicted_years`) as the primary target, and offer the recurrence variant
    (:func:`recurrence_years` against DFS) beside it in :func:`all_metrics`. Censored patients
    are included (as in the papers, which ignore censoring: a censored time is then treated as
    if it were the event time); :func:`paper_metrics_observed` restricts to observed events.

    Parameters
    ----------
    pred_years : array ``[N]``
        Output of :func:`predicted_years` / :func:`recurrence_years` with the same ``rule``.
    true_years : array ``[N]``
        Follow-up time in years (``os_years`` or ``dfs_years``), converted by
        :func:`target_years`: whole-year bin for ``"argmax"``, unchanged for ``"median"``.
    rule : {"argmax", "median"}

    Returns
    -------
    dict with ``taa``, ``mae``, ``mse`` (NaN for an empty set) and ``n``.

    Examples
    --------
    >>> paper_metrics(np.array([0.0, 2.0, 5.0]), np.array([0.5, 3.9, 1.2]))
    {'taa': 0.6666666666666666, 'mae': 1.6666666666666667, 'mse': 5.666666666666667, 'n': 3}
    """
    pred = np.asarray(pred_years, dtype=np.float64).ravel()
    true = target_years(true_years, rule).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"pred_years {pred.shape} and true_years {true.shape} differ in length")
    n = int(pred.size)
    if n == 0:
        return {"taa": math.nan, "mae": math.nan, "mse": math.nan, "n": 0}
    err = pred - true
    return {
        "taa": float(np.mean(np.abs(err) <= 1.0 + 1e-9)),
        "mae": float(np.mean(np.abs(err))),
        "mse": float(np.mean(err**2)),
        "n": n,
    }


def paper_metrics_observed(
    pred_years: np.ndarray,
    true_years: np.ndarray,
    event: np.ndarray,
    rule: Rule = "argmax",
) -> dict[str, float]:
    """:func:`paper_metrics` on the patients whose event was observed (``event == 1``).

    For them the true time is known; for censored patients it is only a lower bound.
    """
    mask = np.asarray(event).astype(bool).ravel()
    return paper_metrics(np.asarray(pred_years)[mask], np.asarray(true_years)[mask], rule)


# --------------------------------------------------------------------------------------------
# risk scores and curves
# --------------------------------------------------------------------------------------------


def curve_at_times(
    surv_at_years: np.ndarray, times_years: np.ndarray, own: bool = False
) -> np.ndarray:
    """Event-free curves known at year ends, read at any times by linear interpolation.

    ``S(t) = (1 - f) S(k) + f S(k + 1)`` with ``k = floor(t)``, ``f = t - k``, ``S(0) = 1``,
    and ``S(t) = S(12)`` beyond 12 years. Choice: the curves are known only at year ends;
    the step function of the IPCW metrics (``S(t) = S(floor(t))``) would give every patient
    ``S = 1`` before the end of year 1, so that every first-year event ties with every
    patient, which the time-dependent concordance (:mod:`crlm_lib.concordance`) and
    D-calibration (:mod:`crlm_lib.point_metrics`) would read as uninformative; linear
    interpolation (constant density within each year, as pycox's ``interpolate`` of a
    discrete-time model) keeps each patient's order within a year.

    Parameters
    ----------
    surv_at_years : array ``[N, 12]``
        Event-free probability at the end of years 1..12 (:func:`survival_curve`,
        :func:`recurrence_free_curve`).
    times_years : array ``[T]``, years (``>= 0``)
    own : bool
        ``False``: every patient's curve at every time, ``[N, T]``; ``True``: patient ``i``'s
        curve at ``times_years[i]`` (``T == N``), ``[N]``.

    Examples
    --------
    >>> s = np.linspace(0.9, 0.2, 12)[None, :]
    >>> curve_at_times(s, np.array([0.5, 1.0, 20.0])).round(3).tolist()
    [[0.95, 0.9, 0.2]]
    """
    surv = np.asarray(surv_at_years, dtype=np.float64)
    t = np.asarray(times_years, dtype=np.float64).ravel()
    if surv.ndim != 2 or surv.shape[1] != N_YEARS:
        raise ValueError(f"surv_at_years must have shape [N, {N_YEARS}], got {surv.shape}")
    if own and t.size != surv.shape[0]:
        raise ValueError(f"own=True needs one time per patient, got {t.size} for {surv.shape[0]}")
    grid = np.concatenate([np.ones((surv.shape[0], 1)), surv], axis=1)  # S(0..12)
    k = np.clip(np.floor(t), 0, N_YEARS - 1).astype(int)
    f = np.clip(t - k, 0.0, 1.0)
    if own:
        rows = np.arange(surv.shape[0])
        return (1.0 - f) * grid[rows, k] + f * grid[rows, k + 1]
    return (1.0 - f)[None, :] * grid[:, k] + f[None, :] * grid[:, k + 1]


def _curve_at(surv_at_years: np.ndarray, t: float) -> np.ndarray:
    """Step function of a curve known at year ends: ``S(t) = S(end of year floor(t))``, S(t<1)=1."""
    k = int(math.floor(t + 1e-9))
    if k <= 0:
        return np.ones(surv_at_years.shape[0])
    return surv_at_years[:, min(k, N_YEARS) - 1]


# --------------------------------------------------------------------------------------------
# censoring-aware metrics (scikit-survival)
# --------------------------------------------------------------------------------------------


def _warn_nan(metric: str, why: str) -> float:
    warnings.warn(f"{metric} is NaN: {why}", MetricWarning, stacklevel=3)
    return math.nan


class CensoringKM:
    """Kaplan–Meier estimate ``G`` of a training set's censoring distribution, fitted once.

    Fitted by scikit-survival (``CensoringDistributionEstimator``, the estimator behind its
    IPCW metrics), then kept with its step function (``time_``, ``prob_``) so that the IPCW
    metrics of many test sets scored against the same training patients (bootstrap
    replicates) neither refit it nor re-validate their inputs. :meth:`prob` and :meth:`ipcw`
    repeat ``predict_proba`` and ``predict_ipcw`` of scikit-survival 0.28 line for line
    (the same numbers; tests compare every metric with scikit-survival's own functions).

    Parameters
    ----------
    train_time : array ``[N_train]``, years
    train_event : array ``[N_train]`` (1/True = event)

    Raises
    ------
    ValueError
        When scikit-survival cannot fit it (e.g. every training patient censored).

    Attributes
    ----------
    support : float
        Largest time (years) at which ``G`` is still positive.
    """

    def __init__(self, train_time: np.ndarray, train_event: np.ndarray) -> None:
        time = np.asarray(train_time, dtype=np.float64).ravel()
        event = np.asarray(train_event).astype(bool).ravel()
        self.y_train = Surv.from_arrays(event, time)
        est = CensoringDistributionEstimator().fit(self.y_train)
        self.time_, self.prob_ = est.unique_time_, est.prob_
        positive = np.flatnonzero(self.prob_ > 0)
        self.support = float(self.time_[positive[-1]] if positive.size else self.time_[0])

    def prob(self, time: np.ndarray) -> np.ndarray:
        """``G(t)`` at ``time`` (years): ``CensoringDistributionEstimator.predict_proba``."""
        time = np.asarray(time, dtype=np.float64)
        extends = time > self.time_[-1]
        if self.prob_[-1] > 0 and extends.any():
            raise ValueError(
                f"time must be smaller than largest observed time point: {self.time_[-1]}"
            )
        out = np.empty(time.shape, dtype=float)
        out[extends] = 0.0
        valid = ~extends
        t = time[valid]
        idx = np.searchsorted(self.time_, t)
        eps = np.finfo(self.time_.dtype).eps
        exact = np.absolute(self.time_[idx] - t) < eps
        idx[~exact] -= 1
        out[valid] = self.prob_[idx]
        return out

    def prob_before(self, time: np.ndarray) -> np.ndarray:
        """``G(t-)``, the censoring survival just before ``time`` (years): censorings at
        ``t`` itself not yet removed. The other tie convention of the IPCW weights
        (``concordance.uno_c_conventions``); :meth:`prob` (scikit-survival's) is ``G(t)``."""
        time = np.asarray(time, dtype=np.float64)
        idx = np.searchsorted(self.time_, time, side="left") - 1  # time_[0] is -inf
        return self.prob_[np.maximum(idx, 0)]

    def ipcw(self, event: np.ndarray, time: np.ndarray) -> np.ndarray:
        """``event_i / G(time_i)``: ``CensoringDistributionEstimator.predict_ipcw``."""
        if not event.any():
            raise ValueError("all samples are censored")
        g = self.prob(time[event])
        if (g == 0.0).any():
            raise ValueError("censoring survival function is zero at one or more time points")
        weights = np.zeros(time.shape[0])
        weights[event] = 1.0 / g
        return weights


def censoring_km(train_time: np.ndarray, train_event: np.ndarray) -> CensoringKM | None:
    """:class:`CensoringKM` of the training outcomes, or ``None`` when it cannot be estimated
    (fewer than two patients, every one censored): the IPCW metrics are then NaN."""
    if np.asarray(train_time).size < 2:
        return None
    try:
        return CensoringKM(train_time, train_event)
    except ValueError:
        return None


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def _fast_or_reference(fast: Callable[[], float], reference: Callable[[], Any], ok: bool):
    """``fast()`` (validated arrays, cached censoring fit) where the inputs are finite, else or
    when it raises ``reference()`` (the scikit-survival function itself): edge cases keep
    scikit-survival's exact behaviour and message."""
    if ok:
        try:
            return fast()
        except Exception:  # scikit-survival raises the same, with its own message, below
            pass
    return reference()


def _concordance(
    event: np.ndarray,
    time: np.ndarray,
    estimate: np.ndarray,
    weights: np.ndarray,
    tied_tol: float = 1e-8,
) -> float:
    """scikit-survival's ``_estimate_concordance_index`` without its Python loop over pairs.

    For each event ``i`` (in scikit-survival's order, ``argsort(time)``) the comparable
    patients are those with a later time, or the same time and censored; ``i`` scores
    ``w_i`` per patient ranked below it and ``w_i / 2`` per tie (``|estimate| <= tied_tol``).
    The per-event terms are summed in the same order (``cumsum`` is sequential), so the value
    equals scikit-survival's to the last bit. Raises ``ValueError`` where scikit-survival
    would raise or divide by zero (the caller then runs scikit-survival itself).
    """
    n = len(time)
    order = np.argsort(time)
    # scikit-survival never visits a sample alone at the last sorted position
    lone_last = n == 1 or time[order[n - 1]] != time[order[n - 2]]
    visited = order[: n - 1] if lone_last else order
    rows = visited[event[visited]]
    if rows.size == 0:
        raise ValueError("no comparable pairs")
    t_i = time[rows][:, None]
    comparable = (time[None, :] > t_i) | ((time[None, :] == t_i) & ~event[None, :])
    est_i = estimate[rows][:, None]
    ties = (np.absolute(estimate[None, :] - est_i) <= tied_tol) & comparable
    below = (estimate[None, :] < est_i) & comparable & ~ties
    w_i = weights[rows]
    numerator = np.cumsum(w_i * below.sum(axis=1) + 0.5 * w_i * ties.sum(axis=1))[-1]
    denominator = np.cumsum(w_i * comparable.sum(axis=1))[-1]
    if not denominator > 0:
        raise ValueError("no comparable pairs")
    return float(numerator / denominator)


def _harrell_fast(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """``concordance_index_censored`` without input validation (checked by the caller)."""
    if len(time) < 2 or not event.any():
        raise ValueError("need two samples and an event")
    return _concordance(event, time, risk, np.ones_like(risk))


def _harrell(event: np.ndarray, time: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C (``concordance_index_censored``); NaN with a warning when undefined."""
    e = np.asarray(event).astype(bool)
    t = np.asarray(time, np.float64)
    try:
        return _fast_or_reference(
            lambda: _harrell_fast(e, t, risk),
            lambda: float(concordance_index_censored(e, t, risk)[0]),
            _finite(t, risk) and bool((t >= 0).all()),
        )
    except Exception as exc:  # NoComparablePairException, ValueError (all censored, n < 2)
        return _warn_nan("c_harrell", str(exc))


def _uno_fast(km: CensoringKM, event, time, risk, tau: float) -> float:
    """``concordance_index_ipcw(y_train, y_test, risk, tau)`` with the censoring fit of ``km``."""
    if not event.any():
        raise ValueError("all samples are censored")
    mask = time < tau
    ipcw = np.zeros(risk.shape[0], dtype=np.float64)
    ipcw[mask] = km.ipcw(event[mask], time[mask])
    return _concordance(event, time, risk, np.square(ipcw))


def _ibs_fast(km: CensoringKM, event, time, estimate, grid) -> float:
    """``integrated_brier_score(y_train, y_test, estimate, grid)`` with the fit of ``km``."""
    if not event.any():
        raise ValueError("all samples are censored")
    times = np.unique(grid)
    if times.max() >= time.max() or times.min() < time.min() or times.shape[0] < 2:
        raise ValueError("times outside the test follow-up")
    prob_cens_t = km.prob(times)
    prob_cens_t[prob_cens_t == 0] = np.inf
    prob_cens_y = km.prob(time)
    prob_cens_y[prob_cens_y == 0] = np.inf
    brier_scores = np.empty(times.shape[0], dtype=float)
    for i, t in enumerate(times):
        est = estimate[:, i]
        is_case = (time <= t) & event
        is_control = time > t
        brier_scores[i] = np.mean(
            np.square(est) * is_case.astype(int) / prob_cens_y
            + np.square(1.0 - est) * is_control.astype(int) / prob_cens_t[i]
        )
    return float(np.trapezoid(brier_scores, times) / (times[-1] - times[0]))


def _auc_fast(km: CensoringKM, event, time, estimate, horizons, tied_tol: float = 1e-8):
    """The ``scores`` of ``cumulative_dynamic_auc(y_train, y_test, estimate, horizons)`` with
    the fit of ``km`` (its mean AUC over time is not used here)."""
    if not event.any():
        raise ValueError("all samples are censored")
    times = np.unique(np.atleast_1d(horizons).astype(np.float64))
    if times.max() >= time.max() or times.min() < time.min():
        raise ValueError("times outside the test follow-up")
    n_samples, n_times = estimate.shape[0], times.shape[0]
    if estimate.ndim == 1:
        estimate = np.broadcast_to(estimate[:, np.newaxis], (n_samples, n_times))
    if estimate.shape[1] != n_times:
        raise ValueError("estimate columns and times disagree")
    ipcw = km.ipcw(event, time)
    test_time = np.broadcast_to(time[:, np.newaxis], (n_samples, n_times))
    test_event = np.broadcast_to(event[:, np.newaxis], (n_samples, n_times))
    times_2d = np.broadcast_to(times, (n_samples, n_times))
    ipcw = np.broadcast_to(ipcw[:, np.newaxis], (n_samples, n_times))
    o = np.argsort(-estimate, axis=0)
    test_time = np.take_along_axis(test_time, o, axis=0)
    test_event = np.take_along_axis(test_event, o, axis=0)
    estimate = np.take_along_axis(estimate, o, axis=0)
    ipcw = np.take_along_axis(ipcw, o, axis=0)
    is_case = (test_time <= times_2d) & test_event
    is_control = test_time > times_2d
    n_controls = is_control.sum(axis=0)
    estimate_diff = np.concatenate((np.broadcast_to(np.inf, (1, n_times)), estimate))
    is_tied = np.absolute(np.diff(estimate_diff, axis=0)) <= tied_tol
    cumsum_tp = np.cumsum(is_case * ipcw, axis=0)
    cumsum_fp = np.cumsum(is_control, axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        true_pos = cumsum_tp / cumsum_tp[-1]
        false_pos = cumsum_fp / n_controls
    scores = np.empty(n_times, dtype=float)
    for i in range(n_times):
        idx = np.flatnonzero(is_tied[:, i]) - 1
        tp_no_ties = np.r_[0, np.delete(true_pos[:, i], idx)]
        fp_no_ties = np.r_[0, np.delete(false_pos[:, i], idx)]
        scores[i] = np.trapezoid(tp_no_ties, fp_no_ties)
    return scores


def survival_metrics(
    train_time: np.ndarray,
    train_event: np.ndarray,
    test_time: np.ndarray,
    test_event: np.ndarray,
    risk: np.ndarray,
    surv_at_years: np.ndarray,
    horizons: Sequence[float] = (1, 3, 5),
    auc_from: Literal["curve", "risk"] = "curve",
    horizon_years: float = HORIZON_YEARS,
    harrell: bool = True,
    censoring: CensoringKM | None = None,
) -> dict[str, float]:
    """Censoring-aware discrimination and calibration, computed by scikit-survival.

    Parameters
    ----------
    train_time, train_event : arrays ``[N_train]``
        Training follow-up (years) and event indicator: they estimate the censoring
        distribution G for the inverse-probability-of-censoring weights (Uno's C, IBS, AUC).
        Pass the outcomes of the patients the model was fitted on (the training fold), not the
        test patients.
    test_time, test_event : arrays ``[N]``
        Test follow-up (years) and event indicator.
    risk : array ``[N]``
        Higher = earlier event (:func:`risk_from_survival`, :func:`risk_from_recurrence`).
    surv_at_years : array ``[N, 12]``
        Event-free probability at the end of years 1..12 (:func:`survival_curve`,
        :func:`recurrence_free_curve`); between year ends it is a step function,
        ``S(t) = S(end of year floor(t))`` and ``S(t) = 1`` for ``t < 1``.
    horizons : years
        Time points of the cumulative/dynamic AUC (``auc_<h>y`` keys).
    auc_from : {"curve", "risk"}
        Marker of the AUC at horizon ``h``: ``1 - S(h)`` from the curve (default, the
        time-dependent prediction of the model) or the time-independent ``risk``.
    horizon_years : float
        Fixed horizon of Uno's C and of the IBS (default :data:`HORIZON_YEARS` = 5 years).
    harrell : bool
        Compute Harrell's C (``False`` leaves it out, e.g. per CV fold when it is pooled).
    censoring : CensoringKM, optional
        The censoring distribution already fitted on ``(train_time, train_event)``
        (:class:`CensoringKM`, e.g. from :class:`TrainingOutcomes`), to score many test sets
        against one training set without refitting it (default: fitted here).

    Returns
    -------
    dict
        ``c_harrell`` (``concordance_index_censored``, all follow-up), ``c_uno``
        (``concordance_index_ipcw`` with ``tau`` below), ``ibs`` (``integrated_brier_score``
        over whole years ``1..horizon``), ``auc_<h>y`` (``cumulative_dynamic_auc``), ``tau``
        (years, the horizon of Uno's C), ``n``, ``n_events``.

    Notes
    -----
    *Uno's C* uses a fixed horizon ``tau = min(horizon_years, support)``, where ``support`` is
    the last time at which the training censoring Kaplan-Meier ``G`` is positive; it is
    sksurv's ``concordance_index_ipcw(..., tau=tau)``, which keeps only events strictly before
    ``tau``. (Censoring follow-up at the support and keeping the deaths *at* it instead would
    give these, on half-year-rounded data, weights ``1/G(tau)^2`` in the thousands that
    dominate the estimate.)

    *IBS* integrates the Brier score over whole years ``t = 1, 2, ..., horizon_years``
    (sksurv's trapezoid, divided by the length of the grid) with ``min(test_time) <= t <
    max(test_time)``, ``t < support``; the curve is known exactly at year ends, without
    interpolation. It does not integrate out to year 11, where only a handful of patients
    remain at risk and fold-to-fold swings dominate. At least two time points are needed,
    else NaN.

    *Support of the censoring distribution.* IPCW needs ``G(t) > 0``; sksurv raises otherwise.
    For the IBS and AUC, test follow-up beyond the support is administratively censored at
    it; this leaves every estimate on ``[0, support)`` unchanged.

    *Edge cases* (no comparable pairs, no events, a horizon outside the test follow-up or with
    no cases or no controls): the metric is NaN with a :class:`MetricWarning`, never an error.

    Examples
    --------
    >>> t = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 6.0]); e = np.array([1, 1, 0, 1, 0, 0])
    >>> surv = np.tile(np.linspace(0.9, 0.2, 12), (6, 1))
    >>> round(survival_metrics(t, e, t, e, -t, surv, horizons=(3,))["c_uno"], 3)
    1.0
    """
    t_tr = np.asarray(train_time, dtype=np.float64).ravel()
    e_tr = np.asarray(train_event).astype(bool).ravel()
    t_te = np.asarray(test_time, dtype=np.float64).ravel()
    e_te = np.asarray(test_event).astype(bool).ravel()
    risk = np.asarray(risk, dtype=np.float64).ravel()
    surv = np.asarray(surv_at_years, dtype=np.float64)
    if not (t_te.shape == e_te.shape == risk.shape) or surv.shape != (t_te.size, N_YEARS):
        raise ValueError(
            f"test arrays disagree: time {t_te.shape}, event {e_te.shape}, risk {risk.shape}, "
            f"surv_at_years {surv.shape} (expected [N, {N_YEARS}])"
        )
    out: dict[str, float] = {"n": int(t_te.size), "n_events": int(e_te.sum())}

    if harrell:
        out["c_harrell"] = _harrell(e_te, t_te, risk)

    # censoring support and truncated test data for the IPCW metrics
    km = censoring if censoring is not None else censoring_km(t_tr, e_tr)
    support = km.support if km is not None else math.nan
    if not math.isfinite(support):
        out["tau"] = math.nan
        for key in ("c_uno", "ibs", *(f"auc_{_h(h)}y" for h in horizons)):
            out[key] = _warn_nan(key, "no usable training data for the censoring distribution")
        return out
    tau = float(min(horizon_years, support))
    out["tau"] = tau
    beyond = t_te > support
    t_cut = np.where(beyond, support, t_te)
    e_cut = e_te & ~beyond
    # scikit-survival's own functions where the fast path does not apply (non-finite inputs,
    # or an edge case where it raises): same numbers, same messages
    ok = _finite(t_cut, risk, surv) and bool((t_cut >= 0).all())

    cut = _IPCWData(km, e_cut, t_cut, ok)
    out["c_uno"] = _uno_c(cut, risk, tau)
    out["ibs"] = _ibs(cut, surv, horizon_years, support)
    out.update(_aucs(cut, risk, surv, horizons, auc_from))
    return out


class _IPCWData:
    """The censoring distribution and the test follow-up truncated at its support, shared by
    Uno's C, the IBS and the AUC of :func:`survival_metrics`; ``fast`` says whether the fast
    paths apply (finite inputs), else scikit-survival's own functions run (same numbers)."""

    def __init__(self, km: CensoringKM, event: np.ndarray, time: np.ndarray, fast: bool):
        self.km, self.event, self.time, self.fast = km, event, time, fast

    def y_train(self):
        return self.km.y_train

    def y_test(self):
        return Surv.from_arrays(self.event, self.time)


def _uno_c(cut: _IPCWData, risk: np.ndarray, tau: float) -> float:
    """Uno's C of :func:`survival_metrics` (NaN with a warning where sksurv raises)."""
    try:
        return _fast_or_reference(
            lambda: _uno_fast(cut.km, cut.event, cut.time, risk, tau),
            lambda: float(concordance_index_ipcw(cut.y_train(), cut.y_test(), risk, tau=tau)[0]),
            cut.fast,
        )
    except Exception as exc:
        return _warn_nan("c_uno", str(exc))


def _ibs(cut: _IPCWData, surv: np.ndarray, horizon_years: float, support: float) -> float:
    """Integrated Brier score of :func:`survival_metrics` over whole years up to the horizon."""
    t_cut = cut.time
    grid = np.arange(1, math.floor(horizon_years + 1e-9) + 1, dtype=np.float64)
    grid = grid[(grid >= t_cut.min()) & (grid < t_cut.max()) & (grid < support)]
    if grid.size < 2:
        return _warn_nan(
            "ibs",
            f"fewer than two whole years up to {horizon_years:g} y within the test follow-up "
            f"[{t_cut.min():.2f}, {t_cut.max():.2f}) years",
        )
    est = np.stack([_curve_at(surv, t) for t in grid], axis=1)
    try:
        return _fast_or_reference(
            lambda: _ibs_fast(cut.km, cut.event, t_cut, est, grid),
            lambda: float(integrated_brier_score(cut.y_train(), cut.y_test(), est, grid)),
            cut.fast,
        )
    except Exception as exc:
        return _warn_nan("ibs", str(exc))


def _aucs(
    cut: _IPCWData,
    risk: np.ndarray,
    surv: np.ndarray,
    horizons: Sequence[float],
    auc_from: str,
) -> dict[str, float]:
    """Cumulative/dynamic AUC at each horizon of :func:`survival_metrics` (``auc_<h>y``)."""
    t_cut, e_cut = cut.time, cut.event
    out: dict[str, float] = {}
    valid: list[float] = []
    for h in horizons:
        key = f"auc_{_h(h)}y"
        cases = (t_cut <= h) & e_cut
        controls = t_cut > h
        if not (t_cut.min() <= h < t_cut.max()):
            out[key] = _warn_nan(
                key, f"horizon {h} y outside test follow-up [{t_cut.min():.2f}, {t_cut.max():.2f})"
            )
        elif not cases.any() or not controls.any():
            out[key] = _warn_nan(key, f"no cases or no controls at {h} y")
        else:
            valid.append(float(h))
    if valid:  # one call for every horizon (one censoring fit instead of one per horizon)
        marker = (
            np.stack([1.0 - _curve_at(surv, h) for h in valid], axis=1)
            if auc_from == "curve"
            else risk
        )
        try:
            auc = _fast_or_reference(
                lambda: _auc_fast(cut.km, e_cut, t_cut, marker, valid),
                lambda: cumulative_dynamic_auc(cut.y_train(), cut.y_test(), marker, valid)[0],
                cut.fast,
            )
            for h, a in zip(valid, np.atleast_1d(auc), strict=True):
                out[f"auc_{_h(h)}y"] = float(a)
        except Exception as exc:
            for h in valid:
                out[f"auc_{_h(h)}y"] = _warn_nan(f"auc_{_h(h)}y", str(exc))
    return out


def _h(h: float) -> str:
    return str(int(h)) if float(h).is_integer() else str(h).replace(".", "p")


# --------------------------------------------------------------------------------------------
# everything for one predictions table
# --------------------------------------------------------------------------------------------


class TrainingOutcomes:
    """Training outcomes for the IPCW metrics, each censoring distribution fitted once.

    Wraps what :func:`all_metrics` takes as ``train_df`` (a DataFrame of training outcomes,
    or a ``{(repeat, fold): DataFrame}`` mapping for pooled CV predictions) and keeps the
    :class:`CensoringKM` of each (training set, head) after its first use. Pass one instance
    to every :func:`all_metrics` call that scores against the same training patients (the
    replicates of a bootstrap): the censoring Kaplan–Meier is then fitted once per fold and
    head instead of four times per call. Same numbers as the plain DataFrame or mapping.

    Parameters
    ----------
    outcomes : DataFrame, mapping of DataFrames, or TrainingOutcomes
        Columns ``os_years, os_event, dfs_years, dfs_event``.
    """

    def __init__(self, outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | TrainingOutcomes):
        if isinstance(outcomes, TrainingOutcomes):
            outcomes = outcomes.outcomes
        self.outcomes = outcomes
        self._fitted: dict[tuple[Any, str], CensoringKM | None] = {}

    @property
    def by_fold(self) -> bool:
        """Whether the outcomes are a ``{(repeat, fold): outcomes}`` mapping."""
        return isinstance(self.outcomes, Mapping)

    def frame(self, key: Any = None) -> pd.DataFrame:
        """The training outcomes (of fold ``key`` for a mapping)."""
        if not self.by_fold:
            return self.outcomes
        if key not in self.outcomes:
            raise ValueError(f"no training outcomes for (repeat, fold) = {key}")
        return self.outcomes[key]

    def censoring(self, head: str, key: Any = None) -> CensoringKM | None:
        """The censoring distribution of head ``head`` (``"os"``, ``"dfs"``), fitted once."""
        if (key, head) not in self._fitted:
            train = self.frame(key)
            self._fitted[key, head] = censoring_km(
                train[f"{head}_years"].to_numpy(np.float64), train[f"{head}_event"].to_numpy()
            )
        return self._fitted[key, head]


def _ipcw_metrics(
    end: str,
    train: TrainingOutcomes,
    key: Any,
    arrays: tuple[np.ndarray, ...],
    rows: list[int] | None,
    horizons: Sequence[float],
    harrell: bool = True,
) -> dict[str, float]:
    """:func:`survival_metrics` of head ``end`` on ``rows`` (all when None) of the test arrays
    ``(time, event, risk, curve)``, censoring distribution from ``train`` (fold ``key``)."""
    sel = slice(None) if rows is None else np.asarray(rows)
    time, event, risk, curve = (a[sel] for a in arrays)
    frame = train.frame(key)
    return survival_metrics(
        frame[f"{end}_years"].to_numpy(np.float64),
        frame[f"{end}_event"].to_numpy(),
        time,
        event,
        risk,
        curve,
        horizons=horizons,
        harrell=harrell,
        censoring=train.censoring(end, key),
    )


def all_metrics(
    predictions_df: pd.DataFrame | Predictions,
    train_df: pd.DataFrame | Mapping[Any, pd.DataFrame] | TrainingOutcomes | None = None,
    rule: Rule = "argmax",
    horizons: Sequence[float] = (1, 3, 5),
    heads: Sequence[str] = ("os", "dfs"),
    score: str = "risk",
) -> dict[str, float]:
    """Every metric of one ``Predictions`` table (:func:`crlm_lib.train.predict`).

    ``heads`` restricts the computation to the survival head (``"os"``) and/or the recurrence
    head (``"dfs"``), e.g. to spare the bootstrap a head it does not report.

    Parameters
    ----------
    predictions_df : DataFrame or types.Predictions
        Columns ``patient_id``, ``surv_p1..surv_p12``, ``rec_p1..rec_p12``, ``os_years``,
        ``os_event``, ``dfs_years``, ``dfs_event``; optionally ``native_risk`` (an anchor's
        own OS risk score, read only with ``score="mixed"``) and ``repeat``/``fold`` (CV).
    train_df : DataFrame, mapping or None
        Training outcomes (``os_years``, ``os_event``, ``dfs_years``, ``dfs_event``) for the
        censoring distribution of the IPCW metrics (Uno's C, IBS, AUC). A mapping
        ``{(repeat, fold): outcomes of that fold's training patients}`` scores pooled
        out-of-fold predictions: the IPCW metrics are then computed per test fold with its
        own training censoring distribution and averaged over folds, weighted by the number
        of test patients (NaN folds skipped); Harrell's C and TAA/MAE/MSE stay pooled.
        ``None``: the test table itself (say so when reporting). A :class:`TrainingOutcomes`
        of either keeps its censoring fits between calls (bootstrap replicates).
    rule : {"argmax", "median"}
        See :func:`predicted_years`.
    score : {"risk", "mixed"}
        What the C-indices and the AUC marker rank patients by
        (``types.Predictions.ranking_score``): ``"risk"`` (default) the predicted probability
        of the event by ``types.RISK_HORIZON_YEARS`` (death by 5 years, recurrence by 3
        years) for every model alike; ``"mixed"`` each model's own functional as before
        (an anchor's ``native_risk``, else minus the 12-year restricted mean survival time).

    Returns
    -------
    dict
        ``os_taa, os_mae, os_mse, os_n`` (survival head vs OS, primary paper metrics),
        ``os_obs_*`` (observed deaths only), ``dfs_*`` and ``dfs_obs_*`` (recurrence head vs
        DFS), and ``os_c_harrell, os_c_uno, os_ibs, os_auc_<h>y`` (survival head:
        ``ranking_score("os", score)``, :func:`survival_curve`) and ``dfs_c_*`` etc.
        (recurrence head: the 3-year risk, :func:`recurrence_free_curve`). Uno's C and the
        IBS use the fixed :data:`HORIZON_YEARS` horizon (:func:`survival_metrics`).
    """
    preds = predictions_df
    if not isinstance(preds, Predictions):  # validated once (a caller may pass it validated)
        preds = Predictions.from_frame(preds)
    df = preds.frame
    unknown = set(heads) - {"os", "dfs"}
    if unknown:
        raise ValueError(f"unknown heads {sorted(unknown)}; use 'os' and/or 'dfs'")
    train = train_df if isinstance(train_df, TrainingOutcomes) else None
    train = train or TrainingOutcomes(df if train_df is None else train_df)
    by_fold = train.by_fold
    if by_fold and not set(CV_COLS) <= set(df.columns):
        raise ValueError("train_df by (repeat, fold) needs 'repeat' and 'fold' columns")
    out: dict[str, float] = {}
    for end in heads:
        if end == "os":
            pred = predicted_years(preds.survival_pmf, rule)
        else:
            pred = recurrence_years(preds.recurrence_cdf, rule)
        # the ranking score of each head (Predictions.ranking_score): by default the 5-year
        # risk of death (OS) and the 3-year risk of recurrence (DFS), every model alike
        risk, curve = preds.ranking_score(end, score), preds.curve(end)
        time, event = preds.outcomes(end)
        for k, v in paper_metrics(pred, time, rule).items():
            out[f"{end}_{k}"] = v
        for k, v in paper_metrics_observed(pred, time, event, rule).items():
            out[f"{end}_obs_{k}"] = v

        arrays = (time, event, risk, curve)
        if not by_fold:
            sm = _ipcw_metrics(end, train, None, arrays, None, horizons)
        else:
            groups: dict[tuple[int, int], list[int]] = {}
            for i, key in enumerate(zip(df["repeat"], df["fold"], strict=True)):
                groups.setdefault((int(key[0]), int(key[1])), []).append(i)
            per_fold = []
            for key, rows in sorted(groups.items()):
                per_fold.append(
                    (len(rows), _ipcw_metrics(end, train, key, arrays, rows, horizons, False))
                )
            sm = {}
            for name in per_fold[0][1] if per_fold else ():
                vals = np.array([m[name] for _, m in per_fold], dtype=np.float64)
                w = np.array([n for n, _ in per_fold], dtype=np.float64)
                ok = np.isfinite(vals)
                sm[name] = float(np.average(vals[ok], weights=w[ok])) if ok.any() else math.nan
            # Harrell's C and the counts do not use the censoring distribution: pooled
            sm["c_harrell"] = _harrell(event, time, risk)
            sm["n_events"] = int(np.asarray(event).astype(bool).sum())
        for k, v in sm.items():
            if k != "n":
                out[f"{end}_{k}"] = v
    return out
