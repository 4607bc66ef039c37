"""Tests of crlm_lib.data.lesions: per-lesion radiomics at the original resolution."""

from __future__ import annotations

import numpy as np
import pytest

from crlm_lib.data.lesions import FEATURE_NAMES, lesion_features


def _ball(shape, centre, radius_vox):
    idx = np.indices(shape)
    return sum((i - c) ** 2 for i, c in zip(idx, centre)) <= radius_vox**2


def test_cube_first_order_and_shape():
    ct = np.zeros((10, 10, 10), np.float32)
    cube = np.zeros_like(ct, bool)
    cube[2:6, 2:6, 2:6] = True
    ct[cube] = np.arange(64)
    feats, names = lesion_features(ct, [cube], spacing=(2.0, 1.0, 1.0))
    f = dict(zip(names, feats[0]))
    assert feats.shape == (1, len(FEATURE_NAMES)) and feats.dtype == np.float32
    assert f["mean"] == pytest.approx(31.5)
    assert f["median"] == pytest.approx(31.5)
    assert f["min"] == 0 and f["max"] == 63
    assert f["energy"] == pytest.approx(np.sum(np.arange(64.0) ** 2))
    assert f["volume_mm3"] == pytest.approx(64 * 2.0)
    assert f["extent"] == pytest.approx(1.0)
    assert f["solidity"] == pytest.approx(1.0)
    # anisotropic spacing: z extent 8 mm vs 4 mm in-plane -> elongated along z
    assert f["major_axis_mm"] > f["minor_axis_mm"]
    assert f["elongation"] == pytest.approx(0.5, rel=1e-4)


def test_sphere_is_more_spherical_than_a_rod():
    ct = np.zeros((24, 24, 24), np.float32)
    ball = _ball(ct.shape, (12, 12, 12), 6)
    rod = np.zeros_like(ball)
    rod[2:22, 11:13, 11:13] = True
    feats, names = lesion_features(ct, [ball, rod], spacing=(1.0, 1.0, 1.0))
    s = names.index("sphericity")
    assert feats[0, s] > 0.85 > feats[1, s]
    v = names.index("volume_mm3")
    assert feats[0, v] == pytest.approx(ball.sum())
    assert 0.9 < feats[0, names.index("elongation")] <= 1.0


def test_connected_components_when_no_lesion_segments():
    ct = np.zeros((12, 12, 12), np.float32)
    tumour = _ball(ct.shape, (3, 3, 3), 2) | _ball(ct.shape, (8, 8, 8), 2)
    feats, _ = lesion_features(ct, [], spacing=(1.0, 1.0, 1.0), tumour_mask=tumour)
    assert feats.shape[0] == 2
    feats, _ = lesion_features(ct, [], spacing=(1.0, 1.0, 1.0))
    assert feats.shape == (0, len(FEATURE_NAMES))


def test_single_voxel_lesion_is_finite():
    ct = np.zeros((5, 5, 5), np.float32)
    m = np.zeros_like(ct, bool)
    m[2, 2, 2] = True
    feats, _ = lesion_features(ct, [m], spacing=(1.0, 1.0, 1.0))
    assert np.isfinite(feats).all()
