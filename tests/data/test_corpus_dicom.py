"""Corpus of malformed and unusual DICOM inputs and cache situations, each with its outcome.

One parametrised table: each case writes a tiny cohort (8 slices of 32x32) holding the case's
patient beside a valid one, runs :func:`preprocess.preprocess_cohort` (some cases run it twice,
changing the files in between), and asserts the exact outcome for the case's patient: loaded
(``done`` / ``rebuilt``, with the expected warnings) or excluded with the expected error class and
a message naming the patient and the file. The valid patient is always processed. The section
"Unusual inputs (DICOM and cache)" of ``docs/inputs.md`` lists the same cases.
"""

from __future__ import annotations

import copy
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_helpers import Truth, make_volume, paths_under, write_ct, write_patient, write_seg
from pydicom.uid import generate_uid

from crlm_lib.config import Paths, get_profile
from crlm_lib.data import preprocess as pp
from crlm_lib.data import tcia

SMOKE = get_profile("smoke")
SHAPE = (8, 32, 32)
GOOD = "CRLM-CT-0001"
PID = "CRLM-CT-0002"
DZ = 2.5  # slice spacing of dicom_helpers (mm)


@dataclass
class Expect:
    """Outcome of a case for its patient (``patient_id``) in the preprocessing report."""

    status: str
    error: str = ""  # exception class name that starts ``reason`` (excluded patients)
    reason: list[str] = field(default_factory=list)  # substrings of ``reason``
    warnings: list[str] = field(default_factory=list)  # substrings of ``warnings``
    patient_id: str = PID
    good_status: str = "done"
    check: Callable[[Paths], None] | None = None  # further checks on the written files


def _paths(root: Path) -> Paths:
    return paths_under(root)


def _run(paths: Paths):
    return pp.preprocess_cohort(paths, SMOKE, n_jobs=1, progress=False).set_index("patient_id")


def _patient(paths: Paths, pid: str = PID, seed: int = 2, segments=None) -> Truth:
    return write_patient(paths.cohort_dir, pid, shape=SHAPE, seed=seed, segments=segments)


def _by_z(truth: Truth) -> list[Path]:
    return list(truth.ct_files)  # write_ct returns the files in slice order


def _segments(**changes) -> dict[str, np.ndarray]:
    _, segs = make_volume(SHAPE, seed=2)
    segs = dict(segs)
    for k, v in changes.items():
        if v is None:
            segs.pop(k)
        else:
            segs[k] = v
    return segs


def _loaded_ct_equals(truth: Truth, pid: str = PID):
    def check(paths: Paths) -> None:
        refs = {r.patient_id: r for r in tcia.discover(paths.cohort_dir)}
        np.testing.assert_array_equal(tcia.load_patient(refs[pid]).ct, truth.ct_hu)

    return check


def _npz(paths: Paths, pid: str = PID) -> dict:
    return pp.load_processed(paths.processed_dir, pid)


# --------------------------------------------------------------------------------------------
# Cases: each writes its patient under paths.cohort_dir and returns the expected outcome
# --------------------------------------------------------------------------------------------
def truncated_ct(paths):
    t = _patient(paths)
    victim = _by_z(t)[3]
    victim.write_bytes(victim.read_bytes()[:-300])
    return Expect("excluded", "DicomReadError", [PID, victim.name])


def truncated_seg(paths):
    t = _patient(paths)
    t.seg_file.write_bytes(t.seg_file.read_bytes()[:-200])
    return Expect("excluded", "DicomReadError", [PID, t.seg_file.name, "SEG"])


def ct_cut_to_200_bytes(paths):
    t = _patient(paths)
    victim = _by_z(t)[3]
    victim.write_bytes(victim.read_bytes()[:200])
    return Expect(
        "excluded", "DicomReadError", [PID, victim.name, "no PatientID, Modality", "truncated"]
    )


