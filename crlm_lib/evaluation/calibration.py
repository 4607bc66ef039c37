"""Calibration (predicted vs Kaplan–Meier observed risk per risk group) and Kaplan–Meier curves
by predicted risk with a log-rank test (lifelines). The figures are drawn by
:mod:`crlm_lib.plots` (:func:`~crlm_lib.plots.plot_calibration`,
:func:`~crlm_lib.plots.plot_km_by_risk`); ``plot_calibration`` is re-exported here."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib.config import N_YEARS
from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.types import PATIENT_ID, Predictions, outcome_columns


def _curve_and_risk(pred: pd.DataFrame, head: str) -> tuple[np.ndarray, np.ndarray]:
    """Event-free probability at year ends ``[N, 12]`` and risk ``[N]`` of a frame's head."""
    p = Predictions.from_frame(pred)
    return p.curve(head), p.ranking_score(head)


def default_n_groups(n: int) -> int:
    """Risk groups of the calibration table: deciles when ``n >= 100``, tertiles otherwise.

    Choice: with fewer than 100 patients a decile holds < 10 patients and its Kaplan–Meier
    estimate at 3–5 years is mostly noise; tertiles keep >= ~7 per group for the 20-patient
    test set of the paper protocol.
    """
    return 10 if n >= 100 else 3


def calibration_table(
    predictions: pd.DataFrame,
    horizon_years: Sequence[float] = (1.0, 3.0, 5.0),
    groups: int | None = None,
    head: str = "os",
) -> pd.DataFrame:
    """Predicted vs observed (Kaplan–Meier) event risk at each horizon per risk group.

    Patients are ranked by their predicted risk *at that horizon* (``1 - S(h)``) and cut into
    ``groups`` quantile groups (default :func:`default_n_groups`). Per group: mean predicted
    risk and ``1 - KM(h)`` with its 95% confidence interval (lifelines, Greenwood exponential
    formula). ``S(h)`` between year ends is the step function of ``metrics.survival_curve``.

    Parameters
    ----------
    predictions : DataFrame (Predictions frame; pooled OOF for CV)
    horizon_years : years
    groups : int, optional
    head : {"os", "dfs"}

    Returns
    -------
    DataFrame
        ``horizon_years, group (1 = lowest risk), n, n_events, predicted, observed,
        observed_low, observed_high``; ``len(horizon_years) * groups`` rows.
    """
    from lifelines import KaplanMeierFitter

    curve, _ = _curve_and_risk(predictions, head)
    years_col, event_col = outcome_columns(head)
    time = predictions[years_col].to_numpy(float)
    event = predictions[event_col].to_numpy(int)
    n = len(predictions)
    g = groups or default_n_groups(n)
    rows = []
    for h in horizon_years:
        k = int(np.floor(h))
        s_h = np.ones(n) if k < 1 else curve[:, min(k, N_YEARS) - 1]
        risk_h = 1.0 - s_h
        ranks = pd.Series(risk_h).rank(method="first").to_numpy()
        grp = np.minimum((ranks - 1) * g // n, g - 1).astype(int)
        for j in range(g):
            m = grp == j
            kmf = KaplanMeierFitter().fit(time[m], event[m])
            s = float(kmf.survival_function_at_times([h]).iloc[0])
            ci = kmf.confidence_interval_survival_function_
            idx = ci.index.searchsorted(h, side="right") - 1
            lo, hi = ci.iloc[max(idx, 0)].to_numpy(float) if idx >= 0 else (1.0, 1.0)
            rows.append(
                {
                    "horizon_years": float(h),
                    "group": j + 1,
                    "n": int(m.sum()),
                    "n_events": int(event[m].sum()),
                    "predicted": float(risk_h[m].mean()),
                    "observed": 1.0 - s,
                    "observed_low": 1.0 - float(hi),
                    "observed_high": 1.0 - float(lo),
                }
            )
    return pd.DataFrame(rows)


@dataclass
class KMByRisk:
    """Kaplan–Meier curves by predicted-risk group: ``table`` (patient, group), log-rank test."""

    groups: pd.DataFrame
    p_value: float
    test_statistic: float
    figure: Any = None


def km_by_predicted_risk(
    predictions: pd.DataFrame,
    split: str = "median",
    head: str = "os",
    plot: bool = True,
    title: str = "",
) -> KMByRisk:
    """Kaplan–Meier curves of patients split by predicted risk, with a log-rank test.

    Risk = ``types.Predictions.ranking_score``: the predicted probability of death by 5 years
    (OS head) or of recurrence by 3 years (DFS head).
    ``split="median"``: low / high (above the median); ``"tertiles"``: low / mid / high.
    The p-value is the lifelines log-rank test (``multivariate_logrank_test`` across groups).

    Returns
    -------
    KMByRisk
        ``groups`` (``patient_id, risk, group, time_years, event``), ``p_value``,
        ``test_statistic`` and a matplotlib ``figure`` (x: years after resection; y: survival
        probability) when ``plot``.
    """
    from lifelines.statistics import multivariate_logrank_test

    _, risk = _curve_and_risk(predictions, head)
    n_g = {"median": 2, "tertiles": 3}.get(split)
    if n_g is None:
        raise EvaluationError(f"split must be 'median' or 'tertiles', not {split!r}")
    names = ["low", "high"] if n_g == 2 else ["low", "mid", "high"]
    ranks = pd.Series(risk).rank(method="first").to_numpy()
    grp = np.minimum((ranks - 1) * n_g // len(risk), n_g - 1).astype(int)
    years_col, event_col = outcome_columns(head)
    time = predictions[years_col].to_numpy(float)
    event = predictions[event_col].to_numpy(int)
    labels = np.array(names)[grp]
    res = multivariate_logrank_test(time, labels, event)
    table = pd.DataFrame(
        {
            PATIENT_ID: predictions[PATIENT_ID].to_numpy(),
            "risk": risk,
            "group": labels,
            "time_years": time,
            "event": event,
        }
    )
    fig = None
    if plot:
        from crlm_lib.plots import plot_km_by_risk

        title = title or f"Kaplan–Meier by predicted risk (log-rank p = {res.p_value:.3g})"
        fig = plot_km_by_risk(time, event, labels, names, head=head, title=title)
    return KMByRisk(table, float(res.p_value), float(res.test_statistic), fig)


def plot_calibration(table: pd.DataFrame, title: str = "", ax=None):
    """:func:`crlm_lib.plots.plot_calibration` (kept here for ``evaluation.plot_calibration``)."""
    from crlm_lib.plots import plot_calibration as plot

    return plot(table, title=title, ax=ax)
