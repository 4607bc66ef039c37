"""STG / STG-lite (crlm_lib/models/stg.py)."""

from __future__ import annotations

import torch

from crlm_lib.models import build_model, count_parameters


def test_stg_lite_has_about_78_55_percent_fewer_parameters(smoke_cfg):
    full = count_parameters(build_model("stg", 6, smoke_cfg))
    lite = count_parameters(build_model("stg_lite", 6, smoke_cfg))
    reduction = 1 - lite / full
    print(f"stg {full:,} vs stg_lite {lite:,} parameters: {100 * reduction:.2f}% fewer")
    assert abs(reduction - 0.7855) < 0.03


def test_loss_terms_risk_and_contrastive(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model("stg_lite", 6, smoke_cfg, widen_factor=0.125).train()
    batch = make_batch(1, shape=(8, 16, 16))
    out = model(batch)
    terms = out["aux"]["loss_terms"]
    assert float(terms["contrastive"].detach()) == 0.0  # B = 1, empty memory: no contrast
    assert "risk" in terms and torch.isfinite(terms["risk"])
    out = model(make_batch(1, shape=(8, 16, 16), seed=1))  # memory now holds a negative
    assert float(out["aux"]["loss_terms"]["contrastive"].detach()) > 0
    del batch["dfs_years"]
    assert "risk" not in model.eval()(batch)["aux"]["loss_terms"]


def test_masks_matter_and_are_required(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model("stg_lite", 6, smoke_cfg, widen_factor=0.125).eval()
    batch = make_batch(1, shape=(8, 16, 16))
    with torch.no_grad():
        a = model(batch)["survival_logits"]
        batch["masks"] = torch.zeros_like(batch["masks"])
        b = model(batch)["survival_logits"]
    assert not torch.allclose(a, b)
    del batch["masks"]
    try:
        model(batch)
    except KeyError as err:
        assert "masks" in str(err)
    else:
        raise AssertionError("STG without masks must fail")


def test_weights_path_loads_local_state_dict(smoke_cfg, tmp_path):
    torch.manual_seed(0)
    a = build_model("stg_lite", 6, smoke_cfg, widen_factor=0.125)
    torch.save(a.state_dict(), tmp_path / "stg.pt")
    torch.manual_seed(1)
    b = build_model("stg_lite", 6, smoke_cfg, widen_factor=0.125, weights_path=tmp_path / "stg.pt")
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
