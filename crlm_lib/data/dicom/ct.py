"""The CT series of a patient: read file by file with pydicom (every error names the file),
sorted by the projection of ``ImagePositionPatient`` on the slice normal, duplicated positions
resolved as the package docstring says, checked for gaps and uneven spacing, rescaled to HU."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom

from crlm_lib.data.dicom.records import (
    SPACING_ATOL_MM,
    SPACING_RTOL,
    CTSeries,
    DicomReadError,
    MissingAttributeError,
    SliceGeometryError,
)


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


def read_ct_series(
    pid: str,
    files: Sequence[Path],
    seg_sops: set[str] | None = None,
    seg_file: Path | None = None,
    series_uid: str = "",
) -> CTSeries:
    """Read one CT series: volume in HU, geometry and SOP UIDs in slice order.

    ``seg_sops`` (the SOP instance UIDs the SEG was made from) resolve duplicated positions (an
    overlapping second acquisition): see the package docstring.
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
    return CTSeries(
        hu=ct,
        spacing=(float(dz), float(ref["ps"][0]), float(ref["ps"][1])),
        origin=tuple(float(v) for v in slices[0]["ipp"]),
        direction=tuple(float(v) for v in direction.ravel()),
        row=row,
        col=col,
        normal=normal,
        z=z,
        ipp0=slices[0]["ipp"],
        series_uid=series_uid,
        sops=[s["sop"] for s in slices],
        files=[s["file"] for s in slices],
        warnings=warnings,
    )


def _rescale(stored: np.ndarray, slope, intercept, out: np.ndarray | None = None) -> np.ndarray:
    """HU ``stored * slope + intercept`` in float32 (the stored values cast to float32 first),
    into ``out`` when given."""
    out = np.multiply(stored, slope, out=out, dtype=np.float32)
    return np.add(out, intercept, out=out)


def _read_ct_slice(pid: str, f: Path) -> dict:
    """One CT file: ``stored`` (``[Y, X]`` stored values, as in the file), ``slope`` and
    ``intercept`` (float32, see :func:`_rescale`), ``ipp``, ``iop``, ``ps`` (mm), ``sop`` and
    ``file``; :class:`DicomReadError` when its pixels or geometry cannot be read.

    The slices keep their stored values until :func:`read_ct_series` rescales them into the volume:
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
    """One slice per position when several slices share one (package docstring, "Duplicated
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


def image_fingerprint(sop_uids: Sequence[str]) -> str:
    """The identity of a patient's CT images, whatever its PatientID: the first 16 hex digits
    of the SHA-256 of its CT slices' SOP instance UIDs (sorted, one per line); ``""`` for no
    UID. The same download gives the same fingerprint; another patient's images (or images
    written again with new UIDs, as an anonymiser may) give another."""
    if not sop_uids:
        return ""
    text = "\n".join(sorted(str(u) for u in sop_uids))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
