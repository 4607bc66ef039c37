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
* **SEG reader: pydicom** (standard attributes and stored frames; ``highdicom.seg.segread``
  gave the same arrays 50x slower, see :func:`_read_seg`) for the segment descriptions; frames
  are placed by their own ``PlanePositionSequence/ImagePositionPatient`` (matched to a CT slice
  along the normal and checked in-plane), falling back to ``DerivationImageSequence ->
  SourceImageSequence`` SOP instance UIDs when a frame carries no position. Frame order and
  frame count are never trusted: highdicom omits empty frames by default
  (``omit_empty_frames=True``) and ``Segmentation.get_volume`` returns only the slices that
  have frames, so frame index != slice index.
* ``direction`` follows the ITK convention: a row-major 3x3 matrix whose columns are the
  directions of the array axes X (row cosine), Y (column cosine) and Z (slice normal).
* ``origin`` is ``ImagePositionPatient`` (x, y, z mm, LPS) of slice index 0.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from tqdm.auto import tqdm

from crlm_lib.config import MASK_NAMES

log = logging.getLogger(__name__)

#: Modality values of the two series types of a patient.
CT_MODALITY = "CT"
SEG_MODALITY = "SEG"

#: Relative tolerance on slice spacing (fraction of the median spacing) before a gap counts as
#: uneven; absolute floor in mm.
SPACING_RTOL = 0.05
SPACING_ATOL_MM = 0.01


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------
class CohortDataError(Exception):
    """Base class of every data problem found while loading a patient (names patient and file)."""


