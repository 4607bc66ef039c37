"""The 12-year outputs of every model turned into predicted years, risks and curves.

Every model ends in the same two heads (``docs/interfaces.md``):

- ``survival_logits`` ``[N, 13]``: softmax over the year of death, ``p_k`` = probability of
  death in postoperative year ``k + 1`` (the interval ``[k, k + 1)`` years), ``k = 0..11``,
  and the 13th class, alive at 12 years, ``S(12)`` (``[N, 12]`` without it, the papers' form;
  ``models.heads.head_probabilities`` gives the 12 death-year bins and ``S(12)``);
- ``recurrence_logits`` ``[N, 12]``: logits of ``q_k`` = probability of recurrence by the end
  of year ``k + 1`` (non-decreasing by construction for the default hazard head, not for the
  papers' independent sigmoids).

Here: logits to probabilities (:func:`softmax`, :func:`sigmoid`), years to the 12 yearly bins
(:func:`year_bin`), one predicted time per patient by the **single rule used for every
model** (:func:`predicted_years`, :func:`recurrence_years`), risk scores
(:func:`risk_from_survival`, :func:`risk_from_recurrence`) and curves
(:func:`survival_curve`, :func:`recurrence_free_curve`, :func:`curve_at_times`). Functions
take **probabilities** (numpy); all times are in **years** (the papers convert months to
years, 4D-ACFNet section 4.1).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import special

from crlm_lib.config import N_YEARS
from crlm_lib.curves import (  # the head formulas, shared with types and data below
    _as_pmf,
    _as_probs,
    year_bin,
)

Rule = Literal["argmax", "median"]


RULES: tuple[str, ...] = ("argmax", "median")


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
