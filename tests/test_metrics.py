"""Tests of crlm_lib.metrics: hand cases and agreement with lifelines / scikit-survival."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from lifelines.utils import concordance_index
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score
from sksurv.util import Surv

from crlm_lib import metrics as M
from crlm_lib.evaluation import bootstrap as B


def _exponential_cohort(seed, n, scale, beta, censor_high, tie_step=None):
    """Exponential event times with hazard exp(beta x)/scale, uniform(0.5, censor_high)
    censoring, optionally rounded to ``tie_step`` years (ties), and a pmf over 12 yearly bins
    from a noisy version of the true model (rows sum to 1 - S(12) plus, for ``tie_step=None``,
    the survivors' mass in the last bin)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(scale * np.exp(-beta * x))
    t_cens = rng.uniform(0.5, censor_high, size=n)
    time = np.minimum(t_event, t_cens)
    if tie_step is not None:
        time = np.maximum(np.round(time / tie_step) * tie_step, tie_step)
    event = (t_event <= t_cens).astype(int)
    rate = np.exp(beta * (x + rng.normal(scale=0.5, size=n))) / scale
    cdf = 1 - np.exp(-rate[:, None] * np.arange(13.0)[None, :])
    p = np.diff(cdf, axis=1)
    if tie_step is None:
        p[:, -1] += 1 - cdf[:, -1]
    return time, event, p


@pytest.fixture
def censored_cohort():
    """Exponential times with independent censoring (~35 % censored), continuous (no ties)."""
    return _exponential_cohort(7, 120, scale=3.0, beta=0.8, censor_high=9.0)


@pytest.fixture
def tied_censored_cohort():
    """Half-year-rounded times (many ties) with ~70 % censoring, like a small registry; the
    pmf rows sum to 1 - S(12): the rest survives the horizon."""
    return _exponential_cohort(11, 300, scale=20.0, beta=0.7, censor_high=10.0, tie_step=0.5)


# ---------------------------------------------------------------- paper metrics and rules


def test_softmax_sigmoid():
    p = M.softmax(np.array([[0.0] * 12, [1000.0] + [0.0] * 11]))
    np.testing.assert_allclose(p.sum(1), 1.0)
    assert p[1, 0] == pytest.approx(1.0)
    np.testing.assert_allclose(M.sigmoid(np.array([0.0, 100.0])), [0.5, 1.0])


def test_year_bin():
    np.testing.assert_array_equal(
        M.year_bin([0.0, 0.99, 1.0, 5.5, 11.99, 12.0, 20.0]), [0, 0, 1, 5, 11, 11, 11]
    )


def test_paper_metrics_hand_case():
    pred = np.array([0.0, 2.0, 5.0, 11.0])
    true = np.array([1.9, 0.5, 5.99, 14.0])  # bins 1, 0, 5, 11 -> errors -1, 2, 0, 0
    m = M.paper_metrics(pred, true, "argmax")
    assert m == {"taa": 0.75, "mae": 0.75, "mse": 1.25, "n": 4}
    # median rule compares with continuous years
    m = M.paper_metrics(np.array([1.0, 3.0]), np.array([2.0, 0.5]), "median")
    assert m["taa"] == 0.5 and m["mae"] == pytest.approx(1.75) and m["mse"] == pytest.approx(3.625)
    assert math.isnan(M.paper_metrics(np.array([]), np.array([]))["taa"])


def test_paper_metrics_observed():
    pred = np.array([0.0, 5.0, 3.0])
    true = np.array([0.2, 1.0, 3.5])
    m = M.paper_metrics_observed(pred, true, np.array([1, 0, 1]))
    assert m == {"taa": 1.0, "mae": 0.0, "mse": 0.0, "n": 2}


def test_predicted_years_argmax_and_median_hand_pmf():
    p = np.zeros((3, 12))
    p[0, [1, 2]] = [0.4, 0.6]  # F: 0 | 0.4 | 1.0 -> crosses 0.5 in year 3 at 2 + 0.1/0.6
    p[1, 0] = 1.0  # all mass in year 1: F(1) = 1 -> median 0.5
    p[2] = 1 / 12  # uniform: F(k) = k/12 -> median 6.0
    np.testing.assert_array_equal(M.predicted_years(p), [2, 0, 0])
    # mass beyond year 12 (rows summing to < 1) never enters the argmax
    beyond = np.zeros((2, 12))
    beyond[0, [2, 11]] = [0.2, 0.1]  # S(12) = 0.7: the old fold-into-bin-12 rule said 11
    np.testing.assert_array_equal(M.predicted_years(beyond), [2, 11])  # all-zero row -> 11
    np.testing.assert_allclose(M.beyond_horizon_mass(beyond), [0.7, 1.0])
    assert M.predicted_years(beyond, "median").tolist() == [12.0, 12.0]
    with pytest.raises(ValueError, match="at most 1"):
        M.predicted_years(np.full((1, 12), 0.2))
    np.testing.assert_allclose(M.predicted_years(p, "median"), [2 + 0.1 / 0.6, 0.5, 6.0])
    with pytest.raises(ValueError, match="rule"):
        M.predicted_years(p, "mean")
    with pytest.raises(ValueError, match="shape"):
        M.predicted_years(p[:, :11])


def test_recurrence_years():
    q = np.zeros((3, 12))
    q[0] = np.linspace(0.05, 0.95, 12)  # first >= 0.5 at bin 6 (0.54)
    q[1, 2] = 0.8  # non-monotone: running max keeps 0.8 from year 3 on
    q[2] = 0.1  # never
    np.testing.assert_array_equal(M.recurrence_years(q), [6, 2, 12])
    med = M.recurrence_years(q, "median")
    assert med[1] == pytest.approx(2 + 0.5 / 0.8)
    assert med[2] == 12.0
    # q reaches 0.5 between the end of year 6 (time 6, bin 5) and of year 7 (time 7, bin 6)
    assert med[0] == pytest.approx(6 + (0.5 - q[0, 5]) / (q[0, 6] - q[0, 5]))


def test_risk_scores_and_curves():
    p = np.zeros((2, 12))
    p[0, 0] = 1.0
    p[1, 3] = 1.0
    np.testing.assert_allclose(M.risk_from_survival(p), [-0.5, -3.5])
    # beyond-horizon mass counts as surviving 12 years (restricted mean), not renormalised away
    half = np.zeros((1, 12))
    half[0, 0] = 0.5
    assert M.risk_from_survival(half)[0] == pytest.approx(-(0.5 * 0.5 + 0.5 * 12))
    s = M.survival_curve(p)
    np.testing.assert_allclose(s[1, :4], [1, 1, 1, 0])
    q = np.tile(np.linspace(0.1, 0.9, 12), (2, 1))
    q[1] *= 0.5
    r = M.risk_from_recurrence(q)
    assert r[0] == pytest.approx(q[0, 2]) and r[0] > r[1]
    assert M.risk_from_recurrence(q, None)[0] == pytest.approx(q[0].mean())
    np.testing.assert_allclose(M.recurrence_free_curve(q), 1 - q)


# ---------------------------------------------------------------- survival metrics vs libraries


def test_survival_metrics_match_libraries(censored_cohort):
    time, event, p = censored_cohort
    assert 0.2 < 1 - event.mean() < 0.6  # censoring is really there
    train, test = slice(0, 80), slice(80, None)
    risk = M.risk_from_survival(p[test])
    surv = M.survival_curve(p[test])
    res = M.survival_metrics(time[train], event[train], time[test], event[test], risk, surv)
    # Harrell's C: lifelines takes scores where higher = longer survival
    c_lifelines = concordance_index(time[test], -risk, event[test])
    assert res["c_harrell"] == pytest.approx(c_lifelines, abs=1e-12)
    assert 0.6 < res["c_harrell"] < 0.95  # the pmf is informative
    # Uno's C (fixed 5-year horizon) and IBS (whole years 1..5) recomputed directly with sksurv
    assert res["tau"] == 5.0
    y_tr = Surv.from_arrays(event[train].astype(bool), time[train])
    y_te = Surv.from_arrays(event[test].astype(bool), time[test])
    assert res["c_uno"] == pytest.approx(concordance_index_ipcw(y_tr, y_te, risk, tau=5.0)[0])
    grid = np.arange(1.0, 6.0)
    ibs = integrated_brier_score(y_tr, y_te, surv[:, grid.astype(int) - 1], grid)
    assert res["ibs"] == pytest.approx(ibs)
    assert 0.0 < res["ibs"] < 0.25
    for h in (1, 3, 5):
        assert 0.5 < res[f"auc_{h}y"] <= 1.0


def test_survival_metrics_on_tied_heavily_censored_data(tied_censored_cohort):
    """Half-year ties and 70 % censoring: every metric equals the library's own value."""
    time, event, p = tied_censored_cohort
    assert 0.6 < 1 - event.mean() < 0.8 and np.unique(time).size < 25
    time, event = time.copy(), event.copy()
    time[200:203], event[200:203] = 5.0, 1  # deaths exactly at the horizon
    train, test = slice(0, 200), slice(200, None)
    risk, surv = M.risk_from_survival(p[test]), M.survival_curve(p[test])
    res = M.survival_metrics(time[train], event[train], time[test], event[test], risk, surv)
    # Harrell's C with tied times and risks vs lifelines (higher score = longer survival)
    assert res["c_harrell"] == pytest.approx(concordance_index(time[test], -risk, event[test]))
    y_tr = Surv.from_arrays(event[train].astype(bool), time[train])
    y_te = Surv.from_arrays(event[test].astype(bool), time[test])
    uno = concordance_index_ipcw(y_tr, y_te, risk, tau=5.0)[0]
    assert res["c_uno"] == pytest.approx(uno) and res["tau"] == 5.0
    grid = np.arange(1.0, 6.0)
    ibs = integrated_brier_score(y_tr, y_te, surv[:, :5], grid)
    assert res["ibs"] == pytest.approx(ibs)
    for h in (1, 3, 5):  # one sksurv call for all horizons = one call per horizon
        auc = cumulative_dynamic_auc(y_tr, y_te, 1.0 - surv[:, h - 1], [float(h)])[0]
        assert res[f"auc_{h}y"] == pytest.approx(float(np.atleast_1d(auc)[0]))
    # the horizon is a parameter; the 3-year IBS integrates over years 1..3 only
    res3 = M.survival_metrics(
        time[train], event[train], time[test], event[test], risk, surv, horizon_years=3.0
    )
    assert res3["ibs"] == pytest.approx(integrated_brier_score(y_tr, y_te, surv[:, :3], grid[:3]))
    assert res3["c_uno"] == pytest.approx(concordance_index_ipcw(y_tr, y_te, risk, tau=3.0)[0])


def test_uno_excludes_deaths_at_the_horizon():
    """A death exactly at tau must not enter with weight 1/G(tau)^2 (strict inequality)."""
    t_tr = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 6.0, 7.0])
    e_tr = np.array([0, 0, 0, 0, 0, 1, 0, 1])
    t_te = np.array([1.0, 2.0, 3.0, 5.0, 6.0, 7.0])
    e_te = np.array([1, 1, 1, 1, 0, 0])
    risk = np.array([3.0, 2.0, 1.0, -5.0, 0.0, -1.0])  # the death at 5.0 is ranked last
    surv = np.tile(np.linspace(0.9, 0.3, 12), (6, 1))
    res = M.survival_metrics(t_tr, e_tr, t_te, e_te, risk, surv, horizons=(3,))
    assert res["c_uno"] == pytest.approx(1.0)  # the discordant death at 5.0 is not counted
    opts = M.SurvivalMetricOptions(horizons=(3,))
    assert M.survival_metrics(t_tr, e_tr, t_te, e_te, risk, surv, opts) == res
    y_tr, y_te = (
        Surv.from_arrays(e_tr.astype(bool), t_tr),
        Surv.from_arrays(e_te.astype(bool), t_te),
    )
    assert res["c_uno"] == pytest.approx(concordance_index_ipcw(y_tr, y_te, risk, tau=5.0)[0])


