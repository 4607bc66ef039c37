"""Tests of crlm_lib.data.synthetic (and its phantom): DICOM validity, determinism, oracle,
calibration of the generative survival model."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest

from crlm_lib.config import SMOKE, SynthConfig
from crlm_lib.data import phantom
from crlm_lib.data.clinical import PREDICTORS, fong_score, load_clinical, outcomes
from crlm_lib.data.synthetic import (
    FIT_SEED,
    FONG_5Y_OS_CI,
    FONG_N,
    FONG_SCORE_SHARE,
    KANAS_MEDIAN_OS_YEARS,
    RECURRENCE_RANGE,
    SETTINGS,
    SyntheticCohortError,
    calibration_summary,
    event_times,
    fong_1999_intervals,
    image_term,
    linear_predictors,
    outcome_model,
    phi_values,
    render_patient,
    sample_event_times,
    simulate_cohort,
    true_survival,
    write_cohort,
)

SYNTH = SMOKE.synth


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    return write_cohort(out, n_patients=3, seed=7, synth=SYNTH, progress=False)


def _patient_dirs(out: Path) -> list[Path]:
    return sorted((out / "Colorectal-Liver-Metastases").glob("CRLM-CT-*"))


def _series(pdir: Path) -> tuple[list[Path], Path]:
    (study,) = [p for p in pdir.iterdir() if p.is_dir()]
    ct_dir = next(p for p in study.iterdir() if "Segmentation" not in p.name)
    seg_dir = next(p for p in study.iterdir() if "Segmentation" in p.name)
    return sorted(ct_dir.glob("*.dcm")), seg_dir / "1-1.dcm"


def test_layout_and_tables(cohort):
    dirs = _patient_dirs(cohort)
    assert [d.name for d in dirs] == ["CRLM-CT-1001", "CRLM-CT-1002", "CRLM-CT-1003"]
    assert not list((cohort / "Colorectal-Liver-Metastases").glob(".tmp-*"))
    df = load_clinical(cohort / "clinical.csv")  # validates the schema
    assert list(df.index) == [d.name for d in dirs]
    oracle = pd.read_csv(cohort / "oracle.csv")
    assert "os_risk" not in df.columns and "os_surv_y12" in oracle.columns


def test_ct_series_is_valid_dicom(cohort):
    for pdir in _patient_dirs(cohort):
        files, _ = _series(pdir)
        assert SYNTH.slices[0] <= len(files) <= SYNTH.slices[1]
        dss = [pydicom.dcmread(f) for f in files]
        assert {d.SOPClassUID for d in dss} == {pydicom.uid.CTImageStorage}
        assert len({d.SeriesInstanceUID for d in dss}) == 1
        assert len({d.SOPInstanceUID for d in dss}) == len(dss)
        d = dss[0]
        assert d.Modality == "CT" and d.PatientID == pdir.name
        assert float(d.RescaleIntercept) == -1024 and float(d.RescaleSlope) == 1
        assert d.pixel_array.dtype == np.int16 and d.Rows == SYNTH.matrix
        assert [float(v) for v in d.PixelSpacing] == [SYNTH.pixel_spacing_mm] * 2
        z = sorted(float(x.ImagePositionPatient[2]) for x in dss)
        np.testing.assert_allclose(np.diff(z), SYNTH.slice_thickness_mm, atol=1e-3)
        # file names do not follow slice position
        z_by_name = [float(x.ImagePositionPatient[2]) for x in dss]
        assert z_by_name != sorted(z_by_name) and z_by_name != sorted(z_by_name, reverse=True)
        hu = np.stack([x.pixel_array * 1.0 + float(x.RescaleIntercept) for x in dss])
        assert hu.min() < -900 and hu.max() > 300  # air and bone


def test_seg_references_ct_and_has_collection_labels(cohort):
    oracle = pd.read_csv(cohort / "oracle.csv").set_index("Patient-ID")
    for pdir in _patient_dirs(cohort):
        files, seg_file = _series(pdir)
        ct_uid = pydicom.dcmread(files[0]).SeriesInstanceUID
        seg = hd.seg.segread(seg_file)
        assert seg.segmentation_type == hd.seg.SegmentationTypeValues.BINARY
        labels = [seg.get_segment_description(i).segment_label for i in seg.segment_numbers]
        n_t = int(oracle.loc[pdir.name, "n_tumours"])
        assert labels == ["Liver", "Liver_Remnant", "Hepatic", "Portal"] + [
            f"Tumor_{i + 1}" for i in range(n_t)
        ]
        ref = seg.ReferencedSeriesSequence[0].SeriesInstanceUID
        assert ref == ct_uid
        assert seg.NumberOfFrames < len(files) * len(labels)  # empty frames omitted
        liver_code = seg.get_segment_description(1).segmented_property_type
        assert liver_code.value == "10200004"


def test_phi_markers_written_and_listed(cohort):
    vals = phi_values(cohort)
    files, _ = _series(_patient_dirs(cohort)[0])
    d = pydicom.dcmread(files[0])
    assert str(d.PatientName) in vals and d.PatientBirthDate in vals
    assert d.InstitutionName in vals
    assert str(d.OtherPatientIDsSequence[0].PatientID) in vals
    assert len(vals) == len(set(vals)) and len([v for v in vals if v.startswith("1900")]) == 3


def test_deterministic_and_resumable(cohort, tmp_path):
    # two processes write the same bytes as the serial fixture
    other = write_cohort(
        tmp_path / "b", n_patients=2, seed=7, synth=SYNTH, progress=False, n_jobs=2
    )
    for pdir in _patient_dirs(other):
        for f in sorted(p for p in pdir.rglob("*") if p.is_file()):
            twin = cohort / f.relative_to(other)
            assert f.read_bytes() == twin.read_bytes(), f
    # resuming adds the missing patient and leaves the others untouched
    first = next(_patient_dirs(other)[0].rglob("*.dcm"))
    mtime = first.stat().st_mtime_ns
    write_cohort(other, n_patients=3, seed=7, synth=SYNTH, progress=False)
    assert len(_patient_dirs(other)) == 3 and first.stat().st_mtime_ns == mtime
    with pytest.raises(SyntheticCohortError):
        write_cohort(other, n_patients=3, seed=8, synth=SYNTH, progress=False)


def test_masks_coherent_with_image_and_table():
    sim = simulate_cohort(4, seed=11)
    spec = sim.specs[0]
    grid = SynthConfig(matrix=96, pixel_spacing_mm=4.0, slices=(60, 60), slice_thickness_mm=4.0)
    img = render_patient(spec, 11, grid)
    liver, rem = img.masks["liver"], img.masks["remnant"]
    assert rem.any() and not (rem & ~liver).any()
    for les in img.lesions:
        assert not (les & rem).any()
    iq = phantom.image_quantities(spec.anatomy)
    if liver.sum() > 0.9 * iq["liver_volume_ml"] * 1000 / (4.0**2 * 4.0):  # liver fully covered
        tum = np.any(img.lesions, axis=0) if img.lesions else np.zeros_like(liver)
        frac = rem.sum() / (liver & ~tum).sum()
        assert abs(frac - iq["remnant_fraction"]) < 0.05
    parenchyma = liver & ~img.masks["hepatic"] & ~img.masks["portal"]
    for les in img.lesions:
        parenchyma &= ~les
    assert abs(np.median(img.hu[parenchyma]) - spec.anatomy.liver_hu) < 15
    # the table records a clinic's reading: size measured with error and rounded to 0.5 cm,
    # small tumours possibly missed (never an extra one)
    row = spec.row
    assert row["max_tumor_size"] % 0.5 == 0
    assert abs(np.log(row["max_tumor_size"] / iq["max_diameter_cm"])) < 0.8
    assert row["multiple_metastases"] <= int(len(img.lesions) > 1)
    assert row["bilobar_disease"] <= int(iq["bilobar"])
    assert "tumour_attenuation_z" not in row


def test_attenuation_phenotype_is_in_the_ct_only():
    """The image-only phenotype sets the tumours' HU (seen in the CT intensities) and no
    column of the table; under ``image_effect`` lower attenuation means higher risk."""
    sim = simulate_cohort(40, seed=12)
    z = np.array([sp.covariates["tumour_attenuation_z"] for sp in sim.specs])
    hu = np.array([sp.anatomy.tumour_hu for sp in sim.specs])
    assert np.corrcoef(z, hu)[0, 1] > 0.95
    grid = SynthConfig(matrix=96, pixel_spacing_mm=4.0, slices=(40, 40), slice_thickness_mm=5.0)
    lo, hi = int(np.argmin(z)), int(np.argmax(z))
    means = []
    for k in (lo, hi):
        img = render_patient(sim.specs[k], 12, grid)
        core = np.zeros_like(img.masks["liver"])
        for les in img.lesions:
            core |= les
        if core.any():
            means.append(float(np.mean(img.hu[core])))
    if len(means) == 2:
        assert means[0] < means[1]
    table = sim.clinical[PREDICTORS]  # the outcomes depend on it, the predictors do not
    for col in table.columns:
        vals = table[col].replace(-999, np.nan).astype(float)
        ok = vals.notna()
        if vals[ok].nunique() > 1:
            assert abs(np.corrcoef(vals[ok], z[ok.to_numpy()])[0, 1]) < 0.5, col
    cov = pd.DataFrame([sp.covariates for sp in sim.specs])
    assert np.corrcoef(image_term(cov), -z)[0, 1] > 0.5


def test_null_setting_outcome_depends_on_the_table_only():
    """Shuffling the image-only quantities among patients leaves every hazard unchanged under
    ``null`` and changes it under ``image_effect``; both settings share the rest."""
    sim = simulate_cohort(60, seed=13, oracle_curves=False)
    cov = pd.DataFrame([sp.covariates for sp in sim.specs])
    shuffled = cov.copy()
    img = ["tumour_volume_ml", "n_tumours", "bilobar", "remnant_fraction", "tumour_attenuation_z"]
    shuffled[img] = cov[img].to_numpy()[np.random.default_rng(0).permutation(len(cov))]
    null = outcome_model("null")
    assert null.image_weight == 0 and set(SETTINGS) == {"image_effect", "null"}
    pd.testing.assert_frame_equal(linear_predictors(cov, null), linear_predictors(shuffled, null))
    effect = outcome_model("image_effect")
    assert not np.allclose(
        linear_predictors(cov, effect)["eta_r"], linear_predictors(shuffled, effect)["eta_r"]
    )
    with pytest.raises(SyntheticCohortError, match="unknown generator setting"):
        outcome_model("strong")


def test_event_times_are_common_random_numbers():
    """``event_times`` is a pure function of the draws: the same draws give the same times, and
    a model with a higher recurrence offset gives earlier (or equal) recurrences."""
    sim = simulate_cohort(50, seed=14, oracle_curves=False)
    cov = pd.DataFrame([sp.covariates for sp in sim.specs])
    rng = np.random.default_rng(1)
    e, u = rng.exponential(size=(50, 6)), rng.uniform(size=(50, 4))
    a = event_times(cov, e, u)
    pd.testing.assert_frame_equal(a, event_times(cov, e, u))
    worse = outcome_model("image_effect")
    worse = replace(worse, c0=worse.c0 - 0.5)
    b = event_times(cov, e, u, worse)
    assert (b["recurrence_years"] <= a["recurrence_years"] + 1e-12).all()


def test_oracle_curves_monotone_and_match_sampling():
    sim = simulate_cohort(30, seed=5)
    o = sim.oracle
    for what in ("os", "dfs"):
        s = o[[f"{what}_surv_y{k}" for k in range(1, 13)]].to_numpy()
        assert np.all((s >= 0) & (s <= 1)) and np.all(np.diff(s, axis=1) <= 1e-12)
    assert np.all(o["dfs_surv_y5"] <= o["os_surv_y5"] + 1e-9)
    # exact curve of one patient vs 20000 draws of that patient
    cov = pd.DataFrame([sim.specs[3].covariates])
    s_os, s_dfs = true_survival(cov, np.array([1.0, 3.0, 5.0]))
    n = 20000
    rep = pd.concat([cov] * n, ignore_index=True)
    t = sample_event_times(rep, [np.random.default_rng([1, j]) for j in range(n)])
    emp_os = [(t["death_years"] > x).mean() for x in (1, 3, 5)]
    dfs = np.minimum(t["recurrence_years"], t["other_death_years"])
    emp_dfs = [(dfs > x).mean() for x in (1, 3, 5)]
    np.testing.assert_allclose(s_os[0], emp_os, atol=0.015)
    np.testing.assert_allclose(s_dfs[0], emp_dfs, atol=0.015)


@pytest.mark.parametrize("seed", [7])
def test_large_simulated_cohort_calibration(seed):
    """n = 4000 of a seed the generator's fit never saw (:data:`FIT_SEED` is another), no
    images: each Fong score's KM 5-year OS lies in Fong 1999's exact 95% interval, the score
    distribution within 4 points of Fong's, death and DFS-event fractions within 3 points of the
    real cohort's 107/197 and 138/197; the table stays consistent with its own rules."""
    assert seed != FIT_SEED
    sim = simulate_cohort(4000, seed=seed, oracle_curves=False)
    clin = sim.clinical
    assert "os_surv_y5" not in sim.oracle.columns  # the fast path skips the true curves
    cal = calibration_summary(clin).set_index("metric")
    ranged = cal["low"].notna()
    assert cal.loc[ranged, "within"].all() and cal.loc[~ranged, "within"].isna().all(), cal
    for k in range(6):
        low, high = FONG_5Y_OS_CI[k]
        assert low <= cal.loc[f"5-year OS, Fong score {k}", "synthetic"] <= high, cal
    shares = clin["clinrisk_score"].replace(-999, np.nan).value_counts(normalize=True)
    np.testing.assert_allclose(shares.sort_index().to_numpy(), FONG_SCORE_SHARE, atol=0.04)
    assert abs(cal.loc["death fraction", "synthetic"] - 107 / 197) <= 0.03
    assert abs(cal.loc["DFS event fraction", "synthetic"] - 138 / 197) <= 0.03
    s0, s2, s3 = (cal.loc[f"5-year OS, Fong score {k}", "synthetic"] for k in (0, 2, 3))
    assert s0 > s2 > s3
    # named, not fitted: the generator's median OS (about 2.6 years) is below Kanas' 3.6
    assert 2.2 <= cal.loc["median OS (years)", "synthetic"] <= 5.0
    assert cal.loc["median OS (years)", "target"] == KANAS_MEDIAN_OS_YEARS
    low, high = RECURRENCE_RANGE
    assert low <= cal.loc["recurrence fraction", "synthetic"] <= high, cal
    assert cal.loc["recurrences within 2 years", "synthetic"] >= 0.65
    df = clin.set_index("Patient-ID").replace(-999, np.nan)
    y = outcomes(df)
    assert (y["dfs_years"] <= y["os_years"] + 1e-9).all()
    assert (y["liver_dfs_years"] <= y["os_years"] + 1e-9).all()
    known = df["clinrisk_score"].notna()
    np.testing.assert_array_equal(fong_score(df)[known], df.loc[known, "clinrisk_score"])
    assert ((df["clinrisk_score"] >= 3) == (df["clinrisk_stratified"] == 1))[known].all()
    assert (clin == -999).sum().sum() > 0  # some missingness in predictors
    assert clin["overall_survival_months"].max() <= 12 * 12 + 1e-6


