"""The evaluation package's error and its small file helpers (atomic writes, predictions)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.types import CV_COLS, OUTCOME_COLS, PATIENT_ID, Cohort


class EvaluationError(RuntimeError):
    """A protocol could not run (missing data, unknown model, inconsistent run folder)."""


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------


def _atomic_write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic.write_csv(path, frame, index=False)


def _write_json(obj: Any, path: Path) -> None:
    atomic.write_json(path, obj, indent=2)


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={PATIENT_ID: str})


def iter_test_sets(frame: pd.DataFrame) -> Iterator[tuple[Any, np.ndarray]]:
    """The test sets of a Predictions frame: ``((repeat, fold), row positions)`` of every CV
    fold of pooled out-of-fold predictions, or ``(None, all rows)`` for one test split."""
    if not set(CV_COLS) <= set(frame.columns):
        yield None, np.arange(len(frame))
        return
    keys = list(zip(frame["repeat"].astype(int), frame["fold"].astype(int), strict=True))
    for key in sorted(set(keys)):
        yield key, np.flatnonzero([k == key for k in keys])


def training_outcomes(cohort: Cohort, test_ids: Any) -> pd.DataFrame:
    """Outcomes of the cohort's patients outside ``test_ids``: the training fold of a CV test
    fold, or the training and validation patients of the papers' split (the anchors' training
    set)."""
    held_out = {str(i) for i in test_ids}
    return cohort.outcomes.loc[[i for i in cohort.ids if i not in held_out], OUTCOME_COLS]
