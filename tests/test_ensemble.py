"""Tests of crlm_lib.ensemble: run folders of an ensemble, the band and its coverage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from crlm_lib import ensemble


def test_a_cross_validation_folder_stands_for_its_fold_runs(tmp_path):
    cv = tmp_path / "cv" / "acfnet"
    for fold in ("r0_f1", "r0_f0"):
        (cv / fold).mkdir(parents=True)
        (cv / fold / "run.json").write_text("{}")
    (cv / "notes").mkdir()
    single = tmp_path / "single"
    single.mkdir()
    (single / "run.json").write_text("{}")
    got = ensemble.expand_run_dirs([cv, single, tmp_path / "absent"])
    assert got == [cv / "r0_f0", cv / "r0_f1", single, tmp_path / "absent"]


def test_band_is_the_5_95_percentile_of_the_models_and_none_for_one():
    members = np.array([[0.1], [0.2], [0.3], [0.4], [0.5]])
    low, high = ensemble.band(members)
    np.testing.assert_allclose([low[0], high[0]], np.percentile(members, [5, 95]))
    assert ensemble.band(members[:1]) is None
    assert "no band: one model" in ensemble.band_method(1)
    assert "5th-95th percentile of the 5 models" in ensemble.band_method(5)
    assert ensemble.BAND_LEVEL == 0.9


def test_band_coverage_counts_closed_bands_and_no_band_as_outside():
    truth = np.array([[0.5, 0.5], [0.2, 0.9]])
    low = np.array([[0.4, 0.5], [0.3, np.nan]])
    high = np.array([[0.6, 0.6], [0.4, np.nan]])
    cov = ensemble.band_coverage(truth, low, high, (1, 3))
    assert cov == {"pooled": 0.5, "by_year": {1: 0.5, 3: 0.5}, "n": 4}


def _fold(folder, ids, rng):
    pmf = rng.dirichlet(np.ones(12), size=len(ids))
    rec = np.sort(rng.uniform(0, 1, (len(ids), 12)), axis=1)
    frame = pd.DataFrame(pmf, columns=[f"surv_p{k}" for k in range(1, 13)])
    frame[[f"rec_p{k}" for k in range(1, 13)]] = rec
    frame.insert(0, "patient_id", ids)
    frame["os_years"] = rng.uniform(0.5, 8, len(ids))
    frame["os_event"] = rng.integers(0, 2, len(ids))
    frame["dfs_years"] = frame["os_years"] * 0.7
    frame["dfs_event"] = rng.integers(0, 2, len(ids))
    folder.mkdir(parents=True)
    frame.to_csv(folder / "predictions.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"test_ids": ids}))


def test_cross_validated_performance_from_the_pooled_out_of_fold_predictions(tmp_path):
    rng = np.random.default_rng(0)
    _fold(tmp_path / "r0_f0", [f"A{i}" for i in range(20)], rng)
    _fold(tmp_path / "r0_f1", [f"B{i}" for i in range(20)], rng)
    perf = ensemble.cv_performance([tmp_path / "r0_f0", tmp_path / "r0_f1"], n_boot=20)
    assert "40 patients" in perf.source
    c, lo, hi = perf.c_index["os"]
    assert 0 <= lo <= c <= hi <= 1
    assert set(perf.calibration) == {1, 3, 5}
    lines = perf.lines()
    assert lines[0].startswith("Harrell's C, overall survival: ") and "95% CI" in lines[0]
    # one run without crlm evaluate's metrics: nothing to show
    assert ensemble.cv_performance([tmp_path / "r0_f0"]) is None


def test_cut_points_of_a_cross_validation_are_its_out_of_fold_tertiles(tmp_path):
    from crlm_lib.training_reference import risk_group_scores

    rng = np.random.default_rng(1)
    _fold(tmp_path / "r0_f0", [f"A{i}" for i in range(15)], rng)
    _fold(tmp_path / "r0_f1", [f"B{i}" for i in range(15)], rng)
    folds = [tmp_path / "r0_f0", tmp_path / "r0_f1"]
    cuts, text = ensemble.out_of_fold_cut_points(folds)
    pooled = pd.concat([pd.read_csv(f / "predictions.csv") for f in folds], ignore_index=True)
    os_risk, dfs_risk = risk_group_scores(pooled)
    np.testing.assert_allclose(cuts["os"], np.quantile(os_risk, [1 / 3, 2 / 3]))
    np.testing.assert_allclose(cuts["dfs"], np.quantile(dfs_risk, [1 / 3, 2 / 3]))
    assert "out-of-fold predicted risk of the 30 cross-validation patients" in text
    assert ensemble.out_of_fold_cut_points(folds[:1]) is None  # one run: not an ensemble
