"""The array formulas of the two heads that every layer shares: yearly bins of a time, survival
and recurrence-free curves at year ends, and the risk scores read from them.

Shapes: ``survival_probs`` ``[N, 12]`` (probability of death in postoperative year ``k + 1``;
rows sum to at most 1, the rest is ``S(12)``, survival beyond year 12) and ``recurrence_probs``
``[N, 12]`` (probability of recurrence by the end of year ``k + 1``). Times in years.

They sit below :mod:`crlm_lib.types` (whose ``Predictions`` reads its curves and scores here),
:mod:`crlm_lib.data.dataset` (the training targets' year bins) and :mod:`crlm_lib.metrics`
(which re-exports every name), so that none of those calls up the layers.
"""

from __future__ import annotations

import numpy as np

from crlm_lib.config import N_YEARS

__all__ = [
    "beyond_horizon_mass",
    "recurrence_free_curve",
    "risk_from_recurrence",
    "risk_from_survival",
    "survival_curve",
    "year_bin",
]


def _as_probs(probs: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(probs, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != N_YEARS:
        raise ValueError(f"{name} must have shape [N, {N_YEARS}], got {arr.shape}")
    if np.any(arr < -1e-9) or np.any(arr > 1 + 1e-9) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must hold probabilities in [0, 1] (pass logits through softmax)")
    return arr


def _as_pmf(survival_probs: np.ndarray) -> np.ndarray:
    """Survival-head pmf ``[N, 12]`` whose rows sum to at most 1 (the rest is beyond year 12)."""
    p = _as_probs(survival_probs, "survival_probs")
    total = p.sum(axis=1)
    if np.any(total > 1 + 1e-4):  # float32 softmax rows may exceed 1 by rounding
        raise ValueError(
            f"survival_probs rows must sum to at most 1 (max {total.max():.6f}); the mass missing "
            "from 1 is the probability of surviving beyond year 12"
        )
    return p


def beyond_horizon_mass(survival_probs: np.ndarray) -> np.ndarray:
    """Probability of surviving beyond year 12, ``S(12) = 1 - sum_k p_k`` ``[N]``.

    The deep models' default 13-class softmax holds it as its 13th class (the papers'
    12-class form has none: 0 for it); the clinical anchors and the oracle keep their
    ``S(12)`` out of the 12 bins (``models.clinical.pmf_from_survival``); every one of them
    writes it as the ``surv_p_beyond`` column, and it never enters the argmax of
    :func:`crlm_lib.metrics.predicted_years`.
    """
    p = _as_pmf(survival_probs)
    return np.clip(1.0 - p.sum(axis=1), 0.0, 1.0)


def year_bin(years: np.ndarray, n_years: int = N_YEARS) -> np.ndarray:
    """Whole-year bin of a time: ``min(floor(years), 11)`` (float array, values 0..11).

    The one place that turns years into the yearly bins: ``crlm_lib.data.dataset.year_bin``
    (``survival_bin`` / ``recurrence_bin``) calls it. Bin ``k`` is postoperative year ``k + 1``,
    the interval ``[k, k + 1)`` years; follow-up beyond ``n_years`` years falls in the last bin.
    """
    y = np.asarray(years, dtype=np.float64)
    return np.minimum(np.floor(y), n_years - 1).astype(np.float64)


def risk_from_survival(survival_probs: np.ndarray) -> np.ndarray:
    """Risk score from the survival head: minus the 12-year restricted mean survival time (years).

    ``risk = - [sum_k (k + 0.5) p_k + 12 S(12)]`` (each year's deaths placed at mid-year, the
    beyond-the-horizon mass :func:`beyond_horizon_mass` at 12 years). For a softmax head
    (``S(12) = 0``) this is minus the expected year of death. Higher risk = earlier death, the
    convention of ``sksurv.metrics``.
    """
    p = _as_pmf(survival_probs)
    mid = np.arange(N_YEARS, dtype=np.float64) + 0.5
    return -((p * mid).sum(axis=1) + N_YEARS * np.clip(1.0 - p.sum(axis=1), 0.0, None))


def risk_from_recurrence(recurrence_probs: np.ndarray, horizon_years: int | None = 3) -> np.ndarray:
    """Risk score from the recurrence head.

    Default: the predicted probability of recurrence by the end of year 3, ``Q_2`` (with the
    running maximum of :func:`crlm_lib.metrics.recurrence_years`), a clinically standard horizon that lies
    before the DFS median is passed by most of the cohort's follow-up. ``horizon_years=None``
    gives the mean of ``Q_k`` over the 12 years (the area under the cumulative recurrence
    curve, i.e. 12 minus the restricted mean recurrence-free time): the alternative that does
    not depend on a horizon.
    """
    q = np.maximum.accumulate(_as_probs(recurrence_probs, "recurrence_probs"), axis=1)
    if horizon_years is None:
        return q.mean(axis=1)
    if not 1 <= horizon_years <= N_YEARS:
        raise ValueError(f"horizon_years must be in 1..{N_YEARS}, got {horizon_years}")
    return q[:, int(horizon_years) - 1]


def survival_curve(survival_probs: np.ndarray) -> np.ndarray:
    """Survival probability at the end of years 1..12: ``S_k = 1 - sum_{j<=k} p_j``.

    Returns
    -------
    array ``[N, 12]``, non-increasing in k, clipped to [0, 1].
    """
    p = _as_pmf(survival_probs)
    return np.clip(1.0 - np.cumsum(p, axis=1), 0.0, 1.0)


def recurrence_free_curve(recurrence_probs: np.ndarray) -> np.ndarray:
    """Recurrence-free probability at the end of years 1..12: ``1 - max_{j<=k} q_j``."""
    q = np.maximum.accumulate(_as_probs(recurrence_probs, "recurrence_probs"), axis=1)
    return np.clip(1.0 - q, 0.0, 1.0)
