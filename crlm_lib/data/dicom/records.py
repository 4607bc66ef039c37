"""What the DICOM reader exchanges: the patient records (:class:`PatientRef`, :class:`Patient`,
:class:`LesionMask`), the intermediate results of the reader's steps (:class:`SegFile`,
:class:`CTSeries`, :class:`LabelMasks`), the reader's constants and the
:class:`CohortDataError` family (every error names the patient and the file)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlm_lib.errors import CRLMUserError

CT_MODALITY = "CT"
SEG_MODALITY = "SEG"

#: Relative tolerance on slice spacing (fraction of the median spacing) before a gap counts as
#: uneven; absolute floor in mm.
SPACING_RTOL = 0.05
SPACING_ATOL_MM = 0.01

#: SEG files larger than this (bytes) are read frame by frame from disk (see ``_open_seg``).
LAZY_SEG_BYTES = 128 * 2**20

#: Structures without which a patient is excluded (see the package docstring).
REQUIRED_STRUCTURES = ("liver",)

#: File names and suffixes that are never DICOM and are skipped by discovery
#: (:func:`crlm_lib.data.dicom.discover.discover`).
SKIP_NAMES = {"dicomdir", "thumbs.db", "desktop.ini", "license", "readme", "version"}
SKIP_SUFFIXES = set(
    ".csv .xlsx .xls .json .md .txt .npz .tsv .xml .log .html .pdf .zip .png .jpg .jpeg .nii "
    ".gz .nrrd .py .tmp .lock".split()
)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class CohortDataError(CRLMUserError):
    """Base class of every data problem found while loading a patient (names patient and file)."""


class DicomReadError(CohortDataError):
    """A DICOM file cannot be read (truncated, not DICOM, pixel data undecodable)."""


class MissingAttributeError(DicomReadError):
    """A DICOM attribute the standard requires and the loader needs is absent (e.g. a CT slice
    without ``RescaleIntercept``)."""


class MissingSeriesError(CohortDataError):
    """A patient has no CT series or no DICOM-SEG."""


class MultipleSeriesError(CohortDataError):
    """A patient has several CT series or several SEGs, so the pair to load is ambiguous."""


class SliceGeometryError(CohortDataError):
    """Missing slices, uneven spacing, duplicated positions or inconsistent slice geometry."""


class SegReferenceError(CohortDataError):
    """The SEG references another CT series or other SOP instances than the CT found."""


class SegGeometryError(CohortDataError):
    """A SEG frame's shape or position does not lie on the CT grid."""


class SegmentLabelError(CohortDataError):
    """A required segment is missing, or a label cannot be matched to a known structure."""


class EmptySegmentError(CohortDataError):
    """A segment declared in the SEG has no foreground voxel."""


class NoDicomError(CohortDataError):
    """A path holds no readable DICOM file of any patient."""


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------
@dataclass
class PatientRef:
    """Where one patient's files are, found from headers only (see :func:`discover`).

    Attributes
    ----------
    patient_id : str
        ``PatientID`` tag (folder names are not trusted).
    path : Path
        Deepest folder holding all of the patient's files.
    ct_series : dict[str, list[Path]]
        CT files grouped by ``SeriesInstanceUID``.
    seg_files : list[Path]
        DICOM-SEG files.
    unreadable : list[tuple[Path, str]]
        Files under the patient's folder that could not be parsed (path, error).
    sop_uids : dict[Path, str]
        ``SOPInstanceUID`` of each CT and SEG file (keys the preprocessing cache).
    """

    patient_id: str
    path: Path
    ct_series: dict[str, list[Path]] = field(default_factory=dict)
    seg_files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    sop_uids: dict[Path, str] = field(default_factory=dict)

    @property
    def ct_dir(self) -> Path | None:
        """Folder of the (first) CT series, ``None`` without CT."""
        for files in self.ct_series.values():
            return files[0].parent
        return None

    @property
    def seg_file(self) -> Path | None:
        """The (first) SEG file, ``None`` without SEG."""
        return self.seg_files[0] if self.seg_files else None


@dataclass(frozen=True)
class LesionMask:
    """One tumour segment stored as its bounding-box crop (memory-bounded).

    ``np.asarray(lesion)`` gives the full bool ``[Z, Y, X]`` volume on demand, so code written
    for full masks keeps working; ``box``/``crop`` let :mod:`crlm_lib.data.lesions` work on the
    crop without building the volume.

    Attributes
    ----------
    shape : tuple[int, int, int]
        ``(Z, Y, X)`` of the CT grid.
    box : tuple[slice, slice, slice]
        Tight bounding box of the foreground on that grid.
    crop : np.ndarray
        bool, ``shape`` of the box.
    """

    shape: tuple[int, int, int]
    box: tuple[slice, slice, slice]
    crop: np.ndarray

    @classmethod
    def from_volume(cls, mask: np.ndarray) -> LesionMask:
        """Crop a full bool volume to its bounding box (an empty mask keeps a 0-size box)."""
        from scipy import ndimage

        mask = np.asarray(mask, bool)
        found = ndimage.find_objects(mask.astype(np.uint8))
        box = found[0] if found else (slice(0, 0),) * 3
        return cls(tuple(mask.shape), tuple(box), mask[box].copy())

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        full = np.zeros(self.shape, bool)
        full[self.box] = self.crop
        return full if dtype is None else full.astype(dtype)

    def any(self, axis=None, out=None, **kwargs):
        """``np.any`` without building the full volume (for ``axis=None``)."""
        if axis is None and out is None and not kwargs:
            return bool(self.crop.any())
        return np.asarray(self).any(axis=axis, out=out, **kwargs)

    def sum(self, axis=None, **kwargs):
        """Voxel count without building the full volume (for ``axis=None``)."""
        if axis is None and not kwargs:
            return int(self.crop.sum())
        return np.asarray(self).sum(axis=axis, **kwargs)

    @property
    def ndim(self) -> int:
        return 3

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(bool)


