"""Calibration slope, intercept and ICI at a fixed horizon (evaluation.calibration), with known
answers: predictions from the model that generated the data are calibrated (slope 1,
intercept 0, ICI 0 up to sampling error); shifted or stretched predictions are not."""

import numpy as np
import pandas as pd
import pytest

from crlm_lib.evaluation.calibration import (
    calibration_metric_table,
    horizon_calibration,
    rcs_basis,
)
from crlm_lib.models.clinical import frame_from_curves

HORIZON = 5.0


def _simulate(n: int, seed: int):
    """Proportional hazards with exponential times: true risk by 5 years is known."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    rate = 0.12 * np.exp(0.8 * x)
    t_event = rng.exponential(1 / rate)
    t_censor = rng.uniform(1, 12, n)
    time = np.minimum(t_event, t_censor)
    event = (t_event <= t_censor).astype(int)
    return rate, time, event


def _expit(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def cohort():
    rate, time, event = _simulate(4000, seed=1)
    risk = 1 - np.exp(-rate * HORIZON)
    return risk, time, event


def test_true_risk_is_calibrated(cohort):
    risk, time, event = cohort
    out = horizon_calibration(risk, time, event, HORIZON)
    assert out["cal_slope"] == pytest.approx(1.0, abs=0.15)
    assert out["cal_intercept"] == pytest.approx(0.0, abs=0.1)
    assert out["ici"] < 0.02


def test_shifted_risk_has_intercept_and_ici(cohort):
    risk, time, event = cohort
    logit = np.log(risk / (1 - risk))
    out = horizon_calibration(_expit(logit + 1.0), time, event, HORIZON)
    assert out["cal_intercept"] == pytest.approx(-1.0, abs=0.15)  # risk overestimated
    assert out["cal_slope"] == pytest.approx(1.0, abs=0.15)
    assert out["ici"] > 0.1


def test_too_extreme_risk_has_slope_below_one(cohort):
    risk, time, event = cohort
    logit = np.log(risk / (1 - risk))
    out = horizon_calibration(_expit(2.0 * logit), time, event, HORIZON)
    assert out["cal_slope"] == pytest.approx(0.5, abs=0.1)
    assert out["ici"] > 0.05


def test_constant_risk_has_no_slope(cohort):
    _, time, event = cohort
    out = horizon_calibration(np.full(len(time), 0.9), time, event, HORIZON)
    assert np.isnan(out["cal_slope"])
    assert out["cal_intercept"] < -1  # 90% predicted, about half observed
    assert out["ici"] > 0.3


def test_no_events_by_horizon_is_nan():
    time = np.full(10, 8.0)
    out = horizon_calibration(np.full(10, 0.2), time, np.zeros(10, int), HORIZON)
    assert all(np.isnan(v) for v in out.values())


def test_rcs_basis_is_linear_beyond_the_outer_knots():
    knots = np.array([0.0, 1.0, 2.0])
    x = np.array([3.0, 4.0, 5.0, 6.0])
    basis = rcs_basis(x, knots)
    assert basis.shape == (4, 2)
    np.testing.assert_allclose(np.diff(basis[:, 1], n=2), 0.0, atol=1e-12)
    np.testing.assert_allclose(rcs_basis(np.array([-1.0, 0.0]), knots)[:, 1], 0.0)


def _frames(rate, time, event, distort=lambda s: s):
    years = np.arange(1, 13)
    surv = distort(np.exp(-rate[:, None] * years[None, :]))
    ids = [f"P{i:05d}" for i in range(len(rate))]
    outcomes = pd.DataFrame(
        {"os_years": time, "os_event": event, "dfs_years": time, "dfs_event": event},
        index=ids,
    )
    return frame_from_curves(ids, surv, surv, outcomes)


def test_table_scores_every_model_and_skips_controls():
    rate, time, event = _simulate(3000, seed=2)
    true = _frames(rate, time, event)
    worse = _frames(rate, time, event, distort=lambda s: s**3)  # risk overestimated
    table = calibration_metric_table(
        {"oracle": [true, true], "worse": worse, "worse@ct-permuted": [worse]}
    )
    assert list(table.index) == ["oracle", "worse"]
    assert {"os_cal_slope", "os_ici", "dfs_cal_intercept", "dfs_ici"} <= set(table.columns)
    assert table.loc["oracle", "os_ici"] < 0.02
    assert table.loc["oracle", "os_cal_intercept"] == pytest.approx(0.0, abs=0.15)
    assert table.loc["worse", "os_cal_intercept"] < -0.5
    assert table.loc["worse", "os_ici"] > 0.1
    # DFS horizon is 3 years: the same curves are scored there
    assert table.loc["oracle", "dfs_ici"] < 0.02


def test_perfectly_separated_status_has_no_slope():
    # the risk orders every status by the horizon: the logistic slope does not exist
    time = np.array([1, 1.5, 2, 2.5, 6, 7, 8, 9.0])
    event = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    risk = np.array([0.9, 0.9, 0.8, 0.8, 0.1, 0.1, 0.05, 0.05])
    out = horizon_calibration(risk, time, event, HORIZON)
    assert np.isnan(out["cal_slope"])
    assert np.isfinite(out["ici"])


def test_quasi_separated_recalibration_is_not_an_estimate():
    """Quasi-separation (the outcome is 1 exactly when the predictor is above 0, with ties at
    0) converges to coefficients in the millions: reported as not estimable (NaN)."""
    from crlm_lib.evaluation.calibration import _weighted_logistic

    x1 = np.array([-2.0, -1.5, -1.0, -0.5, 0.0, 0.0, 0.5, 1.0, 1.5, 2.0])
    y = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 1], dtype=float)
    x = np.column_stack([np.ones_like(x1), x1])
    assert np.isnan(_weighted_logistic(y, np.ones_like(y), x)).all()
    overlap = np.array([0, 1, 0, 0, 1, 0, 1, 0, 1, 1], dtype=float)
    assert np.isfinite(_weighted_logistic(overlap, np.ones_like(y), x)).all()