def test_survival_metrics_random_risk_is_near_half(censored_cohort):
    time, event, p = censored_cohort
    risk = np.random.default_rng(0).normal(size=time.size)
    res = M.survival_metrics(time, event, time, event, risk, M.survival_curve(p))
    assert abs(res["c_harrell"] - 0.5) < 0.1


def test_survival_metrics_edge_cases_give_nan_with_warning():
    p = np.full((4, 12), 1 / 12)
    surv = M.survival_curve(p)
    # all censored: no comparable pair, no case
    t = np.array([0.5, 1.5, 2.5, 3.5])
    with pytest.warns(M.MetricWarning):
        res = M.survival_metrics(t, np.array([1, 0, 1, 0]), t, np.zeros(4), np.arange(4.0), surv)
    assert math.isnan(res["c_harrell"])
    # horizon beyond follow-up: auc_5y NaN, others finite
    t2 = np.array([0.2, 1.2, 2.2, 3.9])
    e2 = np.array([1, 1, 0, 1])
    with pytest.warns(M.MetricWarning, match="auc_5y"):
        res = M.survival_metrics(t2, e2, t2, e2, -t2, surv, horizons=(1, 5))
    assert math.isnan(res["auc_5y"]) and math.isfinite(res["auc_1y"])
    assert res["c_harrell"] == 1.0
    # test follow-up beyond the training censoring support: no crash, truncated at tau
    t_tr = np.array([0.5, 1.0, 2.0, 3.0])
    e_tr = np.array([1, 0, 1, 0])  # G drops to 0 at 3.0 -> tau = 2.0
    t_te = np.array([0.3, 1.4, 2.5, 6.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", M.MetricWarning)
        res = M.survival_metrics(t_tr, e_tr, t_te, np.ones(4), -t_te, surv)
    assert res["tau"] == 2.0 and math.isfinite(res["c_uno"])  # horizon = min(5 y, support)


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_coverage_of_a_mean():
    rng = np.random.default_rng(123)
    hits = 0
    reps = 200
    for r in range(reps):
        x = rng.normal(loc=1.0, size=50)
        _, low, high = B.bootstrap_ci(np.mean, x, n_boot=200, seed=r)
        hits += low <= 1.0 <= high
    assert 0.88 <= hits / reps <= 0.99


def test_bootstrap_joint_rows_and_estimate():
    x = np.arange(30.0)
    y = 2 * x
    est, low, high = B.bootstrap_ci(lambda a, b: float(np.mean(b - 2 * a)), x, y, n_boot=50)
    assert (est, low, high) == (0.0, 0.0, 0.0)  # rows resampled jointly keep y = 2x
    with pytest.raises(ValueError, match="rows"):
        B.bootstrap_ci(np.mean, x, y[:-1])


def test_paired_diff_order_invariance_and_sign(censored_cohort):
    time, event, p = censored_cohort
    good = M.risk_from_survival(p)
    bad = np.random.default_rng(1).normal(size=time.size)

    def harrell(risk, t, e):
        return M.survival_metrics(t, e, t, e, risk, np.ones((t.size, 12)), horizons=())["c_harrell"]

    def cidx(risk, t, e):
        return float(concordance_index(t, -risk, e))

    res = B.paired_bootstrap_diff(cidx, good, bad, time, event, n_boot=100, seed=3)
    perm = np.random.default_rng(9).permutation(time.size)
    res_perm = B.paired_bootstrap_diff(
        cidx, good[perm], bad[perm], time[perm], event[perm], n_boot=100, seed=3
    )
    assert res == res_perm
    assert res.low > 0  # the informative model is better
    assert res.estimate == pytest.approx(cidx(good, time, event) - cidx(bad, time, event))
    assert B.bootstrap_ci(np.mean, time, n_boot=20) == B.bootstrap_ci(
        np.mean, time[perm], n_boot=20
    )
    assert harrell(good, time, event) == pytest.approx(cidx(good, time, event))


# ---------------------------------------------------------------- all_metrics


def test_all_metrics_on_predictions_table(censored_cohort):
    time, event, p = censored_cohort
    rng = np.random.default_rng(0)
    q = np.clip(np.cumsum(p, axis=1) + rng.normal(scale=0.02, size=p.shape), 0, 1)
    df = pd.DataFrame({"patient_id": [f"CRLM-CT-{1000 + i}" for i in range(time.size)]})
    for k in range(12):
        df[f"surv_p{k + 1}"] = p[:, k]
        df[f"rec_p{k + 1}"] = q[:, k]
    df["os_years"], df["os_event"] = time, event
    df["dfs_years"], df["dfs_event"] = time * 0.6, event
    with pytest.warns(M.MetricWarning, match="auc_5y"):  # DFS follow-up ends before 5 y
        out = M.all_metrics(df.iloc[80:], train_df=df.iloc[:80])
    assert math.isnan(out["dfs_auc_5y"])
    pm = M.paper_metrics(M.predicted_years(p[80:]), time[80:])
    assert out["os_taa"] == pm["taa"] and out["os_n"] == 40
    assert out["os_obs_n"] == int(event[80:].sum())
    for key in ("os_c_harrell", "os_c_uno", "os_ibs", "dfs_c_harrell", "dfs_taa", "os_auc_3y"):
        assert key in out and math.isfinite(out[key]), key


@pytest.fixture
def three_fold_table(tied_censored_cohort):
    """Predictions table of the tied cohort as pooled CV predictions of 3 folds (one repeat),
    with the outcomes and the ``{(repeat, fold): training outcomes}`` mapping."""
    time, event, p = tied_censored_cohort
    n = time.size
    df = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(n)]})
    for k in range(12):
        df[f"surv_p{k + 1}"] = p[:, k]
        df[f"rec_p{k + 1}"] = np.cumsum(p, axis=1)[:, k]
    df["os_years"] = df["dfs_years"] = time
    df["os_event"] = df["dfs_event"] = event
    df["repeat"], df["fold"] = 0, np.arange(n) % 3
    outcomes = df[["os_years", "os_event", "dfs_years", "dfs_event"]]
    by_fold = {(0, f): outcomes[df["fold"] != f] for f in range(3)}
    return df, outcomes, by_fold


