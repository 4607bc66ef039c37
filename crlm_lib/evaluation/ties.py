"""Sensitivity of Uno's C to the tie convention of its censoring weights.

Every table weights an event at ``T`` by ``1 / G(T)^2`` (scikit-survival's
``concordance_index_ipcw``; ``concordance.uno_c_conventions`` says why the choice matters).
:func:`tie_sensitivity_table` puts beside it, for every model of a protocol, Uno's C with the
follow-up rounded to whole months, as the real clinical table records it, under both
conventions ``G(T)`` and ``G(T-)``: the month resolution makes events and censorings tie, and
the difference of the two columns is what the convention can move.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from crlm_lib import concordance as C
from crlm_lib.evaluation._common import iter_test_sets, training_outcomes
from crlm_lib.evaluation.specs import is_control
from crlm_lib.types import PATIENT_ID, Cohort, Predictions, outcome_columns

__all__ = ["TIE_COLUMNS", "tie_sensitivity_table"]

#: Columns per head: Uno's C on the recorded times (the tables' value), and at the given
#: resolution with ``G(T)`` and ``G(T-)``.
TIE_COLUMNS: tuple[str, ...] = ("c_uno", "c_uno_months_g_t", "c_uno_months_g_t_minus")


def _fold_average(frame: pd.DataFrame, cohort: Cohort, head: str, resolution: float | None):
    """Uno's C under both conventions per test set (its training patients' censoring),
    averaged over the test sets weighted by their size (NaN sets skipped), as
    ``metrics.all_metrics`` averages its IPCW metrics over CV folds."""
    preds = Predictions.from_frame(frame)
    time, event = preds.outcomes(head)
    risk = preds.ranking_score(head)
    years, event_col = outcome_columns(head)
    per_set: list[tuple[int, dict[str, float]]] = []
    for _, rows in iter_test_sets(frame):
        train = training_outcomes(cohort, frame[PATIENT_ID].iloc[rows])
        args = (train[years].to_numpy(np.float64), train[event_col].to_numpy())
        per_set.append(
            (rows.size, C.uno_c_conventions(*args, time[rows], event[rows], risk[rows],
                                            resolution_years=resolution))
        )  # fmt: skip
    out = {}
    for key in ("c_uno_g_t", "c_uno_g_t_minus"):
        values = np.array([m[key] for _, m in per_set], dtype=np.float64)
        weights = np.array([n for n, _ in per_set], dtype=np.float64)
        ok = np.isfinite(values)
        out[key] = float(np.average(values[ok], weights=weights[ok])) if ok.any() else math.nan
    return out


def tie_sensitivity_table(
    predictions: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]],
    cohort: Cohort,
    heads: Sequence[str] = ("os", "dfs"),
    resolution_years: float = C.MONTH_YEARS,
) -> pd.DataFrame:
    """Uno's C of every model on the recorded times and at ``resolution_years`` under ``G(T)``
    and ``G(T-)`` (point estimates, mean over CV repeats).

    Parameters
    ----------
    predictions : mapping model key -> Predictions frame or list of frames (one per repeat)
        ``CVResult.predictions`` or the papers' protocol's test frames; the
        image-permutation controls are left out.
    cohort : Cohort
        For each test set's training patients (every cohort patient outside it).
    heads : which heads
    resolution_years : float
        Rounding of every time before the censoring fit (default one month).

    Returns
    -------
    DataFrame
        Index: model keys (oracle last); columns ``<head>_<c>`` for ``c`` in
        :data:`TIE_COLUMNS`: ``c_uno`` (recorded times, ``G(T)``: the tables' value up to the
        training set, which here is every patient outside the test set),
        ``c_uno_months_g_t`` and ``c_uno_months_g_t_minus``.
    """
    rows: dict[str, dict[str, float]] = {}
    for key, value in predictions.items():
        if is_control(key):
            continue
        frames = [value] if isinstance(value, pd.DataFrame) else list(value)
        row: dict[str, float] = {}
        for head in heads:
            recorded = [_fold_average(f, cohort, head, None)["c_uno_g_t"] for f in frames]
            rounded = [_fold_average(f, cohort, head, resolution_years) for f in frames]
            row[f"{head}_c_uno"] = float(np.nanmean(recorded))
            for conv in ("g_t", "g_t_minus"):
                row[f"{head}_c_uno_months_{conv}"] = float(
                    np.nanmean([r[f"c_uno_{conv}"] for r in rounded])
                )
        rows[key] = row
    order = [k for k in rows if k != "oracle"] + (["oracle"] if "oracle" in rows else [])
    return pd.DataFrame.from_dict(rows, orient="index").loc[order]
