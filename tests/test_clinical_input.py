"""Tests of crlm_lib.clinical_input: template, unknown columns, row matching, refusal of missing
predictors and the imputation draws of --allow-missing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crlm_lib import clinical_input as CI
from crlm_lib.data import clinical as C


def _training_rows(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(index=pd.Index([f"P{i}" for i in range(n)], name=C.ID_COLUMN))
    for col in C.PREDICTORS:
        if col in C.BINARY_COLUMNS:
            df[col] = (rng.random(n) < 0.3).astype(float)
        elif col == "sex":
            df[col] = np.where(rng.random(n) < 0.4, 2.0, 1.0)
        else:
            df[col] = rng.gamma(2.0, 10.0, n)
    df.loc[df.index[: n // 4], "mucin_percent"] = np.nan  # 25% missing in training
    df["NASH_score"] = np.nan  # never observed in training
    return df


def test_every_predictor_has_a_unit_and_coding():
    assert set(C.PREDICTOR_CODING) == set(C.PREDICTORS)
    assert C.predictor_coding("sex") == "sex (1 = male, 2 = female)"
    assert C.predictor_coding("carcinoembryonic_antigen") == "carcinoembryonic_antigen (ng/mL)"
    assert C.predictor_coding("mucin_percent") == "mucin_percent (percent, 0-100)"


def test_template_round_trip(tmp_path):
    path = CI.write_template(tmp_path / "t.csv", ["age", "sex"], ["CRLM-NEW-1", "CRLM-NEW-2"])
    raw = pd.read_csv(path, dtype=str)
    assert list(raw.columns) == ["Patient-ID", "age", "sex"]
    assert raw.iloc[0].tolist() == [CI.CODING_ROW_ID, "years: age at liver resection",
                                    "code: 1 = male, 2 = female"]  # fmt: skip
    raw.loc[1, ["age", "sex"]] = ["61", "2"]
    raw.to_csv(path, index=False)
    table = CI.read_patient_clinical(path)  # the coding row is skipped
    assert list(table.index) == ["CRLM-NEW-1", "CRLM-NEW-2"]
    assert table.loc["CRLM-NEW-1", "age"] == 61 and table.loc["CRLM-NEW-1", "sex"] == 2
    assert table.loc["CRLM-NEW-2"].isna().all()


def test_unknown_columns_are_refused_with_close_matches(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"Patient-ID": ["X"], "Age": [60], "BMI": [25], "sexe": [1]}).to_csv(
        path, index=False
    )
    with pytest.raises(C.ClinicalTableError) as err:
        CI.read_patient_clinical(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text
    assert "'BMI' (did you mean 'body_mass_index'?)" in text
    assert "'sexe' (did you mean 'sex'?)" in text and "'Age'" not in text  # case-insensitive
    assert "accepted: Patient-ID, age, sex," in text


def test_rows_match_by_patient_id_then_folder_name():
    table = pd.DataFrame({"age": [50.0, 70.0]}, index=pd.Index(["ID-1", "folder-b"]))
    row, how = CI.match_rows(table, "ID-1", "folder-a")
    assert how == "DICOM PatientID" and row["age"].iloc[0] == 50
    row, how = CI.match_rows(table, "ID-2", "folder-b")
    assert how == "folder name" and row.index[0] == "ID-2" and row["age"].iloc[0] == 70
    assert CI.match_rows(table, "ID-3", "folder-c") == (None, "none")
    assert CI.match_rows(None, "ID-1", "x") == (None, "none")


def test_missing_predictors_are_refused_in_one_line_with_their_coding():
    enc = C.ClinicalEncoder.fit(_training_rows())
    assert "NASH_score" not in enc.required_columns  # never observed in training
    row = pd.DataFrame({"age": [60.0], "sex": [np.nan]}, index=pd.Index(["P-NEW"]))
    missing = CI.missing_predictors(enc, row)
    assert "sex" in missing and "age" not in missing and "NASH_score" not in missing
    with pytest.raises(CI.MissingPredictorError) as err:
        CI.refuse_missing({"P-NEW": missing, "P-2": ["age"], "P-3": []}, "new.csv")
    text = str(err.value)
    assert text.startswith(f"P-NEW: {len(missing)} clinical predictor(s) missing in new.csv:")
    assert "sex (1 = male, 2 = female)" in text and "1 other patient(s) too (P-2)" in text
    assert "--allow-missing" in text and "\n" not in text
    CI.refuse_missing({"P-3": []}, None)  # nothing missing: no error


def test_imputation_draws_follow_the_training_distribution():
    train = _training_rows()
    enc = C.ClinicalEncoder.fit(train)
    row = train.iloc[[0]].copy()
    row.index = pd.Index(["P-NEW"])
    row[["sex", "max_tumor_size", "bilobar_disease", "mucin_percent"]] = np.nan
    draws = CI.imputation_draws(enc, row, "P-NEW", n_draws=4000, seed=1)
    assert len(draws) == 4000 and set(draws.index) == {"P-NEW"}
    assert (draws["age"] == row["age"].iloc[0]).all()  # observed values kept
    assert abs((draws["sex"] == 2).mean() - (train["sex"] == 2).mean()) < 0.03
    assert set(draws["sex"].unique()) == {1.0, 2.0}
    assert abs(draws["bilobar_disease"].mean() - train["bilobar_disease"].mean()) < 0.03
    assert abs(draws["max_tumor_size"].median() - train["max_tumor_size"].median()) < 2.0
    assert abs(draws["mucin_percent"].isna().mean() - 0.25) < 0.03  # missing as in training
    again = CI.imputation_draws(enc, row, "P-NEW", n_draws=4000, seed=1)
    pd.testing.assert_frame_equal(draws, again)  # deterministic
    complete = train.iloc[[-1]]
    assert len(CI.imputation_draws(enc, complete, "P199", n_draws=32)) == 1
    assert len(CI.imputation_draws(enc, None, "P-X", n_draws=8)) == 8


def test_encoder_without_stored_distribution_still_draws():
    """Encoders stored before the quantiles were: a normal draw on the encoded scale."""
    enc = C.ClinicalEncoder.fit(_training_rows())
    old = C.ClinicalEncoder.from_dict(
        {
            "columns": [
                {k: v for k, v in c.items() if k not in ("missing_rate", "quantiles")}
                for c in enc.to_dict()["columns"]
            ]
        }  # fmt: skip
    )
    assert old.columns[0].quantiles is None and old.required_columns == list(C.PREDICTORS)
    draws = CI.imputation_draws(old, None, "P", n_draws=500, seed=0)
    lo, hi = C.RANGES["age"]
    assert draws["age"].between(lo, hi).all() and draws["age"].std() > 0
    x, _ = old.transform(draws)
    assert np.isfinite(x).all()


def test_a_bad_code_names_the_expected_coding(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("Patient-ID,sex,bilobar_disease\nX1,F,2\n")
    with pytest.raises(C.ClinicalTableError) as err:
        CI.read_patient_clinical(path)
    text = str(err.value)
    assert "X1: column 'sex' has non-numeric value 'F' (expected: 1 = male, 2 = female)" in text
    assert "column 'bilobar_disease' = 2 is not 0/1 (expected: 0 = no, 1 = yes)" in text
