"""Tests of crlm_lib.models.clinical: anchors give valid Predictions frames, the oracle is the
ceiling, Fong agreement and the pmf rule."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index

from crlm_lib import metrics as M
from crlm_lib.config import N_YEARS
from crlm_lib.data.clinical import PREDICTORS
from crlm_lib.models.clinical import (
    BEYOND_COL,
    REC_COLS,
    SURV_COLS,
    CoxPH,
    FongScore,
    Oracle,
    RandomSurvivalForest,
    fong_agreement,
    frame_from_curves,
    pmf_from_survival,
)

YEARS = np.arange(1, N_YEARS + 1)


def simulate(n: int, seed: int = 0, n_features: int = 4):
    """Exponential OS/DFS with a known linear hazard; uniform censoring. Returns
    (X [n, F], score [n], outcomes DataFrame, oracle DataFrame, ids)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_features))
    beta = np.array([0.9, -0.6, 0.4, 0.0][:n_features])
    lp = x @ beta
    lam_os, lam_dfs = 0.15 * np.exp(lp), 0.35 * np.exp(lp)
    t_os, t_dfs = rng.exponential(1 / lam_os), rng.exponential(1 / lam_dfs)
    t_dfs = np.minimum(t_dfs, t_os)
    cens = rng.uniform(1.0, 10.0, n)
    ids = [f"P{i:04d}" for i in range(n)]
    outcomes = pd.DataFrame(
        {
            "os_years": np.minimum(t_os, cens),
            "os_event": (t_os <= cens).astype(int),
            "dfs_years": np.minimum(t_dfs, cens),
            "dfs_event": (t_dfs <= cens).astype(int),
        },
        index=ids,
    )
    oracle = pd.DataFrame({"Patient-ID": ids, "os_risk": lp, "dfs_risk": lp})
    for k in YEARS:
        oracle[f"os_surv_y{k}"] = np.exp(-lam_os * k)
        oracle[f"dfs_surv_y{k}"] = np.exp(-lam_dfs * k)
    score = np.clip(np.digitize(lp, np.quantile(lp, [0.2, 0.4, 0.6, 0.8, 0.95])), 0, 5)
    return x, score.astype(float), outcomes, oracle, ids


def assert_valid_frame(frame: pd.DataFrame, n: int) -> None:
    assert len(frame) == n
    p = frame[SURV_COLS].to_numpy()
    q = frame[REC_COLS].to_numpy()
    assert np.all(p >= -1e-12)
    # the 12 bins plus the explicit beyond-year-12 mass make a distribution
    np.testing.assert_allclose(p.sum(axis=1) + frame[BEYOND_COL], 1.0)
    assert np.all((q >= 0) & (q <= 1)) and np.all(np.diff(q, axis=1) >= -1e-12)
    assert {"patient_id", "os_years", "os_event", "dfs_years", "dfs_event"} <= set(frame.columns)


def test_pmf_from_survival_rule():
    s = np.array([[0.9, 0.7, 0.7, 0.5] + [0.5] * 7 + [0.4]])
    p = pmf_from_survival(s)
    assert p[0, 0] == pytest.approx(0.1) and p[0, 1] == pytest.approx(0.2)
    assert p[0, 3] == pytest.approx(0.2)
    assert p[0, -1] == pytest.approx(0.1)  # last year's deaths only
    assert p.sum() == pytest.approx(1.0 - 0.4)  # S(12) stays out of the bins
    assert M.predicted_years(p).tolist() == [1.0]  # not "year 12" because S(12) = 0.4
    frame = frame_from_curves(["a"], s, None, None)
    assert frame[BEYOND_COL].iloc[0] == pytest.approx(0.4)
    # a non-monotone input is made monotone, never a negative probability
    assert (pmf_from_survival(np.array([[0.5, 0.8] + [0.2] * 10])) >= 0).all()


@pytest.mark.parametrize("anchor", ["fong", "cox", "rsf"])
def test_anchor_frames_are_valid(anchor):
    x, score, out, _, ids = simulate(120, seed=1)
    tr, te = slice(0, 90), slice(90, 120)
    if anchor == "fong":
        model, xtr, xte = FongScore(), score[tr], score[te]
    elif anchor == "cox":
        model, xtr, xte = CoxPH(), x[tr], x[te]
    else:
        model, xtr, xte = RandomSurvivalForest(n_estimators=30), x[tr], x[te]
    model.fit_outcomes(xtr, out.iloc[tr])
    frame = model.predict_frame(xte, ids[te], out)
    assert_valid_frame(frame, 30)
    np.testing.assert_allclose(frame["os_years"], out["os_years"].iloc[te])
    # both heads exist and differ (DFS fitted separately): recurrence risk >= death risk here
    death_by_3 = frame[SURV_COLS[:3]].sum(axis=1)
    assert (frame["rec_p3"] >= death_by_3 - 0.05).mean() > 0.9


