"""AMINN (crlm_lib/models/aminn.py)."""

from __future__ import annotations

import pytest
import torch

from crlm_lib.data.lesions import FEATURE_NAMES
from crlm_lib.models import build_model


@pytest.mark.parametrize("pooling", ["mean", "max", "attention"])
def test_masked_lesions_do_not_change_the_prediction(pooling, smoke_cfg, make_batch):
    torch.manual_seed(0)
    model = build_model(
        "aminn", 6, smoke_cfg, n_lesion_features=len(FEATURE_NAMES), pooling=pooling
    ).eval()
    batch = make_batch(2)
    with torch.no_grad():
        a = model(batch)
        batch["lesion_features"][~batch["lesion_mask"]] = 100.0  # padding rows
        b = model(batch)
    torch.testing.assert_close(a["survival_logits"], b["survival_logits"])
    torch.testing.assert_close(a["aux"]["loss_terms"]["recon"], b["aux"]["loss_terms"]["recon"])


def test_recon_term_and_no_lesion_patient(smoke_cfg, make_batch):
    model = build_model(
        "aminn", 6, smoke_cfg, n_lesion_features=len(FEATURE_NAMES), use_clinical=True
    )
    batch = make_batch(2)
    batch["lesion_mask"][1] = False  # a patient without lesions
    out = model(batch)
    assert torch.isfinite(out["survival_logits"]).all()
    assert out["aux"]["loss_terms"]["recon"] > 0
    assert out["aux"]["h_clin"].shape == (2, 32)
    with pytest.raises(TypeError, match="n_lesion_features"):
        build_model("aminn", 6, smoke_cfg)
