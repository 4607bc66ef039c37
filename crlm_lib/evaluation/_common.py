"""The evaluation package's error and its small file helpers (atomic writes, predictions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from crlm_lib import atomic
from crlm_lib.types import PATIENT_ID


class EvaluationError(RuntimeError):
    """A protocol could not run (missing data, unknown model, inconsistent run folder)."""


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------


def _atomic_write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic.write_csv(path, frame, index=False)


def _write_json(obj: Any, path: Path) -> None:
    atomic.write_json(path, obj, indent=2, allow_nan=True)


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={PATIENT_ID: str})
