"""The reader seam: :class:`DicomSource`, what preprocessing and ``crlm predict`` need from a
DICOM export (discover the series, read the SEG and the CT, name the segments through a label
map), its one implementation :class:`DicomExport`, and the loaders built on it
(:func:`load_patient`, :func:`iter_cohort`, :func:`load_cohort`).

Another hospital's export differs from the TCIA collection in its segment labels; it needs a
:class:`~crlm_lib.data.dicom.labels.LabelMap` (``DicomExport(label_map=...)``, or a
``label_map.json`` at the top of its folder, :func:`source_for`), not a code change. An export
that differs in more (another layout, NIfTI masks) implements :class:`DicomSource`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd
from tqdm.auto import tqdm

from crlm_lib.data.dicom.ct import read_ct_series
from crlm_lib.data.dicom.discover import _nothing_found, discover
from crlm_lib.data.dicom.labels import LABEL_MAP_FILE, TCIA_LABELS, LabelMap, as_label_map
from crlm_lib.data.dicom.records import (
    CohortDataError,
    CTSeries,
    DicomReadError,
    LabelMasks,
    MissingSeriesError,
    MultipleSeriesError,
    NoDicomError,
    Patient,
    PatientRef,
    SegFile,
)
from crlm_lib.data.dicom.seg import open_seg_file, paint_label_masks

log = logging.getLogger(__name__)


@runtime_checkable
class DicomSource(Protocol):
    """A DICOM export as the preprocessing and ``crlm predict`` read it.

    Attributes
    ----------
    label_map : LabelMap
        Which ``SegmentLabel`` is which structure of ``MASK_NAMES``.

    Methods
    -------
    discover(root, progress=False) -> list[PatientRef]
        Every patient under ``root``, from the headers only.
    read_seg(ref) -> SegFile
        The patient's one SEG, header read, frames not decoded.
    read_ct(ref, seg) -> CTSeries
        The CT series the SEG references, in HU, sorted along the slice normal.
    label_masks(ref, seg, ct) -> LabelMasks
        The SEG's segments on the CT grid, named through ``label_map``.
    """

    label_map: LabelMap

    def discover(self, root: str | Path, progress: bool = False) -> list[PatientRef]: ...

    def read_seg(self, ref: PatientRef) -> SegFile: ...

    def read_ct(self, ref: PatientRef, seg: SegFile) -> CTSeries: ...

    def label_masks(self, ref: PatientRef, seg: SegFile, ct: CTSeries) -> LabelMasks: ...


@dataclass(frozen=True)
class DicomExport:
    """A folder of DICOM files: one CT series (a file per slice) and one multi-frame DICOM-SEG
    per patient, as the TCIA collection and the synthetic cohort are laid out; segment labels
    named by ``label_map`` (default: the TCIA collection's).

    Example
    -------
    >>> source = DicomExport(LabelMap.from_file("hospital_x_labels.json"))  # doctest: +SKIP
    >>> patients = [load_patient(ref, source) for ref in source.discover("export/")]  # doctest: +SKIP
    """

    label_map: LabelMap = TCIA_LABELS

    def discover(self, root: str | Path, progress: bool = False) -> list[PatientRef]:
        """:func:`crlm_lib.data.dicom.discover.discover`."""
        return discover(root, progress=progress)

    def read_seg(self, ref: PatientRef) -> SegFile:
        """The one SEG under ``ref`` (:class:`MissingSeriesError` / :class:`MultipleSeriesError`
        when there is none or several), header only."""
        pid = ref.patient_id
        if not ref.seg_files:
            raise MissingSeriesError(
                f"{pid}: no DICOM-SEG under {ref.path} (the CT and the SEG series must both lie "
                "under the folder given: pass the patient or cohort folder, not a series folder "
                "or file)"
            )
        if len(ref.seg_files) > 1:
            raise MultipleSeriesError(
                f"{pid}: {len(ref.seg_files)} SEG files under {ref.path} "
                f"({[str(p) for p in ref.seg_files]}); expected one"
            )
        return open_seg_file(pid, ref.seg_files[0])

    def read_ct(self, ref: PatientRef, seg: SegFile) -> CTSeries:
        """The CT series of ``ref``; of several, the one ``seg`` references (with a warning)."""
        pid = ref.patient_id
        series_uid, files = next(iter(ref.ct_series.items()))
        warnings = []
        if len(ref.ct_series) > 1:
            folders = sorted({str(v[0].parent) for v in ref.ct_series.values()})
            chosen = [uid for uid in ref.ct_series if uid in seg.referenced_series]
            if len(chosen) != 1:
                raise MultipleSeriesError(
                    f"{pid}: {len(ref.ct_series)} CT series under {ref.path} ({folders}) and the "
                    f"SEG {seg.path} references {len(chosen)} of them; expected one"
                )
            series_uid, files = chosen[0], ref.ct_series[chosen[0]]
            warnings.append(
                f"{pid}: {len(ref.ct_series)} CT series under {ref.path}; using "
                f"{files[0].parent}, the one the SEG {seg.path} references"
            )
        ct = read_ct_series(pid, files, seg.referenced_sops, seg.path, series_uid)
        ct.warnings[:0] = warnings
        return ct

    def label_masks(self, ref: PatientRef, seg: SegFile, ct: CTSeries) -> LabelMasks:
        """:func:`crlm_lib.data.dicom.seg.paint_label_masks` with this export's label map."""
        return paint_label_masks(ref.patient_id, seg, ct, self.label_map)


def source_for(
    folder: str | Path | None = None, label_map: LabelMap | Mapping | str | Path | None = None
) -> DicomExport:
    """The reader of an export: with ``label_map`` (a map, a dict or a JSON file) when given,
    else with ``<folder>/label_map.json`` when the export carries one, else the TCIA labels."""
    if label_map is None and folder is not None:
        own = Path(folder) / LABEL_MAP_FILE
        if own.is_file():
            label_map = own
    return DicomExport(as_label_map(label_map))


def _refuse_unreadable(ref: PatientRef) -> None:
    """:class:`DicomReadError` for the first unreadable file under the patient's folder, with
    what to do; :class:`MissingSeriesError` without a CT series."""
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


def _one_patient(path: str | Path, source: DicomSource) -> PatientRef:
    refs = source.discover(path)
    if not refs:
        raise NoDicomError(_nothing_found(Path(path), []))
    if len(refs) != 1:
        raise MultipleSeriesError(
            f"{path}: expected one patient, found {[r.patient_id for r in refs]}"
        )
    return refs[0]


def load_patient(
    ref_or_path: PatientRef | str | Path, source: DicomSource | None = None
) -> Patient:
    """Load one patient's CT (HU) and SEG masks on the CT grid through ``source``.

    Parameters
    ----------
    ref_or_path : PatientRef or path
        A reference from ``source.discover``, or a folder (or file) holding exactly one
        patient.
    source : DicomSource, optional
        The export's reader (default: :class:`DicomExport` with the TCIA labels).

    Returns
    -------
    Patient

    Raises
    ------
    CohortDataError
        A subclass naming the patient and file: ``DicomReadError``, ``MissingSeriesError``,
        ``MultipleSeriesError``, ``SliceGeometryError``, ``SegReferenceError``,
        ``SegGeometryError``, ``SegmentLabelError``, ``EmptySegmentError``, ``NoDicomError``.
    """
    source = DicomExport() if source is None else source
    ref = ref_or_path if isinstance(ref_or_path, PatientRef) else _one_patient(ref_or_path, source)
    _refuse_unreadable(ref)
    seg = source.read_seg(ref)
    ct = source.read_ct(ref, seg)
    named = source.label_masks(ref, seg, ct)
    warnings = ct.warnings + named.warnings
    for msg in warnings:
        log.warning("%s", msg)
    return Patient(
        patient_id=ref.patient_id,
        ct=ct.hu,
        spacing=tuple(float(v) for v in ct.spacing),
        origin=ct.origin,
        direction=ct.direction,
        masks=named.masks,
        lesions=named.lesions,
        ct_files=list(ct.files),
        ct_sop_uids=list(ct.sops),
        seg_file=seg.path,
        lesion_labels=named.lesion_labels,
        warnings=warnings,
    )


def iter_cohort(
    root: str | Path,
    ids: Sequence[str] | None = None,
    progress: bool = True,
    source: DicomSource | None = None,
) -> Iterator[tuple[PatientRef, Patient | CohortDataError]]:
    """Yield ``(ref, Patient)`` or ``(ref, error)`` one patient at a time (low memory).

    Patients requested in ``ids`` but absent from the folder are yielded as
    ``(PatientRef(id, root), MissingSeriesError)``. ``source`` as in :func:`load_patient`.
    """
    source = DicomExport() if source is None else source
    refs = source.discover(root)
    if ids is not None:
        wanted = list(dict.fromkeys(str(i) for i in ids))
        by_id = {r.patient_id: r for r in refs}
        refs = [by_id.get(pid, PatientRef(pid, Path(root))) for pid in wanted]
    for ref in tqdm(refs, desc="load patients", disable=not progress):
        try:
            yield ref, load_patient(ref, source)
        except CohortDataError as err:
            log.warning("excluded %s", err)
            yield ref, err


def load_cohort(
    root: str | Path,
    ids: Sequence[str] | None = None,
    progress: bool = True,
    source: DicomSource | None = None,
) -> tuple[list[Patient], pd.DataFrame]:
    """Load every patient under ``root``; nothing is dropped silently.

    Returns
    -------
    patients : list[Patient]
    excluded : pd.DataFrame
        Columns ``patient_id``, ``path``, ``reason`` (the error message, prefixed by its class).
    """
    patients, rows = [], []
    for ref, out in iter_cohort(root, ids=ids, progress=progress, source=source):
        if isinstance(out, Patient):
            patients.append(out)
        else:
            reason = f"{type(out).__name__}: {out}"
            rows.append({"patient_id": ref.patient_id, "path": str(ref.path), "reason": reason})
    excluded = pd.DataFrame(rows, columns=["patient_id", "path", "reason"])
    return patients, excluded
