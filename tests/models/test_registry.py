"""Contract tests for every registered model (crlm_lib/models/__init__.py)."""

from __future__ import annotations

import pytest
import torch

from crlm_lib.config import get_profile
from crlm_lib.losses import total_loss
from crlm_lib.models import MODEL_NAMES, build_model, count_parameters

N_CLIN = 6


def _build(name, model_options, seed=0, **extra):
    torch.manual_seed(seed)
    return build_model(name, N_CLIN, get_profile("smoke"), **model_options(name), **extra)


def test_registry_names():
    expected = {
        "acfnet", "star", "cnn3d", "cnn3d_lstm", "resnet18_3d", "resnet34_3d",
        "resnet50_3d", "aminn", "stg", "stg_lite", "clinical_mlp",
    }  # fmt: skip
    assert set(MODEL_NAMES) == expected
    with pytest.raises(KeyError, match="unknown model"):
        build_model("nope", 3)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_loss_and_every_parameter_gets_gradient(name, make_batch, model_options):
    model = _build(name, model_options)
    model.train()
    batch = make_batch(2)
    out = model(batch)
    assert out["recurrence_logits"].shape == (2, 12)
    assert out["survival_logits"].shape == (2, 13)  # years 1..12 and alive at 12 years
    rec = torch.sigmoid(out["recurrence_logits"].detach())
    assert (rec.diff(dim=1) >= 0).all()  # cumulative recurrence, monotone by construction
    assert isinstance(out["aux"]["loss_terms"], dict)
    for key, term in out["aux"]["loss_terms"].items():
        assert term.ndim == 0, key
    assert hasattr(model, "gradcam_layer")
    assert model.gradcam_layer is None or isinstance(model.gradcam_layer, torch.nn.Module)
    loss, parts = total_loss(out, batch)
    assert torch.isfinite(loss)
    assert set(parts) >= {"surv", "recur", "total"}
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing}"
    print(f"{name}: {count_parameters(model):,} parameters (smoke widths)")


@pytest.mark.parametrize("name", ["acfnet", "star", "cnn3d_lstm", "aminn", "clinical_mlp"])
def test_same_seed_same_weights_after_two_steps(name, make_batch, model_options):
    def two_steps():
        model = _build(name, model_options, seed=3)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        for i in range(2):
            loss, _ = total_loss(model(make_batch(2, seed=i)), make_batch(2, seed=i))
            opt.zero_grad()
            loss.backward()
            opt.step()
        return model.state_dict()

    a, b = two_steps(), two_steps()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    "name,shape",
    [
        ("acfnet", (16, 32, 32)),
        ("star", (8, 16, 16)),
        ("cnn3d", (16, 32, 32)),
        ("cnn3d_lstm", (8, 16, 16)),
        ("resnet18_3d", (8, 16, 16)),
        ("stg_lite", (8, 16, 16)),
        ("aminn", (8, 16, 16)),
        ("clinical_mlp", (8, 16, 16)),
    ],
)
def test_overfits_a_batch_of_four(name, shape, make_batch, model_options):
    extra = {"widen_factor": 0.125} if name in ("resnet18_3d", "stg_lite") else {}
    model = _build(name, model_options, **extra)
    batch = make_batch(4, shape=shape, seed=1)
    # The small MLPs (AMINN's 8-d bottleneck, the clinical MLP) need a larger step.
    lr = 1e-2 if name in ("aminn", "clinical_mlp") else 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    weights = {"align": 0.0, "dis": 0.0, "contrastive": 0.0, "risk": 0.0, "recon": 0.0}

    def head_loss():
        loss, _ = total_loss(model(batch), batch, weights=weights)
        return loss

    first = float(head_loss().detach())
    for _ in range(40):
        loss = head_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = float(head_loss().detach())
    assert last < first / 3, f"{name}: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_papers_head_forms_are_an_option_of_every_model(name, make_batch, model_options):
    papers = {"survival_classes": "published12", "recurrence_form": "independent"}
    model = _build(name, model_options, **papers).eval()
    with torch.no_grad():
        out = model(make_batch(2))
    assert out["survival_logits"].shape == (2, 12)
    assert out["recurrence_logits"].shape == (2, 12)
    assert model.heads.survival_classes == "published12"
    assert model.heads.recurrence_form == "independent"
