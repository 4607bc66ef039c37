"""Tests of crlm_lib.explain on toy models that follow the model contract (fast, CPU)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from crlm_lib import explain  # noqa: E402
from crlm_lib.config import N_YEARS  # noqa: E402

torch.set_num_threads(1)

GRID = (8, 16, 16)
BRIGHT = (slice(2, 6), slice(2, 7), slice(2, 7))  # the region the toy model reads
DARK = (slice(2, 6), slice(9, 14), slice(9, 14))  # equally strong structure it ignores


class ToyCNN(nn.Module):
    """Output depends only on channel 0 ("bright" detector) of a stride-2 conv layer.

    Channel 1 detects dark structure with the same strength but feeds no output, so Grad-CAM
    must put its mass on the bright cube, not on the dark one. Year 12's weight is negative,
    so its ReLU'd map must be empty.
    """

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv3d(1, 2, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0] = 1.0 / 27
            conv.weight[1] = -1.0 / 27
            conv.bias.zero_()
        self.gradcam_layer = nn.Sequential(conv, nn.ReLU())
        w = torch.linspace(1.0, 2.0, N_YEARS)
        w[-1] = -1.0
        self.register_buffer("w", w)

    def forward(self, batch: dict) -> dict:
        feats = self.gradcam_layer(batch["ct"])  # [B, 2, 4, 8, 8]
        score = feats[:, 0].mean(dim=(1, 2, 3))  # [B]
        rec = score[:, None] * self.w[None] * 10
        return {"recurrence_logits": rec, "survival_logits": -rec, "aux": {}}


class TimeGate(nn.Module):
    """``[B, C, D, H, W] -> [B, C, T, D, H, W]``: timestep t sees only W-columns [2t, 2t+2)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        gates = torch.zeros(N_YEARS, 1, 1, width)
        for t in range(N_YEARS):
            gates[t, :, :, 2 * t : 2 * t + 2] = 1.0
        self.register_buffer("gates", gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) * self.gates[None, None]