def test_all_metrics_ranks_by_five_year_risk_and_uses_fold_censoring(
    tied_censored_cohort, three_fold_table
):
    time, event, p = tied_censored_cohort
    df, outcomes, by_fold = three_fold_table
    n = time.size
    out = M.all_metrics(df, by_fold, heads=("os",))
    # IPCW metrics: per fold with that fold's training patients, averaged by fold size
    per_fold = [
        M.all_metrics(df[df["fold"] == f], outcomes[df["fold"] != f], heads=("os",))
        for f in range(3)
    ]
    sizes = [int((df["fold"] == f).sum()) for f in range(3)]
    for key in ("os_c_uno", "os_ibs", "os_auc_3y"):
        assert out[key] == pytest.approx(np.average([m[key] for m in per_fold], weights=sizes))
    pooled = M.all_metrics(df, outcomes, heads=("os",))
    assert out["os_c_harrell"] == pooled["os_c_harrell"] and out["os_taa"] == pooled["os_taa"]
    assert out["os_c_uno"] != pooled["os_c_uno"]
    with pytest.raises(ValueError, match="fold"):
        M.all_metrics(df, {(0, 0): outcomes}, heads=("os",))
    # every model is ranked by its 5-year risk of death (the curve at 5 years) ...
    five_year = np.cumsum(p, axis=1)[:, 4]
    assert pooled["os_c_harrell"] == pytest.approx(concordance_index(time, -five_year, event))
    # ... an anchor's own risk score (e.g. the Fong score) only under score="mixed"
    scored = df.assign(native_risk=-np.digitize(-M.risk_from_survival(p), [2, 4, 6, 8]))
    assert M.all_metrics(scored, outcomes, heads=("os",))["os_c_harrell"] == pooled["os_c_harrell"]
    out_native = M.all_metrics(scored, outcomes, heads=("os",), score="mixed")
    expected = concordance_index(time, np.digitize(-M.risk_from_survival(p), [2, 4, 6, 8]), event)
    assert out_native["os_c_harrell"] == pytest.approx(expected)
    assert out_native["os_c_harrell"] != pooled["os_c_harrell"] and five_year.size == n


