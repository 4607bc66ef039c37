"""The point-metric table: the papers' TAA / MAE / MSE beside their censoring-aware versions,
D-calibration and the best constant prediction, for every model of a protocol.

Point estimates only (no bootstrap): the table is there to show what each metric says and what
a model adds over a constant, and it costs a fraction of a second per model. Pooled out-of-fold
predictions are scored per CV repeat, pooled over its folds (as Harrell's C and the papers'
metrics in the main table), and averaged over repeats. The censoring weights of a test fold
come from its own training patients (every cohort patient outside it); so does the constant
"always year k" (``point_metrics.best_constant_years``, one k per metric and training fold)
and, in the D-calibration column, the constant's curve: the training patients' Kaplan–Meier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sksurv.nonparametric import kaplan_meier_estimator

from crlm_lib import metrics as M
from crlm_lib import point_metrics as P
from crlm_lib.config import N_YEARS
from crlm_lib.evaluation._common import iter_test_sets, training_outcomes
from crlm_lib.evaluation.specs import is_control
from crlm_lib.types import PATIENT_ID, Cohort, Predictions, outcome_columns

__all__ = ["CONSTANT_KEY", "POINT_TABLE_METRICS", "point_metric_table"]

#: Row key of the best constant prediction (``specs.LABELS["constant"]``).
CONSTANT_KEY = "constant"
#: Columns of :func:`point_metric_table` (without the head prefix): the papers' metrics, the
#: censoring-aware ones, D-calibration's p-value.
POINT_TABLE_METRICS: tuple[str, ...] = (*P.POINT_METRICS, "dcal_p")


def _censoring_probs(frame: pd.DataFrame, cohort: Cohort, head: str) -> np.ndarray:
    """``G(t_i)`` of every row from the censoring Kaplan–Meier of its test set's training
    patients (NaN where it cannot be estimated)."""
    years, event = outcome_columns(head)
    g = np.full(len(frame), np.nan)
    for _, rows in iter_test_sets(frame):
        train = training_outcomes(cohort, frame[PATIENT_ID].iloc[rows])
        km = M.censoring_km(train[years].to_numpy(np.float64), train[event].to_numpy())
        if km is not None:
            g[rows] = P.censoring_prob_at(km, frame[years].to_numpy(np.float64)[rows])
    return g


def _predicted_years(preds: Predictions, head: str, rule: M.Rule) -> np.ndarray:
    if head == "os":
        return M.predicted_years(preds.survival_pmf, rule)
    return M.recurrence_years(preds.recurrence_cdf, rule)


def _model_repeat(frame: pd.DataFrame, cohort: Cohort, head: str, rule: M.Rule, n_bins: int):
    """Point metrics and D-calibration histogram of one repeat's (or one split's) frame."""
    preds = Predictions.from_frame(frame)
    time, event = preds.outcomes(head)
    g = _censoring_probs(frame, cohort, head)
    values = P.point_metrics(_predicted_years(preds, head, rule), time, event, g, rule)
    return values, P.d_calibration_histogram(time, event, preds.curve(head), n_bins)


def _km_at_year_ends(time: np.ndarray, event: np.ndarray) -> np.ndarray:
    """Kaplan–Meier event-free probability at the end of years 1..12 ``[12]``."""
    times, surv = kaplan_meier_estimator(event.astype(bool), time)
    idx = np.searchsorted(times, np.arange(1.0, N_YEARS + 1), side="right") - 1
    return np.where(idx >= 0, surv[np.maximum(idx, 0)], 1.0)


def _constant_repeat(frame: pd.DataFrame, cohort: Cohort, head: str, rule: M.Rule, n_bins: int):
    """The best constant of each metric, chosen on each test set's training patients, and the
    training Kaplan–Meier as its curve (D-calibration)."""
    years, event_col = outcome_columns(head)
    time = frame[years].to_numpy(np.float64)
    event = frame[event_col].to_numpy()
    g = _censoring_probs(frame, cohort, head)
    constant = {key: np.full(len(frame), np.nan) for key in P.POINT_METRICS}
    curve = np.ones((len(frame), N_YEARS))
    for _, rows in iter_test_sets(frame):
        train = training_outcomes(cohort, frame[PATIENT_ID].iloc[rows])
        t_tr, e_tr = train[years].to_numpy(np.float64), train[event_col].to_numpy()
        km = M.censoring_km(t_tr, e_tr)
        g_tr = P.censoring_prob_at(km, t_tr) if km is not None else np.ones(t_tr.size)
        for key, k in P.best_constant_years(t_tr, e_tr, g_tr, rule).items():
            constant[key][rows] = k
        curve[rows] = _km_at_year_ends(t_tr, e_tr)
    values = {
        key: P.point_metrics(constant[key], time, event, g, rule)[key] for key in P.POINT_METRICS
    }
    return values, P.d_calibration_histogram(time, event, curve, n_bins)


def _row(results: list[tuple[dict, np.ndarray]], head: str) -> dict[str, float]:
    """Mean over repeats of each metric; D-calibration of the histogram averaged over them."""
    row = {f"{head}_{k}": float(np.nanmean([r[0][k] for r in results])) for k in P.POINT_METRICS}
    dcal = P.d_calibration_test(np.mean([r[1] for r in results], axis=0))
    row[f"{head}_dcal_p"] = dcal.p_value
    return row


def point_metric_table(
    predictions: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]],
    cohort: Cohort,
    head: str = "os",
    rule: M.Rule = "argmax",
    n_bins: int = 10,
) -> pd.DataFrame:
    """Every model's point metrics, censoring-aware versions, D-calibration, and the constant.

    Parameters
    ----------
    predictions : mapping model key -> Predictions frame or list of frames (one per repeat)
        ``CVResult.predictions`` (pooled out-of-fold frames with ``repeat``/``fold``) or the
        papers' protocol's test frames (``run_paper_protocol``'s second output). The
        image-permutation controls (``<key>@ct-permuted``) are left out.
    cohort : Cohort
        For each test set's training patients (every cohort patient outside it).
    head : {"os", "dfs"}
    rule : {"argmax", "median"}
        The predicted time (``metrics.predicted_years``).
    n_bins : int
        Bins of D-calibration.

    Returns
    -------
    DataFrame
        Index: model keys, then :data:`CONSTANT_KEY` (from the frames of the model with the
        most repeats: every model shares the splits), the oracle last. Columns
        ``<head>_<metric>`` for :data:`POINT_TABLE_METRICS`: ``taa, mae, mse`` as the papers
        define them (all patients, censored times taken as event times), ``obs_taa,
        obs_mae`` (deaths observed), ``ipcw_taa, ipcw_mae`` (``point_metrics.ipcw_point_metrics``),
        ``hinge_mae`` and ``dcal_p`` (D-calibration's chi-square p-value).
    """
    frames = {
        key: [value] if isinstance(value, pd.DataFrame) else list(value)
        for key, value in predictions.items()
        if not is_control(key)
    }
    rows = {
        key: _row([_model_repeat(f, cohort, head, rule, n_bins) for f in fs], head)
        for key, fs in frames.items()
    }
    if frames:
        most = max(frames.values(), key=len)
        rows[CONSTANT_KEY] = _row(
            [_constant_repeat(f, cohort, head, rule, n_bins) for f in most], head
        )
    order = [k for k in rows if k != "oracle"] + (["oracle"] if "oracle" in rows else [])
    return pd.DataFrame.from_dict(rows, orient="index").loc[order]
