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
    (the hull image of ``skimage.measure.regionprops``, counted by :func:`convex_hull_voxels`;
    1.0 for degenerate, co-planar lesions).

Features are computed at the original CT resolution (before any resizing), as AMINN does.
"""

from __future__ import annotations

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
    hull = convex_hull_voxels(props.image)
    solidity = n / hull if hull > 0 else 1.0  # 0: qhull failed (co-planar, degenerate)
    return [volume, area, sphericity, major, minor, least, elong, flat, extent, solidity]


#: Tolerance of the inside-the-hull test (``skimage.morphology.convex_hull_image``'s default).
HULL_TOLERANCE = 1e-10


def convex_hull_voxels(image: np.ndarray) -> int:
    """Number of voxels of ``skimage.morphology.convex_hull_image(image)`` (3-D, defaults).

    ``regionprops(...).solidity`` is ``voxels / convex-hull voxels`` with that hull image; this
    is the same hull (the hull of the voxels' centres, then of their face centres ``+-0.5``
    along each axis, duplicates removed, as scikit-image 0.26 builds it) and the same test of
    each grid point against each facet (``n . x + d < 1e-10``), counted faster (at the real
    0.8 mm pixels, testing every voxel of the bounding box against every facet takes ~0.9 s of
    a patient's 1.7 s of computing; 5.3x faster here on 44 synthetic lesions):

    - the lesion's own voxels are not tested: each lies at least ``0.5 / sqrt(3)`` inside
      every facet (its face centres are hull points), so scikit-image finds them inside;
    - the others are tested facet by facet and dropped at the first facet they fail, instead
      of every voxel against every facet.

    Returns 0 where qhull fails (co-planar or too few points), where scikit-image warns and
    returns an empty hull. Equal to ``convex_hull_image(image).sum()`` on the tested lesions
    (``tests/data/test_lesions.py``).
    """
    from scipy.spatial import ConvexHull, QhullError
    from skimage.util import unique_rows

    image = np.asarray(image, bool)
    if image.ndim != 3:
        raise ValueError(f"convex_hull_voxels expects a 3-D mask, got shape {image.shape}")
    inside = int(image.sum())
    if inside == 0:
        return 0
    try:
        hull0 = ConvexHull(np.transpose(np.nonzero(image)))
        coords = hull0.points[hull0.vertices]
        offsets = np.zeros((6, 3))
        for row, (axis, step) in enumerate((a, s) for a in range(3) for s in (-0.5, 0.5)):
            offsets[row, axis] = step
        hull = ConvexHull(unique_rows((coords[:, np.newaxis, :] + offsets).reshape(-1, 3)))
    except QhullError:
        return 0
    grid = np.stack(np.nonzero(~image))  # [3, M] int64, as np.mgrid's columns
    for equation in hull.equations:
        if not grid.shape[1]:
            break
        grid = grid[:, np.dot(equation[:3], grid) + equation[3:] < HULL_TOLERANCE]
    return inside + grid.shape[1]


def mask_bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every ``True`` voxel of a non-empty ``mask`` (one
    ``any`` projection per axis; also used by ``data.preprocess``)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _bounding_box(mask) -> tuple[tuple[slice, ...], np.ndarray]:
    """Tight bounding box and cropped bool mask; ``tcia.LesionMask`` crops give theirs as is."""
    if hasattr(mask, "box") and hasattr(mask, "crop"):  # no full [Z, Y, X] volume built
        return tuple(mask.box), np.asarray(mask.crop, bool)
    m = np.asarray(mask, bool)
    box = mask_bounding_box(m)
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