def test_year_bin_one_rule_for_targets_and_metrics():
    from crlm_lib.data.dataset import year_bin

    years = [0.0, 0.99, 1.0, 4.5, 11.99, 12.0, 30.0]
    assert M.year_bin(np.array(years)).tolist() == [0, 0, 1, 4, 11, 11, 11]
    assert [year_bin(y) for y in years] == [0, 0, 1, 4, 11, 11, 11]
    assert year_bin(-0.5) == 0 and year_bin(7.2, n_years=5) == 4


# ---------------------------------------------------------------- the fast IPCW path


def _tied_case(rng, n):
    time = np.maximum(np.round(rng.exponential(4.0, n) * 2) / 2, 0.5)
    event = rng.random(n) < rng.uniform(0.2, 0.8)
    risk = np.round(rng.normal(size=n), int(rng.integers(0, 3)))  # tied risks too
    surv = np.sort(rng.uniform(0, 1, (n, 12)), axis=1)[:, ::-1]
    return time, event, risk, surv


def test_fast_ipcw_metrics_equal_scikit_survival_to_the_last_bit():
    """Cached censoring fit + validated arrays give scikit-survival's numbers exactly, on
    half-year-tied data with tied risks, in training sets other than the test set."""
    from sksurv.metrics import _estimate_concordance_index, concordance_index_censored

    rng = np.random.default_rng(2)
    for _ in range(40):
        t_tr, e_tr, _, _ = _tied_case(rng, int(rng.integers(20, 80)))
        t_te, e_te, risk, surv = _tied_case(rng, int(rng.integers(15, 60)))
        km = M.CensoringKM(t_tr, e_tr)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = M.survival_metrics(t_tr, e_tr, t_te, e_te, risk, surv, censoring=km)
        beyond = t_te > km.support
        t_cut, e_cut = np.where(beyond, km.support, t_te), e_te & ~beyond
        y_tr, y_te = Surv.from_arrays(e_tr, t_tr), Surv.from_arrays(e_cut, t_cut)
        if e_te.any() and np.isfinite(res["c_harrell"]):
            assert res["c_harrell"] == concordance_index_censored(e_te, t_te, risk)[0]
        if np.isfinite(res["c_uno"]):
            assert res["c_uno"] == concordance_index_ipcw(y_tr, y_te, risk, tau=res["tau"])[0]
        grid = np.arange(1.0, 6.0)
        grid = grid[(grid >= t_cut.min()) & (grid < t_cut.max()) & (grid < km.support)]
        if np.isfinite(res["ibs"]):
            ibs = integrated_brier_score(y_tr, y_te, surv[:, grid.astype(int) - 1], grid)
            assert abs(res["ibs"] - ibs) <= 1e-15
        hs = [h for h in (1, 3, 5) if np.isfinite(res[f"auc_{h}y"])]
        if hs:
            auc = cumulative_dynamic_auc(y_tr, y_te, 1.0 - surv[:, [h - 1 for h in hs]], hs)[0]
            assert [res[f"auc_{h}y"] for h in hs] == list(auc)
        # the concordance without the pair loop, with IPCW-like weights
        w = rng.uniform(0.5, 3.0, t_te.size)
        try:
            ref = _estimate_concordance_index(e_te, t_te, risk, w)[0]
        except Exception:
            continue
        if np.isfinite(ref):
            assert M._concordance(e_te, t_te, risk, w) == ref


