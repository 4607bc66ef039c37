"""Discover and load the TCIA "Colorectal-Liver-Metastases" layout: CT series + DICOM-SEG.

The collection (Simpson et al., Sci Data 11:172, 2024; doi:10.7937/QXK2-QG03) holds, per
patient, one preoperative portal-venous CT series (one file per slice) and one multi-frame
DICOM-SEG with segments ``Liver``, ``Liver_Remnant``, ``Hepatic``, ``Portal`` and
``Tumor_1..N``. The synthetic cohort (``crlm_lib.data.synthetic``) writes the same layout.

Choices
-------
* **CT reader: pydicom** (not SimpleITK). The files are read one by one with pydicom so that
  every error can name the exact file (truncated slice, missing pixel data), and the SOP
  instance UIDs needed to check the SEG's references are at hand. Slices are sorted by the
  projection of ``ImagePositionPatient`` on the slice normal (row x column cosines), never by
  file name or ``InstanceNumber``; index 0 is the lowest position along the normal (for axial
  CT in LPS: the most caudal slice).
* **SEG reader: pydicom** (header with ``stop_before_pixels``, frames one at a time with
  ``pydicom.pixels.iter_pixels``; highdicom writes SEGs in the tests and the synthetic cohort,
  but its reader's per-frame lookup tables cost more than the rest of the load);
  frames are placed by their own ``PlanePositionSequence/ImagePositionPatient`` (matched to a CT slice
  along the normal and checked in-plane), falling back to ``DerivationImageSequence ->
  SourceImageSequence`` SOP instance UIDs when a frame carries no position. Frame order and
  frame count are never trusted: highdicom omits empty frames by default
  (``omit_empty_frames=True``) and ``Segmentation.get_volume`` returns only the slices that
  have frames, so frame index != slice index.
* ``direction`` follows the ITK convention: a row-major 3x3 matrix whose columns are the
  directions of the array axes X (row cosine), Y (column cosine) and Z (slice normal).
* ``origin`` is ``ImagePositionPatient`` (x, y, z mm, LPS) of slice index 0.
* **Memory**: SEG frames are decoded one at a time (``iter_pixels``; SEG files above
  ``LAZY_SEG_BYTES`` are read frame by frame from disk) straight into one
  volume per structure of ``MASK_NAMES``; each tumour segment is kept as a bounding-box crop
  (:class:`LesionMask`), so a SEG with dozens of tumours costs little more than one with one
  (``benchmarks/seg_memory.py``).
* **Duplicated slice positions** (an overlapping second acquisition, a slice exported twice):
  the whole series is kept, one slice per position, by two rules in this order. (1) When the
  series holds several acquisitions (``AcquisitionNumber``) and every slice the SEG references
  (the SOP instance UIDs of its ``ReferencedSeriesSequence`` and of its frames'
  ``DerivationImageSequence``) belongs to one of them, that acquisition's slices are kept,
  referenced or not. (2) At a position that still holds several slices, the one the SEG
  references is kept, else the one with the later ``InstanceNumber`` (a slice exported again
  carries the higher number). Each rule that sets files aside adds a warning naming the patient
  and the files; the slices kept then pass the usual gap and spacing checks. The series is
  never cut down to the slices the SEG references (a SEG may list only those that carry its
  frames). A SEG that names no source slice, one that references two slices at one position,
  or unreferenced duplicates whose instance numbers are equal or missing exclude the patient
  with a :class:`SliceGeometryError` naming the files. Likewise, several CT series for one
  patient are resolved by the one series the SEG references.
* **Missing structures**: a SEG without ``Liver_Remnant``, ``Hepatic``, ``Portal`` or tumour
  segments (e.g. from another tool) loads with those masks empty and a warning in
  ``Patient.warnings``; without ``Portal`` the preprocessing centres the crop on the liver's
  centre of mass instead of the portal-vein bifurcation (``centre_method``). ``Liver`` is
  required (mask channel and last anatomical fallback of the crop centre).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import struct
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from crlm_lib.config import MASK_NAMES
from crlm_lib.errors import CRLMUserError

log = logging.getLogger(__name__)

#: Modality values of the two series types of a patient.
CT_MODALITY = "CT"
SEG_MODALITY = "SEG"

#: Relative tolerance on slice spacing (fraction of the median spacing) before a gap counts as
#: uneven; absolute floor in mm.
SPACING_RTOL = 0.05
SPACING_ATOL_MM = 0.01

#: SEG files larger than this (bytes) are read frame by frame from disk (see ``_open_seg``).
LAZY_SEG_BYTES = 128 * 2**20

#: Structures without which a patient is excluded (see the module docstring).
REQUIRED_STRUCTURES = ("liver",)

#: File names and suffixes that are never DICOM and are skipped by :func:`discover`.
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


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------
def _may_be_dicom(p: Path) -> bool:
    """Not hidden, not a known non-DICOM name or suffix (``SKIP_NAMES``, ``SKIP_SUFFIXES``)."""
    return (
        not p.name.startswith(".")
        and p.suffix.lower() not in SKIP_SUFFIXES
        and p.name.lower() not in SKIP_NAMES
    )


def _candidate_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` (or ``root`` itself) that may be DICOM, sorted.

    Hidden folders below ``root`` are not entered: a ``.tmp-CRLM-CT-1001`` folder is another
    program's work in progress (``data.synthetic`` builds a patient in one before renaming it
    into place), a ``.git`` or ``.Trash`` folder is no part of the download, and reading them
    would add a second copy of a patient. ``root`` itself may lie in a hidden folder.
    """
    if root.is_file():
        return [root]
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [p for p in (Path(folder) / f for f in files) if p.is_file() and _may_be_dicom(p)]
    return sorted(out)


