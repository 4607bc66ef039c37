"""The papers' metrics: TAA, MAE and MSE of one predicted time per patient (4D-ACFNet
Eq. (5), STAR Eq. (3)), on every patient as the papers do (:func:`paper_metrics`) and on the
observed events only (:func:`paper_metrics_observed`). Times in years."""

from __future__ import annotations

import math

import numpy as np

from crlm_lib.metrics.outputs import Rule, target_years


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
