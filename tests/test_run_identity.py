"""Run folders resume only on the same cohort, split and configuration (evaluation.run_identity)."""

from __future__ import annotations

import json

import pytest

from crlm_lib.config import get_profile
from crlm_lib.data.clinical import outcomes, validate_clinical
from crlm_lib.data.synthetic import simulate_cohort
from crlm_lib.errors import RunMismatchError
from crlm_lib.evaluation import Cohort, ModelSpec, check_run_dir, run_identity


@pytest.fixture(scope="module")
def cohort() -> Cohort:
    clinical = validate_clinical(simulate_cohort(12, seed=1).clinical)
    ids = list(clinical.index)
    return Cohort(clinical=clinical, outcomes=outcomes(clinical), ids=ids)


def _identity(cohort, spec=None, profile=None, split=None, seed=0):
    ids = cohort.ids
    tr, va, te = split or (ids[:8], ids[8:10], ids[10:])
    return run_identity(
        spec or ModelSpec("acfnet"), profile or get_profile("smoke"), cohort, (tr, va, te), seed
    )


def test_identity_changes_with_cohort_split_and_config_not_epochs(cohort):
    base = _identity(cohort)
    assert base == _identity(cohort)  # deterministic
    changed = cohort.clinical.copy()
    changed.iloc[0, changed.columns.get_loc("age")] += 1
    other = Cohort(clinical=changed, outcomes=cohort.outcomes, ids=cohort.ids)
    assert [k for k, v in _identity(other).items() if v != base[k]] == ["cohort"]
    ids = cohort.ids
    moved = _identity(cohort, split=(ids[1:9], ids[:1] + ids[9:10], ids[10:]))
    assert [k for k, v in moved.items() if v != base[k]] == ["split"]
    smoke = get_profile("smoke")
    lr = smoke.with_(train=smoke.train.__class__(**{**smoke.train.__dict__, "lr": 0.5}))
    epochs = smoke.with_(train=smoke.train.__class__(**{**smoke.train.__dict__, "epochs": 99}))
    assert [k for k, v in _identity(cohort, profile=lr).items() if v != base[k]] == ["config"]
    assert _identity(cohort, profile=epochs) == base
    star = _identity(cohort, spec=ModelSpec("star"))
    assert [k for k, v in star.items() if v != base[k]] == ["config"]


def test_identity_changes_with_the_run_revision(cohort, monkeypatch):
    from crlm_lib.evaluation import runs

    base = _identity(cohort)
    monkeypatch.setattr(runs, "RUN_REVISION", runs.RUN_REVISION + 1)
    assert [k for k, v in _identity(cohort).items() if v != base[k]] == ["config"]


def test_check_run_dir(cohort, tmp_path):
    ident = _identity(cohort)
    check_run_dir(tmp_path / "new", ident)  # nothing there: fine
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"identity": ident}))
    (run / "last.pt").write_bytes(b"x")
    check_run_dir(run, ident)  # same run: resume
    with pytest.raises(RunMismatchError, match="another split"):
        check_run_dir(run, {**ident, "split": "0"})
    (run / "run.json").write_text(json.dumps({"model": "acfnet"}))  # made before identities
    with pytest.raises(RunMismatchError, match="cannot be checked"):
        check_run_dir(run, ident)
    (run / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="discarding"):
        check_run_dir(run, ident, restart=True)
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"]


def test_identity_changes_with_the_source_images(cohort, tmp_path):
    """Same IDs and clinical rows, but another image series in the cache: another cohort."""
    import dataclasses

    import numpy as np

    from crlm_lib.config import resolve_paths

    paths = dataclasses.replace(resolve_paths("smoke"), processed_dir=tmp_path)

    def write(uid_prefix: str, size: int, mtime_ns: int = 123) -> dict[str, str]:
        for pid in cohort.ids:
            manifest = {f"{uid_prefix}.{k}": [size, mtime_ns + k] for k in range(3)}
            np.savez(tmp_path / f"{pid}.npz", source_manifest=np.asarray(json.dumps(manifest)))
        on_disk = Cohort(cohort.clinical, cohort.outcomes, cohort.ids, paths=paths)
        return _identity(on_disk)

    first = write("1.2.3", 1000)
    assert write("1.2.3", 1000, mtime_ns=456) == first  # copied files: other mtimes, same run
    assert [k for k, v in write("1.2.9", 1000).items() if v != first[k]] == ["cohort"]
    assert [k for k, v in write("1.2.3", 999).items() if v != first[k]] == ["cohort"]
