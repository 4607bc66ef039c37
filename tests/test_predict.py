"""Tests of crlm_lib.predict / crlm_lib.export: new patients scored by a stored run.

One tiny run (smoke profile, 8 synthetic patients, 1 epoch of 4D-ACFNet) is trained once per
module; every test then plays tomorrow's clinic: a patient folder or ZIP and a clinical row
without any outcome column.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crlm_lib import evaluation as ev
from crlm_lib.config import Paths, get_profile
from crlm_lib.evaluation import runs

N_PATIENTS = 8


def _paths(root: Path, cohort_dir: Path) -> Paths:
    return Paths(
        root=root,
        profile="smoke",
        cohort_dir=cohort_dir,
        clinical_csv=cohort_dir / "clinical.csv",
        oracle_csv=cohort_dir / "oracle.csv",
        processed_dir=root / "processed",
        runs_dir=root / "runs",
        results_dir=root / "results",
        synthetic=True,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(root, cohort_dir, run_dir, ids): synthetic smoke cohort and one trained acfnet run."""
    from crlm_lib.data.preprocess import preprocess_cohort
    from crlm_lib.data.synthetic import write_cohort

    root = tmp_path_factory.mktemp("predict")
    prof = get_profile("smoke")
    cohort_dir = write_cohort(root / "cohort", n_patients=N_PATIENTS, seed=0, synth=prof.synth)
    paths = _paths(root, cohort_dir)
    preprocess_cohort(paths, prof, n_jobs=1, progress=False)
    cohort = ev.as_cohort(paths)
    ids = cohort.ids
    run_dir = root / "runs" / "acfnet"
    pred, _ = ev.fit_predict_torch(
        ev.ModelSpec("acfnet"), cohort, prof, (ids[:5], ids[5:6], ids[6:]), run_dir, epochs=1
    )
    tidy = ev.bootstrap_scores(pred, cohort.outcomes.loc[ids[:5]], n_boot=20, seed=0)
    tidy.to_csv(run_dir / "metrics_ci.csv", index=False)
    return root, cohort_dir, run_dir, ids


def _patient_dir(cohort_dir: Path, pid: str) -> Path:
    return cohort_dir / "Colorectal-Liver-Metastases" / pid


def _clinical_row(cohort_dir: Path, pid: str, path: Path) -> Path:
    """The patient's predictors only: no outcome column at all, CEA left out."""
    clin = pd.read_csv(cohort_dir / "clinical.csv")
    row = clin.loc[clin["Patient-ID"] == pid, ["Patient-ID", "age", "sex", "max_tumor_size"]]
    row.to_csv(path, index=False)
    return path


def _options(**kw):
    from crlm_lib.predict import PredictOptions

    return PredictOptions(**{"progress": False, "shap_samples": 2, **kw})


@pytest.fixture(scope="module")
def full_output(trained):
    """One new patient with report and heatmaps (the expensive path, run once); its clinical
    row lacks most predictors, so it is scored under --allow-missing."""
    from crlm_lib.predict import predict_new

    root, cohort_dir, run_dir, ids = trained
    pid = ids[-1]
    row = _clinical_row(cohort_dir, pid, root / "row.csv")
    out = root / "out_full"
    opts = _options(n_tta=1, shap_samples=4, allow_missing=True, n_imputations=8)
    summary = predict_new([run_dir], [_patient_dir(cohort_dir, pid)], out, row, opts)
    return out, summary, pid


def _refuse_constant(name: str):
    raise ValueError(f"not standard JSON: {name}")


def test_run_stores_encoder_tertiles_and_cohort_km(trained):
    _, _, run_dir, ids = trained
    rec = json.loads((run_dir / "run.json").read_text(), parse_constant=_refuse_constant)
    assert rec["epochs"] == 1 and rec["epochs_completed"] == 1 and rec["best_epoch"] == 1
    assert rec["stopped_early"] is False
    assert rec["clinical_encoder"]["columns"]
    ref = rec["training_reference"]
    assert ref["n"] == 5
    for head in ("os", "dfs"):
        lo, hi = ref["risk_tertiles"][head]
        assert lo <= hi
        km = ref["km"][head]
        assert km["years"][0] == 0 and km["estimate"][0] == 1.0 and len(km["years"]) == 13
        assert np.all(np.diff(km["estimate"]) <= 1e-12)
    assert set(rec["lesion_feature_stats"]) == {"min", "mean", "std"}


