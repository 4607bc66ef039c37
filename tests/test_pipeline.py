"""Tests of crlm_lib.pipeline: the exclusion report and the empty-cohort refusal."""

from __future__ import annotations

import pandas as pd
import pytest

from crlm_lib.config import resolve_paths
from crlm_lib.errors import CRLMUserError, EmptyCohortError
from crlm_lib.pipeline import check_cohort_not_empty, exclusion_table, write_exclusions


def _report(rows):
    return pd.DataFrame(rows, columns=["patient_id", "status", "reason"])


def _table(ids):
    return pd.DataFrame({"age": [60.0] * len(ids)}, index=pd.Index(ids, name="Patient-ID"))


def test_exclusion_table_lists_every_reason_once():
    report = _report(
        [
            ("P1", "done", ""),
            ("P2", "cached", ""),
            ("P3", "excluded", "DicomReadError: P3: bad.dcm unreadable"),
            ("P4", "done", ""),
        ]
    )
    ex = exclusion_table(_table(["P1", "P2", "P3", "P5"]), report)
    assert ex.to_dict("records") == [
        {"patient_id": "P3", "reason": "image: DicomReadError: P3: bad.dcm unreadable"},
        {"patient_id": "P4", "reason": "no row in the clinical table"},
        {"patient_id": "P5", "reason": "clinical row without a CT/SEG in the cohort"},
    ]


def test_exclusions_are_written(tmp_path):
    paths = resolve_paths("smoke", data_dir=tmp_path / "d", root=tmp_path)
    report = _report([("P1", "done", "")])
    write_exclusions(paths, _table(["P1", "P9"]), report)
    written = pd.read_csv(paths.processed_dir / "exclusions.csv")
    assert written["patient_id"].tolist() == ["P9"]
    assert not list(paths.processed_dir.glob(".*.tmp"))


def test_empty_cohorts_are_refused(tmp_path):
    paths = resolve_paths("smoke", data_dir=tmp_path / "d", root=tmp_path)
    with pytest.raises(EmptyCohortError, match="no patient found") as info:
        check_cohort_not_empty(paths, _report([]))
    assert isinstance(info.value, CRLMUserError) and str(tmp_path / "d") in str(info.value)
    with pytest.raises(EmptyCohortError, match="none of the 2 patients could be loaded"):
        check_cohort_not_empty(
            paths, _report([("P1", "excluded", "no CT"), ("P2", "excluded", "no SEG")])
        )
    check_cohort_not_empty(paths, _report([("P1", "excluded", "x"), ("P2", "done", "")]))
