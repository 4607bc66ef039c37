"""Grad-CAM heatmaps for image viewers: NIfTI and DICOM Parametric Maps over the patient's CT.

The maps of :func:`crlm_lib.explain.yearly_gradcam` live on the preprocessed grid (``D x H x W``,
e.g. 40 x 128 x 128: a window of slices around the portal bifurcation, resized in-plane). They
are mapped back to the ORIGINAL CT grid with ``data.preprocess.invert_to_source`` (the cache
keeps ``z_index``, ``source_shape``, ``source_spacing_mm``, ``origin_mm``, ``direction``):
source slices outside the window hold 0.

* NIfTI: :func:`crlm_lib.explain.export_heatmaps_nifti` (RAS affine of the source grid).
* DICOM: one highdicom Parametric Map per year (``highdicom.pm.ParametricMap``), each its own
  series named by its year, whose frames reference the CT instances they lie on (same
  ImagePositionPatient, ImageOrientationPatient, PixelSpacing, FrameOfReferenceUID,
  StudyInstanceUID), so 3D Slicer / OHIF show it over the CT series. Size (choice): only the CT slices of the model's window get a frame (the map is 0
  elsewhere), values are stored as 16-bit integers (real-world value = stored x slope, the
  slope kept in the Real World Value Mapping) and RLE-compressed (lossless; the maps are 0
  outside the liver): a 512 x 512 x 40-slice window costs a few MB per year, not 40 MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from crlm_lib import atomic
from crlm_lib.errors import PredictError
from crlm_lib.explain.nifti import heatmaps_on_source_grid

__all__ = ["HeatmapExportError", "export_heatmaps_dicom", "heatmaps_on_source_grid"]


class HeatmapExportError(PredictError):
    """The heatmaps cannot be written over the patient's CT (geometry or series mismatch)."""


def _read_series(ct_files: Sequence[str | Path]) -> list:
    import pydicom

    return [pydicom.dcmread(str(f)) for f in ct_files]


def _window(source: Sequence[Any], grid: np.ndarray, meta: Any, ct_files: Sequence) -> list[int]:
    """The CT slices of the model's window, after checking the series fits the maps' grid
    ``[Y, Z, Y, X]``; :class:`HeatmapExportError` naming the patient and file otherwise."""
    pid = str(getattr(source[0], "PatientID", "?"))
    nz, ny, nx = grid.shape[1:]
    if len(source) != nz or (int(source[0].Rows), int(source[0].Columns)) != (ny, nx):
        raise HeatmapExportError(
            f"{pid}: CT series {ct_files[0]} has {len(source)} slices of "
            f"{source[0].Rows}x{source[0].Columns}, heatmaps were computed on {nz}x{ny}x{nx}"
        )
    window = sorted({int(z) for z in np.asarray(meta["z_index"]).ravel() if 0 <= z < nz})
    if not window:
        raise HeatmapExportError(f"{pid}: the preprocessing window holds no CT slice")
    return window


def _year_map(
    source: Sequence[Any],
    volume: np.ndarray,
    year: int,
    scale: float,
    target: str,
    series_number: int,
    software_versions: Sequence[str],
):
    """One year's Parametric Map (its own series: ``series_number``, a SeriesDescription that
    names the year) over the CT slices ``source`` (``volume`` ``[len(source), H, W]`` uint16)."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import RLELossless

    mapping = hd.pm.RealWorldValueMapping(
        lut_label="GRADCAM",
        lut_explanation=f"Grad-CAM of the {target} logit, year {year} (normalised)",
        unit=codes.UCUM.NoUnits,
        value_range=(0, 65535),
        slope=scale / 65535.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        source_images=list(source),
        pixel_array=volume,
        series_instance_uid=hd.UID(),
        series_number=series_number,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="crlm_lib",
        manufacturer_model_name="crlm predict",
        software_versions=list(software_versions),
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(window_center=32767.5, window_width=65535.0)
        ],
        transfer_syntax_uid=RLELossless,
        content_label=f"GRADCAM_Y{year:02d}",
        content_description=f"Grad-CAM {target} year {year}",
        # the map is restricted to the liver mask (explain.yearly_gradcam's restrict_to):
        # MASKED, a Derived Pixel Contrast term every validator knows (QUANTITY is newer)
        derived_pixel_contrast=hd.pm.DerivedPixelContrastValues.MASKED,
    )
    pm.SeriesDescription = f"Grad-CAM {target} year {year} (crlm, research only)"
    # Laterality (Type 2C) is required unless the body part is unpaired: say which part it is
    pm.BodyPartExamined = str(getattr(source[0], "BodyPartExamined", "") or "ABDOMEN")
    return pm


def export_heatmaps_dicom(
    heatmaps: np.ndarray,
    meta: Any,
    ct_files: Sequence[str | Path],
    out_dir: str | Path,
    target: str = "recurrence",
    years: Sequence[int] | None = None,
    series_number: int = 900,
    software_versions: Sequence[str] | str = "crlm_lib",
) -> list[Path]:
    """Write one DICOM Parametric Map per year over the patient's original CT series.

    Each year is its own series (number ``series_number + year``, a SeriesDescription naming
    the year), so a viewer lists the twelve years by name.

    Parameters
    ----------
    heatmaps : np.ndarray
        ``[Y, D, H, W]`` on the preprocessed grid (``explain.yearly_gradcam``), values >= 0.
    meta : mapping
        The patient's preprocessing arrays (``z_index``, ``source_shape``, ...).
    ct_files : sequence of path
        The CT series, in slice order (``tcia.Patient.ct_files``): slice ``z`` of the source
        grid is ``ct_files[z]``.
    out_dir : path
        Folder for ``gradcam_<target>_year01.dcm`` ...
    years : sequence of int, optional
        1-based year labels (default 1..Y).
    software_versions : str or sequence of str
        DICOM ``SoftwareVersions`` (``provenance.software_text``: version and git commit of
        the code writing the maps, and of the code that trained the model).

    Returns
    -------
    list of Path
        Files written (atomically, one per year).

    Raises
    ------
    HeatmapExportError
        If the series does not fit the source grid the maps were computed on.
    """
    source = _read_series(ct_files)
    grid = heatmaps_on_source_grid(np.asarray(heatmaps, dtype=np.float32), meta)
    window = _window(source, grid, meta, ct_files)
    scale = max(float(grid.max()), 1.0)  # 1 for normalised maps; raw maps keep their units
    stored = np.round(np.clip(grid / scale, 0.0, 1.0) * 65535.0).astype(np.uint16)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    years = list(years) if years is not None else list(range(1, len(grid) + 1))
    versions = [software_versions] if isinstance(software_versions, str) else software_versions
    written = []
    for year, volume in zip(years, stored, strict=True):
        pm = _year_map([source[z] for z in window], volume[window], year, scale, target,
                       series_number + year, versions)  # fmt: skip
        path = Path(out_dir) / f"gradcam_{target}_year{year:02d}.dcm"
        with atomic.atomic_path(path) as tmp:
            pm.save_as(tmp)
        written.append(path)
    return written
