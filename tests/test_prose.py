"""The values the manuscript's prose quotes (evaluation.prose) are computed from the tables."""

from __future__ import annotations

import numpy as np
import pandas as pd

from crlm_lib import evaluation as ev
from crlm_lib.models.clinical import frame_from_curves


def _tidy(rows):
    return pd.DataFrame(rows, columns=["model", "metric", "estimate", "low", "high"])


def test_split_taa_values_rank_the_oracle():
    tidy = _tidy(
        [("cox", "os_taa", 0.35, 0.1, 0.5), ("acfnet", "os_taa", 0.30, 0.1, 0.5),
         ("oracle", "os_taa", 0.35, 0.1, 0.5), ("cox", "os_mae", 1.0, 0.5, 2.0)]
    )  # fmt: skip
    values = ev.split_taa_values(tidy)
    assert values["oracle-taa-split"] == "0.350"
    assert values["oracle-taa-rank"] == "tied highest"
    assert values["best-taa-split"].startswith("0.350 (Cox")
    tidy.loc[2, "estimate"] = 0.2
    assert ev.split_taa_values(tidy)["oracle-taa-rank"] == "below the best fitted model"


def test_constant_prediction_text_names_models_with_one_year():
    ids = [f"P{i}" for i in range(4)]
    years = np.arange(1, 13)
    constant = np.exp(-0.4 * years)[None, :].repeat(4, axis=0)
    modes = np.array([1, 3, 5, 8])  # 0.8 of the death mass in these years
    varied = np.where(years[None, :] < modes[:, None], 1.0, 0.2)
    frames = {
        "cox": frame_from_curves(ids, constant, None, None),
        "oracle": frame_from_curves(ids, varied, None, None),
    }
    text = ev.constant_prediction_text(frames)
    assert text.startswith("Cox PH (clinical): year ") and text.endswith(" for 4/4")
    assert "Oracle" not in text
    assert ev.constant_prediction_text({"oracle": frames["oracle"]}) == "none"


def test_prose_values_read_the_tables():
    tidy = _tidy([("cox", "os_ibs", 0.2, 0.18, 0.22), ("km_null", "os_ibs", 0.25, 0.2, 0.3)])
    differences = pd.DataFrame(
        [("acfnet", "cox", "os_c_harrell", 0.01, -0.02, 0.04)],
        columns=["model", "baseline", "metric", "estimate", "low", "high"],
    )
    calibration = pd.DataFrame(
        {"os_ici": [0.05], "os_cal_slope": [0.9], "dfs_ici": [0.07]}, index=["cox"]
    )
    holm = ev.holm_table(differences.assign(metric="os_c_harrell"), baseline="cox")
    values = ev.prose_values(tidy, differences, calibration, holm, "synthetic")
    assert values["cox-ibs-os"] == "0.200 (95% interval 0.180 to 0.220)"
    assert values["km-null-ibs-os"].startswith("0.250")
    assert values["acfnet-ibs-os"] == "not applicable"
    assert values["cox-ici-os"] == "0.05" and values["cox-slope-os"] == "0.90"
    assert values["acfnet-minus-cox-os"] == "+0.010 (95% interval -0.020 to +0.040)"
    assert values["holm-rejected"] == "0 of 1"
    assert values["cohort-title"] == "a synthetic stand-in cohort"


def _cv_rows(model, repeats, epochs, metrics):
    return [
        {"model": model, "metric": m, "estimate": v, "low": v - 0.05, "high": v + 0.05,
         "repeats": repeats, "epochs": epochs, "folds": 5}
        for m, v in metrics.items()
    ]  # fmt: skip


def test_cv_design_and_results_are_read_from_the_cv_table():
    good = {"os_ibs": 0.20, "os_c_harrell": 0.62, "dfs_c_harrell": 0.61, "os_auc_1y": 0.6,
            "os_auc_3y": 0.6, "os_auc_5y": 0.6}  # fmt: skip
    tidy = pd.DataFrame(
        _cv_rows("acfnet", 1, 8.0, {**good, "os_ibs": 0.26, "os_auc_5y": 0.505})
        + _cv_rows("acfnet-noanchor", 1, 8.0, {**good, "dfs_c_harrell": 0.45})
        + _cv_rows("acfnet@ct-permuted", 1, 8.0, {"os_c_harrell": 0.1})
        + _cv_rows("fong", 5, np.nan, {**good, "os_auc_1y": 0.48, "os_auc_3y": 0.47})
        + _cv_rows("cox", 5, np.nan, good)
        + _cv_rows("km_null", 5, np.nan, {"os_ibs": 0.24, "os_c_harrell": 0.5})
        + _cv_rows("oracle", 5, np.nan, {**good, "os_ibs": 0.15})
    )
    design = ev.cv_design_values(tidy)
    assert design["cv-design"] == (
        "5-fold cross-validation, repeated 5 times for the clinical models and once for the "
        "image models (at most 8 training epochs)"
    )
    assert design["cv-image-models"] == (
        "4D-ACFNet + Cox anchor and 4D-ACFNet, no Cox anchor (as published)"
    )
    assert design["cv-clinical-models"] == "Fong score and Cox PH (clinical)"  # no references
    assert "CT permuted" not in design["cv-image-models"]  # controls are not models
    assert "STAR + Cox anchor" in design["cv-split-only-models"]
    assert "4D-ACFNet" not in design["cv-split-only-models"]
    results = ev.cv_result_values(tidy)
    assert results["acfnet-auc5-os"].startswith("0.505 (95% interval")
    assert results["ibs-worst"] == "4D-ACFNet + Cox anchor (0.260)"
    assert results["ibs-not-below-null"] == "1 of 4: 4D-ACFNet + Cox anchor"
    assert results["auc-below-half"] == "Fong score (AUC 1 y 0.480, AUC 3 y 0.470)"
    assert results["c-below-half"] == "4D-ACFNet, no Cox anchor (as published) (DFS C 0.450)"
    one_epoch = tidy.assign(epochs=tidy["epochs"].where(tidy["epochs"].isna(), 1.0))
    assert ev.cv_design_values(one_epoch)["cv-design"].endswith("(at most 1 training epoch)")
    better = tidy.assign(estimate=np.where(tidy["metric"] == "os_ibs", 0.1, tidy["estimate"]))
    better.loc[better["model"] == "km_null", "estimate"] = 0.3
    assert ev.cv_result_values(better)["ibs-not-below-null"] == "none of 4"


