"""crlm_lib.types: the Predictions and Cohort types."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from crlm_lib import metrics as M
from crlm_lib import pipeline
from crlm_lib.config import N_YEARS
from crlm_lib.evaluation import as_cohort
from crlm_lib.models.clinical import frame_from_curves
from crlm_lib.types import (
    PATIENT_ID,
    REC_COLS,
    SURV_COLS,
    Cohort,
    Predictions,
    PredictionsError,
)


def _frame(n: int = 6, seed: int = 0, outcomes: bool = True) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pmf = rng.dirichlet(np.ones(N_YEARS), size=n)
    rec = np.sort(rng.uniform(size=(n, N_YEARS)), axis=1)
    df = pd.DataFrame({PATIENT_ID: [f"P{i:03d}" for i in range(n)]})
    df[SURV_COLS] = pmf
    df[REC_COLS] = rec
    if outcomes:
        df["os_years"] = rng.uniform(0.2, 10, n)
        df["os_event"] = rng.integers(0, 2, n)
        df["dfs_years"] = df["os_years"] * 0.5
        df["dfs_event"] = rng.integers(0, 2, n)
    return df


def test_round_trip_is_exact_through_csv():
    df = _frame()
    df["native_risk"] = np.arange(len(df), dtype=float)
    back = Predictions.from_frame(df).to_frame()
    pd.testing.assert_frame_equal(back, df)
    a, b = io.StringIO(), io.StringIO()
    df.to_csv(a, index=False)
    back.to_csv(b, index=False)
    assert a.getvalue() == b.getvalue()


@pytest.mark.parametrize("missing", [PATIENT_ID, "surv_p7", "rec_p12"])
def test_missing_column_is_named(missing):
    with pytest.raises(PredictionsError, match=missing):
        Predictions.from_frame(_frame().drop(columns=[missing]))


def test_outcomes_required_when_asked():
    Predictions.from_frame(_frame(outcomes=False))
    with pytest.raises(PredictionsError, match="os_years"):
        Predictions.from_frame(_frame(outcomes=False), require_outcomes=True)


def test_out_of_range_probability_names_column_and_patient():
    df = _frame()
    df.loc[2, "rec_p4"] = 1.7
    with pytest.raises(PredictionsError, match=r"rec_p4.*P002"):
        Predictions.from_frame(df)


def test_curves_and_scores_match_metrics_exactly():
    df = _frame()
    p = Predictions.from_frame(df)
    pmf, rec = df[SURV_COLS].to_numpy(float), df[REC_COLS].to_numpy(float)
    np.testing.assert_array_equal(p.curve("os"), M.survival_curve(pmf))
    np.testing.assert_array_equal(p.curve("dfs"), M.recurrence_free_curve(rec))
    np.testing.assert_array_equal(p.ranking_score("os"), p.risk("os", 5))
    np.testing.assert_array_equal(p.ranking_score("os", "mixed"), M.risk_from_survival(pmf))
    np.testing.assert_array_equal(p.ranking_score("dfs"), M.risk_from_recurrence(rec))
    np.testing.assert_array_equal(p.ranking_score("dfs", "mixed"), M.risk_from_recurrence(rec))
    np.testing.assert_array_equal(p.risk("dfs", 3), M.risk_from_recurrence(rec, 3))
    np.testing.assert_array_equal(p.expected_years("os"), -M.risk_from_survival(pmf))
    np.testing.assert_array_equal(
        p.mean_recurrence_probability(), M.risk_from_recurrence(rec, None)
    )


def test_risk_is_one_minus_curve_at_horizon():
    p = Predictions.from_frame(_frame())
    for head in ("os", "dfs"):
        for h in (1, 3, 5, 12):
            np.testing.assert_allclose(p.risk(head, h), 1.0 - p.curve(head)[:, h - 1], atol=1e-12)
    with pytest.raises(PredictionsError, match="horizon"):
        p.risk("os", 13)
    with pytest.raises(PredictionsError, match="head"):
        p.curve("pfs")


def test_one_risk_score_for_every_model_native_risk_only_when_mixed():
    df = _frame()
    df["native_risk"] = np.linspace(0, 1, len(df))
    p = Predictions.from_frame(df)
    # the default ranks by the 5-year risk of death whatever the frame carries
    np.testing.assert_allclose(p.ranking_score("os"), 1.0 - p.curve("os")[:, 4], atol=1e-12)
    np.testing.assert_array_equal(p.ranking_score("os", "mixed"), df["native_risk"])
    df.loc[0, "native_risk"] = np.nan  # not finite: minus the restricted mean instead
    np.testing.assert_array_equal(
        Predictions.from_frame(df).ranking_score("os", "mixed"),
        M.risk_from_survival(df[SURV_COLS].to_numpy(float)),
    )
    with pytest.raises(PredictionsError, match="score"):
        p.ranking_score("os", "native")


def test_anchor_frame_is_valid_predictions_with_beyond_mass():
    s = np.tile(np.linspace(0.95, 0.4, N_YEARS), (3, 1))
    p = Predictions.from_frame(frame_from_curves(["a", "b", "c"], s, None, None))
    # expected years count the 40% still alive after year 12 at 12 years
    assert p.expected_years("os")[0] > 0.4 * N_YEARS
    np.testing.assert_allclose(p.curve("os"), s)


def test_cohort_is_study_and_passes_through_as_cohort():
    assert pipeline.Study is Cohort
    df = _frame()
    clinical = pd.DataFrame(index=pd.Index(df[PATIENT_ID], name="Patient-ID"))
    out = df.set_index(PATIENT_ID)[["os_years", "os_event", "dfs_years", "dfs_event"]]
    cohort = Cohort(clinical, out, list(df[PATIENT_ID]))
    assert as_cohort(cohort) is cohort
    assert cohort.label == "real" and not cohort.synthetic
    with pytest.raises(TypeError, match="Cohort or a config.Paths"):
        as_cohort("data/raw")