class ToyTimeResolved(nn.Module):
    """Time-resolved layer like 4D-ACFNet's: year k's logit reads timestep k only."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.gradcam_layer = TimeGate(width)

    def forward(self, batch: dict) -> dict:
        feats = self.gradcam_layer(torch.relu(self.conv(batch["ct"])))  # [B, 3, T, D, H, W]
        rec = feats.sum(dim=1).mean(dim=(2, 3, 4)) * 10  # [B, T]
        return {"recurrence_logits": rec, "survival_logits": rec, "aux": {}}


class LinearFused(nn.Module):
    """Logits linear in the clinical vector plus an image term; ``gradcam_layer`` None."""

    gradcam_layer = None

    def __init__(self, n_features: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(n_features, N_YEARS, generator=g))
        self.register_buffer("v", torch.linspace(0.5, 1.5, N_YEARS))

    def forward(self, batch: dict) -> dict:
        img = batch["ct"].mean(dim=(1, 2, 3, 4))  # [B]
        rec = batch["clinical"] @ self.w + img[:, None] * self.v[None]
        return {"recurrence_logits": rec, "survival_logits": rec, "aux": {}}


def make_patient(pid: str = "CRLM-CT-9001", shift: float = 0.0) -> dict:
    ct = torch.zeros(1, 1, *GRID)
    ct[(0, 0, *BRIGHT)] = 1.0
    ct[(0, 0, *DARK)] = -1.0
    masks = torch.zeros(1, 5, *GRID)
    masks[0, 0, 1:, :, :15] = 1.0  # liver: everything but slice 0 and the last column
    masks[(0, 4, *BRIGHT)] = 1.0
    return {"patient_id": [pid], "ct": ct + shift, "masks": masks, "clinical": torch.zeros(1, 4)}


# ---------------------------------------------------------------------------- Grad-CAM


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


# ---------------------------------------------------------------------------- NIfTI


def make_meta() -> dict:
    return {
        "z_index": np.array([-1, 0, 1, 2, 3, 4, 5, 6]),
        "source_shape": np.array([10, 20, 24]),  # Z, Y, X
        "source_spacing_mm": np.array([5.0, 0.8, 0.7]),  # z, y, x
        "origin_mm": np.array([-100.0, 50.0, -300.0]),  # x, y, z (LPS)
        "direction": np.eye(3).ravel(),
    }


def test_affine_maps_voxel_zero_to_dicom_origin_in_ras():
    meta = make_meta()
    affine = explain.heatmap_affine_ras(meta)
    np.testing.assert_allclose(affine @ [0, 0, 0, 1], [100.0, -50.0, -300.0, 1.0])
    # one step along x (column index) moves 0.7 mm to the patient's left = -x in RAS
    np.testing.assert_allclose(affine @ [1, 0, 0, 1], [99.3, -50.0, -300.0, 1.0])
    np.testing.assert_allclose(affine @ [0, 0, 1, 1], [100.0, -50.0, -295.0, 1.0])


def test_export_nifti_has_source_geometry(tmp_path):
    meta = make_meta()
    heat = np.zeros((N_YEARS, *GRID), np.float32)
    heat[:, 3] = 1.0  # processed slice 3 = source slice z_index[3] = 2
    heat[4, 3] = 0.5
    (path,) = explain.export_heatmaps_nifti(heat, meta, tmp_path / "p.nii.gz")
    img = nib.load(path)
    assert img.shape == (24, 20, 10, N_YEARS)  # [X, Y, Z, years] = source [Z, Y, X] reversed
    np.testing.assert_allclose(img.affine, explain.heatmap_affine_ras(meta), atol=1e-4)
    data = img.get_fdata()
    assert np.allclose(data[:, :, 2, 0], 1.0) and np.allclose(data[:, :, 2, 4], 0.5)
    assert data[:, :, [0, 1, *range(3, 10)], :].max() == 0
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_export_nifti_per_year_reads_back_in_dicom_lps(tmp_path):
    meta = make_meta()
    meta["direction"] = np.array([1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0])  # rows run anterior
    heat = np.random.default_rng(0).random((N_YEARS, *GRID)).astype(np.float32)
    paths = explain.export_heatmaps_nifti(heat, meta, tmp_path / "p.nii.gz", per_year=True)
    assert [p.name for p in paths][:2] == ["p_year01.nii.gz", "p_year02.nii.gz"]
    assert len(paths) == N_YEARS
    image = sitk.ReadImage(str(paths[0]))  # ITK (like 3D Slicer) converts RAS back to LPS
    assert image.GetSize() == (24, 20, 10)
    np.testing.assert_allclose(image.GetOrigin(), meta["origin_mm"], atol=1e-3)
    np.testing.assert_allclose(image.GetSpacing(), (0.7, 0.8, 5.0), atol=1e-4)
    np.testing.assert_allclose(image.GetDirection(), meta["direction"], atol=1e-5)


# ---------------------------------------------------------------------------- SHAP


def test_clinical_shap_linear_model_is_additive_with_own_image_fixed():
    n_feat = 4
    model = LinearFused(n_feat)
    rng = np.random.default_rng(0)
    background = rng.normal(size=(30, n_feat)).astype(np.float32)
    patients = []
    for i in range(3):
        p = make_patient(f"CRLM-CT-90{i:02d}", shift=0.5 * i)
        p["clinical"] = torch.tensor(rng.normal(size=(1, n_feat)), dtype=torch.float32)
        patients.append(p)
    names = [f"f{j}" for j in range(n_feat)]
    expl = explain.clinical_shap(
        model, patients, background, names, output="recurrence_logit", nsamples=400, progress=False
    )
    assert expl.values.shape == (3, n_feat)
    assert list(expl.instance_names) == ["CRLM-CT-9000", "CRLM-CT-9001", "CRLM-CT-9002"]
    # exact (interventional) SHAP of a linear function: w_j (x_j - mean background_j)
    w = model.w.mean(dim=1).numpy()
    x = np.concatenate([p["clinical"].numpy() for p in patients])
    exact = w * (x - background.mean(axis=0))
    np.testing.assert_allclose(expl.values, exact, atol=0.1 * np.abs(exact).max())
    # base value carries each patient's own image term (image held fixed, not averaged)
    img = np.array([p["ct"].mean().item() for p in patients])
    expected_base = float(background.mean(0) @ w) + img * model.v.mean().item()
    np.testing.assert_allclose(expl.base_values, expected_base, rtol=1e-4, atol=1e-5)
    gap = explain.shap_additivity_gap(expl, model, patients, output="recurrence_logit")
    assert gap["relative_max_gap"] < 0.1
    # Kernel SHAP (all 2**4 coalitions enumerated) agrees with expected gradients here
    check = explain.kernel_shap_check(
        expl, model, patients, background, output="recurrence_logit", nsamples=64
    )
    assert check["kernel_max_abs_gap"] < 1e-4
    assert check["max_abs_diff"] < 0.1 * np.abs(exact).max()
    # a nonlinear output is explained too; its gap is reported (finite), not hidden
    expl_risk = explain.clinical_shap(
        model, patients, background, names, nsamples=50, progress=False
    )
    gap_risk = explain.shap_additivity_gap(expl_risk, model, patients)
    assert np.isfinite(gap_risk["max_abs_gap"])
    # figures
    for fig in (explain.plot_shap_beeswarm(expl), explain.plot_shap_bar(expl)):
        assert len(fig.axes) >= 1
        plt.close(fig)


def test_risk_output_definitions():
    rec = torch.zeros(2, N_YEARS)
    surv = torch.zeros(2, N_YEARS)
    out = {"recurrence_logits": rec, "survival_logits": surv}
    np.testing.assert_allclose(explain.risk_output(out, "risk"), [0.5, 0.5])
    np.testing.assert_allclose(explain.risk_output(out, "mortality_year", year=3), [0.25, 0.25])
    np.testing.assert_allclose(explain.risk_output(out, "expected_survival_years"), [6.0, 6.0])
    with pytest.raises(ValueError):
        explain.risk_output(out, "nonsense")


# ---------------------------------------------------------------------------- figures


def test_montage_renders_with_twelve_panels_and_a_colour_bar(tmp_path):
    batch = make_patient()
    maps = explain.yearly_gradcam(ToyCNN(), batch)
    fig = explain.plot_yearly_montage(batch["ct"][0, 0].numpy(), maps, batch["masks"][0].numpy())
    assert len(fig.axes) == N_YEARS + 1
    titles = [ax.get_title() for ax in fig.axes[:N_YEARS]]
    assert titles[0] == "Year 1" and titles[-1] == "Year 12"
    assert fig.axes[-1].get_ylabel() == "Grad-CAM (normalised)"
    # default slice = most tumour (rows 2..5 have the tumour; ties -> first)
    assert "axial slice 2" in fig._suptitle.get_text()
    fig.savefig(tmp_path / "montage.png")
    assert (tmp_path / "montage.png").stat().st_size > 1000
    plt.close(fig)


def test_patient_curves_and_attention_render(tmp_path):
    row = {f"rec_p{k}": min(1.0, 0.1 * k) for k in range(1, 13)}
    row.update({f"surv_p{k}": 1.0 / 12 for k in range(1, 13)})
    row.update(patient_id="CRLM-CT-9001", os_years=4.2, os_event=0, dfs_years=1.5, dfs_event=1)
    fig = explain.plot_patient_curves(pd.Series(row))
    assert len(fig.axes) == 2
    assert all(ax.get_xlabel() == "Years after resection" for ax in fig.axes)
    fig.savefig(tmp_path / "curves.png")
    plt.close(fig)

    attn = np.random.default_rng(0).dirichlet(np.ones(N_YEARS), size=10)
    df = pd.DataFrame(attn, columns=[f"att_{k}" for k in range(1, 13)])
    for source in (attn, df):
        fig = explain.attention_over_years(source)
        assert len(fig.axes) == 1
        line = fig.axes[0].lines[0]
        np.testing.assert_allclose(line.get_ydata(), attn.mean(axis=0))
        fig.savefig(tmp_path / "attn.png")
        plt.close(fig)


def test_default_inversion_agrees_with_the_slice_mapping(tmp_path):
    meta = make_meta()
    heat = np.zeros((2, *GRID), np.float32)
    heat[:, 5] = 0.75  # processed slice 5 -> source slice 4
    paths = explain.export_heatmaps_nifti(heat, meta, tmp_path / "f.nii")
    data = nib.load(paths[0]).get_fdata()
    assert data.shape == (24, 20, 10, 2)
    np.testing.assert_allclose(data[:, :, 4], 0.75, rtol=1e-6)
    assert data.sum() == pytest.approx(0.75 * 24 * 20 * 2, rel=1e-5)
