"""DICOM writers for the data tests: a tiny CT series (pydicom) and its DICOM-SEG (highdicom).

Independent of ``crlm_lib.data.synthetic`` so that the loader is tested against files written
by the field's libraries directly. Default geometry: 12 slices of 24x24, spacing
(z, y, x) = (2.5, 1.5, 1.5) mm, RescaleIntercept -1024.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from crlm_lib.config import Paths
from crlm_lib.data.tcia import Patient

SEG_CODE = hd.sr.CodedConcept("85756007", "SCT", "Tissue")


@dataclass
class Truth:
    """What a fixture wrote: HU volume [Z, Y, X], spacing (z, y, x), masks by SegmentLabel."""

    patient_id: str
    folder: Path
    ct_hu: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    segments: dict[str, np.ndarray]
    ct_files: list[Path] = field(default_factory=list)
    seg_file: Path | None = None
    ct_datasets: list[Dataset] = field(default_factory=list)


def make_volume(shape=(12, 24, 24), seed=0):
    """HU volume and label masks (liver, remnant, hepatic, portal, two tumours)."""
    rng = np.random.default_rng(seed)
    z, y, x = np.indices(shape)
    c = np.array(shape) / 2
    liver = ((z - c[0]) / (shape[0] * 0.4)) ** 2 + ((y - c[1]) / 8) ** 2 + (
        (x - c[2]) / 9
    ) ** 2 <= 1
    remnant = liver & (x < c[2])
    hepatic = liver & (np.abs(y - c[1] + 4) <= 1) & (np.abs(x - c[2] - 3) <= 1)
    portal = liver & (np.abs(y - c[1] - 2) <= 1) & (np.abs(x - c[2]) <= 1)
    t1 = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2] + 5) ** 2) <= 4
    t2 = ((z - c[0] - 2) ** 2 + (y - c[1] + 3) ** 2 + (x - c[2] - 5) ** 2) <= 2
    hu = rng.normal(-900, 20, shape)
    hu[liver] = rng.normal(60, 10, liver.sum())
    hu[portal | hepatic] = 150
    hu[t1 | t2] = rng.normal(20, 5, (t1 | t2).sum())
    hu = np.round(hu).clip(-1024, 3071).astype(np.float32)
    segments = {
        "Liver": liver,
        "Liver_Remnant": remnant,
        "Hepatic": hepatic,
        "Portal": portal,
        "Tumor_1": t1,
        "Tumor_2": t2,
    }
    return hu, segments


def write_ct(
    folder: Path,
    hu: np.ndarray,
    spacing=(2.5, 1.5, 1.5),
    origin=(-18.0, -18.0, -100.0),
    patient_id="CRLM-CT-9001",
    study_uid: str | None = None,
    frame_uid: str | None = None,
    shuffle_names: bool = True,
    charset: str | None = None,
) -> tuple[list[Path], list[Dataset]]:
    """Write one file per slice; file names deliberately not in slice order.

    ``charset`` sets ``SpecificCharacterSet`` (``"ISO_IR 192"`` = UTF-8 for non-ASCII IDs).
    """
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    frame_uid = frame_uid or generate_uid()
    nz = hu.shape[0]
    order = np.random.default_rng(1).permutation(nz) if shuffle_names else np.arange(nz)
    files, datasets = [], []
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        if charset:
            ds.SpecificCharacterSet = charset
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientID = patient_id
        ds.PatientName = f"{patient_id}^"
        ds.PatientBirthDate = "19600101"
        ds.PatientSex = "O"
        ds.StudyDate = "20200101"
        ds.StudyTime = "120000"
        ds.AccessionNumber = "1"
        ds.ReferringPhysicianName = ""
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = int(order[k]) + 1
        ds.Modality = "CT"
        ds.Manufacturer = "test"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [origin[0], origin[1], origin[2] + k * spacing[0]]
        ds.PixelSpacing = [spacing[1], spacing[2]]
        ds.SliceThickness = spacing[0]
        ds.Rows, ds.Columns = hu.shape[1:]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PixelData = (hu[k] + 1024).astype(np.uint16).tobytes()
        path = folder / f"img_{order[k]:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
        datasets.append(ds)
    return files, datasets


def write_seg(
    path: Path,
    ct_datasets: list[Dataset],
    segments: dict[str, np.ndarray],
    omit_empty_frames: bool = True,
) -> Path:
    """Write a BINARY DICOM-SEG with highdicom, one segment per label (in dict order)."""
    labels = list(segments)
    pixel = np.stack([segments[lab] for lab in labels], axis=-1).astype(np.uint8)  # [Z,Y,X,S]
    descs = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=lab,
            segmented_property_category=SEG_CODE,
            segmented_property_type=SEG_CODE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for i, lab in enumerate(labels)
    ]
    seg = hd.seg.Segmentation(
        source_images=ct_datasets,
        pixel_array=pixel,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=generate_uid(),
        series_number=2,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="test",
        manufacturer_model_name="test",
        software_versions="0",
        device_serial_number="0",
        omit_empty_frames=omit_empty_frames,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path)
    return path


def shuffle_seg_frames(path: Path, seed: int = 0) -> None:
    """Permute a SEG's frames (pixel data and per-frame groups together), in place."""
    from pydicom.pixels import pack_bits

    ds = pydicom.dcmread(path)
    frames = ds.pixel_array
    if frames.ndim == 2:
        frames = frames[None]
    perm = np.random.default_rng(seed).permutation(frames.shape[0])
    groups = list(ds.PerFrameFunctionalGroupsSequence)
    ds.PerFrameFunctionalGroupsSequence = [groups[i] for i in perm]
    ds.PixelData = pack_bits(frames[perm].ravel())
    if "DimensionIndexSequence" in ds:  # frame order no longer follows the dimension index
        pass
    ds.save_as(path)


def write_patient(
    root: Path,
    patient_id: str = "CRLM-CT-9001",
    shape=(12, 24, 24),
    seed: int = 0,
    segments: dict[str, np.ndarray] | None = None,
    omit_empty_frames: bool = True,
) -> Truth:
    """Write one patient in the TCIA layout: <root>/<pid>/<study>/{ct,seg}/."""
    hu, segs = make_volume(shape, seed)
    if segments is not None:
        segs = segments
    folder = root / patient_id
    spacing, origin = (2.5, 1.5, 1.5), (-18.0, -18.0, -100.0)
    files, datasets = write_ct(folder / "study" / "1-CT", hu, spacing, origin, patient_id)
    seg_file = write_seg(folder / "study" / "2-SEG" / "1-1.dcm", datasets, segs, omit_empty_frames)
    return Truth(patient_id, folder, hu, spacing, origin, segs, files, seg_file, datasets)


def paths_under(root: Path) -> Paths:
    """The folders of a smoke-profile synthetic run rooted at ``root`` (cohort, cache, runs)."""
    return Paths(
        root,
        "smoke",
        root / "cohort",
        root / "c.csv",
        None,
        root / "processed",
        root / "runs",
        root / "results",
        True,
    )


def loaded_patient(
    patient_id: str, ct: np.ndarray, spacing: tuple[float, float, float], masks, tumour
) -> Patient:
    """A ``tcia.Patient`` as the loader returns it: identity geometry, one tumour, no warnings."""
    return Patient(
        patient_id, ct, spacing, (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1),
        masks, [tumour], [], Path("seg.dcm"),
    )  # fmt: skip
