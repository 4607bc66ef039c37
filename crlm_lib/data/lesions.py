"""Per-lesion radiomic features for AMINN (multiple-instance learning over metastases).

AMINN (Chen et al., 2021) describes each liver metastasis by radiomic features computed with
pyradiomics on the original CT. pyradiomics is **not** installed here (it has no wheels for the
project's Python/numpy), so this module re-implements the standard subset with numpy, scipy
and scikit-image, following the pyradiomics definitions (IBSI-compatible where noted):

first order (HU inside the lesion)
    ``mean``, ``std``, ``skewness``, ``kurtosis`` (Pearson, i.e. 3 for a Gaussian, as
    pyradiomics), ``min``, ``p10``, ``p25``, ``median``, ``p75``, ``p90``, ``max``,
    ``energy`` = sum(HU^2) (pyradiomics with shift c = 0, no voxel-volume factor) and
    ``entropy`` = -sum p log2 p over fixed 25-HU bins (pyradiomics default ``binWidth``).
shape (physical units, spacing-aware)
    ``volume_mm3`` (voxel count x voxel volume), ``surface_mm2`` (marching-cubes mesh area),
    ``sphericity`` = pi^(1/3) (6 V)^(2/3) / A, ``major_axis_mm``, ``minor_axis_mm``,
    ``least_axis_mm`` = 4 sqrt(lambda) of the covariance of voxel centres (mm), ``elongation``
    = sqrt(lambda_minor / lambda_major), ``flatness`` = sqrt(lambda_least / lambda_major),
    ``extent`` = voxels / bounding-box voxels, ``solidity`` = voxels / convex-hull voxels
    (``skimage.measure.regionprops``; 1.0 for degenerate, co-planar lesions).

Features are computed at the original CT resolution (before any resizing), as AMINN does.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats
from skimage import measure

FIRST_ORDER = (
    "mean",
    "std",
    "skewness",
    "kurtosis",
    "min",
    "p10",
    "p25",
    "median",
    "p75",
    "p90",
    "max",
    "energy",
    "entropy",
)
SHAPE = (
    "volume_mm3",
    "surface_mm2",
    "sphericity",
    "major_axis_mm",
    "minor_axis_mm",
    "least_axis_mm",
    "elongation",
    "flatness",
    "extent",
    "solidity",
)
#: Names of the columns of :func:`lesion_features`, in order.
FEATURE_NAMES: tuple[str, ...] = FIRST_ORDER + SHAPE

#: Bin width (HU) of the first-order entropy histogram (pyradiomics default).
BIN_WIDTH_HU = 25.0


def _first_order(values: np.ndarray) -> list[float]:
    v = values.astype(np.float64)
    counts = np.bincount(np.floor((v - v.min()) / BIN_WIDTH_HU).astype(np.int64))
    p = counts[counts > 0] / v.size
    if v.size > 1 and v.std() > 0:
        skew = float(stats.skew(v))
        kurt = float(stats.kurtosis(v, fisher=False))
    else:
        skew, kurt = 0.0, 0.0
    pct = np.percentile(v, [10, 25, 50, 75, 90])
    return [
        float(v.mean()),
        float(v.std()),
        skew,
        kurt,
        float(v.min()),
        *map(float, pct),
        float(v.max()),
        float(np.sum(v**2)),
        float(-np.sum(p * np.log2(p))),
    ]


def _shape(mask: np.ndarray, spacing: tuple[float, float, float]) -> list[float]:
    sp = np.asarray(spacing, dtype=np.float64)
    n = int(mask.sum())
    volume = n * float(np.prod(sp))
    padded = np.pad(mask, 1).astype(np.float32)
    verts, faces, _, _ = measure.marching_cubes(padded, level=0.5, spacing=tuple(sp))
    area = float(measure.mesh_surface_area(verts, faces))
    sphericity = float(np.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area) if area > 0 else 0.0
    coords = np.argwhere(mask) * sp
    if n > 1:
        eig = np.sort(np.clip(np.linalg.eigvalsh(np.cov(coords.T)), 0, None))[::-1]
    else:
        eig = np.zeros(3)
    major, minor, least = (4 * np.sqrt(eig)).tolist()
    elong = float(np.sqrt(eig[1] / eig[0])) if eig[0] > 0 else 0.0
    flat = float(np.sqrt(eig[2] / eig[0])) if eig[0] > 0 else 0.0
    props = measure.regionprops(mask.astype(np.uint8))[0]
    extent = float(props.extent)
    try:
        with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
            warnings.simplefilter("ignore")
            solidity = float(props.solidity)
    except Exception:  # noqa: BLE001 - qhull fails on co-planar/degenerate point sets
        solidity = 1.0
    if not np.isfinite(solidity) or solidity <= 0:
        solidity = 1.0
    return [volume, area, sphericity, major, minor, least, elong, flat, extent, solidity]


def _bounding_box(mask) -> tuple[tuple[slice, ...], np.ndarray]:
    """Tight bounding box and cropped bool mask; ``tcia.LesionMask`` crops give theirs as is."""
    if hasattr(mask, "box") and hasattr(mask, "crop"):  # no full [Z, Y, X] volume built
        return tuple(mask.box), np.asarray(mask.crop, bool)
    m = np.asarray(mask, bool)
    box = ndimage.find_objects(m.astype(np.uint8))[0]
    return box, m[box]


def lesion_features(
    ct_hu: np.ndarray,
    lesion_masks: Sequence[np.ndarray],
    spacing: tuple[float, float, float],
    tumour_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Radiomic features of each lesion, at the original resolution.

    Parameters
    ----------
    ct_hu : np.ndarray
        float ``[Z, Y, X]`` in HU.
    lesion_masks : sequence of np.ndarray or tcia.LesionMask
        bool ``[Z, Y, X]``, one per lesion (the SEG's ``Tumor_N`` segments), or bounding-box
        crops (``box``, ``crop``). Empty masks are skipped.
    spacing : tuple
        (z, y, x) voxel spacing in mm.
    tumour_mask : np.ndarray, optional
        bool ``[Z, Y, X]``. Used only when ``lesion_masks`` is empty: its 3D connected
        components (26-connectivity) become the lesions.

    Returns
    -------
    features : np.ndarray
        float32 ``[L, F]`` with ``F = len(FEATURE_NAMES)`` (``[0, F]`` without lesions).
    names : list[str]
        ``FEATURE_NAMES``.
    """
    masks = [m for m in lesion_masks if np.any(m)]
    if not masks and tumour_mask is not None and np.any(tumour_mask):
        labels, n = ndimage.label(tumour_mask, structure=np.ones((3, 3, 3)))
        masks = [labels == i for i in range(1, n + 1)]
    rows = []
    for m in masks:
        # features on the lesion's bounding box only (fast on 512x512 slices)
        box, sub = _bounding_box(m)
        rows.append(_first_order(ct_hu[box][sub]) + _shape(sub, spacing))
    feats = np.asarray(rows, dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    return feats, list(FEATURE_NAMES)
