"""Tests of crlm_lib.data.clinical: schema validation, outcomes, encoding, Fong score."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crlm_lib.data.clinical import (
    COLUMNS,
    PREDICTORS,
    ClinicalTableError,
    encode_predictors,
    fong_criteria,
    fong_score,
    load_clinical,
    outcomes,
    table_one,
)
from crlm_lib.data.synthetic import simulate_cohort


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return simulate_cohort(40, seed=3).clinical


def _write(df: pd.DataFrame, tmp_path) -> str:
    path = tmp_path / "clinical.csv"
    df.to_csv(path, index=False)
    return str(path)


def test_load_valid_table_index_and_missing(raw, tmp_path):
    df = load_clinical(_write(raw, tmp_path))
    assert df.index.name == "Patient-ID"
    assert df.index[0] == "CRLM-CT-1001"
    assert list(df.columns) == [c for c in COLUMNS if c != "Patient-ID"]
    assert not (df.select_dtypes("number") == -999).any().any()
    assert (
        df["carcinoembryonic_antigen"].isna().sum()
        == (raw["carcinoembryonic_antigen"] == -999).sum()
    )


def test_column_names_case_and_space_insensitive(raw, tmp_path):
    messy = raw.rename(
        columns={"age": " AGE ", "Patient-ID": "patient-id", "NASH_score": "nash_SCORE"}
    )
    df = load_clinical(_write(messy, tmp_path))
    assert "age" in df.columns and "NASH_score" in df.columns and df.index.name == "Patient-ID"


def test_missing_column_raises(raw, tmp_path):
    with pytest.raises(ClinicalTableError, match="missing column 'bilobar_disease'"):
        load_clinical(_write(raw.drop(columns=["bilobar_disease"]), tmp_path))


def test_all_problems_listed_with_patient_and_column(raw, tmp_path):
    bad = raw.copy()
    bad.loc[1, "Patient-ID"] = bad.loc[0, "Patient-ID"]
    bad.loc[2, "overall_survival_months"] = -3.0
    bad.loc[3, "sex"] = 3
    bad.loc[4, "clinrisk_score"] = 7
    bad.loc[5, "bilobar_disease"] = 2
    bad.loc[6, "necrosis_percent"] = 140
    bad.loc[7, "vital_status"] = -999
    with pytest.raises(ClinicalTableError) as err:
        load_clinical(_write(bad, tmp_path))
    msg = str(err.value)
    assert "CRLM-CT-1001: duplicate Patient-ID" in msg
    assert "CRLM-CT-1003: column 'overall_survival_months' = -3 negative follow-up" in msg
    assert "CRLM-CT-1004: column 'sex' = 3" in msg
    assert "CRLM-CT-1005: column 'clinrisk_score' = 7" in msg
    assert "CRLM-CT-1006: column 'bilobar_disease' = 2 is not 0/1" in msg
    assert "CRLM-CT-1007: column 'necrosis_percent' = 140" in msg
    assert "CRLM-CT-1008: column 'vital_status' (outcome) is missing" in msg
    assert "7 problem(s)" in msg


def test_missing_in_predictor_is_nan_but_missing_outcome_is_error(raw, tmp_path):
    ok = raw.copy()
    ok.loc[0, "age"] = -999
    df = load_clinical(_write(ok, tmp_path))
    assert np.isnan(df.loc["CRLM-CT-1001", "age"])
    bad = raw.copy()
    bad.loc[0, "months_to_DFS_progression"] = -999
    with pytest.raises(
        ClinicalTableError, match="CRLM-CT-1001: column 'months_to_DFS_progression'"
    ):
        load_clinical(_write(bad, tmp_path))
    # an explicitly optional outcome becomes NaN, and outcomes() still refuses it
    df = load_clinical(_write(bad, tmp_path), optional_outcomes=["months_to_DFS_progression"])
    with pytest.raises(ClinicalTableError, match="CRLM-CT-1001"):
        outcomes(df)


def test_outcomes_in_years(raw, tmp_path):
    df = load_clinical(_write(raw, tmp_path))
    y = outcomes(df)
    assert list(y.columns) == [
        "os_years",
        "os_event",
        "dfs_years",
        "dfs_event",
        "liver_dfs_years",
        "liver_dfs_event",
    ]
    np.testing.assert_allclose(y["os_years"], df["overall_survival_months"] / 12)
    assert set(y["os_event"].unique()) <= {0, 1}
    assert (y["dfs_years"] <= y["os_years"] + 1e-9).all()


def test_encode_predictors_standardisation_and_indicators(raw, tmp_path):
    df = load_clinical(_write(raw, tmp_path))
    train, test = df.iloc[:30], df.iloc[30:]
    x, names = encode_predictors(train, reference=train)
    assert x.dtype == np.float32 and x.shape == (30, len(names))
    assert "sex_female" in names and "overall_survival_months" not in names
    j = names.index("age")
    assert abs(x[:, j].mean()) < 1e-5 and abs(x[:, j].std() - 1) < 1e-4
    j = names.index("carcinoembryonic_antigen")
    cea = np.log1p(train["carcinoembryonic_antigen"])
    ok = cea.notna().to_numpy()
    np.testing.assert_allclose(x[ok, j], ((cea - cea.mean()) / cea.std(ddof=0))[ok], rtol=1e-4)
    for col in ("total_response_percent", "carcinoembryonic_antigen"):
        if train[col].isna().any():
            k = names.index(f"{col}_missing")
            np.testing.assert_array_equal(x[:, k], train[col].isna().to_numpy().astype(float))
            assert np.all(x[train[col].isna().to_numpy(), names.index(col)] == 0)
    # test rows use the training statistics and get the same columns
    xt, names_t = encode_predictors(test, reference=train)
    assert names_t == names and xt.shape == (len(test), len(names))
    mu, sd = train["age"].mean(), train["age"].std(ddof=0)
    np.testing.assert_allclose(xt[:, names.index("age")], (test["age"] - mu) / sd, rtol=1e-4)
    x2, n2 = encode_predictors(train, exclude=["clinrisk_score"])
    dropped = 1 + ("clinrisk_score_missing" in names)  # the value and its missing-indicator
    assert "clinrisk_score" not in n2 and x2.shape[1] == x.shape[1] - dropped
    with pytest.raises(ClinicalTableError):
        encode_predictors(train, columns=["vital_status"])
    assert "clinrisk_score" in PREDICTORS


def test_fong_score_matches_clinrisk_score(raw, tmp_path):
    df = load_clinical(_write(raw, tmp_path))
    score = fong_score(df)
    known = df["clinrisk_score"].notna()
    assert known.sum() > 20
    np.testing.assert_array_equal(score[known], df.loc[known, "clinrisk_score"])
    assert score[df["carcinoembryonic_antigen"].isna()].isna().all()
    crit = fong_criteria(df)
    assert crit.shape[1] == 5


def test_fong_criteria_thresholds():
    df = pd.DataFrame(
        {
            "node_positive_primary": [1, 0],
            "synchronous_crlm": [1, 0],
            "multiple_metastases": [1, 0],
            "carcinoembryonic_antigen": [200.1, 200.0],
            "max_tumor_size": [5.1, 5.0],
        }
    )
    assert fong_score(df).tolist() == [5.0, 0.0]


def test_table_one(raw, tmp_path):
    t = table_one(load_clinical(_write(raw, tmp_path)))
    assert "Median follow-up, years (reverse KM)" in t["variable"].tolist()
    assert t.loc[t["variable"] == "Patients", "value"].item() == "40"