def test_load_run_encodes_test_patients_with_the_training_statistics(trained):
    from crlm_lib.data.clinical import encode_predictors

    root, cohort_dir, run_dir, ids = trained
    cohort = ev.as_cohort(_paths(root, cohort_dir))
    run = ev.load_run(run_dir, cohort, "smoke")
    train, test = cohort.clinical.loc[ids[:5]], cohort.clinical.loc[ids[6:]]
    expected, _ = encode_predictors(test, reference=train)
    np.testing.assert_allclose(run.test_ds.clinical, expected, atol=1e-5)
    own, _ = encode_predictors(test, reference=test)  # the old behaviour: the test set's own
    assert own.shape != expected.shape or not np.allclose(own, expected, atol=1e-3)
    stored = json.loads((run_dir / "run.json").read_text())["lesion_feature_stats"]
    np.testing.assert_allclose(run.test_ds.feature_stats["mean"], stored["mean"])


def test_new_patient_without_outcomes_gets_rounded_summary(full_output):
    out, summary, pid = full_output
    table = pd.read_csv(out / "predictions.csv")
    assert list(table["patient_id"]) == [pid]
    r = table.iloc[0]
    for head in ("os", "rfs"):
        for y in (1, 3, 5):
            v = r[f"{head}_{y}y"]
            assert 0 <= v <= 1 and round(v, 3) == v
            # one model: no band, said so (not a zero-width band)
            assert np.isnan(r[f"{head}_{y}y_lo"]) and np.isnan(r[f"{head}_{y}y_hi"])
    assert r["os_1y"] >= r["os_3y"] >= r["os_5y"]
    assert r["n_models"] == 1 and r["band"].startswith("no band: one model")
    assert r["os_risk_group"] in ("low", "intermediate", "high")
    assert not r["in_training_set"] and r["n_training"] == 5
    assert r["clinical_row"] == "DICOM PatientID"
    assert "carcinoembryonic_antigen" in r["missing_predictors"] and r["n_imputations"] == 8
    assert "5-year overall survival" in r["summary"] and "SYNTHETIC" in r["summary"]
    assert "INCOMPLETE CLINICAL DATA" in r["summary"] and "(band" not in r["summary"]
    yearly = pd.read_csv(out / "predictions_yearly.csv")
    assert list(yearly["year"]) == list(range(1, 13))
    assert np.all(np.diff(yearly["os"]) <= 1e-9) and np.all(np.diff(yearly["rfs"]) <= 1e-9)
    assert np.isclose(yearly.loc[4, "os"], r["os_5y"])
    # 5 training patients: the training follow-up backs no year (fewer than 10 at risk)
    assert not yearly["os_followed"].any()


def test_report_and_heatmaps_are_written(full_output):
    import pydicom

    out, _, pid = full_output
    folder = out / pid
    html = (folder / "report.html").read_text()
    assert pid in html and html.count("data:image/png;base64,") == 3
    assert "INCOMPLETE CLINICAL DATA" in html and "no band: one model" in html
    assert "CT instance" in html and "crlm_lib 0.1.0 (git" in html
    assert (folder / "report.pdf").read_bytes()[:5] == b"%PDF-"
    assert (folder / "heatmaps" / "gradcam_recurrence.nii.gz").is_file()
    maps = [pydicom.dcmread(f) for f in sorted((folder / "heatmaps" / "dicom").glob("*.dcm"))]
    assert len(maps) == 12
    assert len({m.SeriesInstanceUID for m in maps}) == 12  # one series per year
    assert [m.SeriesDescription for m in maps][4].startswith("Grad-CAM recurrence year 5")
    assert [int(m.SeriesNumber) for m in maps] == list(range(901, 913))
    assert any(str(v).startswith("crlm_lib 0.1.0 (git ") for v in maps[0].SoftwareVersions)
    umask = os.umask(0)
    os.umask(umask)
    modes = {f.relative_to(out): f.stat().st_mode & 0o777 for f in out.rglob("*") if f.is_file()}
    assert modes and all(m == 0o666 & ~umask for m in modes.values()), modes