def test_fast_path_hands_edge_cases_to_scikit_survival():
    """A non-finite risk or an all-censored test set go through scikit-survival itself: the
    same NaN and message as before the fast path."""
    rng = np.random.default_rng(4)
    t_tr, e_tr, _, _ = _tied_case(rng, 60)
    t_te, e_te, risk, surv = _tied_case(rng, 30)
    risk[3] = np.nan
    with pytest.warns(M.MetricWarning, match="c_harrell is NaN: Input estimate contains NaN"):
        res = M.survival_metrics(t_tr, e_tr, t_te, e_te, risk, surv, horizons=())
    assert np.isnan(res["c_uno"])
    with pytest.warns(M.MetricWarning, match="all samples are censored"):
        res = M.survival_metrics(t_tr, e_tr, t_te, np.zeros(30), -t_te, surv, horizons=())
    assert np.isnan(res["c_uno"]) and np.isnan(res["ibs"])


def _refuse_reference(monkeypatch):
    """Make every scikit-survival function ``survival_metrics`` could fall back to raise."""
    from crlm_lib.metrics import survival as S

    def refuse(*args, **kwargs):
        raise AssertionError("scikit-survival ran: the fast path did not give this number")

    for name in (
        "concordance_index_censored",
        "concordance_index_ipcw",
        "integrated_brier_score",
        "cumulative_dynamic_auc",
    ):
        monkeypatch.setattr(S, name, refuse)


