"""Packed-mask elastic augmentation equals the channel-by-channel reference exactly."""

from __future__ import annotations

import numpy as np
import torch

from crlm_lib.data.augment import augment_sample


def test_packed_masks_equal_per_channel_resampling():
    rng = np.random.default_rng(0)
    ct = rng.uniform(-1, 1, (16, 32, 32)).astype(np.float32)
    z, y, x = np.indices((16, 32, 32))
    masks = np.stack(
        [
            (y - 16) ** 2 + (x - 16) ** 2 < 100,  # overlapping labels, as liver / remnant
            ((y - 16) ** 2 + (x - 16) ** 2 < 100) & (x < 16),
            (np.abs(z - 8) < 3) & (np.abs(y - 10) < 4),
            rng.random((16, 32, 32)) < 0.1,  # speckle: every voxel decides on its own
            np.zeros((16, 32, 32), bool),
        ]
    ).astype(np.uint8)
    for seed in (0, 1):
        ct_a, m_a = augment_sample(ct, masks, (5.0, 3.0, 3.0), seed, "paper", pack_masks=True)
        ct_b, m_b = augment_sample(ct, masks, (5.0, 3.0, 3.0), seed, "paper", pack_masks=False)
        assert torch.equal(ct_a, ct_b)
        assert torch.equal(m_a, m_b)
        assert m_a.shape == (5, 16, 32, 32) and m_a.dtype == torch.float32
        assert not torch.equal(m_a, torch.as_tensor(masks, dtype=torch.float32))  # deformed
        assert m_a[4].sum() == 0
