"""Concordance beyond scikit-survival's: Antolini's time-dependent C and Uno's C under the two
tie conventions of the censoring weights.

- :func:`antolini_c`: the time-dependent concordance of Antolini, Boracchi & Biganzoli (2005),
  for models that predict a whole curve: a pair is concordant when the patient who had the
  event first had the lower predicted event-free probability *at that time*. It needs no
  single risk score, so models whose curves cross are not forced into one; for curves that
  never cross (proportional hazards) it equals Harrell's C of any score that orders them.
- :func:`uno_c_conventions`: Uno's C (Uno et al. 2011) with the inverse-probability-of-censoring
  weight of an event at ``T`` taken as ``G(T)`` (scikit-survival's ``concordance_index_ipcw``,
  the convention of every table here: ``metrics.survival_metrics``) or ``G(T-)`` (censorings
  at ``T`` counted after the event, as in Gerds & Schumacher's IPCW Brier score). The two
  differ only where censorings tie with events: with follow-up recorded in whole months, as
  in the real clinical table, ties are the rule.

Times are in years; curves are known at the 12 year ends (``metrics.survival_curve``,
``metrics.recurrence_free_curve``) and read between them by ``metrics.curve_at_times``.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from crlm_lib import metrics as M
from crlm_lib.config import N_YEARS

__all__ = ["antolini_c", "uno_c_conventions", "round_to_resolution", "MONTH_YEARS"]

#: One month in years: the resolution of the real clinical table's follow-up times.
MONTH_YEARS: float = 1.0 / 12.0


def _survival_arrays(time, event, surv_at_years) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    t = np.asarray(time, dtype=np.float64).ravel()
    e = np.asarray(event).astype(bool).ravel()
    s = np.asarray(surv_at_years, dtype=np.float64)
    if t.shape != e.shape or s.shape != (t.size, N_YEARS):
        raise ValueError(
            f"arrays disagree: time {t.shape}, event {e.shape}, surv_at_years {s.shape} "
            f"(expected [N, {N_YEARS}])"
        )
    return t, e, s


def antolini_c(
    time: np.ndarray,
    event: np.ndarray,
    surv_at_years: np.ndarray,
    ties: Literal["half", "discordant"] = "half",
    tied_tol: float = 1e-8,
) -> float:
    """Antolini's time-dependent concordance ``C_td`` of predicted curves.

    ``C_td = sum_{i,j} 1(S_i(t_i) < S_j(t_i)) comp_ij / sum_{i,j} comp_ij`` with
    ``comp_ij = event_i * (t_i < t_j or (t_i == t_j and not event_j))`` (Antolini et al.,
    Stat Med 2005; the comparable pairs of Harrell's C as scikit-survival counts them).

    Parameters
    ----------
    time : array ``[N]``, years
    event : array ``[N]`` (1 = event)
    surv_at_years : array ``[N, 12]``
        Event-free probability at the end of years 1..12; read at ``t_i`` by linear
        interpolation (``metrics.curve_at_times``).
    ties : {"half", "discordant"}
        A pair whose two curves are equal at ``t_i`` (within ``tied_tol``) counts 1/2
        (``"half"``, default, as ties in Harrell's C) or 0 (``"discordant"``, with an exact
        ``<``: pycox's ``concordance_td('antolini')``). Choice: with yearly curves many pairs
        tie (the Fong score's six curves), and counting them as discordant would rank a
        model with coarse curves below chance.

    Returns
    -------
    float
        NaN with a ``metrics.MetricWarning`` when there is no comparable pair.

    Examples
    --------
    >>> s = np.array([np.linspace(0.9, 0.1, 12), np.linspace(0.95, 0.5, 12)])
    >>> antolini_c(np.array([2.0, 5.0]), np.array([1, 0]), s)
    1.0
    """
    if ties not in ("half", "discordant"):
        raise ValueError(f"ties must be 'half' or 'discordant', not {ties!r}")
    t, e, s = _survival_arrays(time, event, surv_at_years)
    rows = np.flatnonzero(e)
    t_i = t[rows][:, None]
    comparable = (t[None, :] > t_i) | ((t[None, :] == t_i) & ~e[None, :])
    if not comparable.any():
        return M._warn_nan("c_antolini", "no comparable pairs")
    at_t_i = M.curve_at_times(s, t[rows]).T  # [events, N]: S_j(t_i)
    own = at_t_i[np.arange(rows.size), rows][:, None]  # S_i(t_i)
    if ties == "discordant":
        numerator = float(((own < at_t_i) & comparable).sum())
    else:
        tied = (np.abs(at_t_i - own) <= tied_tol) & comparable
        numerator = float(((own < at_t_i) & comparable & ~tied).sum() + 0.5 * tied.sum())
    return numerator / float(comparable.sum())


def round_to_resolution(time_years: np.ndarray, resolution_years: float) -> np.ndarray:
    """Times rounded to the nearest multiple of ``resolution_years`` (e.g. :data:`MONTH_YEARS`:
    whole months, as the real clinical table records follow-up)."""
    if not resolution_years > 0:
        raise ValueError(f"resolution_years must be positive, got {resolution_years}")
    t = np.asarray(time_years, dtype=np.float64)
    return np.round(t / resolution_years) * resolution_years


def uno_c_conventions(
    train_time: np.ndarray,
    train_event: np.ndarray,
    test_time: np.ndarray,
    test_event: np.ndarray,
    risk: np.ndarray,
    horizon_years: float = M.HORIZON_YEARS,
    resolution_years: float | None = None,
) -> dict[str, float]:
    """Uno's C with the censoring weight of an event at ``T`` as ``G(T)`` and as ``G(T-)``.

    ``C = sum_ij w_i 1(t_i < t_j, t_i < tau) 1(risk_i > risk_j) / sum_ij w_i 1(...)`` with
    ``w_i = event_i / G(t_i)^2`` (Uno et al., Stat Med 2011), ``G`` the Kaplan–Meier
    estimate of the censoring distribution on the training patients (scikit-survival's
    ``CensoringDistributionEstimator``: censorings at an event time are at risk after the
    events, so ``G`` steps down at ``t`` only for censorings at ``t``). Weighting by ``G(t)``
    (scikit-survival, the convention of ``metrics.survival_metrics`` and of every table)
    divides an event by the probability of being uncensored *after* the censorings tied with
    it; ``G(t-)`` by the probability just before them, the probability that the event could
    be observed. Truncation and support exactly as in ``metrics.survival_metrics``
    (``tau = min(horizon, support)``, follow-up beyond the support censored at it), so
    ``c_uno_g_t`` equals its ``c_uno`` to the last bit on the same times.

    Parameters
    ----------
    train_time, train_event : arrays ``[N_train]`` (years; 1 = event)
    test_time, test_event : arrays ``[N]``
    risk : array ``[N]``, higher = earlier event
    horizon_years : float
        The fixed horizon of Uno's C (default ``metrics.HORIZON_YEARS``, 5 years).
    resolution_years : float, optional
        Round every time (training and test) to this resolution first
        (:func:`round_to_resolution`; :data:`MONTH_YEARS` for the real table's months).

    Returns
    -------
    dict
        ``c_uno_g_t``, ``c_uno_g_t_minus`` (NaN with a warning where undefined), ``tau``.
    """
    t_tr, t_te = (np.asarray(x, dtype=np.float64).ravel() for x in (train_time, test_time))
    if resolution_years is not None:
        t_tr, t_te = (round_to_resolution(x, resolution_years) for x in (t_tr, t_te))
    e_te = np.asarray(test_event).astype(bool).ravel()
    risk = np.asarray(risk, dtype=np.float64).ravel()
    km = M.censoring_km(t_tr, train_event)
    if km is None:
        why = "no usable training data for the censoring distribution"
        return {
            "c_uno_g_t": M._warn_nan("c_uno", why),
            "c_uno_g_t_minus": math.nan,
            "tau": math.nan,
        }
    tau = float(min(horizon_years, km.support))
    beyond = t_te > km.support
    t_cut, e_cut = np.where(beyond, km.support, t_te), e_te & ~beyond
    counted = e_cut & (t_cut < tau)
    out: dict[str, float] = {"tau": tau}
    for key, g_of in (("c_uno_g_t", km.prob), ("c_uno_g_t_minus", km.prob_before)):
        weights = np.zeros(t_cut.size)
        weights[counted] = np.square(1.0 / g_of(t_cut[counted]))
        try:
            out[key] = M._concordance(e_cut, t_cut, risk, weights)
        except ValueError as exc:
            out[key] = M._warn_nan(key, str(exc))
    return out
