"""Tests of the DICOM reader seam (crlm_lib.data.dicom): another hospital's export, whose SEG
names its segments otherwise, is read with a label map and no code change; a label missing
from the map stops the patient with an error naming patient, file and label."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dicom_helpers import make_volume, paths_under, write_patient

from crlm_lib.config import MASK_NAMES, get_profile
from crlm_lib.data import dicom, preprocess
from crlm_lib.data.dicom import (
    TCIA_LABELS,
    DicomExport,
    DicomSource,
    LabelMap,
    SegmentLabelError,
    load_patient,
    source_for,
)

#: The structures of ``make_volume`` under another hospital's (German) segment names.
RENAMED = {
    "Liver": "Leber",
    "Liver_Remnant": "Restleber",
    "Hepatic": "Lebervenen",
    "Portal": "Pfortader",
    "Tumor_1": "Metastase 1",
    "Tumor_2": "Metastase 2",
}

HOSPITAL_MAP = {
    "name": "hospital-x",
    "labels": {
        "Leber": "liver",
        "Restleber": "remnant",
        "Lebervenen": "hepatic",
        "Pfortader": "portal",
    },
    "tumour_pattern": r"^metastase\d+$",
    "ignore": ["Gallenblase"],
}


def _hospital_export(root, seed=0):
    """One patient whose SEG uses the hospital's labels, plus an extra 'Gallenblase' segment."""
    _, segments = make_volume(seed=seed)
    renamed = {RENAMED[k]: v for k, v in segments.items()}
    renamed["Gallenblase"] = segments["Hepatic"]  # any non-empty structure the model ignores
    return write_patient(root, "HOSP-0001", seed=seed, segments=renamed), segments


def test_the_tcia_reader_is_a_dicom_source():
    assert isinstance(DicomExport(), DicomSource)
    assert DicomExport().label_map is TCIA_LABELS
    assert TCIA_LABELS.structure("Liver_Remnant") == "remnant"
    assert TCIA_LABELS.structure("Tumor_12") == "tumour" and TCIA_LABELS.structure("x") is None


def test_another_hospitals_export_reads_with_a_label_map(tmp_path):
    truth, segments = _hospital_export(tmp_path / "export")
    with pytest.raises(SegmentLabelError, match="required structure"):
        load_patient(truth.folder)  # the TCIA labels do not know 'Leber'
    map_file = tmp_path / "hospital_x.json"
    map_file.write_text(json.dumps(HOSPITAL_MAP))
    patient = load_patient(truth.folder, DicomExport(LabelMap.from_file(map_file)))
    for label, name in [("Liver", "liver"), ("Liver_Remnant", "remnant"), ("Portal", "portal")]:
        np.testing.assert_array_equal(patient.masks[name], segments[label])
    np.testing.assert_array_equal(patient.masks["hepatic"], segments["Hepatic"])
    np.testing.assert_array_equal(
        patient.masks["tumour"], segments["Tumor_1"] | segments["Tumor_2"]
    )
    assert patient.lesion_labels == ["Metastase 1", "Metastase 2"]
    np.testing.assert_array_equal(np.asarray(patient.lesions[1]), segments["Tumor_2"])
    assert not any("Gallenblase" in w for w in patient.warnings)  # ignored on purpose
    # the same images labelled the TCIA way give the same patient through the default reader
    tcia_truth = write_patient(tmp_path / "tcia", "HOSP-0001", segments=segments)
    same = load_patient(tcia_truth.folder)
    np.testing.assert_array_equal(same.ct, patient.ct)
    for name in MASK_NAMES:
        np.testing.assert_array_equal(same.masks[name], patient.masks[name])


def test_a_label_missing_from_the_map_names_patient_file_and_label(tmp_path):
    truth, _ = _hospital_export(tmp_path / "export")
    partial = {
        **HOSPITAL_MAP,
        "labels": {k: v for k, v in HOSPITAL_MAP["labels"].items() if k != "Pfortader"},
    }
    with pytest.raises(SegmentLabelError) as info:
        load_patient(truth.folder, DicomExport(LabelMap.from_dict(partial)))
    message = str(info.value)
    assert message.startswith("HOSP-0001: SEG ") and str(truth.seg_file) in message
    assert "'Pfortader' is not in the label map 'hospital-x'" in message
    # a map that is not strict ignores it with a warning, as the TCIA map does
    lenient = LabelMap.from_dict({**partial, "strict": False})
    patient = load_patient(truth.folder, DicomExport(lenient))
    assert not patient.masks["portal"].any()
    assert any("'Pfortader' not recognised" in w for w in patient.warnings)


def test_label_maps_refuse_what_they_cannot_mean(tmp_path):
    with pytest.raises(ValueError, match="name no structure"):
        LabelMap({"Leber": "kidney"})
    with pytest.raises(ValueError, match="unknown key"):
        LabelMap.from_dict({"labels": {"Leber": "liver"}, "tumor_regex": "x"})
    bad = tmp_path / "labels.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match=str(bad)):
        LabelMap.from_file(bad)
    flat = LabelMap.from_dict({"Leber": "liver"})
    assert flat.structure("LEBER") == "liver" and flat.strict


def test_an_export_carries_its_label_map_to_preprocessing(tmp_path):
    """``label_map.json`` at the top of the export: preprocessing reads it (no argument, no code
    change), and the map enters the cache's settings so that another map rebuilds the cache."""
    paths = paths_under(tmp_path)
    _hospital_export(paths.cohort_dir)
    (paths.cohort_dir / dicom.LABEL_MAP_FILE).write_text(json.dumps(HOSPITAL_MAP))
    assert source_for(paths.cohort_dir).label_map.name == "hospital-x"
    smoke = get_profile("smoke")
    report = preprocess.preprocess_cohort(paths, smoke, n_jobs=1, progress=False)
    assert report[["patient_id", "status"]].to_dict("records") == [
        {"patient_id": "HOSP-0001", "status": "done"}
    ]
    with np.load(paths.processed_dir / "HOSP-0001.npz") as z:
        assert json.loads(str(z["settings_json"]))["labels"]["name"] == "hospital-x"
        assert str(z["settings_hash"]) != preprocess.settings_hash(smoke.preprocess)
    again = preprocess.preprocess_cohort(paths, smoke, n_jobs=1, progress=False)
    assert again["status"].tolist() == ["cached"]
    other = LabelMap.from_dict({**HOSPITAL_MAP, "ignore": ["Gallenblase", "Milz"]})
    rebuilt = preprocess.preprocess_cohort(
        paths, smoke, n_jobs=1, progress=False, source=DicomExport(other)
    )
    assert rebuilt["status"].tolist() == ["rebuilt"] and "labels" in rebuilt["reason"][0]


def test_tcia_settings_are_unchanged_by_the_seam():
    smoke = get_profile("smoke").preprocess
    assert preprocess.settings_json(smoke) == preprocess.settings_json(smoke, "2d", TCIA_LABELS)
    assert "labels" not in json.loads(preprocess.settings_json(smoke))
