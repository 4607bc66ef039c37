"""Tests of crlm_lib.pipeline: the exclusion report, the empty-cohort refusal, the one cohort
builder with its profile, and the data step run once (its manifest)."""

from __future__ import annotations

import os
import shutil

import pandas as pd
import pytest

from crlm_lib.config import get_profile, resolve_paths
from crlm_lib.data.manifest import MANIFEST_NAME
from crlm_lib.errors import CRLMUserError, EmptyCohortError
from crlm_lib.pipeline import (
    build_cohort,
    check_cohort_not_empty,
    ensure_data,
    exclusion_table,
    load_study,
    write_exclusions,
)


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


# --------------------------------------------------------------------------------------------
# one cohort builder, the profile from the cohort, the data step once
# --------------------------------------------------------------------------------------------
@pytest.fixture
def copied_tcia(tiny_tcia, tmp_path):
    """A private copy of ``tiny_tcia`` (cohort folder and its preprocessing cache): the data
    step may write its report and manifest there."""
    root, cohort_dir = tiny_tcia
    shutil.copytree(cohort_dir, tmp_path / "tcia")
    shutil.copytree(root / "data" / "processed", tmp_path / "data" / "processed")
    return tmp_path, tmp_path / "tcia"


def _count_preprocessing(monkeypatch) -> list[int]:
    """Count the calls of ``preprocess_cohort`` (the step that reads every DICOM header)."""
    from crlm_lib.data import preprocess

    calls = []
    real = preprocess.preprocess_cohort

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(preprocess, "preprocess_cohort", counted)
    return calls


def test_the_data_step_is_reused_while_its_inputs_are_unchanged(copied_tcia, monkeypatch):
    root, cohort_dir = copied_tcia
    calls = _count_preprocessing(monkeypatch)
    paths = ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    assert calls == [1] and (paths.processed_dir / MANIFEST_NAME).is_file()
    report = (paths.processed_dir / "report.csv").stat().st_mtime_ns
    study = load_study("smoke", cohort_dir, root=root)
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    assert calls == [1]  # reused twice: no header read, report.csv not rewritten
    assert (paths.processed_dir / "report.csv").stat().st_mtime_ns == report
    assert len(study.ids) == 12 and study.profile is get_profile("smoke")
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1, reuse=False)  # crlm data
    assert calls == [1, 1]


def test_the_data_step_runs_again_when_an_input_or_output_changed(copied_tcia, monkeypatch):
    root, cohort_dir = copied_tcia
    calls = _count_preprocessing(monkeypatch)
    paths = ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    one_slice = next(p for p in sorted(cohort_dir.rglob("*")) if p.is_file() and p.suffix == ".dcm")
    st = one_slice.stat()
    os.utime(one_slice, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten, same bytes
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    assert len(calls) == 2
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    assert len(calls) == 2
    victim = sorted(paths.processed_dir.glob("*.npz"))[0]
    victim.unlink()  # an output gone
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    assert len(calls) == 3 and victim.is_file()
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1, seed=5)
    assert len(calls) == 3  # the seed of a real cohort is no input
    table = cohort_dir / "clinical.csv"
    table.write_text(table.read_text())  # same table, written again
    ensure_data("smoke", cohort_dir, root=root, n_jobs=1)
    assert len(calls) == 4


def test_one_builder_gives_the_same_cohort_with_its_profile(copied_tcia):
    from crlm_lib import evaluation as ev

    root, cohort_dir = copied_tcia
    study = load_study("smoke", cohort_dir, root=root)
    paths = resolve_paths("smoke", cohort_dir, root=root)
    built = ev.as_cohort(paths)
    assert built.ids == study.ids and built.profile is study.profile is get_profile("smoke")
    pd.testing.assert_frame_equal(built.excluded, study.excluded)
    pd.testing.assert_frame_equal(built.outcomes, study.outcomes)
    assert build_cohort(paths, ids=study.ids[:3]).ids == study.ids[:3]
    with pytest.raises(ValueError, match="'cpu' given for the folders of profile 'smoke'"):
        build_cohort(paths, profile=get_profile("cpu"))


def test_a_profile_beside_a_cohort_must_be_the_cohorts(copied_tcia):
    from crlm_lib import evaluation as ev

    root, cohort_dir = copied_tcia
    cohort = ev.as_cohort(resolve_paths("smoke", cohort_dir, root=root))
    smoke = get_profile("smoke")
    assert ev.cohort_profile(cohort) is smoke
    assert ev.cohort_profile(cohort, "smoke") is smoke
    with pytest.raises(ev.ProfileMismatchError, match="profile 'cpu' passed beside a cohort"):
        ev.cohort_profile(cohort, "cpu")
    with pytest.raises(ev.ProfileMismatchError, match="a modified profile 'smoke'"):
        ev.cohort_profile(cohort, smoke.with_(seed=3))
    with pytest.raises(ev.ProfileMismatchError, match="profile 'cpu' passed"):
        ev.events_table(cohort, "cpu")
    by_hand = ev.Cohort(cohort.clinical, cohort.outcomes, cohort.ids)
    assert ev.cohort_profile(by_hand, "cpu") is get_profile("cpu")
    with pytest.raises(ev.ProfileMismatchError, match="carries no profile"):
        ev.cohort_profile(by_hand)
