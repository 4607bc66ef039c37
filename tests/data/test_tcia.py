"""Tests of crlm_lib.data.tcia: TCIA layout discovery, CT + SEG loading and its errors."""

from __future__ import annotations

import shutil

import numpy as np
import pydicom
import pytest
from dicom_helpers import make_volume, shuffle_seg_frames, write_ct, write_patient, write_seg

from crlm_lib.config import MASK_NAMES
from crlm_lib.data import tcia
from crlm_lib.data.dicom import ct as dicom_ct
from crlm_lib.data.dicom import seg as dicom_seg

LABEL_TO_MASK = {
    "Liver": "liver",
    "Liver_Remnant": "remnant",
    "Hepatic": "hepatic",
    "Portal": "portal",
}


def _assert_round_trip(patient, truth):
    assert patient.patient_id == truth.patient_id
    assert patient.ct.dtype == np.float32
    np.testing.assert_array_equal(patient.ct, truth.ct_hu)
    assert patient.spacing == pytest.approx(truth.spacing)
    assert patient.origin == pytest.approx(truth.origin)
    assert set(patient.masks) == set(MASK_NAMES)
    for label, name in LABEL_TO_MASK.items():
        np.testing.assert_array_equal(patient.masks[name], truth.segments[label])
    np.testing.assert_array_equal(
        patient.masks["tumour"], truth.segments["Tumor_1"] | truth.segments["Tumor_2"]
    )
    assert len(patient.lesions) == 2
    np.testing.assert_array_equal(patient.lesions[0], truth.segments["Tumor_1"])
    np.testing.assert_array_equal(patient.lesions[1], truth.segments["Tumor_2"])


def test_round_trip(patient_dir):
    patient = tcia.load_patient(patient_dir.folder)
    _assert_round_trip(patient, patient_dir)
    # slices sorted by position, not by (shuffled) file names
    z = [
        float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
        for f in patient.ct_files
    ]
    assert z == sorted(z)
    assert patient.direction == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1))


def test_seg_frames_shuffled_and_partial(patient_dir):
    ds = pydicom.dcmread(patient_dir.seg_file)
    n_slices = patient_dir.ct_hu.shape[0]
    # empty frames were omitted: fewer frames than slices x segments
    assert int(ds.NumberOfFrames) < n_slices * len(patient_dir.segments)
    shuffle_seg_frames(patient_dir.seg_file, seed=3)
    _assert_round_trip(tcia.load_patient(patient_dir.folder), patient_dir)


def test_discover_with_collection_level_and_header_ids(tmp_path):
    root = tmp_path / "dl" / "Colorectal-Liver-Metastases"
    write_patient(root, "CRLM-CT-1002", seed=2)
    t1 = write_patient(root, "CRLM-CT-1001", seed=1)
    t1.folder.rename(root / "misleading-folder-name")
    refs = tcia.discover(tmp_path / "dl")
    assert [r.patient_id for r in refs] == ["CRLM-CT-1001", "CRLM-CT-1002"]
    assert all(len(r.ct_series) == 1 and len(r.seg_files) == 1 for r in refs)
    assert refs[0].path.is_relative_to(root / "misleading-folder-name")


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Liver", "liver"),
        ("Liver_Remnant", "remnant"),
        ("liver remnant", "remnant"),
        ("REMNANT", "remnant"),
        ("Hepatic", "hepatic"),
        ("Portal", "portal"),
        ("portal-vein", "portal"),
        ("Tumor_12", "tumour"),
        ("tumour 3", "tumour"),
        ("Spleen", None),
    ],
)
def test_canonical_label(label, expected):
    assert tcia.canonical_label(label) == expected


def _message_names(err, truth, file_part):
    msg = str(err.value)
    assert truth.patient_id in msg
    assert file_part in msg


def test_truncated_file(patient_dir):
    victim = sorted(patient_dir.ct_files)[3]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 300])
    with pytest.raises(tcia.DicomReadError) as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, victim.name)
    assert isinstance(err.value, tcia.CohortDataError)


def test_garbage_file(patient_dir):
    victim = sorted(patient_dir.ct_files)[0]
    victim.write_bytes(b"not a dicom file at all")
    with pytest.raises(tcia.DicomReadError) as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, victim.name)


def test_missing_slice(patient_dir):
    by_z = sorted(
        patient_dir.ct_files,
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    by_z[5].unlink()
    with pytest.raises(tcia.SliceGeometryError) as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, by_z[4].name)
    assert "1 CT slice(s) missing between z=-90.00 and z=-85.00" in str(err.value)


def test_uneven_spacing(patient_dir):
    f = patient_dir.ct_files[0]
    ds = pydicom.dcmread(f)
    ds.ImagePositionPatient = [
        ds.ImagePositionPatient[0],
        ds.ImagePositionPatient[1],
        float(ds.ImagePositionPatient[2]) + 0.7,
    ]
    ds.save_as(f)
    with pytest.raises(tcia.SliceGeometryError, match="uneven") as err:
        tcia.load_patient(patient_dir.folder)
    assert patient_dir.patient_id in str(err.value)


