"""The fast forms of the 4D-ACFNet trunk equal their layer-by-layer references."""

from __future__ import annotations

import pytest
import torch

from crlm_lib.config import get_profile
from crlm_lib.models import build_model
from crlm_lib.models.common import PatchDecoder


@pytest.mark.parametrize("shape", [(2, 4, 4), (3, 2, 5)])
def test_patch_decoder_equals_modules_forward_and_gradients(shape):
    torch.manual_seed(0)
    dec = PatchDecoder(6, 4)
    x = torch.randn(5, 6, *shape, requires_grad=True)
    fast = dec(x)
    assert fast.shape == (5, 1, *(2 * s for s in shape))
    grads_fast = torch.autograd.grad((fast**2).sum(), [x, *dec.parameters()])
    ref = dec.forward_modules(x)
    grads_ref = torch.autograd.grad((ref**2).sum(), [x, *dec.parameters()])
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_acfnet_decoder_keeps_state_dict_keys():
    model = build_model("acfnet", 4, get_profile("smoke"))
    keys = {k for k in model.state_dict() if k.startswith("decoder.")}
    assert keys == {"decoder.0.weight", "decoder.0.bias", "decoder.2.weight", "decoder.2.bias"}
