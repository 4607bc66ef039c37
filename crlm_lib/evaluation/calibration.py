"""Calibration (predicted vs Kaplan–Meier observed risk per risk group; calibration slope,
intercept and ICI at the risk horizon) and Kaplan–Meier curves by predicted risk with a
log-rank test (lifelines). The figures are drawn by
:mod:`crlm_lib.plots` (:func:`~crlm_lib.plots.plot_calibration`,
:func:`~crlm_lib.plots.plot_km_by_risk`); ``plot_calibration`` is re-exported here."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib.config import N_YEARS
from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.evaluation.specs import is_control
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


# --------------------------------------------------------------------------------------------
# calibration slope, intercept and ICI at a fixed horizon
# --------------------------------------------------------------------------------------------

#: Columns of :func:`calibration_metrics` (without the head prefix), in table order.
CALIBRATION_METRICS: tuple[str, ...] = ("cal_slope", "cal_intercept", "ici")
_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def _cloglog(p: np.ndarray) -> np.ndarray:
    return np.log(-np.log1p(-np.clip(p, _EPS, 1 - _EPS)))


def rcs_basis(x: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Restricted cubic spline basis of ``x`` (Harrell's ``rcs``): ``[N, len(knots) - 1]``.

    Column 0 is ``x``; column ``j`` is Harrell's nonlinear term
    ``(x - t_j)+^3 - (x - t_{k-1})+^3 (t_k - t_j)/(t_k - t_{k-1})
    + (x - t_k)+^3 (t_{k-1} - t_j)/(t_k - t_{k-1})``, divided by ``(t_k - t_1)^2``: linear
    beyond the outer knots.
    """
    x = np.asarray(x, dtype=float)
    t = np.asarray(knots, dtype=float)
    k = len(t)
    scale = (t[-1] - t[0]) ** 2
    cols = [x]
    for j in range(k - 2):
        term = (
            np.maximum(x - t[j], 0) ** 3
            - np.maximum(x - t[-2], 0) ** 3 * (t[-1] - t[j]) / (t[-1] - t[-2])
            + np.maximum(x - t[-1], 0) ** 3 * (t[-2] - t[j]) / (t[-1] - t[-2])
        )
        cols.append(term / scale)
    return np.stack(cols, axis=1)


def _observed_status(
    time: np.ndarray, event: np.ndarray, horizon_years: float
) -> tuple[np.ndarray, np.ndarray]:
    """Event status by the horizon and its inverse-probability-of-censoring weight.

    ``y = 1`` for an event at or before the horizon, ``0`` for follow-up beyond it; a patient
    censored before the horizon has an unknown status (weight 0). Weights ``1 / G(min(T, h))``
    with ``G`` the Kaplan–Meier estimate of the censoring distribution of these patients
    (``metrics.CensoringKM``, scikit-survival's ``G(T)`` convention).
    """
    from crlm_lib.metrics import CensoringKM

    y = ((time <= horizon_years) & (event == 1)).astype(float)
    known = (time > horizon_years) | (event == 1)
    g = CensoringKM(time, event).prob(np.minimum(time, horizon_years))
    weight = np.where(known & (g > 0), 1.0 / np.where(g > 0, g, 1.0), 0.0)
    return y, weight


#: A recalibration coefficient whose standard error exceeds this is reported as not estimable.
MAX_LOGISTIC_SE = 100.0


def _weighted_logistic(y, weight, x, offset=None) -> np.ndarray:
    """Coefficients of a weighted logistic regression (statsmodels GLM, binomial); NaN when
    the fit does not converge, the outcome is perfectly separated (a few events: the
    maximum-likelihood estimate does not exist) or a standard error exceeds
    :data:`MAX_LOGISTIC_SE` (quasi-separation)."""
    import statsmodels.api as sm
    from statsmodels.tools.sm_exceptions import PerfectSeparationWarning

    keep = weight > 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PerfectSeparationWarning)
        fit = sm.GLM(
            y[keep], x[keep], family=sm.families.Binomial(), var_weights=weight[keep],
            offset=None if offset is None else offset[keep],
        ).fit()  # fmt: skip
    separated = any(issubclass(w.category, PerfectSeparationWarning) for w in caught)
    # quasi-separation in a small test set converges to estimates in the millions with standard
    # errors to match, and no warning: those are not estimates either
    bse = np.asarray(fit.bse, dtype=float)
    unstable = not np.all(np.isfinite(bse)) or bool(np.any(bse > MAX_LOGISTIC_SE))
    if separated or not fit.converged or unstable:
        return np.full(x.shape[1], np.nan)
    return np.asarray(fit.params, dtype=float)


def _ici(risk: np.ndarray, time: np.ndarray, event: np.ndarray, horizon_years: float) -> float:
    """Austin et al. (2020)'s ICI: mean ``|P - P_obs|``, ``P_obs`` from a Cox model of the
    outcome on a 3-knot restricted cubic spline of ``cloglog(P)`` read at the horizon."""
    from lifelines import CoxPHFitter, KaplanMeierFitter

    cll = _cloglog(risk)
    if np.ptp(cll) < 1e-8:  # one predicted risk: the calibration curve is the Kaplan–Meier
        km = KaplanMeierFitter().fit(time, event)
        observed = 1.0 - float(km.survival_function_at_times([horizon_years]).iloc[0])
        return float(np.mean(np.abs(risk - observed)))
    knots = np.quantile(cll, [0.10, 0.50, 0.90])
    basis = rcs_basis(cll, knots) if np.ptp(knots) > 1e-8 else cll[:, None]
    frame = pd.DataFrame(basis, columns=[f"s{j}" for j in range(basis.shape[1])])
    frame["T"], frame["E"] = np.maximum(time, 1e-6), event
    cox = CoxPHFitter(penalizer=1e-6).fit(frame, duration_col="T", event_col="E")
    surv = cox.predict_survival_function(frame.drop(columns=["T", "E"]), times=[horizon_years])
    observed = 1.0 - surv.to_numpy(dtype=float).ravel()
    return float(np.mean(np.abs(risk - observed)))


