"""The stacked CLAHE (crlm_lib/data/clahe.py) equals scikit-image's, slice by slice, exactly."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.exposure import equalize_adapthist
from skimage.exposure._adapthist import clip_histogram

from crlm_lib.data.clahe import clahe_slices, clip_histograms


def _phantom_slices(n: int, size: int, seed: int) -> np.ndarray:
    """CT-like slices in [0, 1]: a bright disc with darker blobs, noise, an empty border."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / size
    out = np.zeros((n, size, size), np.float32)
    for i in range(n):
        body = ((yy - 0.5) ** 2 + (xx - 0.5) ** 2 < 0.16).astype(np.float32) * 0.55
        for _ in range(3):
            cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.03, 0.1)]
            body -= 0.2 * ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
        out[i] = np.clip(body + rng.normal(0, 0.04, body.shape), 0, 1)
    return out


@pytest.mark.parametrize(
    "shape,clip,seed",
    [((6, 96, 96), 0.01, 0), ((4, 32, 32), 0.01, 1), ((3, 128, 128), 0.01, 2),
     ((3, 50, 70), 0.03, 3), ((2, 96, 96), 0.0, 4), ((2, 7, 9), 0.01, 5)],
)  # fmt: skip
def test_equals_scikit_image_bit_for_bit(shape, clip, seed):
    u = _phantom_slices(shape[0], max(shape[1:]), seed)[:, : shape[1], : shape[2]]
    ref = np.stack([equalize_adapthist(s, clip_limit=clip) for s in u])
    got = clahe_slices(u, clip_limit=clip)
    assert got.dtype == ref.dtype == np.float32
    np.testing.assert_array_equal(got, ref)


def test_groups_of_slices_give_the_same_result(monkeypatch):
    import crlm_lib.data.clahe as clahe

    u = _phantom_slices(5, 32, 9)
    whole = clahe_slices(u)
    monkeypatch.setattr(clahe, "CHUNK_PIXELS", 2 * 32 * 32)  # groups of 2, 2, 1
    np.testing.assert_array_equal(clahe_slices(u), whole)


def test_random_and_constant_slices_and_float64():
    rng = np.random.default_rng(7)
    u = rng.random((3, 40, 40))
    u[1] = 0.25  # a constant slice
    ref = np.stack([equalize_adapthist(s, clip_limit=0.01) for s in u])
    got = clahe_slices(u, clip_limit=0.01)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, ref)


def test_clip_histograms_equals_the_loop_row_by_row():
    rng = np.random.default_rng(3)
    for clim in (1, 2, 5, 40):
        hist = rng.poisson(rng.uniform(0.1, 8.0, (50, 1)), (50, 64)).astype(np.int64)
        ref = np.stack([clip_histogram(row.copy(), clim) for row in hist])
        np.testing.assert_array_equal(clip_histograms(hist.copy(), clim), ref)


def test_refuses_a_volume_that_is_not_a_stack_of_slices():
    with pytest.raises(ValueError, match="slices, rows, columns"):
        clahe_slices(np.zeros((8, 8)))