def discover(root: str | Path, progress: bool = False) -> list[PatientRef]:
    """Find every patient under ``root`` by reading DICOM headers only.

    Works with or without the ``Colorectal-Liver-Metastases/`` level. Series are classified by
    the ``Modality`` tag (``CT`` or ``SEG``), patients by ``PatientID``; file and folder names
    are not trusted. Files that are not parseable are kept in ``PatientRef.unreadable`` of the
    patient whose folder holds them (so :func:`load_patient` reports them), or logged when no
    patient can be attributed.

    Parameters
    ----------
    root : path
        Cohort root, a patient folder, a series folder, or one DICOM file (then its whole folder,
        i.e. its series, is read).
    progress : bool
        Show a tqdm bar over files.

    Returns
    -------
    list[PatientRef]
        Sorted by ``patient_id``; empty when ``root`` holds no DICOM file (a warning says what
        was expected).
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"cohort folder {root} does not exist")
    if root.is_file():
        root = root.parent
    groups: dict[str, dict] = defaultdict(
        lambda: {"ct": defaultdict(list), "seg": [], "files": [], "sops": {}}
    )
    bad: list[tuple[Path, str]] = []
    files = _candidate_files(root)
    for f in tqdm(files, desc="discover DICOM", disable=not progress, leave=False):
        try:
            ds = pydicom.dcmread(
                f,
                stop_before_pixels=True,
                specific_tags=["PatientID", "Modality", "SeriesInstanceUID", "SOPInstanceUID"],
            )
            absent = [t for t in ("PatientID", "Modality", "SeriesInstanceUID") if t not in ds]
            if absent:
                bad.append((f, _header_without(f, absent)))
                continue
            modality = str(ds.Modality)
            pid = str(ds.PatientID)
            series = str(ds.SeriesInstanceUID)
            sop = str(ds.get("SOPInstanceUID", ""))
        except Exception as err:  # noqa: BLE001 - any parse failure is reported, not raised
            bad.append((f, f"{type(err).__name__}: {err}"))
            continue
        g = groups[pid]
        g["files"].append(f)
        g["sops"][f] = sop
        if modality == CT_MODALITY:
            g["ct"][series].append(f)
        elif modality == SEG_MODALITY:
            g["seg"].append(f)
    refs = []
    for pid, g in groups.items():
        folder = Path(_common_parent(g["files"]))
        refs.append(
            PatientRef(
                patient_id=pid,
                path=folder,
                ct_series={k: sorted(v) for k, v in g["ct"].items()},
                seg_files=sorted(g["seg"]),
                sop_uids=dict(g["sops"]),
            )
        )
    # attribute unreadable files to the patient whose folder contains them (deepest match)
    for f, why in bad:
        owners = [r for r in refs if r.path in f.parents]
        if owners:
            max(owners, key=lambda r: len(r.path.parts)).unreadable.append((f, why))
        else:
            log.warning("unreadable file outside any patient folder: %s (%s)", f, why)
    if not refs:
        log.warning("%s", _nothing_found(root, files))
    return sorted(refs, key=lambda r: r.patient_id)


def _header_without(f: Path, absent: Sequence[str]) -> str:
    """Why a file whose header lacks ``absent`` (tags every DICOM image has) cannot be used."""
    return (
        f"its header has no {', '.join(absent)} (the file is {f.stat().st_size} bytes): "
        "a truncated file (an interrupted download or copy?) or not an image; replace it, or "
        "remove it from the series folder"
    )


def _nothing_found(root: Path, files: Sequence[Path]) -> str:
    return (
        f"no readable DICOM file with a PatientID under {root} ({len(files)} candidate file(s)); "
        "expected the collection folder (patient folders CRLM-CT-*), a patient folder, a series "
        "folder or one DICOM file"
    )


def _common_parent(files: Sequence[Path]) -> Path:
    parents = [f.parent.parts for f in files]
    common = []
    for parts in zip(*parents):
        if all(p == parts[0] for p in parts):
            common.append(parts[0])
        else:
            break
    folder = Path(*common)
    # climb from series/study level to the patient folder when the tree is series-per-folder
    return folder


# --------------------------------------------------------------------------------------------
# Segment labels
# --------------------------------------------------------------------------------------------
_LABELS = {
    "liver": "liver",
    "liverremnant": "remnant",
    "remnant": "remnant",
    "futureliverremnant": "remnant",
    "flr": "remnant",
    "hepatic": "hepatic",
    "hepaticvein": "hepatic",
    "hepaticveins": "hepatic",
    "portal": "portal",
    "portalvein": "portal",
    "portalveins": "portal",
}
_TUMOUR = re.compile(r"^(tumou?r|lesion|metastas[ie]s|met)\d*$")


def canonical_label(label: str) -> str | None:
    """Map a ``SegmentLabel`` to a name of ``MASK_NAMES`` (``tumour`` for ``Tumor_N``).

    Matching is case-insensitive after removing spaces, ``_`` and ``-`` (``Liver_Remnant``,
    ``liver remnant`` and ``Remnant`` all give ``remnant``). Returns ``None`` when unknown.
    """
    key = re.sub(r"[\s_\-]+", "", label).lower()
    if key in _LABELS:
        return _LABELS[key]
    if _TUMOUR.match(key):
        return "tumour"
    return None


# --------------------------------------------------------------------------------------------
# CT
# --------------------------------------------------------------------------------------------
def _read(path: Path, pid: str, what: str) -> pydicom.Dataset:
    try:
        return pydicom.dcmread(path)
    except Exception as err:  # noqa: BLE001
        raise DicomReadError(f"{pid}: cannot read {what} file {path}: {err}") from err


def _stored_pixels(ds: pydicom.Dataset) -> np.ndarray:
    """A CT slice's stored values ``[Rows, Columns]`` (before the rescale).

    Uncompressed single-sample data whose stored bits fill the allocated bits (the usual CT:
    16 of 16) is read straight from the ``PixelData`` bytes (``np.frombuffer``), which equals
    ``ds.pixel_array`` (tested) without its per-call option handling (about a third of the
    CT loading time through ``pixel_array``). Everything else goes through ``ds.pixel_array``.
    """
    ts = ds.file_meta.TransferSyntaxUID
    bits = int(ds.get("BitsAllocated", 0) or 0)
    rows, cols = int(ds.Rows), int(ds.Columns)
    data = ds.get("PixelData")
    if (
        ts.is_encapsulated
        or data is None
        or bits not in (8, 16, 32)
        or int(ds.get("BitsStored", 0) or 0) != bits
        or int(ds.get("SamplesPerPixel", 1) or 1) != 1
        or int(ds.get("NumberOfFrames", 1) or 1) != 1
        or len(data) < rows * cols * bits // 8
    ):
        return ds.pixel_array
    kind = "i" if int(ds.get("PixelRepresentation", 0) or 0) else "u"
    dtype = np.dtype(f"{'<' if ts.is_little_endian else '>'}{kind}{bits // 8}")
    return np.frombuffer(data, dtype=dtype, count=rows * cols).reshape(rows, cols)


def _orientation(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)


def _load_ct(
    pid: str, files: Sequence[Path], seg_sops: set[str] | None = None, seg_file: Path | None = None
) -> dict:
    """Read one CT series; return volume, geometry and SOP UIDs (slice order).

    ``seg_sops`` (the SOP instance UIDs the SEG was made from) resolve duplicated positions (an
    overlapping second acquisition): see the module docstring.
    """
    warnings: list[str] = []
    slices = _drop_copies(pid, [_read_ct_slice(pid, f) for f in files], warnings)
    ref = slices[0]
    _check_same_geometry(pid, slices)
    row, col = ref["iop"][:3], ref["iop"][3:]
    normal = np.cross(row, col)
    for s in slices:
        s["z"] = float(s["ipp"] @ normal)
    slices.sort(key=lambda s: s["z"])
    z = np.array([s["z"] for s in slices])
    dup = np.flatnonzero(np.diff(z) < SPACING_ATOL_MM)
    if dup.size:
        slices = _resolve_duplicates(pid, slices, z, dup, seg_sops, seg_file, warnings)
        z = np.array([s["z"] for s in slices])
    if len(z) < 2:
        raise SliceGeometryError(f"{pid}: CT series in {ref['file'].parent} has a single slice")
    dz = _slice_spacing(pid, slices, z)
    direction = np.stack([row, col, normal], axis=1)  # columns = X, Y, Z axis directions
    ct = np.empty((len(slices), *ref["stored"].shape), np.float32)
    for k, s in enumerate(slices):  # rescaled into the volume: no float copy per slice
        _rescale(s.pop("stored"), s["slope"], s["intercept"], out=ct[k])
    return {
        "ct": ct,
        "spacing": (dz, ref["ps"][0], ref["ps"][1]),
        "origin": tuple(float(v) for v in slices[0]["ipp"]),
        "direction": tuple(float(v) for v in direction.ravel()),
        "row": row,
        "col": col,
        "normal": normal,
        "z": z,
        "ipp0": slices[0]["ipp"],
        "sops": [s["sop"] for s in slices],
        "files": [s["file"] for s in slices],
        "warnings": warnings,
    }


def _rescale(stored: np.ndarray, slope, intercept, out: np.ndarray | None = None) -> np.ndarray:
    """HU ``stored * slope + intercept`` in float32 (the stored values cast to float32 first),
    into ``out`` when given."""
    out = np.multiply(stored, slope, out=out, dtype=np.float32)
    return np.add(out, intercept, out=out)


def _read_ct_slice(pid: str, f: Path) -> dict:
    """One CT file: ``stored`` (``[Y, X]`` stored values, as in the file), ``slope`` and
    ``intercept`` (float32, see :func:`_rescale`), ``ipp``, ``iop``, ``ps`` (mm), ``sop`` and
    ``file``; :class:`DicomReadError` when its pixels or geometry cannot be read.

    The slices keep their stored values until :func:`_load_ct` rescales them into the volume:
    at the peak of the CT read memory holds the stored values (half a volume for 16-bit data)
    and the float32 volume, rather than two float32 volumes, and every slice is passed over
    once less."""
    ds = _read(f, pid, "CT")
    try:
        arr = _stored_pixels(ds)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
        iop = _orientation(ds)
        ps = [float(v) for v in ds.PixelSpacing]
    except Exception as err:  # noqa: BLE001 - truncated pixel data, missing geometry
        raise DicomReadError(f"{pid}: cannot decode CT file {f}: {err}") from err
    slope, intercept = _rescale_of(pid, f, ds)
    return {
        "file": f,
        "stored": arr,
        "slope": np.float32(slope),
        "intercept": np.float32(intercept),
        "ipp": ipp,
        "iop": iop,
        "ps": ps,
        "sop": str(ds.SOPInstanceUID),
        "instance": _optional_int(ds, "InstanceNumber"),
        "acquisition": _optional_int(ds, "AcquisitionNumber"),
    }


def _optional_int(ds: pydicom.Dataset, keyword: str) -> int | None:
    """An integer attribute (``InstanceNumber``, ``AcquisitionNumber``); ``None`` when absent,
    empty or not a whole number."""
    value = ds.get(keyword)
    try:
        return None if value is None or str(value).strip() == "" else int(value)
    except (TypeError, ValueError):
        return None


def _rescale_of(pid: str, f: Path, ds: pydicom.Dataset) -> tuple[float, float]:
    """``RescaleSlope`` and ``RescaleIntercept`` of a CT slice (HU = stored x slope +
    intercept); :class:`MissingAttributeError` naming patient and file when either is absent
    or empty, or the slope is 0 or not finite.

    The CT Image Module (DICOM PS3.3 C.8.2.1) makes both Type 1 for CT Image Storage: a file
    without them is not a valid CT, and no default is principled. The intercept depends on how
    the scanner stores values (-1024 for most unsigned 12-bit data, 0 for signed data already
    in HU, -8192 or others elsewhere), so assuming 0, as the identity Modality LUT of other
    SOP classes would, can shift the whole volume by 1024 HU without a trace; the patient is
    excluded instead, with what to do.
    """
    values = {}
    for keyword in ("RescaleSlope", "RescaleIntercept"):
        value = ds.get(keyword)
        values[keyword] = None if value is None or str(value).strip() == "" else float(value)
    absent = [k for k, v in values.items() if v is None]
    if absent:
        raise MissingAttributeError(
            f"{pid}: CT file {f} has no {' or '.join(absent)} (required in every CT image, DICOM "
            "PS3.3 C.8.2.1): its stored values cannot be turned into HU; export the series "
            "again from the scanner or PACS with its rescale attributes"
        )
    slope, intercept = values["RescaleSlope"], values["RescaleIntercept"]
    if not (np.isfinite(slope) and slope != 0 and np.isfinite(intercept)):
        raise MissingAttributeError(
            f"{pid}: CT file {f} has RescaleSlope {slope:g} and RescaleIntercept {intercept:g}: "
            "not a usable HU transform"
        )
    return slope, intercept


def _check_same_geometry(pid: str, slices: list[dict]) -> None:
    """Every slice has the first one's shape, orientation and pixel spacing, else
    :class:`SliceGeometryError` naming both files."""
    ref = slices[0]
    for s in slices[1:]:
        if s["stored"].shape != ref["stored"].shape:
            raise SliceGeometryError(
                f"{pid}: CT slice {s['file']} has shape {s['stored'].shape}, "
                f"{ref['file']} has {ref['stored'].shape}"
            )
        if not np.allclose(s["iop"], ref["iop"], atol=1e-4):
            raise SliceGeometryError(
                f"{pid}: CT slice {s['file']} has another ImageOrientationPatient than {ref['file']}"
            )
        if not np.allclose(s["ps"], ref["ps"], atol=1e-4):
            raise SliceGeometryError(
                f"{pid}: CT slice {s['file']} has another PixelSpacing than {ref['file']}"
            )


def _slice_spacing(pid: str, slices: list[dict], z: np.ndarray) -> float:
    """The median slice spacing (mm) of the sorted positions ``z``; a gap of whole missing
    slices or an uneven step raises :class:`SliceGeometryError` naming the two files."""
    diffs = np.diff(z)
    dz = float(np.median(diffs))
    tol = max(SPACING_ATOL_MM, SPACING_RTOL * dz)
    for i, d in enumerate(diffs):
        if abs(d - dz) <= tol:
            continue
        ratio = d / dz
        if ratio > 1.5 and abs(ratio - round(ratio)) * dz <= tol:
            n = int(round(ratio)) - 1
            raise SliceGeometryError(
                f"{pid}: {n} CT slice(s) missing between z={z[i]:.2f} and z={z[i + 1]:.2f} mm "
                f"(files {slices[i]['file'].name} and {slices[i + 1]['file'].name} in "
                f"{slices[i]['file'].parent}; spacing {dz:.2f} mm)"
            )
        raise SliceGeometryError(
            f"{pid}: uneven CT slice spacing {d:.2f} mm between z={z[i]:.2f} and "
            f"z={z[i + 1]:.2f} mm (median {dz:.2f} mm; files {slices[i]['file']} and "
            f"{slices[i + 1]['file']})"
        )
    return dz


def _drop_copies(pid: str, slices: list[dict], warnings: list[str]) -> list[dict]:
    """Drop exact copies of one SOP instance (same UID, position and pixels) with a warning."""
    first: dict[str, dict] = {}
    out = []
    for s in slices:
        seen = first.get(s["sop"])
        if seen is None:
            first[s["sop"]] = s
            out.append(s)
            continue
        same_hu = np.array_equal(
            _rescale(seen["stored"], seen["slope"], seen["intercept"]),
            _rescale(s["stored"], s["slope"], s["intercept"]),
        )
        if np.array_equal(seen["ipp"], s["ipp"]) and same_hu:
            warnings.append(
                f"{pid}: CT file {s['file']} is a copy of {seen['file']} (same SOP instance "
                f"{s['sop']}); ignored"
            )
            continue
        raise SliceGeometryError(
            f"{pid}: CT files {seen['file']} and {s['file']} share the SOP instance UID "
            f"{s['sop']} but differ in position or pixels"
        )
    return out


def _names(files: Sequence[Path], at_most: int = 3) -> str:
    """``a.dcm, b.dcm, c.dcm and 2 more``: the names of a few files, for a message."""
    shown = ", ".join(f.name for f in files[:at_most])
    return shown + (f" and {len(files) - at_most} more" if len(files) > at_most else "")


def _resolve_duplicates(
    pid: str,
    slices: list[dict],
    z: np.ndarray,
    dup: np.ndarray,
    seg_sops: set[str] | None,
    seg_file: Path | None,
    warnings: list[str],
) -> list[dict]:
    """One slice per position when several slices share one (module docstring, "Duplicated
    slice positions"): the SEG's acquisition first, then one slice per position."""
    i = int(dup[0])
    if not seg_sops:
        raise SliceGeometryError(
            f"{pid}: CT slices {slices[i]['file']} and {slices[i + 1]['file']} share the position "
            f"z={z[i]:.2f} mm ({int(dup.size)} duplicated position(s): overlapping "
            "acquisitions?) and no SEG names the slices it was made from"
        )
    slices = _keep_seg_acquisition(pid, slices, seg_sops, seg_file, int(dup.size), warnings)
    return _one_per_position(pid, slices, seg_sops, seg_file, warnings)


def _keep_seg_acquisition(
    pid: str,
    slices: list[dict],
    seg_sops: set[str],
    seg_file: Path | None,
    n_dup: int,
    warnings: list[str],
) -> list[dict]:
    """The slices of the acquisition the SEG was made from, when the series holds several
    (``AcquisitionNumber``) and every slice the SEG references belongs to one of them, with
    its slices the SEG does not reference; else ``slices`` unchanged."""
    acquisitions = {s["acquisition"] for s in slices}
    referenced = {s["acquisition"] for s in slices if s["sop"] in seg_sops}
    if len(acquisitions) < 2 or len(referenced) != 1:
        return slices
    keep = [s for s in slices if s["acquisition"] in referenced]
    if len(keep) < 2:
        return slices
    dropped = [s["file"] for s in slices if s["acquisition"] not in referenced]
    acq = referenced.pop()
    label = "no AcquisitionNumber" if acq is None else f"AcquisitionNumber {acq}"
    warnings.append(
        f"{pid}: CT series in {slices[0]['file'].parent} has {n_dup} duplicated slice "
        f"position(s) (overlapping acquisitions); kept the {len(keep)} slices of the acquisition "
        f"the SEG {seg_file} was made from ({label}) and dropped {len(dropped)} file(s) of the "
        f"others ({_names(dropped)})"
    )
    return keep


def _one_per_position(
    pid: str, slices: list[dict], seg_sops: set[str], seg_file: Path | None, warnings: list[str]
) -> list[dict]:
    """Every position of the series once (sorted ``slices``): of several slices at one
    position, the one the SEG references, else the one with the later ``InstanceNumber``;
    :class:`SliceGeometryError` when the SEG references two of them, or none and their
    instance numbers do not order them."""
    groups: list[list[dict]] = []
    for s in slices:
        if groups and s["z"] - groups[-1][-1]["z"] < SPACING_ATOL_MM:
            groups[-1].append(s)
        else:
            groups.append([s])
    keep, dropped, n_dup, by_instance = [], [], 0, 0
    for group in groups:
        chosen = group[0]
        if len(group) > 1:
            chosen = _choose(pid, group, seg_sops, seg_file)
            n_dup += 1
            by_instance += chosen["sop"] not in seg_sops
        keep.append(chosen)
        dropped += [s["file"] for s in group if s is not chosen]
    if dropped:
        warnings.append(
            f"{pid}: CT series in {slices[0]['file'].parent} has {n_dup} duplicated "
            f"slice position(s); kept all {len(keep)} positions with one slice each (the one the "
            f"SEG {seg_file} references, else the later InstanceNumber: {by_instance} by "
            f"InstanceNumber) and ignored {_names(dropped)}"
        )
    return keep


def _choose(pid: str, group: list[dict], seg_sops: set[str], seg_file: Path | None) -> dict:
    """The slice kept among ``group`` (several slices at one position): see
    :func:`_one_per_position`."""
    files = " and ".join(str(s["file"]) for s in group)
    where = f"{pid}: CT slices {files} share the position z={group[0]['z']:.2f} mm"
    referenced = [s for s in group if s["sop"] in seg_sops]
    if len(referenced) == 1:
        return referenced[0]
    if referenced:
        raise SliceGeometryError(
            f"{where} and the SEG {seg_file} references {len(referenced)} of them: cannot tell "
            "which acquisition to use"
        )
    numbers = [s["instance"] for s in group]
    if None in numbers or len(set(numbers)) < len(numbers):
        raise SliceGeometryError(
            f"{where}, the SEG {seg_file} references neither and their InstanceNumbers "
            f"({numbers}) do not say which is later: remove the one not to use"
        )
    return max(group, key=lambda s: s["instance"])


# --------------------------------------------------------------------------------------------
# SEG
# --------------------------------------------------------------------------------------------
def _open_seg(pid: str, path: Path) -> pydicom.Dataset:
    """Parse a SEG's header (segments, functional groups); frames are decoded later.

    ``pydicom.dcmread(stop_before_pixels=True)``: the pixel data is not read here; see
    :func:`_seg_frames`. (highdicom's ``segread`` builds lookup tables over every frame that
    cost more than the rest of the SEG loading together; nothing here needs them.)
    """
    try:
        with open(path, "rb") as f:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            pixel_header = f.read(12)  # the Pixel Data element's tag, VR and length
            pixel_start = f.tell()
        size = path.stat().st_size
    except Exception as err:  # noqa: BLE001
        raise DicomReadError(f"{pid}: cannot read SEG file {path}: {err}") from err
    if str(getattr(ds, "Modality", "")) != SEG_MODALITY or "SegmentSequence" not in ds:
        raise DicomReadError(
            f"{pid}: cannot read SEG file {path}: not a DICOM Segmentation (Modality "
            f"{getattr(ds, 'Modality', None)!r}, no SegmentSequence)"
        )
    _check_pixel_length(pid, path, ds, pixel_header, size - pixel_start)
    return ds


def _check_pixel_length(
    pid: str, path: Path, ds: pydicom.Dataset, header: bytes, available: int
) -> None:
    """A native (uncompressed) SEG's Pixel Data must hold every frame's bytes.

    A file cut inside its header reads as a shorter header (pydicom stops at the end of the
    bytes) with no Pixel Data element after it: ``header`` (the 12 bytes after the header
    read) must start with the Pixel Data tag. ``iter_pixels`` does not notice a file cut
    inside its pixel data (it decodes the short last frames), so the
    declared and the present lengths are checked against ``Rows x Columns x NumberOfFrames x
    BitsAllocated`` before any frame is decoded. Compressed (encapsulated) data is checked by
    its decoder, frame by frame.
    """
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or ts.is_deflated:
        return
    pixel_data_tag = b"\xe0\x7f\x10\x00" if ts.is_little_endian else b"\x7f\xe0\x00\x10"
    if not header.startswith(pixel_data_tag):  # the header read ended early: file cut short
        raise DicomReadError(
            f"{pid}: cannot read SEG file {path}: the file ends before its pixel data "
            f"({path.stat().st_size} bytes): truncated (an interrupted download or copy?); "
            "replace it"
        )
    if ts.is_encapsulated:
        return
    if ts.is_implicit_VR:
        fmt, at, available = ("<" if ts.is_little_endian else ">") + "I", 4, available + 4
    else:
        fmt, at = ("<" if ts.is_little_endian else ">") + "I", 8
    declared = struct.unpack(fmt, header[at : at + 4])[0]
    n_frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    bits = int(getattr(ds, "BitsAllocated", 1) or 1)
    need = (int(ds.Rows) * int(ds.Columns) * n_frames * bits + 7) // 8
    if declared < need or available < need:
        raise DicomReadError(
            f"{pid}: cannot read SEG file {path}: pixel data truncated ({min(declared, available)}"
            f" of {need} bytes for {n_frames} frames of {ds.Rows}x{ds.Columns})"
        )


def _seg_frames(pid: str, path: Path, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
    """Stored values of SEG frames ``indices`` (0-based, ascending), decoded one at a time.

    ``pydicom.pixels.iter_pixels`` reads only the image-pixel module and then one frame's bytes
    per step (bit-packed BINARY frames unpacked to 0/1, FRACTIONAL frames as stored), so memory
    does not grow with the number of frames. Files below ``LAZY_SEG_BYTES`` are first read into
    memory (fewer system calls); larger ones are read frame by frame from disk.
    """
    from pydicom.pixels import iter_pixels

    if not indices:
        return
    src = io.BytesIO(path.read_bytes()) if path.stat().st_size <= LAZY_SEG_BYTES else path
    it = iter_pixels(src, indices=list(indices), raw=True)
    for i in indices:
        try:
            frame = next(it)
        except Exception as err:  # noqa: BLE001 - truncated or undecodable pixel data
            raise DicomReadError(
                f"{pid}: cannot decode frame {i + 1} of SEG file {path}: {err}"
            ) from err
        yield i, frame


def _seg_references(seg) -> tuple[list[str], set[str]]:
    """Series UIDs and SOP instance UIDs the SEG says it was made from."""
    series, sops = [], set()
    for item in getattr(seg, "ReferencedSeriesSequence", []):
        series.append(str(item.SeriesInstanceUID))
        for inst in getattr(item, "ReferencedInstanceSequence", []):
            sops.add(str(inst.ReferencedSOPInstanceUID))
    for fg in getattr(seg, "PerFrameFunctionalGroupsSequence", []):
        for der in getattr(fg, "DerivationImageSequence", []):
            for src in getattr(der, "SourceImageSequence", []):
                sops.add(str(src.ReferencedSOPInstanceUID))
    return series, sops


def _load_seg(
    pid: str, path: Path, seg, ct: dict, series_uid: str, ref_series: Sequence[str]
) -> dict:
    """Masks on the CT grid, decoding one frame at a time (see "Memory" in the docstring).

    ``ref_series``: the series UIDs the SEG references (:func:`_seg_references`).
    """
    warnings: list[str] = []
    groups = _check_seg_geometry(pid, path, seg, ct, series_uid, ref_series)
    segments, names = _segment_names(pid, path, seg, warnings)
    placed = _place_frames(pid, path, groups, segments, names, ct)
    masks, found, parts = _paint_frames(pid, path, seg, placed, ct["ct"].shape)
    lesions, lesion_labels = [], []
    for number in sorted(segments):
        label, name = segments[number], names[number]
        if name is None:
            continue
        if not found[number]:
            raise EmptySegmentError(
                f"{pid}: SEG {path} segment {number} ({label!r}) has no foreground voxel"
            )
        if name == "tumour":
            lesions.append(_lesion_from_parts(parts.pop(number), ct["ct"].shape))
            lesion_labels.append(label)
    _check_structures(pid, path, masks, sorted(segments.values()), warnings)
    return {
        "masks": masks,
        "lesions": lesions,
        "lesion_labels": lesion_labels,
        "warnings": warnings,
    }


def _check_seg_geometry(
    pid: str, path: Path, seg, ct: dict, series_uid: str, ref_series: Sequence[str]
) -> list:
    """The SEG references this CT series and its images, and its frames match the CT's size and
    orientation; returns the per-frame functional groups. Raises :class:`SegReferenceError` or
    :class:`SegGeometryError`."""
    _, ny, nx = ct["ct"].shape
    if ref_series and series_uid not in ref_series:
        raise SegReferenceError(
            f"{pid}: SEG {path} references series {ref_series}, not the CT series "
            f"{series_uid} ({ct['files'][0].parent})"
        )
    _check_sources(pid, path, seg, ct["sops"])
    groups = list(getattr(seg, "PerFrameFunctionalGroupsSequence", []))
    n_frames = int(getattr(seg, "NumberOfFrames", 1) or 1)
    shape = (int(seg.Rows), int(seg.Columns))
    if len(groups) != n_frames or shape != (ny, nx):
        raise SegGeometryError(
            f"{pid}: SEG {path} frames have shape {shape} (x{n_frames}, {len(groups)} per-frame "
            f"groups), CT slices {(ny, nx)}"
        )
    shared = (
        seg.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in seg else None
    )
    if shared is not None and "PlaneOrientationSequence" in shared:
        iop = np.asarray(
            [float(v) for v in shared.PlaneOrientationSequence[0].ImageOrientationPatient]
        )
        if not np.allclose(iop, np.concatenate([ct["row"], ct["col"]]), atol=1e-3):
            raise SegGeometryError(
                f"{pid}: SEG {path} orientation {iop.tolist()} differs from the CT's"
            )
    return groups


def _segment_names(
    pid: str, path: Path, seg, warnings: list[str]
) -> tuple[dict[int, str], dict[int, str | None]]:
    """Segment number -> label, and -> structure of :data:`MASK_NAMES` (``None``, with a
    warning, for a label :func:`canonical_label` does not recognise)."""
    segments: dict[int, str] = {}
    for item in seg.SegmentSequence:
        segments[int(item.SegmentNumber)] = str(item.SegmentLabel)
    names: dict[int, str | None] = {}
    for number, label in sorted(segments.items()):
        names[number] = canonical_label(label)
        if names[number] is None:
            warnings.append(f"{pid}: SEG {path} segment {number} {label!r} not recognised; ignored")
    return segments, names


def _place_frames(
    pid: str,
    path: Path,
    groups: list,
    segments: dict[int, str],
    names: dict[int, str | None],
    ct: dict,
) -> dict[int, tuple[int, int, str]]:
    """Frame index -> (segment number, CT slice index, structure) for every frame of a
    recognised segment; a frame naming no or an undeclared segment raises."""
    sop_index = {s: i for i, s in enumerate(ct["sops"])}
    dz, dy, dx = ct["spacing"]
    placed: dict[int, tuple[int, int, str]] = {}
    for i, fg in enumerate(groups):
        try:
            number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        except (AttributeError, IndexError) as err:
            raise SegGeometryError(f"{pid}: SEG {path} frame {i + 1} names no segment") from err
        if number not in segments:
            raise SegmentLabelError(
                f"{pid}: SEG {path} frame {i + 1} refers to undeclared segment {number}"
            )
        k = _frame_slice(pid, path, i, fg, ct, sop_index, dz, dy, dx)
        if names[number] is not None:
            placed[i] = (number, k, names[number])
    return placed


def _paint_frames(
    pid: str, path: Path, seg, placed: dict[int, tuple[int, int, str]], shape: tuple[int, ...]
) -> tuple[dict[str, np.ndarray], dict[int, bool], dict[int, list]]:
    """Decode the placed frames one at a time (thresholded) into one ``[Z, Y, X]`` bool volume
    per structure; returns the masks, which segments had a foreground voxel, and per tumour
    segment the in-plane crops ``(slice, row0, col0, crop)`` of its non-empty frames."""
    nz, ny, nx = shape
    seg_type = str(getattr(seg, "SegmentationType", "BINARY"))
    threshold = (
        float(getattr(seg, "MaximumFractionalValue", 255)) / 2 if seg_type == "FRACTIONAL" else 0
    )
    masks = {name: np.zeros((nz, ny, nx), bool) for name in MASK_NAMES}
    found: dict[int, bool] = defaultdict(bool)
    parts: dict[int, list[tuple[int, int, int, np.ndarray]]] = defaultdict(list)
    for i, stored in _seg_frames(pid, path, sorted(placed)):
        number, k, name = placed[i]
        if stored.shape != (ny, nx):
            raise DicomReadError(
                f"{pid}: cannot decode frame {i + 1} of SEG file {path}: shape {stored.shape}, "
                f"expected {(ny, nx)}"
            )
        frame = stored > threshold
        rows = np.flatnonzero(frame.any(axis=1))
        if rows.size == 0:
            continue
        found[number] = True
        masks[name][k] |= frame
        if name == "tumour":
            cols = np.flatnonzero(frame.any(axis=0))
            r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
            parts[number].append((k, int(r0), int(c0), frame[r0:r1, c0:c1].copy()))
    return masks, found, parts


def _check_structures(
    pid: str, path: Path, masks: dict[str, np.ndarray], labels: list[str], warnings: list[str]
) -> None:
    """Raise :class:`SegmentLabelError` when a required structure has no voxel; warn (with its
    consequence) for every other empty structure."""
    missing_required = [n for n in REQUIRED_STRUCTURES if not masks[n].any()]
    if missing_required:
        raise SegmentLabelError(
            f"{pid}: SEG {path} has no segment for the required structure(s) "
            f"{missing_required} (labels found: {labels})"
        )
    for name in MASK_NAMES:
        if masks[name].any():
            continue
        consequence = {
            "portal": "the crop is centred on the liver's centre of mass instead of the "
            "portal-vein bifurcation",
            "tumour": "no lesion features",
        }.get(name, "its mask channel is empty")
        warnings.append(
            f"{pid}: SEG {path} has no {name!r} segment: {consequence} (labels: {labels})"
        )


def _lesion_from_parts(
    parts: list[tuple[int, int, int, np.ndarray]], shape: tuple[int, int, int]
) -> LesionMask:
    """Assemble one tumour's frame crops ``(slice, row0, col0, crop)`` into a LesionMask."""
    z0 = min(p[0] for p in parts)
    z1 = max(p[0] for p in parts) + 1
    r0 = min(p[1] for p in parts)
    r1 = max(p[1] + p[3].shape[0] for p in parts)
    c0 = min(p[2] for p in parts)
    c1 = max(p[2] + p[3].shape[1] for p in parts)
    crop = np.zeros((z1 - z0, r1 - r0, c1 - c0), bool)
    for k, r, c, sub in parts:
        crop[k - z0, r - r0 : r - r0 + sub.shape[0], c - c0 : c - c0 + sub.shape[1]] |= sub
    return LesionMask(shape, (slice(z0, z1), slice(r0, r1), slice(c0, c1)), crop)


def _frame_slice(pid, path, i, fg, ct, sop_index, dz, dy, dx) -> int:
    """Slice index of SEG frame ``i``: by position, else by the referenced source SOP UID."""
    if "PlanePositionSequence" in fg:
        ipp = np.asarray([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        offset = ipp - ct["ipp0"]
        along = float(ipp @ ct["normal"])
        k = int(np.argmin(np.abs(ct["z"] - along)))
        in_row = float(offset @ ct["row"])
        in_col = float(offset @ ct["col"])
        if (
            abs(ct["z"][k] - along) > 0.25 * dz
            or abs(in_row) > 0.25 * dx
            or abs(in_col) > 0.25 * dy
        ):
            raise SegGeometryError(
                f"{pid}: SEG {path} frame {i + 1} at {ipp.round(2).tolist()} mm is not on the "
                f"CT grid (nearest slice z={ct['z'][k]:.2f} mm)"
            )
        return k
    try:
        uid = str(fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
    except (AttributeError, IndexError) as err:
        raise SegGeometryError(
            f"{pid}: SEG {path} frame {i + 1} has neither a position nor a source image"
        ) from err
    if uid not in sop_index:
        raise SegReferenceError(
            f"{pid}: SEG {path} frame {i + 1} references SOP instance {uid}, not in the CT series"
        )
    return sop_index[uid]


def _check_sources(pid: str, path: Path, seg, sops: Sequence[str]) -> None:
    """Every SOP instance the SEG derives from must belong to the CT series."""
    known = set(sops)
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        for der in getattr(fg, "DerivationImageSequence", []):
            for src in getattr(der, "SourceImageSequence", []):
                uid = str(src.ReferencedSOPInstanceUID)
                if uid not in known:
                    raise SegReferenceError(
                        f"{pid}: SEG {path} frame {i + 1} derives from SOP instance {uid}, "
                        "which is not in the CT series"
                    )


def image_fingerprint(sop_uids: Sequence[str]) -> str:
    """The identity of a patient's CT images, whatever its PatientID: the first 16 hex digits
    of the SHA-256 of its CT slices' SOP instance UIDs (sorted, one per line); ``""`` for no
    UID. The same download gives the same fingerprint; another patient's images (or images
    written again with new UIDs, as an anonymiser may) give another."""
    if not sop_uids:
        return ""
    text = "\n".join(sorted(str(u) for u in sop_uids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------
def load_patient(ref_or_path: PatientRef | str | Path) -> Patient:
    """Load one patient's CT (HU) and SEG masks on the CT grid.

    Parameters
    ----------
    ref_or_path : PatientRef or path
        A reference from :func:`discover`, or a folder (or file) holding exactly one patient.

    Returns
    -------
    Patient

    Raises
    ------
    CohortDataError
        A subclass naming the patient and file: :class:`DicomReadError`,
        :class:`MissingSeriesError`, :class:`MultipleSeriesError`, :class:`SliceGeometryError`,
        :class:`SegReferenceError`, :class:`SegGeometryError`, :class:`SegmentLabelError`,
        :class:`EmptySegmentError`, :class:`NoDicomError`.
    """
    if isinstance(ref_or_path, PatientRef):
        ref = ref_or_path
    else:
        refs = discover(ref_or_path)
        if not refs:
            raise NoDicomError(_nothing_found(Path(ref_or_path), []))
        if len(refs) != 1:
            raise MultipleSeriesError(
                f"{ref_or_path}: expected one patient, found {[r.patient_id for r in refs]}"
            )
        ref = refs[0]
    pid = ref.patient_id
    if ref.unreadable:
        f, why = ref.unreadable[0]
        more = f" (and {len(ref.unreadable) - 1} more)" if len(ref.unreadable) > 1 else ""
        if f.is_file() and f.stat().st_size == 0:
            why = "the file is empty (0 bytes)"
        elif "InvalidDicomError" in why:
            why = (
                "not a DICOM file (no 'DICM' header); a truncated download, or a stray file to "
                "remove from the series folder"
            )
        raise DicomReadError(f"{pid}: cannot read DICOM file {f}{more}: {why}")
    if not ref.ct_series:
        raise MissingSeriesError(f"{pid}: no CT series under {ref.path}")
    if not ref.seg_files:
        raise MissingSeriesError(
            f"{pid}: no DICOM-SEG under {ref.path} (the CT and the SEG series must both lie under "
            "the folder given: pass the patient or cohort folder, not a series folder or file)"
        )
    if len(ref.seg_files) > 1:
        raise MultipleSeriesError(
            f"{pid}: {len(ref.seg_files)} SEG files under {ref.path} "
            f"({[str(p) for p in ref.seg_files]}); expected one"
        )
    seg_path = ref.seg_files[0]
    seg = _open_seg(pid, seg_path)
    ref_series, ref_sops = _seg_references(seg)
    warnings: list[str] = []
    series_uid, files = next(iter(ref.ct_series.items()))
    if len(ref.ct_series) > 1:
        folders = sorted({str(v[0].parent) for v in ref.ct_series.values()})
        chosen = [uid for uid in ref.ct_series if uid in ref_series]
        if len(chosen) != 1:
            raise MultipleSeriesError(
                f"{pid}: {len(ref.ct_series)} CT series under {ref.path} ({folders}) and the SEG "
                f"{seg_path} references {len(chosen)} of them; expected one"
            )
        series_uid, files = chosen[0], ref.ct_series[chosen[0]]
        warnings.append(
            f"{pid}: {len(ref.ct_series)} CT series under {ref.path}; using {files[0].parent}, "
            f"the one the SEG {seg_path} references"
        )
    ct = _load_ct(pid, files, ref_sops, seg_path)
    seg_out = _load_seg(pid, seg_path, seg, ct, series_uid, ref_series)
    warnings += ct["warnings"] + seg_out["warnings"]
    for msg in warnings:
        log.warning("%s", msg)
    return Patient(
        patient_id=pid,
        ct=ct["ct"],
        spacing=tuple(float(v) for v in ct["spacing"]),
        origin=ct["origin"],
        direction=ct["direction"],
        masks=seg_out["masks"],
        lesions=seg_out["lesions"],
        ct_files=list(ct["files"]),
        ct_sop_uids=list(ct["sops"]),
        seg_file=seg_path,
        lesion_labels=seg_out["lesion_labels"],
        warnings=warnings,
    )


def iter_cohort(
    root: str | Path, ids: Sequence[str] | None = None, progress: bool = True
) -> Iterator[tuple[PatientRef, Patient | CohortDataError]]:
    """Yield ``(ref, Patient)`` or ``(ref, error)`` one patient at a time (low memory).

    Patients requested in ``ids`` but absent from the folder are yielded as
    ``(PatientRef(id, root), MissingSeriesError)``.
    """
    refs = discover(root)
    if ids is not None:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        by_id = {r.patient_id: r for r in refs}
        refs = []
        for pid in wanted:
            refs.append(by_id.get(pid, PatientRef(pid, Path(root))))
    for ref in tqdm(refs, desc="load patients", disable=not progress):
        try:
            yield ref, load_patient(ref)
        except CohortDataError as err:
            log.warning("excluded %s", err)
            yield ref, err


def load_cohort(
    root: str | Path, ids: Sequence[str] | None = None, progress: bool = True
) -> tuple[list[Patient], pd.DataFrame]:
    """Load every patient under ``root``; nothing is dropped silently.

    Returns
    -------
    patients : list[Patient]
    excluded : pd.DataFrame
        Columns ``patient_id``, ``path``, ``reason`` (the error message, prefixed by its class).
    """
    patients, rows = [], []
    for ref, out in iter_cohort(root, ids=ids, progress=progress):
        if isinstance(out, Patient):
            patients.append(out)
        else:
            rows.append(
                {
                    "patient_id": ref.patient_id,
                    "path": str(ref.path),
                    "reason": f"{type(out).__name__}: {out}",
                }
            )
    excluded = pd.DataFrame(rows, columns=["patient_id", "path", "reason"])
    return patients, excluded
