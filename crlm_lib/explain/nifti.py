"""Heatmaps on the ORIGINAL CT grid: NIfTI export for 3D Slicer.

:func:`heatmaps_on_source_grid` is the one processed-grid -> source-grid mapping of the maps,
used here and by :mod:`crlm_lib.export` (DICOM Parametric Maps).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from crlm_lib import atomic
from crlm_lib.explain._common import ExplainError

__all__ = ["LPS_TO_RAS", "export_heatmaps_nifti", "heatmap_affine_ras", "heatmaps_on_source_grid"]

#: Matrix that turns DICOM/ITK patient coordinates (LPS: +x left, +y posterior, +z superior)
#: into NIfTI world coordinates (RAS: +x right, +y anterior, +z superior).
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0])


# --------------------------------------------------------------------------------------------
# NIfTI export in the original CT geometry
# --------------------------------------------------------------------------------------------


def _meta_get(meta: Any, key: str) -> np.ndarray:
    try:
        return np.asarray(meta[key])
    except (KeyError, IndexError) as exc:
        raise ExplainError(f"{_meta_name(meta)}: preprocessing metadata lacks {key!r}") from exc


def _meta_name(meta: Any) -> str:
    for attr in ("fid", "zip"):
        f = getattr(meta, attr, None)
        name = getattr(f, "name", None) or getattr(f, "filename", None)
        if name:
            return str(name)
    try:
        return str(np.asarray(meta["patient_id"]))
    except (KeyError, IndexError, TypeError):
        return "<metadata>"


def heatmap_affine_ras(meta: Any) -> np.ndarray:
    """NIfTI (RAS) affine of the original CT grid, from the preprocessing metadata.

    DICOM/ITK geometry: voxel ``(i, j, k)`` = (column x, row y, slice z) is at
    ``p_LPS = origin + Dir @ diag(sx, sy, sz) @ [i, j, k]`` (``Dir`` = ITK direction, 3x3
    row-major, column ``n`` = direction of index axis ``n``; ``origin_mm`` = position of
    voxel (0, 0, 0) = first slice's ImagePositionPatient, LPS). NIfTI world coordinates
    are RAS, so ``A = diag(-1, -1, 1, 1) @ [[Dir @ diag(s), origin], [0, 1]]`` and the data
    array is stored ``[x, y, z]`` (the ``[Z, Y, X]`` volume transposed). 3D Slicer, ITK and
    SimpleITK apply the inverse flip on reading, so the map lands on the DICOM series.

    Parameters
    ----------
    meta : mapping
        ``source_spacing_mm`` (z, y, x), ``origin_mm`` (x, y, z), ``direction`` (9 floats).

    Returns
    -------
    np.ndarray
        float64 ``[4, 4]``.
    """
    spacing_zyx = _meta_get(meta, "source_spacing_mm").astype(float).ravel()
    origin = _meta_get(meta, "origin_mm").astype(float).ravel()
    direction = _meta_get(meta, "direction").astype(float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing_zyx[::-1])
    lps[:3, 3] = origin
    flip = np.eye(4)
    flip[:3, :3] = LPS_TO_RAS
    return flip @ lps


def heatmaps_on_source_grid(heatmaps: np.ndarray, meta: Any) -> np.ndarray:
    """``[Y, D, H, W]`` processed-grid maps -> ``[Y, Z, Y_src, X_src]`` float32 on the source
    CT grid (``data.preprocess.invert_to_source``: linear, 0 outside the slice window)."""
    from crlm_lib.data.preprocess import invert_to_source

    return np.stack(
        [
            np.asarray(invert_to_source(h, meta, order=1, fill=0.0), dtype=np.float32)
            for h in heatmaps
        ]
    )


def _atomic_save_nifti(img, out_path: Path) -> None:
    import nibabel as nib

    with atomic.atomic_path(out_path, keep_extension=True) as tmp:
        nib.save(img, tmp)


def export_heatmaps_nifti(
    heatmaps: np.ndarray,
    meta: Any,
    out_path: str | Path,
    per_year: bool = False,
    invert: Callable[[np.ndarray, Any], np.ndarray] | None = None,
) -> list[Path]:
    """Write the yearly maps as NIfTI in the ORIGINAL CT's geometry (for 3D Slicer).

    Each ``[D, H, W]`` map is mapped back to the source grid ``[Z, Y, X]`` with
    :func:`heatmaps_on_source_grid` (``crlm_lib.data.preprocess.invert_to_source``), then
    stored as
    ``[X, Y, Z, years]`` with the RAS affine of :func:`heatmap_affine_ras` (sform and qform,
    code 1 "scanner"). Load the DICOM series and this file in 3D Slicer and they overlap.

    Parameters
    ----------
    heatmaps : np.ndarray
        ``[Y, D, H, W]`` (years first), e.g. from :func:`yearly_gradcam`.
    meta : mapping
        The patient's ``.npz`` (``np.load``) or a dict with ``z_index``, ``source_shape``,
        ``source_spacing_mm``, ``origin_mm``, ``direction``.
    out_path : path
        ``.nii.gz`` / ``.nii`` file (4D). With ``per_year=True`` it is the stem for one 3D
        file per year: ``<stem>_year01.nii.gz`` ... ``<stem>_year12.nii.gz``.
    invert : callable, optional
        Override of the processed -> source mapping (``(volume, meta) -> [Z, Y, X]``).

    Returns
    -------
    list[Path]
        Files written (atomically).
    """
    import nibabel as nib

    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ExplainError(f"{_meta_name(meta)}: heatmaps must be [years, D, H, W]")
    if invert is None:
        source = heatmaps_on_source_grid(heatmaps, meta)  # [Y, Z, Y, X]
    else:
        source = np.stack([invert(h, meta) for h in heatmaps])
    expected = tuple(int(s) for s in _meta_get(meta, "source_shape").ravel()[:3])
    if source.shape[1:] != expected:
        raise ExplainError(
            f"{_meta_name(meta)}: inverted map {source.shape[1:]} != source_shape {expected}"
        )
    affine = heatmap_affine_ras(meta)
    xyz = np.transpose(source, (3, 2, 1, 0))  # [X, Y, Z, years]

    def make(data: np.ndarray):
        img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        img.header.set_xyzt_units(xyz="mm", t="unknown")
        if data.ndim == 4:
            zooms = img.header.get_zooms()
            img.header.set_zooms((*zooms[:3], 1.0))  # one volume per year
        return img

    out_path = Path(out_path)
    written: list[Path] = []
    if not per_year:
        _atomic_save_nifti(make(xyz), out_path)
        written.append(out_path)
    else:
        name = out_path.name
        stem, ext = (name[:-7], ".nii.gz") if name.endswith(".nii.gz") else (out_path.stem, ".nii")
        for k in range(xyz.shape[3]):
            path = out_path.with_name(f"{stem}_year{k + 1:02d}{ext}")
            _atomic_save_nifti(make(xyz[..., k]), path)
            written.append(path)
    return written
