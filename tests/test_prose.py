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
