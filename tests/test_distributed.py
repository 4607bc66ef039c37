"""DDP through ``train.fit``: two CPU processes (gloo) end where one process with the global
batch ends, with identical weights on both ranks, and only rank 0 writes files."""

from __future__ import annotations

import math

import pandas as pd
import torch
import torch.multiprocessing as mp
from torch import nn
from torch.utils.data import Dataset

from crlm_lib import distributed
from crlm_lib import train as T
from crlm_lib.config import get_profile

N_TRAIN, N_VAL, PER_RANK_BATCH, WORLD, EPOCHS = 8, 5, 4, 2, 3


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
