"""crlm_lib.explain.gradcam on toy models (fast, CPU)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from toys import (  # noqa: E402
    BRIGHT,
    DARK,
    GRID,
    LinearFused,
    ToyCNN,
    ToyTimeResolved,
    make_patient,
)

from crlm_lib import explain  # noqa: E402
from crlm_lib.config import N_YEARS  # noqa: E402


def test_gradcam_finds_the_informative_region_and_respects_the_liver():
    batch = make_patient()
    maps = explain.yearly_gradcam(ToyCNN(), batch)
    assert maps.shape == (N_YEARS, *GRID)
    assert maps.dtype == np.float32 and maps.min() >= 0
    liver = batch["masks"][0, 0].numpy() > 0
    assert np.all(maps[:, ~liver] == 0)
    bright = np.zeros(GRID, bool)
    bright[BRIGHT] = True
    dark = np.zeros(GRID, bool)
    dark[DARK] = True
    for k in range(N_YEARS - 1):
        total = maps[k].sum()
        assert total > 0
        # upsampling blurs one low-res voxel into the neighbours: dilate the cube by 2 voxels
        near = np.zeros(GRID, bool)
        near[0:8, 0:9, 0:9] = True
        assert maps[k][near].sum() / total > 0.9
        assert maps[k][dark].sum() / total < 0.02
    # year 12 has a negative weight: ReLU leaves nothing
    assert maps[-1].max() == 0
    # shared normalisation: one maximum over all years, the last (largest weight) year peaks
    assert maps.max() == pytest.approx(1.0)
    assert maps[N_YEARS - 2].max() == pytest.approx(1.0)
    assert maps[0].max() < 0.7


def test_gradcam_per_year_normalisation_and_year_subset():
    maps = explain.yearly_gradcam(ToyCNN(), make_patient(), years=[0, 5], normalise="per_year")
    assert maps.shape == (2, *GRID)
    np.testing.assert_allclose(maps.reshape(2, -1).max(1), [1.0, 1.0], rtol=1e-6)


def test_gradcam_time_resolved_layer_maps_year_k_to_timestep_k():
    grid = (4, 6, 24)
    batch = {"ct": torch.ones(1, 1, *grid), "masks": torch.ones(1, 5, *grid)}
    model = ToyTimeResolved(width=grid[2])
    maps = explain.yearly_gradcam(model, batch, normalise="none")
    assert maps.shape == (N_YEARS, *grid)
    for k in range(N_YEARS):
        column_mass = maps[k].sum(axis=(0, 1))
        assert column_mass[2 * k : 2 * k + 2].sum() / column_mass.sum() > 0.99
    summed = explain.yearly_gradcam(model, batch, normalise="none", time_mode="sum")
    np.testing.assert_allclose(summed, maps, rtol=1e-5, atol=1e-7)


def test_gradcam_accepts_a_dataset_item():
    batch = make_patient()
    item = {k: (v[0] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}
    a = explain.yearly_gradcam(ToyCNN(), item, years=[3])
    b = explain.yearly_gradcam(ToyCNN(), batch, years=[3])
    np.testing.assert_array_equal(a, b)


def test_gradcam_without_layer_raises_a_clear_error():
    with pytest.raises(explain.GradCamLayerError, match="CRLM-CT-9001.*gradcam_layer=None"):
        explain.yearly_gradcam(LinearFused(4), make_patient())


def test_gradcam_restriction_needs_masks():
    batch = make_patient()
    del batch["masks"]
    with pytest.raises(explain.ExplainError, match="masks"):
        explain.yearly_gradcam(ToyCNN(), batch)
    assert explain.yearly_gradcam(ToyCNN(), batch, restrict_to=None).shape == (N_YEARS, *GRID)


def test_randomisation_check_returns_a_correlation():
    torch.manual_seed(0)
    model = ToyCNN()
    rho = explain.randomisation_check(model, make_patient(), seed=1)
    assert -1.0 <= rho <= 1.0
    # the trained model is left untouched
    assert torch.all(model.gradcam_layer[0].weight[0] == 1.0 / 27)
    # identical maps correlate perfectly: the statistic is not a constant
    maps = explain.yearly_gradcam(model, make_patient(), normalise="none")
    assert np.isfinite(maps).all()


def _captum_maps(model, batch, fold_time: bool) -> np.ndarray:
    """The same maps from captum's LayerGradCam (one forward and backward pass per year): the
    reference the one-forward implementation must equal."""
    from captum.attr import LayerAttribution, LayerGradCam

    from crlm_lib.explain.gradcam import _CTForward

    wrapper = _CTForward(model, batch, "recurrence").eval()
    layer, handle = model.gradcam_layer, None
    if fold_time:  # [B, C, T, ...] seen by captum as [B, C*T, ...], one weight per (c, t)
        fold = torch.nn.Flatten(1, 2)
        handle = layer.register_forward_hook(lambda _m, _i, out: fold(out).reshape(out.shape))
        layer = fold
    cam, ct = LayerGradCam(wrapper, layer), batch["ct"].float()
    grid = tuple(ct.shape[-3:])
    maps = []
    for k in range(N_YEARS):
        if fold_time:
            raw = cam.attribute(ct, target=k, attr_dim_summation=False)
            n_t = raw.shape[1] // model.gradcam_channels
            raw = raw.reshape(1, -1, n_t, *raw.shape[2:]).sum(dim=1)[:, k % n_t]
            lowres = torch.relu(raw).unsqueeze(1)
        else:
            lowres = cam.attribute(ct, target=k, relu_attributions=True)
        maps.append(LayerAttribution.interpolate(lowres.detach(), grid, "trilinear")[0, 0])
    if handle is not None:
        handle.remove()
    return torch.stack(maps).clamp_min(0).numpy()


def test_one_forward_gradcam_equals_captum_layergradcam():
    batch = make_patient()
    torch.manual_seed(0)
    model = ToyCNN()
    with torch.no_grad():  # weights that differ per year, so that every map is informative
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ours = explain.yearly_gradcam(model, batch, normalise="none", restrict_to=None)
    np.testing.assert_allclose(ours, _captum_maps(model, batch, False), rtol=1e-5, atol=1e-7)
    grid = (4, 6, 24)
    timed = {"ct": torch.rand(1, 1, *grid), "masks": torch.ones(1, 5, *grid)}
    model = ToyTimeResolved(width=grid[2])
    model.gradcam_channels = model.conv.out_channels
    ours = explain.yearly_gradcam(model, timed, normalise="none", restrict_to=None)
    np.testing.assert_allclose(ours, _captum_maps(model, timed, True), rtol=1e-5, atol=1e-7)
