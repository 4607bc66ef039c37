"""Tests of crlm_lib.runfolder: the one writer and reader of a run folder's files."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crlm_lib import atomic
from crlm_lib.checkpoints import TrainingError
from crlm_lib.config import get_profile
from crlm_lib.models import build_model
from crlm_lib.runfolder import RUN_FILES, RunFolder

ROOT = Path(__file__).resolve().parents[1]


def test_record_is_written_whole_then_updated_in_place(tmp_path):
    run = RunFolder(tmp_path / "new" / "run")
    assert not run.has_record()
    run.write_record({"model": "acfnet", "seed": 3, "epochs": 6})
    written = run.update_record({"seed": 4, "best_epoch": 2})
    assert written == {"model": "acfnet", "seed": 4, "epochs": 6, "best_epoch": 2}
    assert list(run.read_record()) == ["model", "seed", "epochs", "best_epoch"]  # order kept
    # the bytes of the library's JSON writer (indent 2), so reruns give identical files
    other = tmp_path / "same.json"
    atomic.write_json(other, written, indent=2)
    assert run.record_path.read_bytes() == other.read_bytes()


def test_history_and_timing(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_history() is None and run.epochs_done() == 0
    run.write_history(pd.DataFrame({"epoch": [1, 2], "val_loss": [0.5, 0.25]}))
    assert run.epochs_done() == 2
    assert run.history_path.read_text() == "epoch,val_loss\n1,0.5\n2,0.25\n"
    run.history_path.write_text("")
    assert run.read_history().empty and run.epochs_done() == 0
    assert run.read_timing() == []
    run.write_timing([{"epoch": 1, "seconds": 1.5}])
    assert run.read_timing() == [{"epoch": 1, "seconds": 1.5}]
    run.timing_path.write_text("{not json")
    assert run.read_timing() == []  # times are informative only


def test_predictions_keep_patient_ids_as_strings(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_predictions() is None and not run.has_predictions()
    frame = pd.DataFrame({"patient_id": ["007", "010"], "surv_p1": [0.1, 0.2]})
    run.write_predictions(frame)
    run.write_predictions(frame.assign(permutation=0), "predictions_ct_permuted.csv")
    pd.testing.assert_frame_equal(run.read_predictions(), frame)
    assert run.read_predictions("predictions_ct_permuted.csv")["patient_id"].tolist() == [
        "007",
        "010",
    ]


def test_clear_removes_the_run_files_only(tmp_path):
    run = RunFolder(tmp_path)
    for name in RUN_FILES:
        run.file(name).write_text("x")
    (tmp_path / "notes.txt").write_text("kept")
    assert run.present_files() == list(RUN_FILES)
    run.clear()
    assert run.present_files() == [] and (tmp_path / "notes.txt").is_file()


def _record(n_clinical: int = 4) -> dict:
    return {"model": "clinical_mlp", "n_clinical": n_clinical, "options": {}}


def test_load_model_prefers_best_and_fits_the_weights(tmp_path):
    prof = get_profile("smoke")
    run = RunFolder(tmp_path)
    run.write_record(_record())
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        run.load_model(prof.model)
    torch.manual_seed(0)
    last = build_model("clinical_mlp", 4, prof.model)
    torch.manual_seed(1)
    best = build_model("clinical_mlp", 4, prof.model)
    run.save_last({"model": last.state_dict(), "epoch": 2})
    assert run.checkpoint_path() == run.last_path
    run.save_best(best.state_dict(), epoch=1, val_loss=0.5)
    assert run.checkpoint_path() == run.best_path
    loaded = run.load_model(prof.model)
    assert not loaded.training
    for key, value in best.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert torch.load(run.best_path, weights_only=False)["val_loss"] == 0.5
    assert run.read_last()["epoch"] == 2
    run.write_record(_record(n_clinical=5))  # another network shape than the weights
    with pytest.raises(TrainingError, match="best.pt"):
        run.load_model(prof.model)


def test_lesion_stats_from_the_record():
    assert RunFolder.lesion_stats({}) is None
    stats = RunFolder.lesion_stats({"lesion_feature_stats": {"mean": [1, 2], "std": [1.0, 3.0]}})
    assert stats["mean"].dtype == np.float64 and stats["std"].tolist() == [1.0, 3.0]


#: The writers of a run folder's files: a call of one of these naming a run file outside
#: ``runfolder.py`` is a second writer.
_WRITERS = {"write_json", "_write_json", "write_csv", "_atomic_write_csv", "torch_save", "to_csv"}


def _second_writers(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name not in _WRITERS:
            continue
        literals = {
            c.value
            for arg in [*node.args, *(k.value for k in node.keywords)]
            for c in ast.walk(arg)
            if isinstance(c, ast.Constant)
        }
        found += [f"{filename}:{node.lineno} writes {n}" for n in sorted(literals & {*RUN_FILES})]
    return found


def test_no_module_but_runfolder_writes_run_json_history_checkpoints_or_predictions():
    found = []
    for path in sorted((ROOT / "crlm_lib").rglob("*.py")):
        if path.name != "runfolder.py":
            found += _second_writers(path.read_text(), str(path.relative_to(ROOT)))
    # metrics.json and metrics_ci.csv are the evaluation's scores, written beside the run;
    # crlm predict's --out folder (not a run folder) has a predictions.csv of its own
    others = [f for f in found if "metrics" not in f.rsplit(" ", 1)[1]]
    assert [f for f in others if not f.startswith("crlm_lib/predict.py:")] == []


def test_the_second_writer_check_can_fail():
    planted = 'from crlm_lib import atomic\natomic.write_json(run_dir / "run.json", {})\n'
    assert _second_writers(planted, "x.py") == ["x.py:2 writes run.json"]
    assert _second_writers("df.to_csv(d / 'history.csv')\n", "y.py") == [
        "y.py:1 writes history.csv"
    ]
