"""What a run stores at the end of training for scoring new patients later (``crlm predict``):
the tertile cut points of the training patients' predicted risk, their Kaplan–Meier curves with
the numbers at risk, and the software that finished the training (``run.json``'s
``training_reference`` and ``software``); :func:`supported_years` reads back how far the
training follow-up reaches.

Risk-group score: ``types.Predictions.ranking_score(score="mixed")`` (minus the 12-year
restricted mean survival for OS, the 3-year recurrence risk for DFS), the functional the stored
references were computed with, named in their ``risk_score`` entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crlm_lib.config import MIN_AT_RISK, N_YEARS, Profile
from crlm_lib.provenance import software_record
from crlm_lib.runfolder import RunFolder
from crlm_lib.types import Predictions

if TYPE_CHECKING:
    import torch

__all__ = [
    "risk_group_scores",
    "store_training_reference",
    "supported_years",
    "training_reference",
]


def _km_table(years: np.ndarray, events: np.ndarray) -> dict[str, list[float]]:
    """Kaplan–Meier estimate (lifelines) at t = 0..12 years with its 95% (log-log) band and
    the number of patients still at risk (followed beyond t: ``at_risk``)."""
    from lifelines import KaplanMeierFitter

    grid = np.arange(N_YEARS + 1, dtype=float)
    kmf = KaplanMeierFitter().fit(years, events, timeline=grid)
    ci = kmf.confidence_interval_
    followed = np.asarray(years, dtype=float)
    return {
        "years": [float(t) for t in kmf.survival_function_.index],
        "estimate": [round(float(v), 4) for v in kmf.survival_function_.iloc[:, 0]],
        "lower": [round(float(v), 4) for v in ci.iloc[:, 0]],
        "upper": [round(float(v), 4) for v in ci.iloc[:, 1]],
        "at_risk": [int((followed > t).sum()) for t in grid],
    }


def supported_years(reference: dict, head: str) -> int | None:
    """The last year ``t`` (0..12) at whose end at least :data:`MIN_AT_RISK` training
    patients were still followed (``reference["km"][head]["at_risk"]``): the curve after it
    is the model's extrapolation, not backed by the training cohort's follow-up. ``None`` for a
    run stored before the numbers at risk were."""
    at_risk = ((reference.get("km") or {}).get(head) or {}).get("at_risk")
    if not at_risk:
        return None
    backed = [t for t, n in enumerate(at_risk) if n >= MIN_AT_RISK]
    return max(backed) if backed else 0


def training_reference(pred_train: pd.DataFrame, outcomes_train: pd.DataFrame) -> dict:
    """Tertile cut points of the training patients' predicted risk and their KM curves.

    Parameters
    ----------
    pred_train : DataFrame
        ``train.predict`` of the training patients (``surv_p1..12``, ``rec_p1..12``).
    outcomes_train : DataFrame
        ``clinical.outcomes`` of the same patients (``os_years``, ``os_event``, ``dfs_years``,
        ``dfs_event``).

    Returns
    -------
    dict (JSON-ready)
        ``{"n": N, "risk_tertiles": {"os": [q1, q2], "dfs": [q1, q2]}, "risk_score": {...},
        "km": {"os": {...}, "dfs": {...}}}``; KM tables as :func:`_km_table`.
    """
    os_risk, dfs_risk = risk_group_scores(pred_train)
    return {
        "n": int(len(pred_train)),
        "risk_tertiles": {
            "os": [float(v) for v in np.quantile(os_risk, [1 / 3, 2 / 3])],
            "dfs": [float(v) for v in np.quantile(dfs_risk, [1 / 3, 2 / 3])],
        },
        "risk_score": {
            "os": "metrics.risk_from_survival (minus expected survival, years)",
            "dfs": "metrics.risk_from_recurrence (recurrence probability by 3 years)",
        },
        "km": {
            "os": _km_table(outcomes_train["os_years"], outcomes_train["os_event"]),
            "dfs": _km_table(outcomes_train["dfs_years"], outcomes_train["dfs_event"]),
        },
    }


def risk_group_scores(pred: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The risk-group scores of OS and DFS (``types.Predictions.ranking_score`` with
    ``score="mixed"``: the functional of the stored training references, see the module
    docstring; the evaluation's C-indices rank by the 5-year risk instead)."""
    p = Predictions.from_frame(pred)
    return p.ranking_score("os", "mixed"), p.ranking_score("dfs", "mixed")


def store_training_reference(
    model: torch.nn.Module,
    cohort: Any,
    profile: Profile,
    train_ids: Sequence[str],
    lesion_stats: dict[str, np.ndarray] | None,
    run_dir: Path,
    training: dict[str, Any] | None = None,
) -> dict:
    """Score the training patients once and add the reference to ``run_dir/run.json``
    (:meth:`~crlm_lib.runfolder.RunFolder.update_record`).

    Adds ``training_reference`` (:func:`training_reference`), ``lesion_feature_stats`` (the
    lesion-feature transform fitted on the training lesions), ``software``
    (``provenance.software_record``: the package version and git commit that finished the
    training, the one that made the weights) and the entries of ``training`` (how the training
    ended: ``epochs_completed``, ``best_epoch``, ``stopped_early``; ``run.json``'s ``epochs``
    holds the planned number) to the record, atomically.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.train import predict

    ids = [str(i) for i in train_ids]
    ds = CRLMDataset(
        cohort.paths.processed_dir,
        cohort.clinical,
        ids,
        profile,
        clinical_reference_ids=ids,
        feature_stats=lesion_stats,
    )
    pred = predict(model, ds)
    ref = training_reference(pred, cohort.outcomes.loc[ids])
    entries = {
        "training_reference": ref,
        "lesion_feature_stats": {k: np.asarray(v).tolist() for k, v in ds.feature_stats.items()},
        "software": software_record(),
        **(training or {}),
    }
    RunFolder(run_dir).update_record(entries)
    return ref
