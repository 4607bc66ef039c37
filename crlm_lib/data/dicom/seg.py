"""The DICOM-SEG of a patient: header read with pydicom (``stop_before_pixels``), frames
decoded one at a time (``pydicom.pixels.iter_pixels``) and placed on the CT grid by their own
position (else by their source SOP instance), segments named through a
:class:`~crlm_lib.data.dicom.labels.LabelMap`; each tumour segment kept as a bounding-box crop.
"""

from __future__ import annotations

import io
import struct
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pydicom

from crlm_lib.config import MASK_NAMES
from crlm_lib.data.dicom.labels import LabelMap
from crlm_lib.data.dicom.records import (
    REQUIRED_STRUCTURES,
    SEG_MODALITY,
    CTSeries,
    DicomReadError,
    EmptySegmentError,
    LabelMasks,
    LesionMask,
    SegFile,
    SegGeometryError,
    SegmentLabelError,
    SegReferenceError,
)

#: SEG files larger than this (bytes) are read frame by frame from disk (see ``_seg_frames``).
LAZY_SEG_BYTES = 128 * 2**20


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


def open_seg_file(pid: str, path: Path) -> SegFile:
    """A SEG's header and the series and SOP instances it references (frames not decoded)."""
    seg = _open_seg(pid, path)
    ref_series, ref_sops = _seg_references(seg)
    return SegFile(path, seg, ref_series, ref_sops)


def paint_label_masks(pid: str, seg_file: SegFile, ct: CTSeries, label_map: LabelMap) -> LabelMasks:
    """The SEG's segments as masks on the CT grid, named through ``label_map``, decoding one
    frame at a time (see "Memory" in the package docstring).

    Raises
    ------
    SegReferenceError, SegGeometryError
        A SEG made for another series, or frames off the CT grid.
    SegmentLabelError
        A label the (strict) map does not know, or no segment for a required structure.
    EmptySegmentError
        A recognised segment without a foreground voxel.
    """
    path, seg = seg_file.path, seg_file.dataset
    warnings: list[str] = []
    groups = _check_seg_geometry(pid, path, seg, ct, ct.series_uid, seg_file.referenced_series)
    segments, names = _segment_names(pid, path, seg, label_map, warnings)
    placed = _place_frames(pid, path, groups, segments, names, ct)
    masks, found, parts = _paint_frames(pid, path, seg, placed, ct.hu.shape)
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
            lesions.append(_lesion_from_parts(parts.pop(number), ct.hu.shape))
            lesion_labels.append(label)
    _check_structures(pid, path, masks, sorted(segments.values()), warnings)
    return LabelMasks(masks, lesions, lesion_labels, warnings)


def _check_seg_geometry(
    pid: str, path: Path, seg, ct: CTSeries, series_uid: str, ref_series: Sequence[str]
) -> list:
    """The SEG references this CT series and its images, and its frames match the CT's size and
    orientation; returns the per-frame functional groups. Raises :class:`SegReferenceError` or
    :class:`SegGeometryError`."""
    _, ny, nx = ct.hu.shape
    if ref_series and series_uid not in ref_series:
        raise SegReferenceError(
            f"{pid}: SEG {path} references series {ref_series}, not the CT series "
            f"{series_uid} ({ct.files[0].parent})"
        )
    _check_sources(pid, path, seg, ct.sops)
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
        if not np.allclose(iop, np.concatenate([ct.row, ct.col]), atol=1e-3):
            raise SegGeometryError(
                f"{pid}: SEG {path} orientation {iop.tolist()} differs from the CT's"
            )
    return groups


def _segment_names(
    pid: str, path: Path, seg, label_map: LabelMap, warnings: list[str]
) -> tuple[dict[int, str], dict[int, str | None]]:
    """Segment number -> label, and -> structure of :data:`MASK_NAMES` through ``label_map``
    (``None`` for an ignored label; for an unknown one too, with a warning, when the map is not
    strict, else :class:`SegmentLabelError` naming patient, file and label)."""
    segments: dict[int, str] = {}
    for item in seg.SegmentSequence:
        segments[int(item.SegmentNumber)] = str(item.SegmentLabel)
    names: dict[int, str | None] = {}
    for number, label in sorted(segments.items()):
        names[number] = label_map.structure(label)
        if label_map.knows(label):
            continue
        if label_map.strict:
            raise SegmentLabelError(
                f"{pid}: SEG {path} segment {number} label {label!r} is not in the "
                f"{label_map.describe()}; add it to the label map (or to its 'ignore' list)"
            )
        warnings.append(f"{pid}: SEG {path} segment {number} {label!r} not recognised; ignored")
    return segments, names


def _place_frames(
    pid: str,
    path: Path,
    groups: list,
    segments: dict[int, str],
    names: dict[int, str | None],
    ct: CTSeries,
) -> dict[int, tuple[int, int, str]]:
    """Frame index -> (segment number, CT slice index, structure) for every frame of a
    recognised segment; a frame naming no or an undeclared segment raises."""
    sop_index = {s: i for i, s in enumerate(ct.sops)}
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
        k = _frame_slice(pid, path, i, fg, ct, sop_index)
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


def _frame_slice(pid, path, i, fg, ct: CTSeries, sop_index: dict[str, int]) -> int:
    """Slice index of SEG frame ``i``: by position, else by the referenced source SOP UID."""
    dz, dy, dx = ct.spacing
    if "PlanePositionSequence" in fg:
        ipp = np.asarray([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient])
        offset = ipp - ct.ipp0
        along = float(ipp @ ct.normal)
        k = int(np.argmin(np.abs(ct.z - along)))
        in_row = float(offset @ ct.row)
        in_col = float(offset @ ct.col)
        if abs(ct.z[k] - along) > 0.25 * dz or abs(in_row) > 0.25 * dx or abs(in_col) > 0.25 * dy:
            raise SegGeometryError(
                f"{pid}: SEG {path} frame {i + 1} at {ipp.round(2).tolist()} mm is not on the "
                f"CT grid (nearest slice z={ct.z[k]:.2f} mm)"
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
