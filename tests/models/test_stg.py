"""STG / STG-lite (crlm_lib/models/stg.py)."""

from __future__ import annotations

import torch

from crlm_lib.data.lesions import FEATURE_NAMES
from crlm_lib.models import STG, build_model, count_parameters


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


def test_each_lesion_is_a_node_and_padding_is_ignored(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(
        "stg_lite", 6, smoke_cfg, widen_factor=0.125, n_lesion_features=len(FEATURE_NAMES)
    )
    model.eval()
    batch = make_batch(2, shape=(8, 16, 16))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, :3], mask[1, :1] = True, True  # patient 0: 3 lesions, patient 1: 1 lesion
    batch["lesion_mask"] = mask
    with torch.no_grad():
        a = model(batch)["survival_logits"]
        padded = dict(batch, lesion_features=batch["lesion_features"].clone())
        padded["lesion_features"][:, 5:] = 100.0  # padding rows must not matter
        torch.testing.assert_close(model(padded)["survival_logits"], a)
        one = dict(batch, lesion_features=batch["lesion_features"].clone())
        one["lesion_features"][0, 2] += 3.0  # one real lesion of patient 0 changes
        b = model(one)["survival_logits"]
    assert not torch.allclose(a[0], b[0])  # its own patient moves
    torch.testing.assert_close(a[1], b[1])  # the other patient's graph is separate
    graph = model._graph(torch.zeros(5, 4), torch.zeros(1, 4), torch.zeros(1, 4),
                         torch.zeros(3, 4), torch.zeros(12, 4))  # fmt: skip
    assert graph["lesion"].num_nodes == 3
    assert graph["lesion", "near", "lesion"].edge_index.shape[1] == 3 * 2
    assert graph["time", "next", "time"].edge_index[:, 0].tolist() == [0, 1]


def test_temporal_nodes_make_years_differ_beyond_a_fixed_bias(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(
        "stg_lite", 6, smoke_cfg, widen_factor=0.125, n_lesion_features=len(FEATURE_NAMES)
    )
    model.eval()
    batch = make_batch(2, shape=(8, 16, 16))
    with torch.no_grad():
        a = model(batch)["survival_logits"]
        model.time_embed.weight[3] += 1.0  # year 4's node
        b = model(batch)["survival_logits"]
    changed = (a - b).abs().amax(dim=0) > 1e-6
    assert changed[3] and changed[2] and changed[4]  # year 4 and, via the chain, 3 and 5
    assert not changed[[0, 8, 11]].any()  # one SAGE layer (lite): farther years untouched
    no_lesion = dict(batch)
    del no_lesion["lesion_features"]
    assert torch.isfinite(model(no_lesion)["survival_logits"]).all()  # 0 lesion nodes


def test_stg_options_object_equals_keywords(smoke_cfg):
    from crlm_lib.models.stg import STGOptions

    torch.manual_seed(0)
    a = STG(3, smoke_cfg, lite=True, n_lesion_features=4, widen_factor=0.125).state_dict()
    torch.manual_seed(0)
    opts = STGOptions(lite=True, n_lesion_features=4, widen_factor=0.125)
    b = STG(3, smoke_cfg, opts).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
