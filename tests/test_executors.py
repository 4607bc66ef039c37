"""Tests of crlm_lib.executors and of the protocols' fits as tasks (evaluation.tasks): the
executor string, Slurm's job path (submitit's local cluster), the smoke cross-validation
through a Dask cluster of 2 worker processes equal to the serial run to the last digit, the
finished fits read back instead of retrained, and a lost fit retrained alone."""

from __future__ import annotations

import json
import operator
from pathlib import Path

import pandas as pd
import pytest

from crlm_lib import evaluation as ev
from crlm_lib.config import get_profile, resolve_paths
from crlm_lib.errors import ArgumentError
from crlm_lib.evaluation import runs
from crlm_lib.executors import (
    ExecutorError,
    ExecutorSpec,
    parse_executor,
    run_tasks,
    worker_specs,
)

_REAL_FIT = runs.fit_predict_torch


def test_parse_executor_reads_kind_and_options_and_refuses_typos():
    assert parse_executor(None) == ExecutorSpec("local")
    spec = parse_executor("dask:workers=4,threads=1")
    assert (spec.kind, spec.workers, spec.threads, spec.address) == ("dask", 4, 1, None)
    assert parse_executor("dask:address=tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    slurm = parse_executor("slurm:partition=gpu,timeout_min=600,account=lab")
    assert dict(slurm.options) == {"partition": "gpu", "timeout_min": 600, "account": "lab"}
    assert parse_executor(str(spec)) == spec  # the string form round-trips (papermill)
    for bad in ("ray", "dask:worker=2", "dask:workers=0", "local:threads", "dask:workers=two"):
        with pytest.raises(ArgumentError, match="--executor"):
            parse_executor(bad)


def test_dask_workers_get_one_gpu_each():
    specs = list(worker_specs(None, gpus=2).values())
    assert [s["options"]["env"]["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1"]
    assert all(s["options"]["resources"] == {"GPU": 1} for s in specs)
    assert all(s["options"]["nthreads"] == 1 for s in specs)  # one fit at a time per worker
    cpu = list(worker_specs(3, gpus=0).values())
    assert len(cpu) == 3 and not any("env" in s["options"] for s in cpu)


def test_slurm_path_runs_every_item_as_a_job_and_names_the_failed_one(tmp_path):
    """submitit's ``local`` cluster runs the same pickled job array as Slurm would; a job
    that fails (its folder is missing) is named after the others finished."""
    items = [tmp_path / "a.txt", tmp_path / "missing" / "b.txt", tmp_path / "c.txt"]
    with pytest.raises(ExecutorError, match=r"1 of 3 tasks failed \(b: .*FileNotFoundError"):
        run_tasks(
            operator.methodcaller("touch"), items, "slurm:cluster=local,timeout_min=5",
            labels=["a", "b", "c"], log_dir=tmp_path / "logs",
        )  # fmt: skip
    assert items[0].is_file() and items[2].is_file()


@pytest.fixture(scope="module")
def tiny(tiny_tcia):
    root, cohort_dir = tiny_tcia
    prof = get_profile("smoke")
    return root, prof, ev.as_cohort(resolve_paths(prof, cohort_dir, root=root))


def _cv(tiny, runs_dir: Path, executor: str) -> ev.CVResult:
    root, prof, cohort = tiny
    return ev.run_cv_protocol(
        ["cnn3d"], cohort, prof, anchors=("cox",), oracle=False, n_boot=5,
        runs_dir=runs_dir, executor=executor,
    )  # fmt: skip


def _assert_same(a: ev.CVResult, b: ev.CVResult) -> None:
    pd.testing.assert_frame_equal(a.tidy, b.tidy, check_exact=True)
    pd.testing.assert_frame_equal(a.differences, b.differences, check_exact=True)
    assert a.predictions.keys() == b.predictions.keys()
    for key in a.predictions:
        for x, y in zip(a.predictions[key], b.predictions[key], strict=True):
            pd.testing.assert_frame_equal(x, y, check_exact=True)


def test_dask_cv_equals_serial_and_finished_fits_are_read_back(tiny, tmp_path, monkeypatch):
    serial = _cv(tiny, tmp_path / "serial", "local:threads=1")
    assert set(serial.predictions) == {"cnn3d", "cox", "cnn3d@ct-permuted", "cnn3d@step0"}

    def no_fit_here(*args, **kwargs):
        raise AssertionError("a torch fit ran in the test's process")

    # the Dask fits run in the 2 worker processes: none may fall back to this process
    monkeypatch.setattr(runs, "fit_predict_torch", no_fit_here)
    dask_dir = tmp_path / "dask"
    parallel = _cv(tiny, dask_dir, "dask:workers=2,threads=1")
    _assert_same(serial, parallel)
    for fold in (0, 1):  # one run folder and run identity per (model, repeat, fold)
        rec = json.loads((dask_dir / "cv" / "cnn3d" / f"r0_f{fold}" / "run.json").read_text())
        assert set(rec["identity"]) == {"cohort", "split", "config"}
        assert "training_reference" in rec  # training ended

    # what notebook 06 does after `crlm cv`: every fit read back from its run folder
    _assert_same(serial, _cv(tiny, dask_dir, "local"))

    # a lost fit (here its predictions) is the only one trained again, and ends the same
    calls = []
    monkeypatch.setattr(runs, "fit_predict_torch", _counting(calls))
    (dask_dir / "cv" / "cnn3d" / "r0_f1" / "predictions.csv").unlink()
    _assert_same(serial, _cv(tiny, dask_dir, "local:threads=1"))
    assert calls == [dask_dir / "cv" / "cnn3d" / "r0_f1"]


def _counting(calls: list):
    """``runs.fit_predict_torch`` that records each run folder it trains."""

    def fit(spec, cohort, profile, split, run_dir, **kwargs):
        calls.append(Path(run_dir))
        return _REAL_FIT(spec, cohort, profile, split, run_dir, **kwargs)

    return fit
