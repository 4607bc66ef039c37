"""scikit-survival's IPCW and concordance formulas on arrays already validated, with a
censoring fit reused (:class:`~crlm_lib.metrics.censoring.CensoringKM`).

Each function repeats one function of scikit-survival 0.28 (``concordance_index_censored``,
``concordance_index_ipcw``, ``integrated_brier_score``, ``cumulative_dynamic_auc``) without
its input validation and without refitting ``G``, for the thousands of bootstrap replicates of
a protocol; the tests compare every one with scikit-survival's own function. Each raises
``ValueError`` in the edge cases where scikit-survival raises (no event, no comparable pair,
times outside the test follow-up): :func:`crlm_lib.metrics.survival.survival_metrics` then runs
scikit-survival itself, which gives the same error with its own message. Any other exception
is a bug and propagates.
"""

from __future__ import annotations

import numpy as np

from crlm_lib.metrics.censoring import CensoringKM


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
    if n < 2:
        raise ValueError("need two samples")
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