def test_calibration_figure_words_follow_the_numbers():
    calib = pd.DataFrame(
        {"horizon_years": [1.0, 5.0, 5.0, 5.0], "group": [1, 1, 2, 3], "n": [10, 10, 10, 20],
         "predicted": [0.1, 0.2, 0.5, 0.9], "observed": [0.1, 0.1, 0.3, 0.2]}
    )  # fmt: skip
    values = ev.calibration_figure_values(calib)
    gap = (10 * 0.1 + 10 * 0.2 + 20 * 0.7) / 40
    assert values["calib-horizon"] == "5"
    assert (
        values["calib-gap"]
        == f"over-predicted the observed risk by {100 * gap:.0f} percentage points"
    )
    assert values["calib-order"].startswith("did not rise")
    calib["observed"] = [0.1, 0.3, 0.6, 0.95]
    values = ev.calibration_figure_values(calib)
    assert values["calib-gap"].startswith("under-predicted")
    assert values["calib-order"].startswith("rose")


def test_split_extremes_objectives_and_calibration_targets():
    tidy = _tidy(
        [("stg", "os_taa", 0.35, 0, 1), ("stg", "os_c_harrell", 0.417, 0, 1),
         ("resnet50_3d", "os_taa", 0.6, 0, 1), ("resnet50_3d", "os_c_harrell", 0.73, 0, 1),
         ("oracle", "os_taa", 0.9, 0, 1), ("oracle", "os_c_harrell", 0.374, 0, 1),
         ("acfnet", "os_taa", 0.608, 0, 1), ("acfnet", "os_mae", 1.43, 0, 1),
         ("acfnet-censored", "os_taa", 0.265, 0, 1), ("acfnet-censored", "os_mae", 6.54, 0, 1)]
    )  # fmt: skip
    values = ev.split_extreme_values(tidy)
    assert (
        values["comparison-worst-taa"]
        == "4D-ACFNet + Cox anchor (censoring-aware objective) (0.265)"
    )
    assert values["comparison-worst-c"] == "STG (0.417)"
    assert values["comparison-best-c"] == "3D ResNet-50 (0.730)"
    assert values["comparison-oracle-c"] == "0.374"
    ids = [f"P{i}" for i in range(4)]
    late = np.where(np.arange(1, 13)[None, :] < 12, 1.0, 0.01).repeat(4, axis=0)
    preds = {"acfnet": frame_from_curves(ids, late, None, None),
             "acfnet-censored": frame_from_curves(ids, late, None, None)}  # fmt: skip
    obj = ev.objective_values(tidy, preds)
    assert obj["objective-taa"] == (
        "0.608 with the papers' cross-entropy and 0.265 with the censoring-aware likelihood"
    )
    assert obj["objective-modal-year"] == "year 12 for 4 of 4 test patients"
    assert ev.objective_values(tidy, {"acfnet": preds["acfnet"]})["objective-taa"] == (
        "not applicable"
    )
    table = pd.DataFrame(
        {"low": [0.1, 0.2, np.nan, 0.3], "high": [0.3, 0.4, np.nan, 0.5],
         "within": [True, False, False, False]}
    )  # fmt: skip
    assert ev.calibration_target_values(table) == {"synthetic-targets-missed": "2 of 3"}


def test_point_ties_and_decision_values_follow_the_tables():
    point = pd.DataFrame(
        {"os_taa": [0.3, 0.5, 0.1, 0.4, 0.9]},
        index=["fong", "cox", "acfnet@ct-permuted", "constant", "oracle"],
    )
    assert ev.point_metric_values(point) == {
        "constant-taa": "0.400",
        "taa-not-above-constant": "1 of 2: Fong score",
    }
    point.loc["fong", "os_taa"] = 0.45
    assert ev.point_metric_values(point)["taa-not-above-constant"] == "none of 2"
    ties = pd.DataFrame(
        {"os_c_uno_months_g_t": [0.60, 0.70], "os_c_uno_months_g_t_minus": [0.61, 0.70],
         "dfs_c_uno_months_g_t": [0.5, 0.5], "dfs_c_uno_months_g_t_minus": [0.5, 0.53]},
        index=["cox", "fong"],
    )  # fmt: skip
    assert ev.tie_values(ties) == {"ties-max-shift": "0.0300"}
    thresholds = [0.1, 0.2, 0.3]
    rows = [("all", [0.3, 0.1, -0.1]), ("none", [0.0, 0.0, 0.0]),
            ("cox", [0.2, 0.15, 0.05]), ("fong", [0.3, 0.1, -0.1])]  # fmt: skip
    dca = pd.DataFrame(
        [{"model": m, "threshold": t, "net_benefit": v}
         for m, vals in rows for t, v in zip(thresholds, vals, strict=True)]
    )  # fmt: skip
    assert ev.decision_values(dca) == {
        "dca-useful": "Cox PH (clinical) 20–30% (2 of 3 thresholds); Fong score at no threshold"
    }