def test_anchor_requires_fit():
    with pytest.raises(ValueError, match="fit"):
        CoxPH().predict_frame(np.zeros((2, 3)), ["a", "b"], None)


def test_fong_pools_small_strata_and_handles_missing():
    _, score, out, _, ids = simulate(60, seed=2)
    score = np.minimum(score, 4.0)
    score[:3] = 5.0  # only 3 patients with score 5 -> pooled with neighbours
    score[3] = np.nan
    model = FongScore(min_group=5).fit_outcomes(score, out)
    assert model.pooling[5] == [4, 5]
    frame = model.predict_frame(score, ids, out)
    assert_valid_frame(frame, 60)
    assert np.isfinite(frame["native_risk"]).all()


def test_fong_c_index_uses_the_score_itself():
    """The Fong row ranks patients by the score, not by its KM curves (which need not be
    monotone in the score on a small sample)."""
    _, score, out, _, ids = simulate(150, seed=4)
    model = FongScore().fit_outcomes(score, out)
    frame = model.predict_frame(score, ids, out)
    np.testing.assert_array_equal(frame["native_risk"], score)
    got = M.all_metrics(frame, out, heads=("os",))["os_c_harrell"]
    t, e = out["os_years"].to_numpy(), out["os_event"].to_numpy()
    assert got == pytest.approx(concordance_index(t, -score, e))


def test_oracle_is_ceiling_on_large_cohort():
    """On a large clinical-only simulated cohort the true curves rank patients at least as well
    as every fitted anchor (Harrell's and Uno's C as the tables compute them: each anchor's own
    risk score, the oracle's true risk; tolerance 0.01)."""
    x, score, out, oracle_table, ids = simulate(1200, seed=3)
    tr, te = slice(0, 600), slice(600, 1200)
    frames = {"oracle": Oracle(oracle_table).predict_frame(None, ids[te], out)}
    frames["fong"] = (
        FongScore().fit_outcomes(score[tr], out.iloc[tr]).predict_frame(score[te], ids[te], out)
    )
    frames["cox"] = CoxPH().fit_outcomes(x[tr], out.iloc[tr]).predict_frame(x[te], ids[te], out)
    frames["rsf"] = (
        RandomSurvivalForest(n_estimators=50)
        .fit_outcomes(x[tr], out.iloc[tr])
        .predict_frame(x[te], ids[te], out)
    )
    scores = {k: M.all_metrics(f, out.iloc[tr], heads=("os",)) for k, f in frames.items()}
    c = {k: m["os_c_harrell"] for k, m in scores.items()}
    for k in ("fong", "cox", "rsf"):
        assert c["oracle"] >= c[k] - 0.01, c
        assert scores["oracle"]["os_c_uno"] >= scores[k]["os_c_uno"] - 0.01, scores
    assert c["oracle"] > c["fong"]  # a 6-level score loses information
    assert c["oracle"] > 0.65


def test_oracle_missing_patient_and_file():
    _, _, out, table, ids = simulate(5)
    with pytest.raises(ValueError, match="NOPE"):
        Oracle(table).predict_frame(None, ["NOPE"], out)
    with pytest.raises(FileNotFoundError):
        Oracle("/nonexistent/oracle.csv")


def _clinical_table(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(index=[f"P{i}" for i in range(n)])
    df["node_positive_primary"] = rng.integers(0, 2, n).astype(float)
    df["synchronous_crlm"] = rng.integers(0, 2, n).astype(float)
    df["multiple_metastases"] = rng.integers(0, 2, n).astype(float)
    df["carcinoembryonic_antigen"] = rng.choice([5.0, 50.0, 300.0], n)
    df["max_tumor_size"] = rng.choice([2.0, 4.0, 7.0], n)
    return df


def test_fong_agreement_perfect_when_score_is_criteria_sum():
    from crlm_lib.data.clinical import fong_score

    df = _clinical_table(40)
    df["clinrisk_score"] = fong_score(df)
    df.iloc[0, df.columns.get_loc("max_tumor_size")] = np.nan  # one missing criterion
    res = fong_agreement(df)
    assert res["agreement_pct"] == 100.0
    assert res["kappa"] == pytest.approx(1.0)
    assert res["n_missing"] == 1 and res["n"] == 39


def test_fong_agreement_detects_disagreement():
    from crlm_lib.data.clinical import fong_score

    df = _clinical_table(40, seed=1)
    df["clinrisk_score"] = fong_score(df)
    df.iloc[:10, df.columns.get_loc("clinrisk_score")] = (df["clinrisk_score"].iloc[:10] + 1).clip(
        upper=5
    )
    res = fong_agreement(df)
    assert res["agreement_pct"] < 100.0 and res["kappa"] < 1.0


def test_predictor_list_is_available():
    # the anchors rely on encode_predictors' default predictor list including the Fong score
    assert "clinrisk_score" in PREDICTORS