def seg_cut_in_half(paths):
    t = _patient(paths)
    data = t.seg_file.read_bytes()
    t.seg_file.write_bytes(data[: len(data) // 2])
    return Expect(
        "excluded", "DicomReadError", [PID, t.seg_file.name, "ends before its pixel data"]
    )


def ct_without_rescale(paths):
    t = _patient(paths)
    for f in _by_z(t):
        ds = pydicom.dcmread(f)
        del ds.RescaleSlope, ds.RescaleIntercept
        ds.save_as(f)
    return Expect(
        "excluded",
        "MissingAttributeError",
        [PID, sorted(_by_z(t))[0].name, "no RescaleSlope or RescaleIntercept", "HU"],
    )


def hidden_work_folder(paths):
    t = _patient(paths)
    # another run's half-written copy of the patient (data.synthetic builds in .tmp-<id>)
    shutil.copytree(t.folder, paths.cohort_dir / f".tmp-{PID}-1234")
    (paths.cohort_dir / ".git").mkdir()
    shutil.copy(t.seg_file, paths.cohort_dir / ".git" / "stray.dcm")
    return Expect("done", check=_loaded_ct_equals(t))


def zero_byte_file(paths):
    t = _patient(paths)
    empty = _by_z(t)[0].parent / "img_9999.dcm"
    empty.write_bytes(b"")
    return Expect("excluded", "DicomReadError", [PID, empty.name, "empty (0 bytes)"])


def junk_file_in_series(paths):
    t = _patient(paths)
    junk = _by_z(t)[0].parent / "notes"
    junk.write_bytes(b"exported by a viewer, do not delete")
    return Expect("excluded", "DicomReadError", [PID, junk.name, "not a DICOM file"])


def known_non_dicom_files(paths):
    t = _patient(paths)
    folder = _by_z(t)[0].parent
    for name in ("Thumbs.db", "README.txt", "DICOMDIR", "LICENSE"):
        (folder / name).write_bytes(b"\x00junk")
    return Expect("done", check=_loaded_ct_equals(t))


def missing_slice(paths):
    t = _patient(paths)
    files = _by_z(t)
    files[4].unlink()
    return Expect("excluded", "SliceGeometryError", [PID, files[3].name, "1 CT slice(s) missing"])


def duplicated_file_copy(paths):
    t = _patient(paths)
    src = _by_z(t)[2]
    shutil.copy(src, src.parent / "copy_of_slice.dcm")
    return Expect(
        "done", warnings=["copy_of_slice.dcm", "is a copy of"], check=_loaded_ct_equals(t)
    )


def uneven_spacing(paths):
    t = _patient(paths)
    f = _by_z(t)[0]
    ds = pydicom.dcmread(f)
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    ds.ImagePositionPatient = [x, y, z - 0.9]
    ds.save_as(f)
    return Expect("excluded", "SliceGeometryError", [PID, f.name, "uneven CT slice spacing"])


def slice_size_differs(paths):
    t = _patient(paths)
    f = _by_z(t)[5]
    ds = pydicom.dcmread(f)
    ds.Rows, ds.Columns = 16, 16
    ds.PixelData = np.zeros((16, 16), np.uint16).tobytes()
    ds.save_as(f)
    return Expect("excluded", "SliceGeometryError", [PID, f.name, "has shape (16, 16)"])


def mixed_series_in_one_folder(paths):
    t = _patient(paths)
    folder = _by_z(t)[0].parent
    other, _ = write_ct(paths.root / "tmp-other", t.ct_hu + 7, patient_id=PID)
    for f in other:
        f.rename(folder / f"other_{f.name}")
    return Expect("done", warnings=["2 CT series", "the one the SEG"], check=_loaded_ct_equals(t))


def _second_acquisition(t: Truth, start: int, n: int) -> list[Path]:
    """Slices start..start+n-1 again (new SOP UIDs, +50 HU, AcquisitionNumber 2), same series."""
    out = []
    for j in range(n):
        ds = copy.deepcopy(t.ct_datasets[0])
        uid = generate_uid()
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.AcquisitionNumber = 2
        x, y, z0 = (float(v) for v in t.ct_datasets[0].ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z0 + (start + j) * DZ]
        hu = t.ct_hu[min(start + j, t.ct_hu.shape[0] - 1)] + 50
        ds.PixelData = (hu + 1024).astype(np.uint16).tobytes()
        path = t.ct_files[0].parent / f"acq2_{j:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def overlapping_acquisition_resolved(paths):
    t = _patient(paths)
    _second_acquisition(t, start=4, n=8)  # z 4..11: 4 duplicated positions, 4 beyond
    return Expect(
        "done",
        warnings=[
            "4 duplicated slice position(s)",
            "kept the 8 slices of the acquisition the SEG",
            "acq2_",
        ],
        check=_loaded_ct_equals(t),
    )


def _copy_slice(t: Truth, k: int, instance: int, name: str) -> Path:
    """Slice ``k`` exported again: a new SOP UID, ``instance`` as InstanceNumber, +50 HU."""
    ds = copy.deepcopy(t.ct_datasets[k])
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.InstanceNumber = instance
    ds.PixelData = (t.ct_hu[k] + 1024 + 50).astype(np.uint16).tobytes()
    path = t.ct_files[0].parent / name
    ds.save_as(path, enforce_file_format=True)
    return path


def _seg_lists_only_its_frames(t: Truth) -> set[str]:
    """The SEG's ReferencedInstanceSequence cut to the slices that carry frames (as some tools
    write it); returns their SOP UIDs."""
    ds = pydicom.dcmread(t.seg_file)
    framed = {
        str(src.ReferencedSOPInstanceUID)
        for fg in ds.PerFrameFunctionalGroupsSequence
        for der in fg.DerivationImageSequence
        for src in der.SourceImageSequence
    }
    for item in ds.ReferencedSeriesSequence:
        kept = [i for i in item.ReferencedInstanceSequence if i.ReferencedSOPInstanceUID in framed]
        item.ReferencedInstanceSequence = kept
    ds.save_as(t.seg_file)
    return framed


def duplicate_seg_references_its_slice(paths):
    t = _patient(paths)
    framed = _seg_lists_only_its_frames(t)
    assert len(framed) == 7  # slice 0 has no frame: the SEG references 7 of the 8 slices
    _copy_slice(t, 3, instance=100, name="again_003.dcm")  # not referenced by the SEG
    return Expect(
        "done",
        warnings=[
            "1 duplicated slice position(s)",
            "kept all 8 positions",
            "0 by InstanceNumber",
            "again_003.dcm",
            PID,
        ],
        check=_loaded_ct_equals(t),
    )


def duplicate_neither_referenced(paths):
    t = _patient(paths)
    _seg_lists_only_its_frames(t)
    _copy_slice(t, 0, instance=100, name="again_000.dcm")  # slice 0: no frame, no reference
    expected = t.ct_hu.copy()
    expected[0] += 50  # the later instance is kept

    def check(p):
        refs = {r.patient_id: r for r in tcia.discover(p.cohort_dir)}
        np.testing.assert_array_equal(tcia.load_patient(refs[PID]).ct, expected)

    return Expect(
        "done",
        warnings=[
            "1 duplicated slice position(s)",
            "kept all 8 positions",
            "1 by InstanceNumber",
            _by_z(t)[0].name,
            PID,
        ],
        check=check,
    )


def duplicate_same_instance_number(paths):
    t = _patient(paths)
    _seg_lists_only_its_frames(t)
    ds = pydicom.dcmread(_by_z(t)[0])
    _copy_slice(t, 0, instance=int(ds.InstanceNumber), name="again_000.dcm")
    return Expect(
        "excluded",
        "SliceGeometryError",
        [PID, "again_000.dcm", _by_z(t)[0].name, "references neither", "InstanceNumbers"],
    )


def unresolvable_duplicates(paths):
    t = _patient(paths)
    _second_acquisition(t, start=3, n=1)
    ds = pydicom.dcmread(t.seg_file)  # a SEG that does not say which slices it was made from
    for item in ds.ReferencedSeriesSequence:
        del item.ReferencedInstanceSequence
    for fg in ds.PerFrameFunctionalGroupsSequence:
        del fg.DerivationImageSequence
    ds.save_as(t.seg_file)
    return Expect(
        "excluded", "SliceGeometryError", [PID, "acq2_000.dcm", "share the position", "no SEG"]
    )


def foreign_seg_liver_and_tumours(paths):
    segs = _segments(Liver_Remnant=None, Hepatic=None, Portal=None)
    _patient(paths, segments=segs)

    def check(p):
        npz = _npz(p)
        assert npz["centre_method"] == "liver_centre"
        assert npz["masks"][1:4].sum() == 0  # remnant, hepatic, portal empty
        assert npz["masks"][0].sum() > 0 and npz["masks"][4].sum() > 0

    return Expect(
        "done",
        warnings=["no 'remnant' segment", "no 'hepatic' segment", "no 'portal' segment", "liver's"],
        check=check,
    )


def unrecognised_segment(paths):
    _, segs = make_volume(SHAPE, seed=2)
    _patient(paths, segments={**segs, "Spleen": segs["Liver"]})
    return Expect("done", warnings=["'Spleen' not recognised"])


def no_liver_segment(paths):
    t = _patient(paths, segments=_segments(Liver=None))
    return Expect("excluded", "SegmentLabelError", [PID, t.seg_file.name, "required", "liver"])


def empty_segment(paths):
    t = _patient(paths, segments=_segments(Tumor_3=np.zeros(SHAPE, bool)))
    return Expect("excluded", "EmptySegmentError", [PID, t.seg_file.name, "Tumor_3"])


def no_seg(paths):
    t = _patient(paths)
    shutil.rmtree(t.seg_file.parent)
    return Expect("excluded", "MissingSeriesError", [PID, "no DICOM-SEG", str(t.folder)])


def two_segs(paths):
    t = _patient(paths)
    shutil.copy(t.seg_file, t.seg_file.parent / "second.dcm")
    return Expect("excluded", "MultipleSeriesError", [PID, "2 SEG files", "second.dcm"])


def no_ct(paths):
    t = _patient(paths)
    shutil.rmtree(_by_z(t)[0].parent)
    return Expect("excluded", "MissingSeriesError", [PID, "no CT series", str(t.folder)])


def seg_references_other_series(paths):
    t = _patient(paths)
    _, other = write_ct(paths.root / "tmp-other", t.ct_hu, patient_id=PID)
    write_seg(t.seg_file, other, t.segments)
    return Expect("excluded", "SegReferenceError", [PID, t.seg_file.name])


def unicode_patient_id(paths):
    pid = "Müller-Ω-01"
    hu, segs = make_volume(SHAPE, seed=2)
    _, dss = write_ct(paths.cohort_dir / "u" / "ct", hu, patient_id=pid, charset="ISO_IR 192")
    write_seg(paths.cohort_dir / "u" / "seg" / "1.dcm", dss, segs)

    def check(p):
        assert (p.processed_dir / f"{pid}.npz").is_file()
        assert _npz(p, pid)["patient_id"] == pid

    return Expect("done", patient_id=pid, check=check)


def _unsafe(pid: str, folder: str):
    def case(paths):
        hu, segs = make_volume(SHAPE, seed=2)
        _, dss = write_ct(paths.cohort_dir / folder / "ct", hu, patient_id=pid)
        write_seg(paths.cohort_dir / folder / "seg" / "1.dcm", dss, segs)

        def check(p):  # nothing written outside the cache folder, no ".npz"
            assert sorted(f.name for f in p.root.glob("*.npz")) == []
            assert sorted(f.name for f in p.processed_dir.glob("*.npz")) == [f"{GOOD}.npz"]

        return Expect(
            "excluded",
            "UnsafePatientIdError",
            [repr(pid), folder, "cannot name a cache file"],
            patient_id=pid,
            check=check,
        )

    return case


def tumours_35(paths):
    segs = _segments(Tumor_1=None, Tumor_2=None)
    for i in range(35):
        m = np.zeros(SHAPE, bool)
        y, x = 3 + 4 * (i % 7), 4 + 5 * (i // 7)
        m[3:5, y : y + 2, x : x + 2] = True
        segs[f"Tumor_{i + 1}"] = m
    _patient(paths, segments=segs)

    def check(p):
        npz = _npz(p)
        assert npz["lesion_features"].shape[0] == 35
        volumes = npz["lesion_features"][:, npz["lesion_feature_names"].index("volume_mm3")]
        np.testing.assert_allclose(volumes, 8 * 2.5 * 1.5 * 1.5)

    return Expect("done", check=check)


def stale_cache_end_slice_deleted(paths):
    t = _patient(paths)
    segs = {k: v.copy() for k, v in t.segments.items()}
    for v in segs.values():
        v[-1] = False  # nothing segmented on the last slice, so deleting it leaves a valid SEG
    write_seg(t.seg_file, t.ct_datasets, segs)
    assert _run(paths).loc[PID, "status"] == "done"
    _by_z(t)[-1].unlink()

    def check(p):
        assert tuple(_npz(p)["source_shape"]) == (7, 32, 32)

    return Expect(
        "rebuilt", reason=["source changed: 1 file removed"], good_status="cached", check=check
    )


def stale_cache_middle_slice_deleted(paths):
    t = _patient(paths)
    assert _run(paths).loc[PID, "status"] == "done"
    files = _by_z(t)
    files[4].unlink()

    def check(p):
        assert not (p.processed_dir / f"{PID}.npz").exists()  # the old volume is never served

    return Expect(
        "excluded",
        "SliceGeometryError",
        [PID, files[3].name, "missing", "(old cache file removed)"],
        good_status="cached",
        check=check,
    )


def slice_rewritten_in_place(paths):
    t = _patient(paths)
    assert _run(paths).loc[PID, "status"] == "done"
    f = _by_z(t)[4]
    ds = pydicom.dcmread(f)
    ds.PixelData = (np.asarray(t.ct_hu[4]) + 1024 + 100).astype(np.uint16).tobytes()
    ds.save_as(f)
    return Expect("rebuilt", reason=["source changed: 1 file modified"], good_status="cached")


def slice_changed_size_and_mtime_restored(paths):
    t = _patient(paths)
    assert _run(paths).loc[PID, "status"] == "done"
    before = _npz(paths)["ct"]
    f = _by_z(t)[4]
    st = f.stat()
    data = bytearray(f.read_bytes())
    ds = pydicom.dcmread(f)
    pixels = (np.asarray(t.ct_hu[4]) + 1024 + 100).astype(np.uint16).tobytes()
    start = data.rindex(ds.PixelData)  # the pixel bytes end the file: overwrite them in place
    data[start : start + len(pixels)] = pixels
    f.write_bytes(bytes(data))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns

    def check(p):
        assert not np.array_equal(_npz(p)["ct"], before)

    return Expect(
        "rebuilt", reason=["source changed: 1 file modified"], good_status="cached", check=check
    )


def files_rewritten_same_bytes(paths):
    t = _patient(paths)
    assert _run(paths).loc[PID, "status"] == "done"
    for f in _by_z(t):  # a copy without its times: same bytes, new modification times
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)
        os.utime(f, ns=(1, 1))
    return Expect("cached", good_status="cached")


def same_ids_other_cohort(paths):
    _patient(paths, seed=2)
    assert _run(paths).loc[PID, "status"] == "done"
    before = _npz(paths)["ct"]
    shutil.rmtree(paths.cohort_dir / PID)
    _patient(paths, seed=5)  # another cohort with the same patient ID

    def check(p):
        assert not np.array_equal(_npz(p)["ct"], before)

    return Expect(
        "rebuilt",
        reason=["source changed: 9 files removed, 9 files added"],
        good_status="cached",
        check=check,
    )


CASES = {
    "truncated CT file": truncated_ct,
    "truncated SEG file": truncated_seg,
    "CT file cut to 200 bytes": ct_cut_to_200_bytes,
    "SEG file cut in half": seg_cut_in_half,
    "CT without RescaleSlope/RescaleIntercept": ct_without_rescale,
    "hidden folders (another run's .tmp copy, .git)": hidden_work_folder,
    "zero-byte file": zero_byte_file,
    "junk (non-DICOM) file in a series folder": junk_file_in_series,
    "Thumbs.db / README.txt / DICOMDIR / LICENSE beside the slices": known_non_dicom_files,
    "missing slice": missing_slice,
    "duplicated slice (a copy of one file)": duplicated_file_copy,
    "uneven spacing": uneven_spacing,
    "one slice of another size": slice_size_differs,
    "mixed series in one folder": mixed_series_in_one_folder,
    "overlapping second acquisition resolved by the SEG": overlapping_acquisition_resolved,
    "unresolvable duplicated positions": unresolvable_duplicates,
    "duplicated position, SEG lists only its frames' slices": duplicate_seg_references_its_slice,
    "duplicated position the SEG does not reference": duplicate_neither_referenced,
    "duplicated position, same InstanceNumber, no reference": duplicate_same_instance_number,
    "foreign SEG (liver + tumours only)": foreign_seg_liver_and_tumours,
    "unrecognised segment label": unrecognised_segment,
    "SEG without a liver": no_liver_segment,
    "empty segment": empty_segment,
    "no SEG": no_seg,
    "two SEGs": two_segs,
    "no CT": no_ct,
    "SEG referencing another series": seg_references_other_series,
    "unicode patient ID": unicode_patient_id,
    "unsafe patient ID ../x": _unsafe("../x", "dotdot"),
    "unsafe patient ID ../../x": _unsafe("../../x", "dotdot2"),
    "empty patient ID": _unsafe("", "empty-id"),
    "35-tumour SEG": tumours_35,
    "stale cache: last slice deleted": stale_cache_end_slice_deleted,
    "stale cache: middle slice deleted": stale_cache_middle_slice_deleted,
    "stale cache: slice rewritten in place": slice_rewritten_in_place,
    "stale cache: same IDs, another cohort": same_ids_other_cohort,
    "stale cache: slice changed, size and mtime restored": slice_changed_size_and_mtime_restored,
    "cache kept: files copied without their times": files_rewritten_same_bytes,
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_corpus(case, tmp_path):
    paths = _paths(tmp_path)
    good = write_patient(paths.cohort_dir, GOOD, shape=SHAPE, seed=1)
    expect = CASES[case](paths)
    report = _run(paths)
    assert report.loc[GOOD, "status"] == expect.good_status, report.loc[GOOD].to_dict()
    assert pp.load_processed(paths.processed_dir, GOOD)["patient_id"] == good.patient_id
    row = report.loc[expect.patient_id]
    reason = "" if row.isna()["reason"] else str(row["reason"])
    warnings = "" if row.isna()["warnings"] else str(row["warnings"])
    assert row["status"] == expect.status, reason
    if expect.error:
        assert reason.startswith(f"{expect.error}: "), reason
    for part in expect.reason:
        assert part in reason, (part, reason)
    for part in expect.warnings:
        assert part in warnings, (part, warnings)
    if expect.status != "excluded" and not expect.warnings:
        assert warnings == "", warnings
    if expect.check is not None:
        expect.check(paths)
    # the report on disk says the same
    on_disk = pp.pd.read_csv(paths.processed_dir / "report.csv", keep_default_na=False)
    assert (
        dict(zip(on_disk["patient_id"].astype(str), on_disk["status"]))[expect.patient_id]
        == expect.status
    )


def test_corpus_has_the_issue_cases():
    assert len(CASES) >= 25


def test_discover_accepts_one_file_and_says_what_was_expected(tmp_path):
    t = write_patient(tmp_path / "cohort", PID, shape=SHAPE, seed=2)
    refs = tcia.discover(t.ct_files[0])  # one file: its series
    assert [r.patient_id for r in refs] == [PID]
    assert sum(len(v) for v in refs[0].ct_series.values()) == SHAPE[0]
    with pytest.raises(tcia.MissingSeriesError, match="pass the patient or cohort folder"):
        tcia.load_patient(t.ct_files[0])
    assert tcia.load_patient(t.seg_file.parent.parent).patient_id == PID
    (tmp_path / "empty").mkdir()
    with pytest.raises(tcia.NoDicomError, match="expected the collection folder") as err:
        tcia.load_patient(tmp_path / "empty")
    assert str(tmp_path / "empty") in str(err.value)
