"""Baselines (crlm_lib/models/baselines.py)."""

from __future__ import annotations

import pytest
import torch

from crlm_lib.models import build_model
from crlm_lib.models.acfnet import ACFNet


def test_cnn3d_is_the_acfnet_trunk_without_time(smoke_cfg, make_batch):
    model = build_model("cnn3d", 6, smoke_cfg, burden_target=False, intensity_target=False)
    assert isinstance(model, ACFNet) and not model.attention4d and not model.reconstruction
    out = model(make_batch(2))
    assert out["aux"]["loss_terms"] == {} and "attention" not in out["aux"]
    aux_terms = {"burden", "intensity"}
    assert set(build_model("cnn3d", 6, smoke_cfg)(make_batch(2))["aux"]["loss_terms"]) == aux_terms
    plus_b = build_model("cnn3d", 6, smoke_cfg, align=True)
    assert set(plus_b(make_batch(2))["aux"]["loss_terms"]) == {"align", *aux_terms}


def test_cnn3d_lstm_depends_on_time_order(smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model("cnn3d_lstm", 6, smoke_cfg).eval()
    batch = make_batch(2)
    with torch.no_grad():
        a = model(batch)["survival_logits"]
        model.time_embed.weight.copy_(model.time_embed.weight.flip(0))
        b = model(batch)["survival_logits"]
    assert not torch.allclose(a, b)


def test_clinical_mlp_ignores_ct_and_resnet_reads_it(smoke_cfg, make_batch):
    torch.manual_seed(0)
    clin = build_model("clinical_mlp", 6, smoke_cfg).eval()
    res = build_model("resnet18_3d", 6, smoke_cfg, widen_factor=0.125).eval()
    batch = make_batch(2)
    other = dict(batch, ct=-batch["ct"])
    with torch.no_grad():
        torch.testing.assert_close(clin(batch)["survival_logits"], clin(other)["survival_logits"])
        assert not torch.allclose(res(batch)["survival_logits"], res(other)["survival_logits"])
    assert clin.gradcam_layer is None and res.gradcam_layer is res.encoder.layer4


def test_resnet_group_norm_trains_at_batch_one(smoke_cfg, make_batch):
    model = build_model("resnet18_3d", 6, smoke_cfg, widen_factor=0.125, norm="group").train()
    out = model(make_batch(1, shape=(8, 16, 16)))  # last stage is 1x1x1
    assert torch.isfinite(out["survival_logits"]).all()


def test_resnet_and_stg_stems_are_hara_by_default_and_monai_on_request(smoke_cfg, make_batch):
    """The 7x7x7 first convolution strides 1 along the slices and 2 in-plane (Hara et al.);
    ``stem_stride=1`` is MONAI's full-grid stem; the weights are the same shape either way."""
    from crlm_lib.models.common import HARA_STEM_STRIDE

    assert HARA_STEM_STRIDE == (1, 2, 2)
    batch = dict(make_batch(2, shape=(8, 16, 16)), masks=torch.ones(2, 5, 8, 16, 16))
    for name, opts in (("resnet18_3d", {"widen_factor": 0.125}), ("stg_lite", {})):
        hara = build_model(name, 6, smoke_cfg, **opts)
        full = build_model(name, 6, smoke_cfg, stem_stride=1, **opts)
        conv = hara.encoder.conv1 if name == "resnet18_3d" else hara.anat_encoder.net.conv1
        conv_full = full.encoder.conv1 if name == "resnet18_3d" else full.anat_encoder.net.conv1
        assert conv.kernel_size == (7, 7, 7) and conv.stride == (1, 2, 2)
        assert conv_full.stride == (1, 1, 1)
        shapes = {k: v.shape for k, v in hara.state_dict().items()}
        assert shapes == {k: v.shape for k, v in full.state_dict().items()}
        with torch.no_grad():
            assert hara.eval()(batch)["survival_logits"].shape == (2, 13)


def test_resnet_options_object_equals_keywords_and_norm_is_checked(smoke_cfg):
    from crlm_lib.models.baselines import ResNet3D, ResNet3DOptions

    torch.manual_seed(0)
    a = ResNet3D("resnet18_3d", 3, smoke_cfg, norm="group", widen_factor=0.125).state_dict()
    torch.manual_seed(0)
    opts = ResNet3DOptions(norm="group", widen_factor=0.125)
    b = ResNet3D("resnet18_3d", 3, smoke_cfg, opts).state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="layer"):
        ResNet3DOptions(norm="layer")
