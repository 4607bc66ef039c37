"""Packed-mask elastic augmentation equals the channel-by-channel reference exactly."""

from __future__ import annotations

import numpy as np
import torch

from crlm_lib.config import get_profile
from crlm_lib.data.augment import augment_sample

PAPER, SMOKE = get_profile("paper"), get_profile("smoke")


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
        ct_a, m_a = augment_sample(ct, masks, (5.0, 3.0, 3.0), seed, PAPER, pack_masks=True)
        ct_b, m_b = augment_sample(ct, masks, (5.0, 3.0, 3.0), seed, PAPER, pack_masks=False)
        assert torch.equal(ct_a, ct_b)
        assert torch.equal(m_a, m_b)
        assert m_a.shape == (5, 16, 32, 32) and m_a.dtype == torch.float32
        assert not torch.equal(m_a, torch.as_tensor(masks, dtype=torch.float32))  # deformed
        assert m_a[4].sum() == 0


def test_augment_runs_on_one_thread_and_restores_the_callers_setting(monkeypatch):
    import torch

    from crlm_lib.data import augment

    seen = []
    real = augment._augment

    def spy(*args):
        seen.append(torch.get_num_threads())
        return real(*args)

    monkeypatch.setattr(augment, "_augment", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ct = torch.rand(1, 8, 16, 16) * 2 - 1
        masks = (torch.rand(5, 8, 16, 16) > 0.5).float()
        a = augment.augment_sample(ct, masks, (5.0, 3.0, 3.0), 7, SMOKE)
        assert seen == [1] and torch.get_num_threads() == 2
        torch.set_num_threads(1)
        b = augment.augment_sample(ct, masks, (5.0, 3.0, 3.0), 7, SMOKE)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    finally:
        torch.set_num_threads(before)


def test_cpu_seeded_noise_gives_torchios_output():
    """The pipeline with ``CPUSeededNoise`` seeded on the CPU generator equals TorchIO's own
    ``RandomNoise`` under ``torch.manual_seed``, bit for bit, and leaves the caller's RNG
    stream where it was."""
    import torchio as tio

    from crlm_lib.data.augment import NOISE_STD, CPUSeededNoise, build_augmentation

    rng = np.random.default_rng(1)
    ct = rng.uniform(-1, 1, (1, 16, 32, 32)).astype(np.float32)
    masks = (rng.random((3, 16, 32, 32)) < 0.2).astype(np.uint8)
    spacing = (5.0, 3.0, 3.0)
    ours = build_augmentation(PAPER, (16, 32, 32), spacing)
    steps = list(ours.transforms)
    assert isinstance(steps[2], CPUSeededNoise)
    steps[2] = tio.RandomNoise(std=NOISE_STD, include=["ct"], copy=False)
    reference = tio.Compose(steps, copy=True)
    for seed in (0, 7, 123):
        torch.manual_seed(99)
        ct_a, m_a = augment_sample(ct, masks, spacing, seed, transform=ours, pack_masks=False)
        after = torch.rand(1)
        subject = tio.Subject(
            ct=tio.ScalarImage(tensor=torch.as_tensor(ct), affine=np.diag([*spacing, 1.0])),
            masks=tio.LabelMap(tensor=torch.as_tensor(masks, dtype=torch.float32),
                               affine=np.diag([*spacing, 1.0])),
        )  # fmt: skip
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = reference(subject)
        assert torch.equal(ct_a, out["ct"].data.float())
        assert torch.equal(m_a, (out["masks"].data > 0.5).float())
        assert not torch.equal(ct_a, torch.as_tensor(ct))  # noise was added
        torch.manual_seed(99)
        assert torch.equal(after, torch.rand(1))  # augmentation left the stream untouched