def test_zip_gives_the_same_prediction_and_training_patients_are_flagged(trained, full_output):
    from crlm_lib.clinical_input import MissingPredictorError
    from crlm_lib.predict import predict_new

    root, cohort_dir, run_dir, ids = trained
    _, full, pid = full_output
    archive = root / "patient.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in _patient_dir(cohort_dir, pid).rglob("*"):
            zf.write(f, f.relative_to(cohort_dir))
    out = root / "out_zip"
    opts = _options(n_tta=1, allow_missing=True, n_imputations=8, report=False)
    got = predict_new([run_dir], [archive], out, root / "row.csv", opts)
    r = got.set_index("patient_id").loc[pid]
    assert r["os_5y"] == full.iloc[0]["os_5y"]
    # the DICOM maps were written from the extracted CT files; the extraction is cleaned up
    assert len(list((out / pid / "heatmaps" / "dicom").glob("*.dcm"))) == 12
    assert not list(out.glob(".unzip.*"))
    trained_pid = ids[0]
    source = [_patient_dir(cohort_dir, trained_pid)]
    quiet = _options(report=False, heatmaps=False)
    with pytest.raises(MissingPredictorError, match=rf"{trained_pid}: \d+ clinical predictor"):
        predict_new([run_dir], source, root / "out_trained", root / "row.csv", quiet)
    allowed = _options(report=False, heatmaps=False, allow_missing=True, n_imputations=4)
    r = predict_new([run_dir], source, root / "out_trained", root / "row.csv", allowed).iloc[0]
    assert r["in_training_set"] and "training set" in r["summary"]
    assert "age" in r["missing_predictors"] and r["clinical_row"] == "none"


def test_run_without_stored_encoder_is_refused(trained, tmp_path, capsys):
    from crlm_lib.cli import main

    root, cohort_dir, run_dir, ids = trained
    old = tmp_path / "old_run"
    shutil.copytree(run_dir, old)
    rec = json.loads((old / "run.json").read_text())
    del rec["clinical_encoder"]
    (old / "run.json").write_text(json.dumps(rec))
    with pytest.raises(ev.EvaluationError, match="no clinical encoder"):
        ev.load_run(old, ev.Cohort(pd.DataFrame(), pd.DataFrame(), []), "smoke")
    argv = ["predict", "--run", str(old), "--patient", str(_patient_dir(cohort_dir, ids[-1]))]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no clinical encoder" in err and "Traceback" not in err


