"""Every metric of one Predictions table at once (:func:`all_metrics`): the papers' TAA / MAE /
MSE and the censoring-aware metrics of both heads, pooled or per cross-validation fold."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib.metrics.censoring import TrainingOutcomes
from crlm_lib.metrics.outputs import Rule, predicted_years, recurrence_years
from crlm_lib.metrics.paper import paper_metrics, paper_metrics_observed
from crlm_lib.metrics.survival import _harrell, survival_metrics
from crlm_lib.types import CV_COLS, Predictions


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
    preds = Predictions.of(predictions_df)  # a caller may pass it validated
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