def test_fong_intervals_are_the_exact_binomial_ones():
    np.testing.assert_allclose(fong_1999_intervals(), FONG_5Y_OS_CI, atol=1e-4)
    assert FONG_N == tuple(round(s * 1001) for s in FONG_SCORE_SHARE)


def test_oracle_os_risk_is_the_five_year_risk():
    """os_risk = log(-log S(5)), not the 12-year value a running minimum over the unsorted
    times [1..12, 5] used to give."""
    sim = simulate_cohort(12, seed=2)
    cov = pd.DataFrame([s.covariates for s in sim.specs])
    s_os, s_dfs = true_survival(cov, np.array([5.0]))

    def cloglog(s):  # the oracle clips S to [1e-12, 1 - 1e-12] before the transform
        return np.log(-np.log(np.clip(s, 1e-12, 1 - 1e-12)))

    np.testing.assert_allclose(sim.oracle["os_risk"], cloglog(s_os[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(sim.oracle["dfs_risk"], cloglog(s_dfs[:, 0]), rtol=1e-6)
    np.testing.assert_allclose(sim.oracle["os_surv_y5"], s_os[:, 0], rtol=1e-9)
    assert (sim.oracle["os_surv_y12"] < sim.oracle["os_surv_y5"] - 1e-3).all()
    # any order of the requested times gives the same values
    fwd, _ = true_survival(cov, np.array([1.0, 5.0, 12.0]))
    rev, _ = true_survival(cov, np.array([12.0, 5.0, 1.0]))
    np.testing.assert_allclose(fwd, rev[:, ::-1])


def test_heldout_calibration_summarises_seeds_and_refuses_the_fit_seed():
    from crlm_lib.data.synthetic import heldout_calibration

    tab = heldout_calibration(seeds=(1, 2), n_patients=300)
    # the seeds simulated in two processes: the same table
    pd.testing.assert_frame_equal(heldout_calibration(seeds=(1, 2), n_patients=300, n_jobs=2), tab)
    assert {"target", "low", "high", "mean", "min", "max", "within", "seeds", "n"} <= set(tab)
    assert (tab["min"] <= tab["mean"] + 1e-12).all() and (tab["mean"] <= tab["max"] + 1e-12).all()
    assert tab.loc["share with Fong score 0", "target"] == FONG_SCORE_SHARE[0]
    assert tab.loc["median OS (years)", "within"] is None
    with pytest.raises(SyntheticCohortError, match="held-out"):
        heldout_calibration(seeds=(1, FIT_SEED), n_patients=10)


def test_cohort_is_current_names_seed_grid_setting_and_version(cohort, tmp_path):
    import json
    import shutil

    from crlm_lib.data.synthetic import GENERATOR_VERSION, cohort_is_current

    assert cohort_is_current(cohort, 7, SYNTH)
    assert not cohort_is_current(cohort, 8, SYNTH)
    assert not cohort_is_current(cohort, 7, replace(SYNTH, setting="null"))
    assert cohort_is_current(cohort, 7, replace(SYNTH, heldout_patients=5))  # no effect on files
    copy = tmp_path / "copy"
    shutil.copytree(cohort, copy)
    meta = json.loads((copy / "synthetic_cohort.json").read_text())
    meta["generator_version"] = GENERATOR_VERSION - 1
    (copy / "synthetic_cohort.json").write_text(json.dumps(meta))
    assert not cohort_is_current(copy, 7, SYNTH)
    assert not cohort_is_current(tmp_path / "absent", 7, SYNTH)