@dataclass
class Patient:
    """One patient's CT and label masks on the CT grid.

    Attributes
    ----------
    patient_id : str
    ct : np.ndarray
        float32 ``[Z, Y, X]`` Hounsfield units, slices sorted along the slice normal.
    spacing : tuple[float, float, float]
        (z, y, x) voxel spacing in mm.
    origin : tuple[float, float, float]
        (x, y, z) mm, ``ImagePositionPatient`` of slice 0.
    direction : tuple[float, ...]
        9 floats, ITK convention (columns: X, Y, Z axis directions).
    masks : dict[str, np.ndarray]
        bool ``[Z, Y, X]`` for each name of ``MASK_NAMES``; ``tumour`` is the union of the
        ``Tumor_*`` segments.
    lesions : list[LesionMask]
        One per tumour segment (in segment-number order), as bounding-box crops;
        ``np.asarray(lesion)`` is the bool ``[Z, Y, X]`` mask.
    ct_files : list[Path]
        CT files in slice order.
    seg_file : Path
    lesion_labels : list[str]
        ``SegmentLabel`` of each entry of ``lesions``.
    warnings : list[str]
        What was unusual but did not exclude the patient (missing optional structures,
        dropped duplicate slices, unrecognised segments); each names patient and file.
    ct_sop_uids : list[str]
        SOP instance UIDs of ``ct_files`` (slice order): the images' identity
        (:func:`image_fingerprint`).
    """

    patient_id: str
    ct: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    masks: dict[str, np.ndarray]
    lesions: list[np.ndarray]
    ct_files: list[Path]
    seg_file: Path
    lesion_labels: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    ct_sop_uids: list[str] = field(default_factory=list)


@dataclass
class SegFile:
    """A patient's DICOM-SEG, header read, frames not yet decoded (``DicomSource.read_seg``).

    Attributes
    ----------
    path : Path
    dataset : pydicom.Dataset
        The header (``stop_before_pixels``): segments, per-frame functional groups.
    referenced_series : list[str]
        Series instance UIDs the SEG says it was made from.
    referenced_sops : set[str]
        SOP instance UIDs of the source slices it names (series and frame references).
    """

    path: Path
    dataset: Any
    referenced_series: list[str]
    referenced_sops: set[str]


@dataclass
class CTSeries:
    """One CT series read and sorted along the slice normal (``DicomSource.read_ct``).

    Attributes
    ----------
    hu : np.ndarray
        float32 ``[Z, Y, X]`` Hounsfield units.
    spacing : tuple[float, float, float]
        (z, y, x) mm.
    origin : tuple[float, float, float]
        ``ImagePositionPatient`` (x, y, z mm, LPS) of slice 0.
    direction : tuple[float, ...]
        9 floats, ITK convention (columns: X, Y, Z axis directions).
    row, col, normal : np.ndarray
        Row and column direction cosines and the slice normal (3 floats each).
    z : np.ndarray
        Each slice's position along the normal (mm), increasing.
    ipp0 : np.ndarray
        ``ImagePositionPatient`` of slice 0.
    series_uid : str
    sops : list[str]
        SOP instance UIDs in slice order.
    files : list[Path]
        Files in slice order.
    warnings : list[str]
        What was unusual (dropped duplicates ...), each naming patient and files.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    row: np.ndarray
    col: np.ndarray
    normal: np.ndarray
    z: np.ndarray
    ipp0: np.ndarray
    series_uid: str
    sops: list[str]
    files: list[Path]
    warnings: list[str] = field(default_factory=list)


@dataclass
class LabelMasks:
    """A SEG's segments on the CT grid, named through the label map (``DicomSource.label_masks``).

    Attributes
    ----------
    masks : dict[str, np.ndarray]
        bool ``[Z, Y, X]`` for each name of ``MASK_NAMES``.
    lesions : list[LesionMask]
        One per tumour segment, in segment-number order.
    lesion_labels : list[str]
        ``SegmentLabel`` of each lesion.
    warnings : list[str]
    """

    masks: dict[str, np.ndarray]
    lesions: list[LesionMask]
    lesion_labels: list[str]
    warnings: list[str] = field(default_factory=list)
