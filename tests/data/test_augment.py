"""Tests of crlm_lib.data.augment: determinism, masks moving with the image, ranges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crlm_lib.config import get_profile
from crlm_lib.data import augment

SHAPE = (16, 32, 32)
SPACING = (5.0, 12.0, 12.0)
SMOKE = get_profile("smoke")


def _sample():
    z, y, x = np.indices(SHAPE)
    mask = ((z - 8) ** 2 / 16 + (y - 16) ** 2 / 49 + (x - 16) ** 2 / 49) <= 1
    ct = np.where(mask, 0.8, -0.8).astype(np.float32)
    masks = np.stack([mask, np.zeros_like(mask)]).astype(np.float32)
    return ct, masks


def test_deterministic_under_seed_and_differs_across_seeds():
    ct, masks = _sample()
    a = augment.augment_sample(ct, masks, SPACING, seed=3, profile=SMOKE)
    b = augment.augment_sample(ct, masks, SPACING, seed=3, profile=SMOKE)
    c = augment.augment_sample(ct, masks, SPACING, seed=4, profile=SMOKE)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
    assert not torch.equal(a[0], c[0])


def test_refuses_to_guess_the_profile():
    ct, masks = _sample()
    with pytest.raises(TypeError, match="profile"):
        augment.augment_sample(ct, masks, SPACING, seed=3)


def test_masks_move_with_the_image():
    ct, masks = _sample()
    moved = 0
    fine = (2.5, 1.0, 1.0)  # mm: the (clamped) displacement spans several voxels
    for seed in range(3):
        ct_a, m_a = augment.augment_sample(ct, masks, fine, seed=seed, profile=SMOKE)
        assert ct_a.shape == (1, *SHAPE) and m_a.shape == (2, *SHAPE)
        assert set(torch.unique(m_a).tolist()) <= {0.0, 1.0}
        assert ct_a.min() >= -1 and ct_a.max() <= 1
        inside = m_a[0].bool()
        moved += int(not torch.equal(inside, torch.from_numpy(masks[0] > 0)))
        # the bright object and the deformed mask still coincide (noise <= 0.1, blur small)
        assert ct_a[0][inside].mean() > 0.5
        assert ct_a[0][~inside].mean() < -0.5
        assert m_a[1].sum() == 0  # an empty mask stays empty (noise/blur only on the CT)
    assert moved > 0


def test_displacement_clamped_on_small_grids():
    disp = augment.elastic_displacement((16, 32, 32), (2.5, 1.0, 1.0))
    assert disp[0] < 5.0 and disp[0] == pytest.approx(0.45 * 16 * 2.5 / 5)
    assert augment.elastic_displacement((40, 128, 128), (5.0, 3.2, 3.2)) == (5.0, 5.0, 5.0)


def test_build_augmentation_rejects_bad_units():
    with pytest.raises(ValueError):
        augment.build_augmentation(get_profile("smoke"), blur_units="furlong")
