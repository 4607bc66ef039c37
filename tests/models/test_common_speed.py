"""The fast forms of the 4D-ACFNet trunk equal their layer-by-layer references."""

from __future__ import annotations

import pytest
import torch

from crlm_lib.config import get_profile
from crlm_lib.models import build_model
from crlm_lib.models.common import (
    PatchDecoder,
    Stride2Conv3d,
    TemporalConv,
    _Stride2Conv3dFn,
    stride2_input_grad,
)


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


@pytest.mark.parametrize(("c_in", "shape"), [(1, (4, 8, 8)), (3, (2, 6, 4))])
def test_stride2_conv_equals_conv3d_forward_and_gradients(c_in, shape):
    torch.manual_seed(0)
    fast = Stride2Conv3d(c_in, 5, 3, stride=2, padding=1)
    ref = torch.nn.Conv3d(c_in, 5, 3, stride=2, padding=1)
    ref.load_state_dict(fast.state_dict())
    x = torch.randn(4, c_in, *shape, requires_grad=True)
    y_fast, y_ref = fast(x), ref(x)
    torch.testing.assert_close(y_fast, y_ref, rtol=1e-5, atol=1e-6)
    grads_fast = torch.autograd.grad((y_fast**2).sum(), [x, *fast.parameters()])
    grads_ref = torch.autograd.grad((y_ref**2).sum(), [x, *ref.parameters()])
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_stride2_input_grad_is_the_transposed_conv_in_float64():
    torch.manual_seed(1)
    x = torch.randn(2, 2, 4, 6, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_Stride2Conv3dFn.apply, (x, w, b))
    go = torch.randn(2, 3, 2, 3, 4, dtype=torch.float64)
    want = torch.nn.functional.conv_transpose3d(go, w, stride=2, padding=1, output_padding=1)
    torch.testing.assert_close(stride2_input_grad(go, w), want, rtol=1e-12, atol=1e-12)


def test_stride2_conv_has_conv3d_init_and_falls_back_on_odd_grids():
    torch.manual_seed(3)
    fast = Stride2Conv3d(1, 4, 3, stride=2, padding=1)
    torch.manual_seed(3)
    ref = torch.nn.Conv3d(1, 4, 3, stride=2, padding=1)
    torch.testing.assert_close(fast.weight, ref.weight, rtol=0, atol=0)
    x = torch.randn(2, 1, 5, 7, 6)  # odd D and H: the plain nn.Conv3d path
    torch.testing.assert_close(fast(x), ref(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="stride-2"):
        Stride2Conv3d(1, 4, 3, stride=1, padding=1)


@pytest.mark.parametrize("shape", [(8, 6, 12, 2, 4, 4), (1, 4, 12, 3, 5, 2)])
def test_temporal_conv_equals_conv3d_form(shape):
    torch.manual_seed(0)
    layer = TemporalConv(shape[1], 7)
    x = torch.randn(*shape, requires_grad=True)
    fast, ref = layer(x), layer.forward_3d(x)
    assert fast.shape == (shape[0], 7, *shape[2:])
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-6)
    grads_fast = torch.autograd.grad((fast**2).sum(), [x, *layer.parameters()])
    grads_ref = torch.autograd.grad((ref**2).sum(), [x, *layer.parameters()])
    for a, b in zip(grads_fast, grads_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_recon_encoder_keeps_state_dict_keys():
    model = build_model("acfnet", 4, get_profile("smoke"))
    keys = {k for k in model.state_dict() if k.startswith("recon_encoder.net.0.")}
    assert keys == {f"recon_encoder.net.0.{i}.{p}" for i in (0, 1) for p in ("weight", "bias")}
    assert isinstance(model.recon_encoder.net[0][0], Stride2Conv3d)
