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


def _lesion_shapes():
    """Lesions of many kinds: concave, noisy, thin, single-slice (co-planar), single voxel."""
    rng = np.random.default_rng(3)
    shapes = []
    for k in range(6):  # blobs with holes and bites: concavities for the hull to fill
        blob = _ball((14, 20, 18), (7, 10, 9), 4 + k % 3) & (rng.random((14, 20, 18)) < 0.85)
        blob[7, :, 9 + k % 4 :] = False
        shapes.append(blob)
    crescent = _ball((10, 22, 22), (5, 11, 11), 8) & ~_ball((10, 22, 22), (5, 11, 15), 7)
    shapes.append(crescent)
    two = np.zeros((8, 16, 16), bool)  # two pieces of one segment: the hull bridges them
    two[1:3, 1:4, 1:4] = True
    two[5:8, 10:15, 11:14] = True
    shapes.append(two)
    flat = np.zeros((1, 9, 9), bool)
    flat[0, 2:7, 3:8] = True  # one slice: qhull fails in 3-D
    shapes.append(flat)
    line = np.zeros((5, 5, 5), bool)
    line[:, 2, 2] = True
    shapes.append(line)
    shapes.append(np.ones((1, 1, 1), bool))
    return shapes


@pytest.mark.parametrize("index", range(11))
def test_convex_hull_voxels_equals_scikit_image(index):
    import warnings

    from skimage.morphology import convex_hull_image

    from crlm_lib.data.lesions import convex_hull_voxels

    image = _lesion_shapes()[index]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image warns where qhull fails
        expected = int(convex_hull_image(image).sum())
    assert convex_hull_voxels(image) == expected
    if index < 8:
        assert expected > image.sum()  # a real hull, larger than the lesion


def test_solidity_of_a_concave_lesion_is_scikit_images():
    from skimage import measure

    crescent = _lesion_shapes()[6]
    feats, names = lesion_features(np.zeros(crescent.shape, np.float32), [crescent], (1, 1, 1))
    props = measure.regionprops(crescent.astype(np.uint8))[0]
    assert dict(zip(names, feats[0]))["solidity"] == pytest.approx(props.solidity, rel=1e-6)
    assert props.solidity < 0.8
