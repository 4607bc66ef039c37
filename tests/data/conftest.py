"""Fixtures of the data tests (DICOM writers live in ``dicom_helpers.py``)."""

from __future__ import annotations

import pytest
from dicom_helpers import Truth, write_patient


@pytest.fixture
def patient_dir(tmp_path) -> Truth:
    """One valid patient under ``tmp_path/cohort``."""
    return write_patient(tmp_path / "cohort")