def horizon_calibration(
    risk: np.ndarray, time: np.ndarray, event: np.ndarray, horizon_years: float
) -> dict[str, float]:
    """Calibration slope, intercept and ICI of predicted risks by a fixed horizon.

    ``risk`` is each patient's predicted probability of the event by ``horizon_years``;
    ``time`` (years) and ``event`` (1 = event) the observed outcome.

    * Slope and intercept: the fixed-horizon version of logistic recalibration (Cox 1958;
      Van Calster et al. 2016). Each patient's status by the horizon (event before it = 1,
      followed beyond it = 0, censored before it: unknown) is regressed with inverse
      probability of censoring weights (the censoring Kaplan–Meier of these patients) on
      ``logit(P)``: ``logit P(Y = 1) = a + b logit(P)`` gives the **slope** ``b`` (1 ideal;
      below 1: predictions too extreme); ``logit P(Y = 1) = a + logit(P)`` (offset) gives the
      **intercept** ``a`` (calibration-in-the-large; 0 ideal; above 0: risk underestimated).
    * ICI (integrated calibration index, Austin, Harrell & van Klaveren, Stat Med 2020): a
      Cox model of the outcome on a restricted cubic spline (knots at the 10th, 50th and 90th
      percentiles) of ``log(-log(1 - P))`` gives each patient's observed risk by the
      horizon; the ICI is the mean absolute difference between predicted and observed risk
      (0 ideal, probability units).

    A model that predicts one risk for everybody has no slope (NaN); its intercept and ICI
    compare that risk with the Kaplan–Meier risk.

    Returns
    -------
    dict
        ``cal_slope``, ``cal_intercept``, ``ici``; NaN where the horizon lies beyond the
        follow-up (no weight) or there are fewer than 2 events by the horizon.
    """
    risk = np.clip(np.asarray(risk, dtype=float), _EPS, 1 - _EPS)
    time = np.asarray(time, dtype=float)
    event = np.asarray(event, dtype=int)
    out = dict.fromkeys(CALIBRATION_METRICS, np.nan)
    if ((time <= horizon_years) & (event == 1)).sum() < 2:
        return out
    y, weight = _observed_status(time, event, horizon_years)
    if (weight > 0).sum() < 3:
        return out
    lp = _logit(risk)
    out["cal_intercept"] = float(_weighted_logistic(y, weight, np.ones((len(y), 1)), lp)[0])
    if np.ptp(lp) > 1e-8:
        design = np.column_stack([np.ones(len(y)), lp])
        out["cal_slope"] = float(_weighted_logistic(y, weight, design)[1])
    out["ici"] = _ici(risk, time, event, horizon_years)
    return out


def calibration_metrics(predictions: pd.DataFrame, head: str = "os") -> dict[str, float]:
    """:func:`horizon_calibration` of a Predictions frame's head at the head's horizon
    (``types.RISK_HORIZON_YEARS``: death by 5 years, recurrence or death by 3 years), the
    risk every C-index ranks by (``Predictions.risk``). Keys ``<head>_cal_slope``,
    ``<head>_cal_intercept``, ``<head>_ici``."""
    from crlm_lib.types import RISK_HORIZON_YEARS

    preds = Predictions.from_frame(predictions)
    horizon = RISK_HORIZON_YEARS[head]
    time, event = preds.outcomes(head)
    values = horizon_calibration(preds.risk(head, horizon), time, event, float(horizon))
    return {f"{head}_{k}": v for k, v in values.items()}


def calibration_metric_table(
    predictions: dict[str, pd.DataFrame | Sequence[pd.DataFrame]],
    heads: Sequence[str] = ("os", "dfs"),
) -> pd.DataFrame:
    """Calibration slope, intercept and ICI of every model (:func:`calibration_metrics`).

    Parameters
    ----------
    predictions : mapping model key -> Predictions frame or list of frames (one per repeat)
        ``CVResult.predictions`` (pooled out-of-fold frames) or the papers' split's test
        frames; the control rows (``<key>@ct-permuted``, ``<key>@step0``) are left out.
    heads : the heads to score.

    Returns
    -------
    DataFrame
        Index: model keys (input order); columns ``<head>_cal_slope, <head>_cal_intercept,
        <head>_ici`` per head: each repeat's pooled predictions scored, then averaged over
        repeats (point estimates).
    """
    rows = {}
    for key, value in predictions.items():
        if is_control(key):
            continue
        frames = [value] if isinstance(value, pd.DataFrame) else list(value)
        per_repeat = [{k: v for h in heads for k, v in calibration_metrics(f, h).items()}
                      for f in frames]  # fmt: skip
        with warnings.catch_warnings():  # a metric NaN in every repeat stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            rows[key] = {k: float(np.nanmean([r[k] for r in per_repeat])) for k in per_repeat[0]}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "model"
    return table


#: Readable column names of :func:`calibration_metric_table` (``pretty(table, labels)``).
CALIBRATION_LABELS: dict[str, str] = {
    "os_cal_slope": "OS calibration slope (5 y)",
    "os_cal_intercept": "OS calibration intercept (5 y)",
    "os_ici": "OS ICI (5 y)",
    "dfs_cal_slope": "DFS calibration slope (3 y)",
    "dfs_cal_intercept": "DFS calibration intercept (3 y)",
    "dfs_ici": "DFS ICI (3 y)",
}
