"""Tests of crlm_lib.train with a tiny contract-following model and an in-memory dataset."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from crlm_lib import train as T
from crlm_lib.config import get_profile

N_CLIN = 3


class TinyDataset(Dataset):
    """~20 items with the contract's keys: ct [1, 8, 8, 8], clinical [3], outcomes, bins."""

    def __init__(self, n: int = 20, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ct = torch.rand(n, 1, 8, 8, 8, generator=g) * 2 - 1
        self.clinical = torch.randn(n, N_CLIN, generator=g)
        self.os_years = torch.rand(n, generator=g) * 10
        self.os_event = (torch.rand(n, generator=g) < 0.6).float()
        self.dfs_years = self.os_years * 0.5
        self.dfs_event = self.os_event
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        years = torch.arange(12.0)
        rec_target = ((self.dfs_years[i] < years + 1) & (self.dfs_event[i] > 0)).float()
        return {
            "patient_id": f"CRLM-CT-{1001 + i}",
            "ct": self.ct[i],
            "clinical": self.clinical[i],
            "os_years": self.os_years[i],
            "os_event": self.os_event[i],
            "dfs_years": self.dfs_years[i],
            "dfs_event": self.dfs_event[i],
            "survival_bin": torch.clamp(self.os_years[i].floor(), max=11).long(),
            "recurrence_bin": torch.clamp(self.dfs_years[i].floor(), max=11).long(),
            "recurrence_target": rec_target,
            "recurrence_known": torch.ones(12),
        }


class TinyModel(nn.Module):
    """Follows the model contract: forward(batch) -> logits [B, 12] x 2 + aux."""

    def __init__(self, dropout: float = 0.2):
        super().__init__()
        self.conv = nn.Conv3d(1, 2, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(2 + N_CLIN, 24)
        self.att = nn.Linear(2 + N_CLIN, 12)
        self.gradcam_layer = self.conv

    def forward(self, batch: dict) -> dict:
        h_img = self.conv(batch["ct"]).mean(dim=(2, 3, 4))
        h = self.drop(torch.cat([h_img, batch["clinical"]], dim=1))
        logits = self.head(h)
        return {
            "recurrence_logits": logits[:, :12],
            "survival_logits": logits[:, 12:],
            "aux": {
                "loss_terms": {"align": (h_img**2).mean()},
                "attention": torch.softmax(self.att(h), dim=1),
            },
        }


def tiny_loss(outputs, batch, weights=None, objective="paper"):
    """Local stand-in for losses.total_loss with the same signature."""
    w = {"align": 0.1, **(weights or {})}
    ce = nn.functional.cross_entropy(outputs["survival_logits"], batch["survival_bin"])
    bce = nn.functional.binary_cross_entropy_with_logits(
        outputs["recurrence_logits"], batch["recurrence_target"]
    )
    align = outputs["aux"]["loss_terms"]["align"]
    loss = ce + bce + w["align"] * align
    parts = {
        k: float(v.detach()) for k, v in (("survival", ce), ("recurrence", bce), ("align", align))
    }
    return loss, parts


def profile(**train_changes):
    smoke = get_profile("smoke")
    tc = smoke.train.__class__(**{**smoke.train.__dict__, **train_changes})
    return smoke.with_(train=tc)


def make_model(seed: int = 0) -> TinyModel:
    torch.manual_seed(seed)
    return TinyModel()


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def data():
    return TinyDataset(20, seed=0), TinyDataset(8, seed=1)


def run(model, data, run_dir, **kw):
    kw.setdefault("epochs", 2)
    return T.fit(
        model,
        data[0],
        data[1],
        kw.pop("prof", profile()),
        run_dir,
        loss_fn=tiny_loss,
        device="cpu",
        progress=False,
        seed=5,
        **kw,
    )


def test_same_seed_same_weights_different_seed_differs(data, tmp_path):
    prof = profile(max_train_batches=2)
    m1, m2, m3 = make_model(), make_model(), make_model()
    before = state(m1)
    run(m1, data, tmp_path / "a", prof=prof, restore_best=False)
    run(m2, data, tmp_path / "b", prof=prof, restore_best=False)
    T.fit(
        m3,
        data[0],
        data[1],
        prof,
        tmp_path / "c",
        epochs=2,
        loss_fn=tiny_loss,
        seed=6,
        device="cpu",
        progress=False,
        restore_best=False,
    )
    assert_same(state(m1), state(m2))
    assert any(not torch.equal(state(m1)[k], before[k]) for k in before)  # it trained
    assert any(not torch.equal(state(m1)[k], state(m3)[k]) for k in before)  # seed matters


def test_resume_equals_uninterrupted(data, tmp_path):
    full = make_model()
    h_full = run(full, data, tmp_path / "full", epochs=3, restore_best=False)
    part = make_model()
    run(part, data, tmp_path / "part", epochs=1, restore_best=False)
    resumed = make_model(seed=99)  # different init: weights must come from last.pt
    h_res = run(resumed, data, tmp_path / "part", epochs=3, restore_best=False)
    assert_same(state(full), state(resumed))
    a, b = h_full.to_frame(), h_res.to_frame()
    pd.testing.assert_frame_equal(a, b)
    assert h_full.best_epoch == h_res.best_epoch
    # the optimizer state came back too
    ck_full = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    ck_res = torch.load(tmp_path / "part" / "last.pt", weights_only=False)
    assert ck_full["optimizer"]["state"][0]["step"] == ck_res["optimizer"]["state"][0]["step"]
    # checkpoints are byte-identical (no temporary file name inside the zip records)
    assert (tmp_path / "full" / "best.pt").read_bytes() == (
        tmp_path / "part" / "best.pt"
    ).read_bytes()
    # a finished run resumed again trains nothing more
    again = make_model(seed=3)
    h_again = run(again, data, tmp_path / "full", epochs=3, restore_best=False)
    assert len(h_again.records) == 3
    assert_same(state(again), state(full))


def test_identical_runs_write_identical_files_and_keep_times_apart(data, tmp_path):
    """best.pt, last.pt and history.csv of two identical runs are equal byte for byte; the
    wall-clock seconds are in timing.json only, one row per epoch, kept across a resume."""
    for name in ("a", "b"):
        run(make_model(), data, tmp_path / name, epochs=2, restore_best=False)
    for name in ("best.pt", "last.pt", "history.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert "seconds" not in pd.read_csv(tmp_path / "a" / "history.csv").columns
    timing = json.loads((tmp_path / "a" / T.TIMING_FILE).read_text())["epochs"]
    assert [r["epoch"] for r in timing] == [1, 2] and all(r["seconds"] > 0 for r in timing)
    run(make_model(), data, tmp_path / "a", epochs=3, restore_best=False)  # resumed
    timing_after = json.loads((tmp_path / "a" / T.TIMING_FILE).read_text())["epochs"]
    assert timing_after[:2] == timing and [r["epoch"] for r in timing_after] == [1, 2, 3]


def test_best_checkpoint_history_csv_and_early_stopping(data, tmp_path):
    # validation loss scripted by epoch: min at epoch 2, then worse -> stop after patience 2
    scripted = [3.0, 1.0, 2.0, 2.5, 0.5, 0.1]
    val_batches = {"n": 0}
    n_val_batches = 2  # 8 validation items, smoke batch size 4

    def scripted_loss(outputs, batch, weights=None, objective="paper"):
        loss, parts = tiny_loss(outputs, batch, weights, objective)
        if torch.is_grad_enabled():  # training pass
            return loss, parts
        epoch_index = val_batches["n"] // n_val_batches
        val_batches["n"] += 1
        return torch.tensor(scripted[epoch_index]), parts

    val = data[1]
    prof = profile(early_stopping_patience=2)
    assert prof.train.batch_size == 4
    model = make_model()
    states = {}

    h = T.fit(
        model,
        data[0],
        val,
        prof,
        tmp_path,
        epochs=6,
        loss_fn=scripted_loss,
        seed=1,
        device="cpu",
        progress=False,
    )
    assert h.best_epoch == 2 and h.best_val_loss == 1.0
    assert h.stopped_early and len(h.records) == 4
    df = pd.read_csv(tmp_path / "history.csv")
    expected = {
        "epoch",
        "lr",
        "train_loss",
        "val_loss",
        "train_survival",
        "val_survival",
        "train_recurrence",
        "val_align",
    }
    assert expected <= set(df.columns)
    assert df["epoch"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(df["val_loss"], scripted[:4])
    pd.testing.assert_frame_equal(df, h.to_frame(), check_dtype=False)
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == 2 and best["val_loss"] == 1.0
    # restore_best: the returned model holds the best epoch's weights
    states["returned"] = state(model)
    fresh = make_model(seed=42)
    T.load_checkpoint(fresh, tmp_path / "best.pt")
    assert_same(state(fresh), states["returned"])
    last = T.load_checkpoint(make_model(), tmp_path / "last.pt")
    assert last["epoch"] == 4
    assert any(not torch.equal(last["model"][k], best["model"][k]) for k in best["model"])


def test_plateau_halves_lr(data, tmp_path):
    def flat_val(outputs, batch, weights=None, objective="paper"):
        loss, parts = tiny_loss(outputs, batch, weights, objective)
        return (loss if torch.is_grad_enabled() else torch.tensor(1.0)), parts

    prof = profile(plateau_patience=1, early_stopping_patience=10, max_train_batches=1)
    h = T.fit(
        make_model(),
        data[0],
        data[1],
        prof,
        tmp_path,
        epochs=4,
        loss_fn=flat_val,
        device="cpu",
        progress=False,
    )
    lrs = h.to_frame()["lr"].tolist()
    assert lrs[0] == prof.train.lr and lrs[-1] < lrs[0]


def test_max_train_batches_and_nonfinite_loss(data, tmp_path):
    n_batches = {"n": 0}

    def counting(outputs, batch, weights=None, objective="paper"):
        if torch.is_grad_enabled():
            n_batches["n"] += 1
        return tiny_loss(outputs, batch, weights, objective)

    T.fit(
        make_model(),
        data[0],
        data[1],
        profile(max_train_batches=2),
        tmp_path / "a",
        epochs=1,
        loss_fn=counting,
        device="cpu",
        progress=False,
    )
    assert n_batches["n"] == 2

    def nan_loss(outputs, batch, weights=None, objective="paper"):
        loss, parts = tiny_loss(outputs, batch, weights, objective)
        return loss * float("nan"), parts

    with pytest.raises(T.TrainingError, match="CRLM-CT-"):
        T.fit(
            make_model(),
            data[0],
            data[1],
            profile(),
            tmp_path / "b",
            epochs=1,
            loss_fn=nan_loss,
            device="cpu",
            progress=False,
        )


def test_predict_columns_and_probabilities(data):
    model = make_model()
    df = T.predict(model, data[0], batch_size=6, device="cpu")
    assert len(df) == 20
    assert df["patient_id"].tolist() == [f"CRLM-CT-{1001 + i}" for i in range(20)]
    surv = df[[f"surv_p{k}" for k in range(1, 13)]].to_numpy()
    rec = df[[f"rec_p{k}" for k in range(1, 13)]].to_numpy()
    np.testing.assert_allclose(surv.sum(axis=1), 1.0, atol=1e-5)
    assert ((rec > 0) & (rec < 1)).all()
    att = df[[f"att_{k}" for k in range(1, 13)]].to_numpy()
    np.testing.assert_allclose(att.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(df["os_years"], data[0].os_years.numpy(), rtol=1e-6)
    assert set(df["os_event"].unique()) <= {0, 1}
    # same as running the model by hand in eval mode
    model.eval()
    with torch.no_grad():
        ref = torch.softmax(model(T.collate([data[0][i] for i in range(3)]))["survival_logits"], 1)
    np.testing.assert_allclose(surv[:3], ref.numpy(), rtol=1e-5)


def test_predict_writes_the_mass_beyond_year_12_of_a_13_class_head(data):
    """With the class beyond year 12 the 12 ``surv_p`` bins hold the deaths in years 1..12 and
    ``surv_p_beyond`` = S(12), the 13th class; together they sum to 1."""
    from crlm_lib.models.heads import PrognosisHeads
    from crlm_lib.types import BEYOND_COL, Predictions

    class HeadsModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = PrognosisHeads(N_CLIN)

        def forward(self, batch):
            rec, surv = self.heads(batch["clinical"])
            return {"recurrence_logits": rec, "survival_logits": surv, "aux": {}}

    torch.manual_seed(0)
    model = HeadsModel()
    df = T.predict(model, data[0], batch_size=6, device="cpu")
    pred = Predictions.from_frame(df)
    with torch.no_grad():
        ref = torch.softmax(model(T.collate([data[0][i] for i in range(20)]))["survival_logits"], 1)
    np.testing.assert_allclose(df[BEYOND_COL], ref[:, 12].numpy(), rtol=1e-6)
    np.testing.assert_allclose(pred.survival_pmf.sum(axis=1) + df[BEYOND_COL], 1.0, atol=1e-6)
    np.testing.assert_allclose(pred.curve("os")[:, -1], df[BEYOND_COL], atol=1e-6)
    assert (np.diff(pred.recurrence_cdf, axis=1) >= 0).all()


def test_select_device_and_to_device():
    assert T.select_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert T.select_device().type == "cpu"
    batch = T.collate([TinyDataset(2)[0], TinyDataset(2)[1]])
    moved = T.to_device(batch, torch.device("cpu"))
    assert moved["ct"].shape == (2, 1, 8, 8, 8)
    assert moved["patient_id"] == ["CRLM-CT-1001", "CRLM-CT-1002"]


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        T.load_checkpoint(make_model(), tmp_path / "missing.pt")
    torch.save({"weights": 1}, tmp_path / "bad.pt")
    with pytest.raises(T.TrainingError, match="bad.pt"):
        T.load_checkpoint(make_model(), tmp_path / "bad.pt")


def test_channels_last_3d_only_touches_5d_weights():
    model = nn.Sequential(nn.Conv3d(2, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 4))
    T.channels_last_3d(model)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert not model[0].weight.is_contiguous()
    assert model[1].weight.is_contiguous() and model[2].weight.is_contiguous()


def test_checkpoints_are_byte_reproducible(data, tmp_path):
    run(make_model(), data, tmp_path / "a", epochs=1)
    run(make_model(), data, tmp_path / "b", epochs=1)
    for name in ("best.pt",):
        a, b = (tmp_path / "a" / name).read_bytes(), (tmp_path / "b" / name).read_bytes()
        assert a == b and b".best.pt." not in a and b"tmp" not in a
    assert not list((tmp_path / "a").glob(".*.tmp"))  # no temporary file left behind


def test_resume_refuses_a_checkpoint_of_another_run(data, tmp_path):
    from crlm_lib.errors import CRLMUserError, RunMismatchError

    key = {"cohort": "c1", "split": "s1", "config": "k1"}
    run(make_model(), data, tmp_path / "r", epochs=1, run_key=key)
    before = (tmp_path / "r" / "last.pt").read_bytes()
    other = {**key, "cohort": "c2"}
    with pytest.raises(RunMismatchError, match="another cohort") as info:
        run(make_model(), data, tmp_path / "r", epochs=2, run_key=other)
    assert isinstance(info.value, CRLMUserError)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before  # nothing overwritten
    h = run(make_model(), data, tmp_path / "r", epochs=2, run_key=key)  # same key: resumes
    assert len(h.records) == 2


def test_extra_handler_sees_every_event_in_order(data, tmp_path):
    events: list[tuple[str, int]] = []

    class Spy(T.Handler):
        def started(self, state):
            events.append(("started", state.epoch))

        def epoch_completed(self, state):
            # runs after the default handlers: the row is recorded and last.pt written
            assert state.history.records[-1] is state.record
            assert state.last_path.is_file()
            events.append(("epoch", state.epoch))

        def completed(self, state):
            events.append(("completed", state.epoch))

    prof = profile(max_train_batches=1)
    handlers = T.default_handlers(prof.train, progress=False) + [Spy()]
    h = run(make_model(), data, tmp_path, prof=prof, handlers=handlers)
    assert events == [("started", 0), ("epoch", 1), ("epoch", 2), ("completed", 2)]
    assert len(h.records) == 2
    # without the Resume handler a second run starts afresh
    events.clear()
    handlers = [T.HistoryRecorder(), Spy()]
    run(make_model(), data, tmp_path, prof=prof, handlers=handlers)
    assert events[0] == ("started", 0)


@pytest.mark.parametrize(
    ("scripted", "best_epoch"),
    [([0.80, 0.60, 0.70, 0.75], 0), ([0.60, 0.65, 0.90, 0.70, 0.80], 2)],
)
def test_validation_c_monitor_with_the_untrained_start_as_a_candidate(
    data, tmp_path, monkeypatch, scripted, best_epoch
):
    """monitor="val_c_os": best.pt follows the validation C (higher is better) and, with
    score_start, the untrained start of an anchored model (epoch 0) is the first candidate: a
    run whose training never beats its start ends with the start's weights."""
    calls = iter(scripted)
    monkeypatch.setattr(T, "validation_c_index", lambda *a: next(calls))
    prof = profile(monitor="val_c_os", score_start=True, early_stopping_patience=2)
    model = make_model()
    model.anchored_start = True  # as a Cox-anchored 4D-ACFNet
    start = state(model)
    h = run(model, data, tmp_path, epochs=len(scripted) + 2, prof=prof)
    assert h.best_epoch == best_epoch and h.best_score == max(scripted)
    assert h.stopped_early and len(h.records) == best_epoch + 2
    assert [r["epoch"] for r in h.records][0] == 1  # the start gets no history row
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["epoch"] == best_epoch
    if best_epoch == 0:
        assert_same(state(model), start)
    else:
        assert any(not torch.equal(state(model)[k], start[k]) for k in start)
    with pytest.raises(ValueError, match="unknown monitor"):
        T.BestCheckpoint(2, monitor="val_auc")


def test_a_random_start_is_no_candidate(data, tmp_path, monkeypatch):
    """score_start scores only a model that starts at a fitted anchor: a randomly initialised
    model's best epoch is a trained one even when its start scored higher by chance."""
    calls = iter([0.60, 0.65, 0.70])  # no start score is drawn: epochs 1..3 only
    monkeypatch.setattr(T, "validation_c_index", lambda *a: next(calls))
    prof = profile(monitor="val_c_os", score_start=True, early_stopping_patience=5)
    h = run(make_model(), data, tmp_path, epochs=3, prof=prof)
    assert h.best_epoch == 3 and h.best_score == 0.70