def test_fast_path_itself_gives_scikit_survivals_numbers(monkeypatch):
    """On finite, usable data the numbers come from the fast path (scikit-survival is not
    called) and equal scikit-survival's: a fast-path bug cannot hide behind the fallback."""
    rng = np.random.default_rng(5)
    cases = []
    for _ in range(10):
        t_tr, e_tr, _, _ = _tied_case(rng, 60)
        t_te, e_te, risk, surv = _tied_case(rng, 40)
        e_te[:3] = True  # events, so that every metric is defined
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = M.survival_metrics(t_tr, e_tr, t_te, e_te, risk, surv)
        cases.append(((t_tr, e_tr, t_te, e_te, risk, surv), expected))
    _refuse_reference(monkeypatch)
    for args, expected in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = M.survival_metrics(*args)
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == value or (np.isnan(got[key]) and np.isnan(value)), key
    # and the values above were scikit-survival's own (the fallback ran before the patch)
    (t_tr, e_tr, t_te, e_te, risk, _), expected = cases[0]
    km = M.CensoringKM(t_tr, e_tr)
    beyond = t_te > km.support
    y_te = Surv.from_arrays(e_te & ~beyond, np.where(beyond, km.support, t_te))
    ref = concordance_index_ipcw(km.y_train, y_te, risk, tau=expected["tau"])[0]
    assert expected["c_uno"] == ref