def test_two_ct_series_resolved_by_the_seg(patient_dir, tmp_path):
    # a second series of the same patient: the SEG references the first, which is loaded
    write_ct(
        patient_dir.folder / "study" / "3-CT",
        patient_dir.ct_hu + 5,
        patient_id=patient_dir.patient_id,
    )
    patient = tcia.load_patient(patient_dir.folder)
    _assert_round_trip(patient, patient_dir)
    assert any("2 CT series" in w and "1-CT" in w for w in patient.warnings)
    # a SEG referencing neither series: ambiguous
    _, other = write_ct(tmp_path / "other", patient_dir.ct_hu, patient_id=patient_dir.patient_id)
    write_seg(patient_dir.seg_file, other, patient_dir.segments)
    with pytest.raises(tcia.MultipleSeriesError) as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, "3-CT")


def test_no_seg_and_no_ct(patient_dir):
    shutil.rmtree(patient_dir.seg_file.parent)
    with pytest.raises(tcia.MissingSeriesError, match="no DICOM-SEG") as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, str(patient_dir.folder))


def test_seg_references_other_series(patient_dir, tmp_path):
    _, other = write_ct(tmp_path / "other", patient_dir.ct_hu, patient_id=patient_dir.patient_id)
    write_seg(patient_dir.seg_file, other, patient_dir.segments)
    with pytest.raises(tcia.SegReferenceError) as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, patient_dir.seg_file.name)


def test_empty_segment(tmp_path):
    _, segs = make_volume()
    segs = dict(segs)
    segs["Tumor_3"] = np.zeros_like(segs["Liver"])
    truth = write_patient(tmp_path, segments=segs)
    with pytest.raises(tcia.EmptySegmentError, match="Tumor_3") as err:
        tcia.load_patient(truth.folder)
    _message_names(err, truth, truth.seg_file.name)


def test_seg_frame_off_grid(patient_dir):
    ds = pydicom.dcmread(patient_dir.seg_file)
    pos = ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0]
    pos.ImagePositionPatient = [
        pos.ImagePositionPatient[0],
        pos.ImagePositionPatient[1],
        float(pos.ImagePositionPatient[2]) + 1.1,
    ]
    ds.save_as(patient_dir.seg_file)
    with pytest.raises(tcia.SegGeometryError, match="not on the CT grid") as err:
        tcia.load_patient(patient_dir.folder)
    _message_names(err, patient_dir, patient_dir.seg_file.name)


def test_load_cohort_excludes_bad_patient_with_reason(tmp_path):
    good = write_patient(tmp_path, "CRLM-CT-1001", seed=1)
    bad = write_patient(tmp_path, "CRLM-CT-1002", seed=2)
    shutil.rmtree(bad.seg_file.parent)
    patients, excluded = tcia.load_cohort(tmp_path, progress=False)
    assert [p.patient_id for p in patients] == [good.patient_id]
    assert list(excluded.columns) == ["patient_id", "path", "reason"]
    assert excluded["patient_id"].tolist() == [bad.patient_id]
    assert excluded["reason"].iloc[0].startswith("MissingSeriesError")
    # asking for an id that is absent is reported too
    _, excluded = tcia.load_cohort(tmp_path, ids=["CRLM-CT-1001", "CRLM-CT-1999"], progress=False)
    assert excluded["patient_id"].tolist() == ["CRLM-CT-1999"]


def test_lesion_mask_crop_round_trip(patient_dir):
    patient = tcia.load_patient(patient_dir.folder)
    lesion = patient.lesions[0]
    assert isinstance(lesion, tcia.LesionMask)
    truth = patient_dir.segments["Tumor_1"]
    # the crop is the tight bounding box of the tumour, not a full volume
    assert lesion.crop.size < truth.size / 10
    assert lesion.crop.shape == tuple(s.stop - s.start for s in lesion.box)
    assert lesion.any() and lesion.sum() == truth.sum()
    assert np.any(lesion) and np.asarray(lesion, np.uint8).dtype == np.uint8
    again = tcia.LesionMask.from_volume(truth)
    np.testing.assert_array_equal(again.crop, lesion.crop)
    assert again.box == lesion.box


def test_large_seg_read_frame_by_frame_from_disk(patient_dir, monkeypatch):
    monkeypatch.setattr(dicom_seg, "LAZY_SEG_BYTES", 0)  # every SEG counts as large
    shuffle_seg_frames(patient_dir.seg_file, seed=1)
    _assert_round_trip(tcia.load_patient(patient_dir.folder), patient_dir)


def test_stored_pixels_fast_path_equals_pixel_array(patient_dir):
    """The frombuffer read of uncompressed CT slices equals pydicom's ``pixel_array``."""
    import pydicom

    files = patient_dir.ct_files
    assert files
    for f in files[:5]:
        ds = pydicom.dcmread(f)
        fast = dicom_ct._stored_pixels(ds)
        assert fast.dtype == ds.pixel_array.dtype
        np.testing.assert_array_equal(fast, ds.pixel_array)
    ds.BitsStored = 12  # not the fast path's case: pydicom decodes it
    np.testing.assert_array_equal(dicom_ct._stored_pixels(ds), ds.pixel_array)
