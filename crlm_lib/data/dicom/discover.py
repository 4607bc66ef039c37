"""Discovery: every patient of a DICOM export found from the headers only (``PatientID``,
``Modality``, ``SeriesInstanceUID``, ``SOPInstanceUID``); file and folder names are not
trusted."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import pydicom
from tqdm.auto import tqdm

from crlm_lib.data.dicom.records import (
    CT_MODALITY,
    SEG_MODALITY,
    SKIP_NAMES,
    SKIP_SUFFIXES,
    PatientRef,
)

log = logging.getLogger(__name__)


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
