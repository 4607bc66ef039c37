"""Censoring-aware discrimination and calibration of one test set: Harrell's and Uno's C,
the integrated Brier score and the cumulative/dynamic AUC (:func:`survival_metrics`).

The numbers are scikit-survival's: the fast paths of :mod:`crlm_lib.metrics.sksurv_fast` where
the inputs are finite, scikit-survival's own functions where they are not or where a fast path
reports an edge case (``ValueError``). A metric that cannot be estimated on the data is NaN
with a :class:`~crlm_lib.metrics.MetricWarning`, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from crlm_lib.config import N_YEARS, with_options
from crlm_lib.metrics._common import _warn_nan
from crlm_lib.metrics.censoring import CensoringKM, censoring_km
from crlm_lib.metrics.outputs import _curve_at
from crlm_lib.metrics.sksurv_fast import _auc_fast, _harrell_fast, _ibs_fast, _uno_fast

#: Fixed horizon (years) of Uno's C and of the integrated Brier score.
HORIZON_YEARS: float = 5.0


def _finite(*arrays: np.ndarray) -> bool:
    return all(bool(np.isfinite(a).all()) for a in arrays)


def _fast_or_reference(fast: Callable[[], float], reference: Callable[[], Any], ok: bool):
    """``fast()`` (validated arrays, cached censoring fit) where the inputs are finite, else
    ``reference()`` (the scikit-survival function itself).

    A fast path raises ``ValueError`` exactly in the edge cases where scikit-survival raises
    (no event, no comparable pair, times outside the follow-up); ``reference()`` then runs so
    that the error, caught by the caller, carries scikit-survival's own message. Any other
    exception of the fast path is a bug and propagates.
    """
    if ok:
        try:
            return fast()
        except ValueError:
            pass
    return reference()


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
    except ValueError as exc:  # NoComparablePairException too (all censored, n < 2)
        return _warn_nan("c_harrell", str(exc))


@dataclass(frozen=True)
class SurvivalMetricOptions:
    """Which metrics :func:`survival_metrics` computes and at which times (each field also a
    keyword of it).

    Attributes
    ----------
    horizons : years
        Time points of the cumulative/dynamic AUC (``auc_<h>y`` keys).
    auc_from : {"curve", "risk"}
        Marker of the AUC at horizon ``h``: ``1 - S(h)`` from the curve (default, the
        time-dependent prediction of the model) or the time-independent ``risk``.
    horizon_years : float
        Fixed horizon of Uno's C and of the IBS (default :data:`HORIZON_YEARS` = 5 years).
    harrell : bool
        Compute Harrell's C (``False`` leaves it out, e.g. per CV fold when it is pooled).
    """

    horizons: Sequence[float] = (1, 3, 5)
    auc_from: Literal["curve", "risk"] = "curve"
    horizon_years: float = HORIZON_YEARS
    harrell: bool = True


def survival_metrics(
    train_time: np.ndarray,
    train_event: np.ndarray,
    test_time: np.ndarray,
    test_event: np.ndarray,
    risk: np.ndarray,
    surv_at_years: np.ndarray,
    options: SurvivalMetricOptions | None = None,
    *,
    censoring: CensoringKM | None = None,
    **changes: Any,
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
    options : SurvivalMetricOptions, optional
        AUC horizons and marker, the horizon of Uno's C and the IBS, whether Harrell's C is
        computed (defaults when omitted).
    censoring : CensoringKM, optional
        The censoring distribution already fitted on ``(train_time, train_event)``
        (:class:`CensoringKM`, e.g. from :class:`TrainingOutcomes`), to score many test sets
        against one training set without refitting it (default: fitted here).
    **changes
        Fields of :class:`SurvivalMetricOptions` as keywords (``horizons=(3,)``), applied
        over ``options``; a keyword that is no field raises ``TypeError`` naming the valid
        ones.

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
    opts = with_options(SurvivalMetricOptions, options, changes)
    horizons, horizon_years = opts.horizons, opts.horizon_years
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

    if opts.harrell:
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
    out.update(_aucs(cut, risk, surv, horizons, opts.auc_from))
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
    except ValueError as exc:  # scikit-survival's edge cases
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
    except ValueError as exc:  # scikit-survival's edge cases
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
        except ValueError as exc:  # scikit-survival's edge cases
            for h in valid:
                out[f"auc_{_h(h)}y"] = _warn_nan(f"auc_{_h(h)}y", str(exc))
    return out


def _h(h: float) -> str:
    return str(int(h)) if float(h).is_integer() else str(h).replace(".", "p")
