"""DDP through ``train.fit``: two CPU processes (gloo) end where one process with the global
batch ends, with identical weights on both ranks, and only rank 0 writes files; the
cross-validation under ``torchrun`` (2 ranks), killed and resumed, ends as an uninterrupted
run."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from crlm_lib import distributed
from crlm_lib import train as T
from crlm_lib.config import get_profile

N_TRAIN, N_VAL, PER_RANK_BATCH, WORLD, EPOCHS = 8, 5, 4, 2, 3
ROOT = Path(__file__).resolve().parents[1]


class LinearData(Dataset):
    def __init__(self, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, generator=g)
        self.y = torch.randn(n, 12, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"patient_id": f"P{i}", "clinical": self.x[i], "target": self.y[i]}


class LinearModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 24)

    def forward(self, batch: dict) -> dict:
        out = self.lin(batch["clinical"])
        return {"recurrence_logits": out[:, :12], "survival_logits": out[:, 12:], "aux": {}}


def mse_loss(outputs, batch, weights=None, objective="paper"):
    loss = ((outputs["survival_logits"] - batch["target"]) ** 2).mean()
    loss = loss + (outputs["recurrence_logits"] ** 2).mean()
    return loss, {"mse": float(loss.detach())}


def _profile(batch_size: int):
    smoke = get_profile("smoke")
    tc = smoke.train.__class__(
        **{**smoke.train.__dict__, "batch_size": batch_size, "lr": 1e-2, "num_workers": 0}
    )
    return smoke.with_(train=tc)


def _fit(run_dir, batch_size: int):
    torch.manual_seed(0)
    model = LinearModel()
    history = T.fit(
        model,
        LinearData(N_TRAIN, 0),
        LinearData(N_VAL, 1),
        _profile(batch_size),
        run_dir,
        epochs=EPOCHS,
        loss_fn=mse_loss,
        progress=False,
        restore_best=False,
    )
    return model, history


def _worker(rank: int, tmp: str) -> None:
    distributed.init_process_group(rank, WORLD, "gloo", f"file://{tmp}/rendezvous")
    try:
        model, history = _fit(f"{tmp}/ddp", PER_RANK_BATCH)
        torch.save(
            {"state": model.state_dict(), "val": [r["val_loss"] for r in history.records]},
            f"{tmp}/rank{rank}.pt",
        )
    finally:
        distributed.cleanup()


def test_ddp_two_ranks_match_single_process_global_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path),), nprocs=WORLD, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in r0["state"]:
        assert torch.equal(r0["state"][key], r1["state"][key]), key
    assert r0["val"] == r1["val"]  # all-reduced validation loss: the same decisions

    # one process, global batch = 2 x 4 = the whole training set, one step per epoch
    single, history = _fit(tmp_path / "single", PER_RANK_BATCH * WORLD)
    for key, value in single.state_dict().items():
        torch.testing.assert_close(r0["state"][key], value, rtol=1e-5, atol=1e-6)
    want = [r["val_loss"] for r in history.records]
    assert all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(r0["val"], want))
    assert len(want) == EPOCHS

    # rank 0 wrote the run folder; the history covers every epoch once
    written = pd.read_csv(tmp_path / "ddp" / "history.csv")
    assert list(written["epoch"]) == list(range(1, EPOCHS + 1))
    assert (tmp_path / "ddp" / "last.pt").is_file()


def _torchrun_cv(workdir, cohort_dir, runs_dir) -> list[str]:
    """``torchrun --nproc_per_node 2 -m crlm_lib.distributed cv`` of the 3D CNN and Cox on the
    12 patients of ``tiny_tcia`` (2 folds, 1 epoch, gloo on the CPU)."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "crlm_lib.distributed", "cv", "--profile", "smoke", "--data", str(cohort_dir),
        "--workdir", str(workdir), "--runs-dir", str(runs_dir), "--models", "cnn3d",
        "--anchors", "cox", "--n-boot", "5", "--no-controls",
    ]  # fmt: skip


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL to torchrun and its ranks (they run in sessions of their own), as a crash
    or ``scancel`` would end them."""
    import psutil

    family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    for p in family:
        p.send_signal(signal.SIGKILL)
    psutil.wait_procs(family, timeout=30)
    proc.wait()


def test_torchrun_cv_killed_then_resumed_equals_an_uninterrupted_run(tiny_tcia, tmp_path):
    workdir, cohort_dir = tiny_tcia
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run(
        _torchrun_cv(workdir, cohort_dir, whole), env=_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # the same run, killed (SIGKILL to torchrun and both ranks) once its first fit finished:
    # the resumed run keeps that fit's files and trains the second fit only
    first = killed / "cv" / "cnn3d" / "r0_f0" / "predictions.csv"
    proc = subprocess.Popen(
        _torchrun_cv(workdir, cohort_dir, killed), env=_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while not first.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _kill_tree(proc)
    assert first.is_file() and not (killed / "cv" / "results_tidy.csv").exists()
    assert not (killed / "cv" / "cnn3d" / "r0_f1" / "predictions.csv").exists()  # mid-run
    stamp = {p.name: p.stat().st_mtime_ns for p in first.parent.iterdir()}

    resumed = subprocess.run(
        _torchrun_cv(workdir, cohort_dir, killed), env=_env(), capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert {p.name: p.stat().st_mtime_ns for p in first.parent.iterdir()} == stamp  # not rerun
    for name in ("results_tidy.csv", "differences.csv"):
        assert (killed / "cv" / name).read_bytes() == (whole / "cv" / name).read_bytes(), name
    for fold in (0, 1):
        run = Path("cv", "cnn3d", f"r0_f{fold}")
        for name in ("predictions.csv", "history.csv", "best.pt"):
            assert (killed / run / name).read_bytes() == (whole / run / name).read_bytes()
