"""Reading NEW patients for ``crlm predict``: folders or ZIPs in the TCIA layout, preprocessed
like the training cohort, with what a report needs to point back into the original CT.

A source may hold one patient or several (a cohort folder); patients are found by their DICOM
headers (:class:`~crlm_lib.data.dicom.DicomSource`), and each keeps

* the name of its folder (``folder_name``): the source itself (a ZIP's name without ``.zip``)
  when it holds one patient, else the outermost folder under the source that holds this
  patient's files and no other's. A clinical row may name the patient by it
  (``clinical_input.match_rows``);
* per slice of the original CT series, its ``InstanceNumber`` and the position along the slice
  normal in mm (``ct_positions``, from ``ImagePositionPatient``), so that a report names "CT
  instance 23, z = -120.0 mm" rather than a slice of the model's 16-slice crop.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crlm_lib.config import Profile
from crlm_lib.errors import PredictError

if TYPE_CHECKING:
    from crlm_lib.data.dicom.labels import LabelMap

__all__ = ["NewPatient", "discover_patient_ids", "load_new_patients", "patient_item", "slice_label"]


@dataclass
class NewPatient:
    """One new patient, preprocessed like the training cohort.

    ``arrays`` holds the keys of the preprocessing cache (``ct`` ``[D, H, W]``, ``masks``
    ``[K, D, H, W]``, ``lesion_features``, ``z_index``, ``source_shape``, ``source_spacing_mm``,
    ``origin_mm``, ``direction``, ...); ``ct_files`` the CT series in slice order (for DICOM
    export); ``source`` the folder or ZIP given; ``folder_name`` and ``ct_positions`` as in the
    module doc (``ct_positions[z]`` = ``(InstanceNumber or None, position in mm)`` of
    ``ct_files[z]``).
    """

    patient_id: str
    arrays: dict[str, Any]
    ct_files: list[Path]
    source: Path
    folder_name: str = ""
    ct_positions: list[tuple[int | None, float]] = field(default_factory=list)


def slice_label(patient: NewPatient, processed_slice: int) -> str:
    """``"CT instance 23, z = -120.0 mm"`` for slice ``processed_slice`` of the preprocessed
    grid (``z_index`` maps it to the source slice), or ``"padding (outside the CT)"``."""
    z_index = np.asarray(patient.arrays["z_index"]).ravel()
    z = int(z_index[processed_slice])
    if z < 0 or z >= len(patient.ct_positions):
        return "padding slice (outside the CT series)"
    number, pos = patient.ct_positions[z]
    inst = f"CT instance {number}" if number is not None else f"CT slice {z + 1}"
    return f"{inst}, z = {pos:.1f} mm"


def _ct_positions(ct_files: Sequence[Path], normal: np.ndarray) -> list[tuple[int | None, float]]:
    """``(InstanceNumber, position along the slice normal in mm)`` of each CT file."""
    import pydicom

    out = []
    for path in ct_files:
        ds = pydicom.dcmread(
            str(path),
            stop_before_pixels=True,
            specific_tags=["InstanceNumber", "ImagePositionPatient"],
        )
        number = getattr(ds, "InstanceNumber", None)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        out.append((None if number in (None, "") else int(number), float(ipp @ normal)))
    return out


def _safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a ZIP refusing members that would land outside ``dest`` (zip-slip)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if root != target and root not in target.parents:
                    raise PredictError(f"{archive}: member {member.filename!r} leaves the archive")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise PredictError(f"{archive}: not a readable ZIP archive ({err})") from err
    return dest


def _folder_names(src: Path, folder: Path, refs: Sequence[Any]) -> list[str]:
    """Each ref's folder name (module doc): the source's name for a one-patient source."""
    own = src.stem if src.is_file() else src.name
    if len(refs) == 1:
        return [own]
    names = []
    for ref in refs:
        parts = Path(ref.path).resolve().relative_to(folder.resolve()).parts
        name = own
        for depth in range(1, len(parts) + 1):
            prefix = folder.resolve().joinpath(*parts[:depth])
            others = [r for r in refs if r is not ref and prefix in Path(r.path).resolve().parents]
            others += [r for r in refs if r is not ref and Path(r.path).resolve() == prefix]
            if not others:
                name = parts[depth - 1]
                break
        names.append(name)
    return names


def _discover_sources(
    sources: Sequence[str | Path], work_dir: Path, label_map: LabelMap | None = None
) -> list[tuple]:
    """``(ref, source, folder name, reader)`` of every patient under ``sources`` (ZIPs
    extracted); ``reader`` is the :class:`~crlm_lib.data.dicom.DicomSource` of its folder
    (:func:`~crlm_lib.data.dicom.source_for`: ``label_map``, else the folder's own
    ``label_map.json``, else the TCIA labels)."""
    from crlm_lib.data.dicom import source_for

    found = []
    for i, src in enumerate(map(Path, sources)):
        if not src.exists():
            raise FileNotFoundError(f"patient folder or ZIP not found: {src}")
        folder = src
        if src.is_file() and zipfile.is_zipfile(src):
            folder = _safe_extract(src, work_dir / f"zip{i:03d}_{src.stem}")
        elif src.is_file():
            raise PredictError(f"{src}: neither a folder nor a ZIP archive")
        reader = source_for(folder, label_map)
        refs = reader.discover(folder)
        if not refs:
            raise PredictError(f"{src}: no DICOM patient found (CT series + SEG expected)")
        names = _folder_names(src, folder, refs)
        found.extend((ref, src, name, reader) for ref, name in zip(refs, names, strict=True))
    return found


def discover_patient_ids(sources: Sequence[str | Path]) -> list[str]:
    """The DICOM ``PatientID`` of every patient under ``sources`` (headers only; ZIPs are
    extracted to a temporary folder), for ``crlm predict --template``."""
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        return [found[0].patient_id for found in _discover_sources(sources, Path(work))]


def load_new_patients(
    sources: Sequence[str | Path],
    profile: Profile,
    work_dir: str | Path,
    on_patient: Callable[[str, str], None] | None = None,
    label_map: LabelMap | None = None,
) -> tuple[list[NewPatient], pd.DataFrame]:
    """Read and preprocess every patient under ``sources`` (folders or ZIPs; ZIPs are
    extracted under ``work_dir``) through the DICOM reader seam
    (:class:`~crlm_lib.data.dicom.DicomSource`; ``label_map`` names the SEG's segments, by
    default a source folder's own ``label_map.json``, else the TCIA labels).

    ``on_patient(patient_id, stage)`` is called before each patient is read (the console's
    stage line).

    Returns
    -------
    patients : list of NewPatient
    excluded : DataFrame
        ``patient_id``, ``path``, ``reason`` for every patient that could not be read.

    Raises
    ------
    FileNotFoundError
        If a source does not exist.
    PredictError
        A source that is neither a folder nor a ZIP, or holds no DICOM patient.
    """
    from crlm_lib.data.dicom import CohortDataError, load_patient
    from crlm_lib.data.preprocess import preprocess_patient

    patients, excluded = [], []
    for ref, src, name, reader in _discover_sources(sources, Path(work_dir), label_map):
        if on_patient is not None:
            on_patient(ref.patient_id, "reading and preprocessing the CT and SEG")
        try:
            p = load_patient(ref, reader)
            arrays = preprocess_patient(p, profile.preprocess)
        except CohortDataError as err:
            excluded.append({"patient_id": ref.patient_id, "path": str(src), "reason": str(err)})
            continue
        normal = np.asarray(p.direction, dtype=float).reshape(3, 3)[:, 2]
        positions = _ct_positions(p.ct_files, normal)
        patients.append(NewPatient(p.patient_id, arrays, list(p.ct_files), src, name, positions))
    return patients, pd.DataFrame(excluded, columns=["patient_id", "path", "reason"])


def patient_item(
    patient: NewPatient,
    clinical_vector: np.ndarray,
    lesion_stats: dict[str, np.ndarray],
    augment_seed: int | None = None,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """A model input (the keys of ``CRLMDataset`` items, without outcomes) for one patient.

    ``augment_seed`` applies the training augmentations (test-time augmentation).
    """
    import torch

    from crlm_lib.data.dataset import lesion_set, processed_spacing

    a = patient.arrays
    ct = torch.from_numpy(np.asarray(a["ct"], dtype=np.float32))[None]
    masks = torch.from_numpy(np.asarray(a["masks"], dtype=np.float32))
    if augment_seed is not None:
        from crlm_lib.data.augment import augment_sample

        spacing = processed_spacing(a, a["ct"].shape)
        ct, masks = augment_sample(ct, masks, spacing, augment_seed, profile)
    feats, lmask = lesion_set(a["lesion_features"], a["lesion_feature_names"], lesion_stats)
    return {
        "patient_id": patient.patient_id,
        "ct": ct,
        "masks": masks,
        "clinical": torch.from_numpy(np.asarray(clinical_vector, dtype=np.float32)),
        "lesion_features": torch.from_numpy(feats),
        "lesion_mask": torch.from_numpy(lmask),
    }
