"""Decision-curve analysis (Vickers & Elkin 2006; time-to-event form of Vickers et al. 2008)
of intensified surveillance by predicted 2-year recurrence risk, computed by ``dcurves``.

A clinic that intensifies surveillance after resection for every patient whose predicted risk of
recurrence (or death) within 2 years is at least ``p_t`` gains, per patient,

``NB(p_t) = P(risk >= p_t) * [F_+(h) - (1 - F_+(h)) p_t / (1 - p_t)]``

where ``F_+(h)`` is the Kaplan–Meier probability of the event by ``h`` years among the patients
flagged (censoring-aware: ``dcurves.dca(..., time=h, time_to_outcome_col=...)``), and
``p_t / (1 - p_t)`` the exchange rate of a needless intensified follow-up against a recurrence
caught: choosing ``p_t`` = 20% says one caught recurrence is worth four needless programmes.
"Treat all" flags everyone, "treat none" no one (net benefit 0). A model is useful at ``p_t``
where its curve lies above both. None of the three papers reports it. The figure is drawn by
:func:`crlm_lib.plots.plot_decision_curve` (re-exported here).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dcurves
import numpy as np
import pandas as pd

from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.evaluation.specs import model_label
from crlm_lib.plots import plot_decision_curve
from crlm_lib.types import PATIENT_ID, Predictions, outcome_columns

__all__ = ["DCA_MODELS", "DCA_THRESHOLDS", "decision_curve", "plot_decision_curve"]

#: The models of the manuscript's decision curve (those present are drawn).
DCA_MODELS: tuple[str, ...] = ("fong", "cox", "acfnet", "oracle")
#: Threshold probabilities 10% to 50% in steps of 1%.
DCA_THRESHOLDS: tuple[float, ...] = tuple(round(0.10 + 0.01 * i, 2) for i in range(41))
#: dcurves' names of its two reference strategies, and ours.
_REFERENCES = {"all": "Treat all", "none": "Treat none"}


def _first_repeat(value: pd.DataFrame | Sequence[pd.DataFrame]) -> pd.DataFrame:
    frame = value if isinstance(value, pd.DataFrame) else value[0]
    return frame.sort_values(PATIENT_ID, kind="mergesort").reset_index(drop=True)


def _risk_table(frames: Mapping[str, pd.DataFrame], head: str, horizon_years: int) -> pd.DataFrame:
    """``time``, ``event`` and one column of predicted ``horizon_years`` risk per model."""
    first = next(iter(frames.values()))
    ids = first[PATIENT_ID].to_numpy()
    years, event = outcome_columns(head)
    data = pd.DataFrame({"time": first[years].to_numpy(float), "event": first[event].astype(int)})
    for key, frame in frames.items():
        if not np.array_equal(frame[PATIENT_ID].to_numpy(), ids):
            raise EvaluationError(f"decision curve: {key!r} holds other patients than the rest")
        data[key] = Predictions.from_frame(frame).risk(head, horizon_years)
    return data


def decision_curve(
    predictions: Mapping[str, pd.DataFrame | Sequence[pd.DataFrame]],
    models: Sequence[str] = DCA_MODELS,
    horizon_years: int = 2,
    thresholds: Sequence[float] = DCA_THRESHOLDS,
    head: str = "dfs",
) -> pd.DataFrame:
    """Net benefit of acting on each model's predicted ``horizon_years`` risk, with treat-all
    and treat-none, at each threshold probability (``dcurves.dca``, time-to-event form).

    Parameters
    ----------
    predictions : mapping model key -> Predictions frame or list of frames (one per repeat)
        ``CVResult.predictions`` (the first repeat's out-of-fold predictions are used: one
        prediction per patient) or the papers' protocol's test frames.
    models : model keys to draw; those missing from ``predictions`` are skipped.
    horizon_years : int
        The risk acted on: ``Predictions.risk(head, horizon_years)``; the outcome is the
        event by that time (Kaplan–Meier among the flagged patients).
    thresholds : threshold probabilities in (0, 1)
    head : {"dfs", "os"}
        ``"dfs"``: recurrence or death (the recurrence head).

    Returns
    -------
    DataFrame
        ``model`` (key; ``"all"``, ``"none"`` for the references), ``label``, ``threshold``,
        ``net_benefit``, ``test_pos_rate`` (share flagged), ``tp_rate``, ``fp_rate``
        (per patient), ``horizon_years``, ``n``.
    """
    keys = [k for k in models if k in predictions]
    if not keys:
        raise EvaluationError(f"decision curve: none of {list(models)} in the predictions")
    data = _risk_table({k: _first_repeat(predictions[k]) for k in keys}, head, horizon_years)
    result = dcurves.dca(
        data=data,
        outcome="event",
        modelnames=keys,
        thresholds=[float(t) for t in thresholds],
        time=horizon_years,
        time_to_outcome_col="time",
    )
    out = result[["model", "threshold", "net_benefit", "test_pos_rate", "tp_rate", "fp_rate"]]
    out = out.astype({c: float for c in ("net_benefit", "test_pos_rate", "tp_rate", "fp_rate")})
    out.insert(1, "label", [_REFERENCES.get(m) or model_label(m) for m in out["model"]])
    return out.assign(horizon_years=horizon_years, n=len(data)).reset_index(drop=True)
