"""crlm_lib.explain.nifti: heatmaps in the source CT geometry."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import SimpleITK as sitk  # noqa: E402
from toys import GRID, make_meta  # noqa: E402

from crlm_lib import explain  # noqa: E402
from crlm_lib.config import N_YEARS  # noqa: E402


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


def test_default_inversion_agrees_with_the_slice_mapping(tmp_path):
    meta = make_meta()
    heat = np.zeros((2, *GRID), np.float32)
    heat[:, 5] = 0.75  # processed slice 5 -> source slice 4
    paths = explain.export_heatmaps_nifti(heat, meta, tmp_path / "f.nii")
    data = nib.load(paths[0]).get_fdata()
    assert data.shape == (24, 20, 10, 2)
    np.testing.assert_allclose(data[:, :, 4], 0.75, rtol=1e-6)
    assert data.sum() == pytest.approx(0.75 * 24 * 20 * 2, rel=1e-5)