class DicomReadError(CohortDataError):
    """A DICOM file cannot be read (truncated, not DICOM, pixel data undecodable)."""


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
    """

    patient_id: str
    path: Path
    ct_series: dict[str, list[Path]] = field(default_factory=dict)
    seg_files: list[Path] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

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
    lesions : list[np.ndarray]
        bool ``[Z, Y, X]``, one per tumour segment (in segment-number order).
    ct_files : list[Path]
        CT files in slice order.
    seg_file : Path
    lesion_labels : list[str]
        ``SegmentLabel`` of each entry of ``lesions``.
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


# --------------------------------------------------------------------------------------------
# Discovery
# --------------------------------------------------------------------------------------------
def _candidate_files(root: Path) -> list[Path]:
    """Every regular file under ``root`` that may be DICOM (hidden files and CSVs skipped)."""
    skip_suffix = {".csv", ".xlsx", ".xls", ".json", ".md", ".txt", ".npz", ".tsv"}
    out = []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in skip_suffix:
            out.append(p)
    return out


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
        Cohort root, a patient folder, or any folder above DICOM files.
    progress : bool
        Show a tqdm bar over files.

    Returns
    -------
    list[PatientRef]
        Sorted by ``patient_id``.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"cohort folder {root} does not exist")
    groups: dict[str, dict] = defaultdict(lambda: {"ct": defaultdict(list), "seg": [], "files": []})
    bad: list[tuple[Path, str]] = []
    files = _candidate_files(root)
    for f in tqdm(files, desc="discover DICOM", disable=not progress, leave=False):
        try:
            ds = pydicom.dcmread(
                f,
                stop_before_pixels=True,
                specific_tags=["PatientID", "Modality", "SeriesInstanceUID"],
            )
            modality = str(ds.Modality)
            pid = str(ds.PatientID)
            series = str(ds.SeriesInstanceUID)
        except Exception as err:  # noqa: BLE001 - any parse failure is reported, not raised
            bad.append((f, f"{type(err).__name__}: {err}"))
            continue
        g = groups[pid]
        g["files"].append(f)
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
            )
        )
    # attribute unreadable files to the patient whose folder contains them (deepest match)
    for f, why in bad:
        owners = [r for r in refs if r.path in f.parents]
        if owners:
            max(owners, key=lambda r: len(r.path.parts)).unreadable.append((f, why))
        else:
            log.warning("unreadable file outside any patient folder: %s (%s)", f, why)
    return sorted(refs, key=lambda r: r.patient_id)


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


def _orientation(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=np.float64)


def _load_ct(pid: str, files: Sequence[Path]) -> dict:
    """Read one CT series; return volume, geometry and SOP UIDs (slice order)."""
    slices = []
    for f in files:
        ds = _read(f, pid, "CT")
        try:
            arr = ds.pixel_array.astype(np.float32)
            ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)
            iop = _orientation(ds)
            ps = [float(v) for v in ds.PixelSpacing]
        except Exception as err:  # noqa: BLE001 - truncated pixel data, missing geometry
            raise DicomReadError(f"{pid}: cannot decode CT file {f}: {err}") from err
        slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
        intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
        slices.append(
            {
                "file": f,
                "hu": arr * np.float32(slope) + np.float32(intercept),
                "ipp": ipp,
                "iop": iop,
                "ps": ps,
                "sop": str(ds.SOPInstanceUID),
            }
        )
    ref = slices[0]
    for s in slices[1:]:
        if s["hu"].shape != ref["hu"].shape:
            raise SliceGeometryError(
                f"{pid}: CT slice {s['file']} has shape {s['hu'].shape}, "
                f"{ref['file']} has {ref['hu'].shape}"
            )
        if not np.allclose(s["iop"], ref["iop"], atol=1e-4):
            raise SliceGeometryError(
                f"{pid}: CT slice {s['file']} has another ImageOrientationPatient than {ref['file']}"
            )
        if not np.allclose(s["ps"], ref["ps"], atol=1e-4):
            raise SliceGeometryError(
                f"{pid}: CT slice {s['file']} has another PixelSpacing than {ref['file']}"
            )
    row, col = ref["iop"][:3], ref["iop"][3:]
    normal = np.cross(row, col)
    for s in slices:
        s["z"] = float(s["ipp"] @ normal)
    slices.sort(key=lambda s: s["z"])
    z = np.array([s["z"] for s in slices])
    if len(z) < 2:
        raise SliceGeometryError(f"{pid}: CT series in {ref['file'].parent} has a single slice")
    diffs = np.diff(z)
    dup = np.flatnonzero(diffs < SPACING_ATOL_MM)
    if dup.size:
        i = int(dup[0])
        raise SliceGeometryError(
            f"{pid}: CT slices {slices[i]['file']} and {slices[i + 1]['file']} share the "
            f"position z={z[i]:.2f} mm"
        )
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
    direction = np.stack([row, col, normal], axis=1)  # columns = X, Y, Z axis directions
    return {
        "ct": np.stack([s["hu"] for s in slices]).astype(np.float32),
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
    }


# --------------------------------------------------------------------------------------------
# SEG
# --------------------------------------------------------------------------------------------
#: SOP Class UID of DICOM Segmentation Storage.
_SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


def _read_seg(pid: str, path: Path):
    """Read a DICOM-SEG with pydicom: the dataset and its raw frames ``[F, Y, X]``.

    Speed (issue 11): ``highdicom.seg.segread`` builds per-frame lookup tables on reading
    (~50 ms per synthetic patient, half of ``load_patient``); everything below uses only the
    standard attributes (``SegmentSequence``, ``PerFrameFunctionalGroupsSequence`` ...) and
    the stored frames, which pydicom returns identically (unpacked 1-bit or fractional bytes)
    in ~1 ms.
    """
    try:
        seg = pydicom.dcmread(path)
        if str(getattr(seg, "SOPClassUID", "")) != _SEG_SOP_CLASS:
            raise ValueError(f"SOP class {getattr(seg, 'SOPClassUID', None)} is not a SEG")
        if "SegmentSequence" not in seg or "PerFrameFunctionalGroupsSequence" not in seg:
            raise ValueError("no SegmentSequence or PerFrameFunctionalGroupsSequence")
        frames = np.asarray(seg.pixel_array)
    except Exception as err:  # noqa: BLE001
        raise DicomReadError(f"{pid}: cannot read SEG file {path}: {err}") from err
    return seg, frames


def _load_seg(pid: str, path: Path, ct: dict, series_uid: str) -> dict:
    seg, frames = _read_seg(pid, path)
    nz, ny, nx = ct["ct"].shape
    # --- references ------------------------------------------------------------------------
    ref_series = [
        str(item.SeriesInstanceUID) for item in getattr(seg, "ReferencedSeriesSequence", [])
    ]
    if ref_series and series_uid not in ref_series:
        raise SegReferenceError(
            f"{pid}: SEG {path} references series {ref_series}, not the CT series "
            f"{series_uid} ({ct['files'][0].parent})"
        )
    _check_sources(pid, path, seg, ct["sops"])
    if frames.ndim == 2:
        frames = frames[None]
    n_frames = int(getattr(seg, "NumberOfFrames", frames.shape[0]))
    if frames.shape[0] != n_frames or frames.shape[1:] != (ny, nx):
        raise SegGeometryError(
            f"{pid}: SEG {path} frames have shape {frames.shape[1:]} (x{frames.shape[0]}), "
            f"CT slices {(ny, nx)}"
        )
    seg_type = str(getattr(seg, "SegmentationType", "BINARY"))
    if seg_type == "FRACTIONAL":
        frames = frames > float(getattr(seg, "MaximumFractionalValue", 255)) / 2
    else:
        frames = frames > 0
    # --- segments --------------------------------------------------------------------------
    segments: dict[int, str] = {}
    for item in seg.SegmentSequence:
        segments[int(item.SegmentNumber)] = str(item.SegmentLabel)
    # --- frame placement -------------------------------------------------------------------
    sop_index = {s: i for i, s in enumerate(ct["sops"])}
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
    dz = ct["spacing"][0]
    dy, dx = ct["spacing"][1], ct["spacing"][2]
    vols: dict[int, np.ndarray] = {n: np.zeros((nz, ny, nx), bool) for n in segments}
    for i, fg in enumerate(seg.PerFrameFunctionalGroupsSequence):
        try:
            number = int(fg.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        except (AttributeError, IndexError) as err:
            raise SegGeometryError(f"{pid}: SEG {path} frame {i + 1} names no segment") from err
        if number not in vols:
            raise SegmentLabelError(
                f"{pid}: SEG {path} frame {i + 1} refers to undeclared segment {number}"
            )
        k = _frame_slice(pid, path, i, fg, ct, sop_index, dz, dy, dx)
        vols[number][k] |= frames[i]
    # --- masks -----------------------------------------------------------------------------
    masks = {name: np.zeros((nz, ny, nx), bool) for name in MASK_NAMES}
    lesions, lesion_labels = [], []
    for number in sorted(segments):
        label = segments[number]
        name = canonical_label(label)
        if name is None:
            log.warning(
                "%s: SEG %s segment %d %r not recognised; ignored", pid, path, number, label
            )
            continue
        if not vols[number].any():
            raise EmptySegmentError(
                f"{pid}: SEG {path} segment {number} ({label!r}) has no foreground voxel"
            )
        masks[name] |= vols[number]
        if name == "tumour":
            lesions.append(vols[number])
            lesion_labels.append(label)
    missing = [n for n in MASK_NAMES if not masks[n].any()]
    if missing:
        raise SegmentLabelError(
            f"{pid}: SEG {path} has no segment for {missing} "
            f"(labels found: {sorted(segments.values())})"
        )
    return {"masks": masks, "lesions": lesions, "lesion_labels": lesion_labels}


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


# --------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------
def load_patient(ref_or_path: PatientRef | str | Path) -> Patient:
    """Load one patient's CT (HU) and SEG masks on the CT grid.

    Parameters
    ----------
    ref_or_path : PatientRef or path
        A reference from :func:`discover`, or a folder holding exactly one patient.

    Returns
    -------
    Patient

    Raises
    ------
    CohortDataError
        A subclass naming the patient and file: :class:`DicomReadError`,
        :class:`MissingSeriesError`, :class:`MultipleSeriesError`, :class:`SliceGeometryError`,
        :class:`SegReferenceError`, :class:`SegGeometryError`, :class:`SegmentLabelError`,
        :class:`EmptySegmentError`.
    """
    if isinstance(ref_or_path, PatientRef):
        ref = ref_or_path
    else:
        refs = discover(ref_or_path)
        if len(refs) != 1:
            raise MultipleSeriesError(
                f"{ref_or_path}: expected one patient, found {[r.patient_id for r in refs]}"
            )
        ref = refs[0]
    pid = ref.patient_id
    if ref.unreadable:
        f, why = ref.unreadable[0]
        raise DicomReadError(f"{pid}: cannot read DICOM file {f}: {why}")
    if not ref.ct_series:
        raise MissingSeriesError(f"{pid}: no CT series under {ref.path}")
    if len(ref.ct_series) > 1:
        folders = sorted({str(v[0].parent) for v in ref.ct_series.values()})
        raise MultipleSeriesError(
            f"{pid}: {len(ref.ct_series)} CT series under {ref.path} ({folders}); expected one"
        )
    if not ref.seg_files:
        raise MissingSeriesError(f"{pid}: no DICOM-SEG under {ref.path}")
    if len(ref.seg_files) > 1:
        raise MultipleSeriesError(
            f"{pid}: {len(ref.seg_files)} SEG files under {ref.path} "
            f"({[str(p) for p in ref.seg_files]}); expected one"
        )
    series_uid, files = next(iter(ref.ct_series.items()))
    ct = _load_ct(pid, files)
    seg_path = ref.seg_files[0]
    seg_out = _load_seg(pid, seg_path, ct, series_uid)
    return Patient(
        patient_id=pid,
        ct=ct["ct"],
        spacing=tuple(float(v) for v in ct["spacing"]),
        origin=ct["origin"],
        direction=ct["direction"],
        masks=seg_out["masks"],
        lesions=seg_out["lesions"],
        ct_files=list(ct["files"]),
        seg_file=seg_path,
        lesion_labels=seg_out["lesion_labels"],
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