def test_a_fast_path_bug_propagates_instead_of_falling_back(monkeypatch):
    """Only the ``ValueError`` of an edge case hands over to scikit-survival; any other
    exception of a fast path is a bug and reaches the caller."""
    from crlm_lib.metrics import survival as S

    def broken(*args, **kwargs):
        raise IndexError("fast path bug")

    monkeypatch.setattr(S, "_uno_fast", broken)
    rng = np.random.default_rng(6)
    t_tr, e_tr, _, _ = _tied_case(rng, 60)
    t_te, e_te, risk, surv = _tied_case(rng, 40)
    with pytest.raises(IndexError, match="fast path bug"):
        M.survival_metrics(t_tr, e_tr, t_te, e_te, risk, surv)


def test_training_outcomes_fit_each_censoring_distribution_once(three_fold_table):
    df, _, by_fold = three_fold_table
    n = len(df)
    train = M.TrainingOutcomes(by_fold)
    first = M.all_metrics(df, train)
    fitted = dict(train._fitted)
    assert len(fitted) == 6  # 3 folds x 2 heads
    sub = df.iloc[np.random.default_rng(0).integers(0, n, n)].reset_index(drop=True)
    again = M.all_metrics(sub, train)
    assert all(train._fitted[k] is v for k, v in fitted.items())  # reused, not refitted
    assert first == M.all_metrics(df, by_fold)  # same numbers as the plain mapping
    assert again == M.all_metrics(sub, by_fold)


def test_curve_at_times_interpolates_linearly_between_year_ends():
    surv = np.array([np.linspace(0.9, 0.35, 12), np.full(12, 0.5)])
    t = np.array([0.0, 0.5, 1.0, 2.25, 12.0, 30.0])
    at = M.curve_at_times(surv, t)
    np.testing.assert_allclose(at[0], [1.0, 0.95, 0.9, 0.8375, 0.35, 0.35])
    np.testing.assert_allclose(at[1], [1.0, 0.75, 0.5, 0.5, 0.5, 0.5])
    own = M.curve_at_times(surv, np.array([0.5, 0.5]), own=True)
    np.testing.assert_allclose(own, [0.95, 0.75])
    with pytest.raises(ValueError, match="one time per patient"):
        M.curve_at_times(surv, t, own=True)


def test_censoring_prob_before_is_the_left_limit():
    km = M.CensoringKM(np.array([1.0, 2.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 1, 0]))
    np.testing.assert_allclose(km.prob(np.array([1.0, 2.0, 2.5])), [1.0, 2 / 3, 2 / 3])
    np.testing.assert_allclose(km.prob_before(np.array([1.0, 2.0, 2.5, 0.0])), [1, 1, 2 / 3, 1])
