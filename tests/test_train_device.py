"""The GPU code path of crlm_lib.train, exercised on CPU: device selection, autocast choice,
bf16 autocast (``device_type='cpu'``), loaders (pinning, DDP shards), scaler checkpoint."""

from __future__ import annotations

import pytest
import torch
from test_train import TinyDataset, TinyModel, tiny_loss
from torch import nn

from crlm_lib import distributed
from crlm_lib import train as T
from crlm_lib.checkpoints import unwrap
from crlm_lib.config import get_profile


def _profile(**changes):
    smoke = get_profile("smoke")
    return smoke.with_(train=smoke.train.__class__(**{**smoke.train.__dict__, **changes}))


def test_amp_dtype_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert T.amp_dtype(cpu, "auto") is None  # autocast off on CPU unless asked
    assert T.amp_dtype(cpu, "off") is None
    assert T.amp_dtype(cpu, "bf16") is torch.bfloat16
    assert T.amp_dtype(cuda, "off") is None
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert T.amp_dtype(cuda, "auto") is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert T.amp_dtype(cuda, "auto") is torch.float16  # pre-Ampere: fp16 + grad scaler
    with pytest.raises(ValueError, match="amp must be"):
        T.amp_dtype(cpu, "half")


def test_select_device_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert T.select_device(None) == torch.device("cpu")
    assert T.select_device("cpu") == torch.device("cpu")


def test_bf16_autocast_path_on_cpu(tmp_path):
    seen: list[torch.dtype] = []
    torch.manual_seed(0)
    model = TinyModel(dropout=0.0)
    model.conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    history = T.fit(
        model,
        TinyDataset(8),
        TinyDataset(4, seed=1),
        _profile(amp="bf16", batch_size=4),
        tmp_path,
        epochs=1,
        loss_fn=tiny_loss,
        device="cpu",
        progress=False,
    )
    assert seen and all(d == torch.bfloat16 for d in seen)  # the forward ran in bf16
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights fp32
    assert torch.isfinite(torch.tensor(history.records[0]["train_loss"]))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert "scaler" in ckpt  # fp16 runs resume their loss scale too
    pred = T.predict(model, TinyDataset(4), device="cpu", amp="bf16")
    assert pred.filter(like="surv_p").sum(axis=1).round(4).eq(1.0).all()


def test_default_cpu_run_has_no_autocast(tmp_path):
    seen: list[torch.dtype] = []
    model = TinyModel(dropout=0.0)
    model.conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    T.fit(
        model, TinyDataset(4), None, _profile(batch_size=4), tmp_path, epochs=1,
        loss_fn=tiny_loss, device="cpu", progress=False,
    )  # fmt: skip
    assert seen and all(d == torch.float32 for d in seen)


def test_loaders_pin_only_when_asked_and_shard_under_ddp():
    ds = TinyDataset(7)
    plain = T._loader(ds, 2, True, 0, 0)
    assert not plain.pin_memory
    assert T._loader(ds, 2, True, 0, 0, pin_memory=True).pin_memory
    ids = {}
    for r in (0, 1):
        rank = distributed.DistInfo(rank=r, world_size=2)
        train = T._loader(ds, 1, True, 0, 0, rank=rank, epoch=3)
        val = T._loader(ds, 1, False, 0, 0, rank=rank)
        ids[r] = [b["patient_id"][0] for b in train]
        assert [b["patient_id"][0] for b in val] == [f"CRLM-CT-{1001 + i}" for i in range(r, 7, 2)]
    assert len(ids[0]) == len(ids[1]) == 4  # padded to equal step counts
    assert set(ids[0]) | set(ids[1]) == {f"CRLM-CT-{1001 + i}" for i in range(7)}


def test_unwrap_ddp_and_compile_wrappers():
    inner = nn.Linear(2, 2)

    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.module = inner

    assert unwrap(Wrapper()) is inner
    assert unwrap(inner) is inner


def test_distributed_info_without_process_group():
    assert distributed.info() == distributed.DistInfo()
    assert not distributed.info().enabled
    assert distributed.init_from_env({"WORLD_SIZE": "1"}) == distributed.DistInfo()