def test_not_a_patient_is_one_clear_line(tmp_path, capsys, trained):
    from crlm_lib.cli import main

    _, _, run_dir, _ = trained
    bad = tmp_path / "notes.zip"
    bad.write_text("not a zip")
    argv = ["predict", "--run", str(run_dir), "--patient", str(bad), "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "notes.zip" in err and "Traceback" not in err


def test_dicom_parametric_map_lies_on_the_ct(trained, tmp_path):
    """Read the map back with highdicom: geometry, references and where the heat is."""
    import highdicom as hd
    import pydicom

    from crlm_lib.data.preprocess import preprocess_patient
    from crlm_lib.data.tcia import load_patient
    from crlm_lib.export import export_heatmaps_dicom

    _, cohort_dir, _, ids = trained
    patient = load_patient(_patient_dir(cohort_dir, ids[-1]))
    arrays = preprocess_patient(patient, get_profile("smoke").preprocess)
    d, h, w = arrays["ct"].shape
    heat = np.zeros((2, d, h, w), np.float32)
    real = np.flatnonzero(arrays["z_index"] >= 0)
    d0 = int(real[len(real) // 2])
    heat[1, d0, h // 4 : h // 4 + 4, w // 2 : w // 2 + 4] = 1.0
    files = export_heatmaps_dicom(heat, arrays, patient.ct_files, tmp_path)
    ct = [pydicom.dcmread(f) for f in patient.ct_files]
    pm = hd.pm.ParametricMap.from_dataset(pydicom.dcmread(files[1]))
    assert pm.FrameOfReferenceUID == ct[0].FrameOfReferenceUID
    assert pm.StudyInstanceUID == ct[0].StudyInstanceUID and pm.PatientID == ct[0].PatientID
    shared = pm.SharedFunctionalGroupsSequence[0]
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    np.testing.assert_allclose([float(v) for v in spacing], [float(v) for v in ct[0].PixelSpacing])
    iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose(
        [float(v) for v in iop], [float(v) for v in ct[0].ImageOrientationPatient]
    )
    positions = [
        tuple(float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient)
        for f in pm.PerFrameFunctionalGroupsSequence
    ]
    ct_positions = [tuple(float(v) for v in s.ImagePositionPatient) for s in ct]
    window = sorted(int(z) for z in arrays["z_index"] if z >= 0)  # frames: the model's slices
    assert sorted(positions) == sorted(ct_positions[z] for z in window)
    referenced = {
        inst.ReferencedSOPInstanceUID
        for series in pm.ReferencedSeriesSequence
        for inst in series.ReferencedInstanceSequence
    }
    assert referenced == {ct[z].SOPInstanceUID for z in window}
    series_uids = {s.SeriesInstanceUID for s in pm.ReferencedSeriesSequence}
    assert series_uids == {ct[0].SeriesInstanceUID}
    # the hot block lands on source slice z_index[d0], at the rescaled in-plane position
    rwv = shared.RealWorldValueMappingSequence[0]
    pixels = pm.pixel_array.astype(float) * float(rwv.RealWorldValueSlope)
    frame = int(np.argmax(pixels.reshape(len(positions), -1).max(axis=1)))
    z_src = ct_positions.index(positions[frame])
    assert z_src == int(arrays["z_index"][d0])
    ny, nx = pixels.shape[1:]
    y, x = np.unravel_index(np.argmax(pixels[frame]), (ny, nx))
    assert (
        abs(y - (h // 4 + 2) * ny / h) <= 0.15 * ny and abs(x - (w // 2 + 2) * nx / w) <= 0.15 * nx
    )
    assert pixels.max() == pytest.approx(1.0, abs=0.05)


def test_cli_predict_and_model_card(trained, tmp_path, capsys):
    from crlm_lib.cli import main

    _, cohort_dir, run_dir, ids = trained
    out = tmp_path / "cli"
    argv = ["predict", "--run", str(run_dir), "--patient", str(_patient_dir(cohort_dir, ids[-1]))]
    quick = ["--out", str(out), "--no-report", "--no-heatmaps"]
    assert main([*argv, *quick]) == 2  # no clinical data: refused, in one line
    err = capsys.readouterr().err
    assert f"MissingPredictorError: {ids[-1]}: " in err and "clinical predictor(s) missing" in err
    assert "sex (1 = male, 2 = female)" in err and "--allow-missing" in err
    assert main([*argv, *quick, "--allow-missing"]) == 0
    assert f"{ids[-1]}: Predicted 5-year overall survival" in capsys.readouterr().out
    assert list(pd.read_csv(out / "predictions.csv")["patient_id"]) == [ids[-1]]
    assert not (out / ids[-1]).exists()  # --no-report --no-heatmaps

    results = tmp_path / "results"
    results.mkdir()
    pd.DataFrame(
        [
            {"model": m, "metric": k, "estimate": c, "low": c - 0.1, "high": c + 0.1}
            for m, c in (("acfnet", 0.6), ("cox", 0.65), ("oracle", 0.8))
            for k in ("os_c_harrell", "dfs_c_harrell", "os_ibs")
        ]
    ).to_csv(results / "cv_tidy.csv", index=False)
    card_path = tmp_path / "MODEL_CARD.md"
    argv = ["model-card", "--run", str(run_dir), "--results", str(results)]
    assert main([*argv, "--out", str(card_path)]) == 0
    card = card_path.read_text()
    tidy = pd.read_csv(run_dir / "metrics_ci.csv").set_index("metric")
    c = tidy.loc["os_c_harrell"]
    if np.isfinite(c["low"]):
        expected = f"{c['estimate']:.3f} (95% CI {c['low']:.3f}–{c['high']:.3f})"
    else:
        expected = f"{c['estimate']:.3f}"
    assert f"| C-index, overall survival (Harrell) | {expected}" in card
    assert "| Oracle | 0.800 (95% CI 0.700–0.900)" in card
    assert "SYNTHETIC" in card and "5 training, 1 early-stopping, 2 test" in card
    for section in ("Model details", "Uses", "How to use", "Training data",
                    "Training procedure and hyperparameters", "Evaluation",
                    "Bias, risks and limitations", "Ethical considerations", "Licence",
                    "Citation"):  # fmt: skip
        assert f"\n## {section}\n" in card
    body = card.replace(str(tmp_path), "")  # the run path may hold any number
    assert "197" not in body and "5 training patients from one cohort; a 2-patient test" in card
    assert "restricted mean survival time" in card and " years" in card  # cut points, units
    assert "Trained with crlm_lib 0.1.0 (git" in card and "AdamW lr" in card
    assert "Band coverage: not measured" in card
    assert main(["model-card", "--run", str(tmp_path / "absent"), "--out", str(card_path)]) == 2


def test_cached_runs_without_stored_encoder_are_retrained_but_unfinished_ones_resume(tmp_path):
    ids = {"train_ids": ["a", "b"], "val_ids": ["c"], "test_ids": ["d"]}
    old = tmp_path / "old"
    old.mkdir()
    (old / "run.json").write_text(json.dumps({"model": "acfnet", **ids}))
    (old / "predictions.csv").write_text("patient_id\nd\n")
    with pytest.warns(UserWarning, match="no clinical encoder"):
        runs._clear_stale_run(old, (["a", "b"], ["c"], ["d"]))
    assert not (old / "run.json").exists() and not (old / "predictions.csv").exists()
    running = tmp_path / "running"  # encoder stored at start, reference only at the end
    running.mkdir()
    (running / "run.json").write_text(
        json.dumps({"model": "acfnet", "clinical_encoder": {"columns": []}, **ids})
    )
    (running / "last.pt").write_bytes(b"checkpoint")
    runs._clear_stale_run(running, (["a", "b"], ["c"], ["d"]))
    assert (running / "last.pt").exists()


def test_image_permutation_control_swaps_images_keeps_clinical_data(trained):
    """The CT-permutation control: patients keep their clinical rows and outcomes and read
    another patient's images; the trained 4D-ACFNet's predictions then change."""
    from crlm_lib.data.dataset import IMAGE_KEYS, ImagePermutation
    from crlm_lib.train import predict

    root, cohort_dir, run_dir, ids = trained
    cohort = ev.as_cohort(_paths(root, cohort_dir))
    run = ev.load_run(run_dir, cohort, "smoke")
    swapped = ImagePermutation(run.test_ds, [1, 0])
    a, b = run.test_ds[0], swapped[0]
    assert a["patient_id"] == b["patient_id"]
    np.testing.assert_array_equal(a["clinical"], b["clinical"])
    assert float(a["os_years"]) == float(b["os_years"])
    for key in IMAGE_KEYS:
        np.testing.assert_array_equal(b[key], run.test_ds[1][key])
    with pytest.raises(ValueError, match="not a permutation"):
        ImagePermutation(run.test_ds, [0, 0])
    own = predict(run.model, run.test_ds)
    other = predict(run.model, swapped)
    assert list(own["patient_id"]) == list(other["patient_id"])
    cols = [c for c in own.columns if c.startswith(("surv_p", "rec_p"))]
    # one epoch from the Cox-anchored start: the image moves the outputs, if only a little
    assert np.abs(own[cols].to_numpy() - other[cols].to_numpy()).max() > 0

    perm = runs.permuted_predictions(run_dir, cohort, "smoke", seed=3)
    assert sorted(perm["permutation"].unique()) == list(range(runs.N_PERMUTATIONS))
    for _, block in perm.groupby("permutation"):
        assert sorted(block["patient_id"]) == sorted(ids[6:])
    assert (run_dir / runs.PERMUTED_FILE).is_file()
    again = runs.permuted_predictions(run_dir, cohort, "smoke", seed=3)
    pd.testing.assert_frame_equal(perm.reset_index(drop=True), again.reset_index(drop=True))
    # the untrained-start control: written before the first step, the same test patients
    start = runs.step0_predictions(run_dir)
    assert list(start["patient_id"]) == list(own["patient_id"])
    assert np.abs(start[cols].to_numpy() - own[cols].to_numpy()).max() > 0


def test_template_rows_by_folder_name_and_unknown_columns(trained, tmp_path, capsys):
    """--template writes every predictor with its coding; a row named by the folder is used
    and said so; an unknown column is refused with the close match."""
    from crlm_lib.cli import main

    _, cohort_dir, run_dir, ids = trained
    pid = ids[-1]
    folder = tmp_path / "patient-folder-7"
    shutil.copytree(_patient_dir(cohort_dir, pid), folder)
    template = tmp_path / "template.csv"
    assert main(["predict", "--run", str(run_dir), "--patient", str(folder),
                 "--template", str(template)]) == 0  # fmt: skip
    assert "DICOM PatientID, else by the patient's folder name" in capsys.readouterr().out
    table = pd.read_csv(template, dtype=str)
    rec = json.loads((run_dir / "run.json").read_text())
    assert list(table.columns)[1:] == [c["column"] for c in rec["clinical_encoder"]["columns"]]
    assert table.iloc[0]["Patient-ID"].startswith("#") and table.iloc[1]["Patient-ID"] == pid
    assert table.iloc[0]["sex"] == "code: 1 = male, 2 = female"
    # fill the template from the cohort's table, naming the patient by its folder
    clin = pd.read_csv(cohort_dir / "clinical.csv").set_index("Patient-ID")
    table.loc[1, table.columns[1:]] = clin.loc[pid, table.columns[1:]].astype(str).to_numpy()
    table.loc[1, "Patient-ID"] = folder.name
    table.to_csv(template, index=False)
    argv = ["predict", "--run", str(run_dir), "--patient", str(folder), "--clinical",
            str(template), "--out", str(tmp_path / "o"), "--no-report", "--no-heatmaps",
            "--allow-missing"]  # fmt: skip
    assert main(argv) == 0
    out = pd.read_csv(tmp_path / "o" / "predictions.csv")
    assert out.iloc[0]["clinical_row"] == "folder name"
    assert "clinical row matched by 'patient-folder-7'" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"Patient-ID": [pid], "CEA": [3.0], "tumour size": [2.0]}).to_csv(bad, index=False)
    argv[argv.index(str(template))] = str(bad)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown column(s) 'CEA' (did you mean 'carcinoembryonic_antigen'?)" in err
    assert "'tumour size' (did you mean 'max_tumor_size'?)" in err and "Traceback" not in err


def test_cross_validation_folder_is_an_ensemble_with_a_band(trained, tmp_path):
    """A folder of fold runs is expanded into its runs; two models give a band whose
    method is named, and the report states it beside the curves."""
    from crlm_lib.predict import predict_new

    root, cohort_dir, run_dir, ids = trained
    cv = tmp_path / "cv" / "acfnet"
    for fold in ("r0_f0", "r0_f1"):
        shutil.copytree(run_dir, cv / fold)
    # the second "model": the same weights with the survival head's bias shifted
    import torch

    ckpt = torch.load(cv / "r0_f1" / "best.pt", weights_only=False)
    key = [k for k in ckpt["model"] if k.startswith("heads.survival") and k.endswith("bias")][-1]
    ckpt["model"][key] = ckpt["model"][key] + torch.linspace(-1, 1, ckpt["model"][key].numel())
    torch.save(ckpt, cv / "r0_f1" / "best.pt")
    opts = _options(allow_missing=True, n_imputations=4, heatmaps=False)
    got = predict_new([cv], [_patient_dir(cohort_dir, ids[-1])], tmp_path / "o", None, opts)
    r = got.iloc[0]
    assert r["n_models"] == 2 and "5th-95th percentile of the 2 models" in r["band"]
    assert r["os_5y_lo"] < r["os_5y_hi"]
    html = (tmp_path / "o" / ids[-1] / "report.html").read_text()
    assert "5th-95th percentile of the 2 models" in html
    assert "mean of the 2 models' tertiles" in r["risk_cut_points"]  # no out-of-fold frame here
    assert "model 1 of 2 (r0_f0)" in html  # the explanations say whose they are
    # a conformal calibration made for these two runs replaces the spread by its band
    from crlm_lib import conformal

    rec = json.loads((cv / "r0_f0" / "run.json").read_text())
    ident = "/".join(rec["identity"][k] for k in ("cohort", "split", "config"))
    width = tuple(np.linspace(0.05, 0.3, 12))
    cal = conformal.ConformalBand(0.9, {"os": width, "dfs": width}, 40, (ident,), "test curves")
    (cv / "conformal.json").write_text(json.dumps(cal.to_dict()))
    got = predict_new([cv], [_patient_dir(cohort_dir, ids[-1])], tmp_path / "c", None, opts)
    c = got.iloc[0]
    assert "split-conformal 90% band for the true survival probability" in c["band"]
    assert c["os_5y"] == pytest.approx(r["os_5y"], abs=1e-3)
    assert c["os_5y_lo"] == pytest.approx(max(c["os_5y"] - width[4], 0.0), abs=2e-3)
    assert c["os_5y_hi"] == pytest.approx(min(c["os_5y"] + width[4], 1.0), abs=2e-3)
    html = (tmp_path / "c" / ids[-1] / "report.html").read_text()
    assert "split-conformal 90% band" in html


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) absent")
def test_dicom_outputs_pass_dciodvfy(trained, full_output):
    """The Parametric Maps and the synthetic CT pass Debian's dicom3tools validator without
    errors (warnings allowed); the synthetic SEG without errors or warnings (standard codes
    only, no private coding scheme), and the loader still reads it."""
    import subprocess

    from crlm_lib.data.tcia import load_patient

    _, cohort_dir, _, ids = trained
    out, _, pid = full_output
    files = sorted((out / pid / "heatmaps" / "dicom").glob("*.dcm"))[:2]
    patient = _patient_dir(cohort_dir, pid)
    files.append(next(p for p in patient.rglob("*.dcm") if "PORTAL" in str(p)))
    seg = next(p for p in patient.rglob("*.dcm") if "Segmentation" in str(p))
    for path in [*files, seg]:
        done = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        lines = (done.stdout + done.stderr).splitlines()
        errors = [ln for ln in lines if ln.startswith("Error")]
        assert not errors, f"{path.name}: {errors}"
    warnings = [ln for ln in lines if ln.startswith("Warning")]
    assert not warnings, f"SEG {seg}: {warnings}"
    assert load_patient(patient).masks["tumour"].any()


def test_split_controls_of_an_image_model_on_the_papers_split(trained, tmp_path):
    """The papers' split reports the same controls as the CV: trained minus CT permuted and
    trained minus the untrained start, one row each, paired over the test patients."""
    root, cohort_dir, _, _ = trained
    cohort = ev.as_cohort(_paths(root, cohort_dir))
    kw = {"seed": 0, "n_boot": 10, "runs_dir": tmp_path}
    _, preds = ev.run_paper_protocol(
        ["acfnet"], cohort, "smoke", anchors=(), oracle=False, epochs=1, **kw
    )
    diffs = ev.split_controls(preds, cohort, "smoke", **kw)
    assert set(zip(diffs["model"], diffs["baseline"], strict=True)) == {
        ("acfnet", "ct-permuted"),
        ("acfnet", "step-0"),
    }
    assert set(diffs["metric"]) == {"os_c_harrell", "dfs_c_harrell"}
    table = ev.control_table(diffs)
    assert list(table.index) == [
        "4D-ACFNet + Cox anchor: trained − CT permuted",
        "4D-ACFNet + Cox anchor: trained − untrained start",
    ]


def test_a_lesion_model_run_is_reused_not_retrained(trained):
    """The identity stored by a fit is the one the cache checks: a lesion model (whose
    lesion-feature count is read from the data and added to its options) is reused."""
    import warnings

    from crlm_lib.evaluation import runs

    root, cohort_dir, _, ids = trained
    cohort = ev.as_cohort(_paths(root, cohort_dir))
    prof, run_dir = get_profile("smoke"), root / "runs" / "aminn-cache"
    split = (ids[:5], ids[5:6], ids[6:])
    first = runs._cached_fit(ev.ModelSpec("aminn"), cohort, prof, split, run_dir, 1, 0)
    stamp = (run_dir / "run.json").stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "retraining from scratch" would be a UserWarning
        again = runs._cached_fit(ev.ModelSpec("aminn"), cohort, prof, split, run_dir, 1, 0)
    assert (run_dir / "run.json").stat().st_mtime_ns == stamp
    pd.testing.assert_frame_equal(first, again)
