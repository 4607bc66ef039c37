"""Tests of crlm_lib.data.clinical.ClinicalEncoder: the run-stored clinical encoding."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crlm_lib.data.clinical import (
    OUTCOME_COLUMNS,
    ClinicalEncoder,
    ClinicalTableError,
    encode_predictors,
    validate_clinical,
)
from crlm_lib.data.synthetic import simulate_cohort


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    df = validate_clinical(simulate_cohort(40, seed=5).clinical)
    df.iloc[3, df.columns.get_loc("age")] = np.nan  # make sure an indicator column exists
    return df


def test_fitted_encoder_equals_encode_predictors(table):
    train, test = table.iloc[:30], table.iloc[30:]
    enc = ClinicalEncoder.fit(train)
    for rows in (train, test):
        x_ref, names_ref = encode_predictors(rows, reference=train)
        x, names = enc.transform(rows)
        assert names == names_ref
        np.testing.assert_allclose(x, x_ref, rtol=1e-6, atol=1e-6)
    assert "age_missing" in enc.feature_names


def test_encoder_survives_json_and_needs_no_training_rows(table):
    train, test = table.iloc[:30], table.iloc[30:]
    enc = ClinicalEncoder.fit(train)
    back = ClinicalEncoder.from_dict(json.loads(json.dumps(enc.to_dict())))
    np.testing.assert_array_equal(back.transform(test)[0], enc.transform(test)[0])
    # a lone new patient, no outcome columns at all: statistics still come from training
    row = test.iloc[[0]].drop(columns=list(OUTCOME_COLUMNS))
    x_alone, _ = back.transform(row)
    np.testing.assert_allclose(x_alone, enc.transform(test.iloc[[0]])[0], atol=1e-6)
    # standardising a lone row with its own statistics would give exactly 0
    assert x_alone[0, enc.feature_names.index("age")] != 0.0


def test_missing_predictors_are_filled_as_in_training(table):
    train = table.iloc[:30]
    enc = ClinicalEncoder.fit(train)
    names = enc.feature_names
    row = pd.DataFrame({"age": [np.nan], "sex": [2.0]}, index=pd.Index(["NEW-1"]))
    x, _ = enc.transform(row)
    assert x[0, names.index("age")] == 0.0  # the training mean, standardised
    assert x[0, names.index("age_missing")] == 1.0
    assert x[0, names.index("sex_female")] == 1.0
    prevalence = train["node_positive_primary"].mean()
    assert x[0, names.index("node_positive_primary")] == pytest.approx(prevalence, abs=1e-6)
    missing = enc.missing_predictors(row)["NEW-1"]
    assert "age" in missing and "node_positive_primary" in missing and "sex" not in missing
    base = enc.baseline()
    assert base.shape == (len(names),) and base[names.index("age_missing")] == 0.0


def test_malformed_encoder_record_is_refused():
    with pytest.raises(ClinicalTableError, match="malformed"):
        ClinicalEncoder.from_dict({"columns": [{"column": "age"}]})
    with pytest.raises(ClinicalTableError, match="refused"):
        ClinicalEncoder.fit(pd.DataFrame({"vital_status": [0, 1]}), columns=["vital_status"])
