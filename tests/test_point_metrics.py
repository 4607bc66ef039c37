"""Tests of crlm_lib.point_metrics: IPCW and hinge point metrics, D-calibration and the best
constant prediction, on hand-computed cases and simulations with a known answer."""

from __future__ import annotations

import math

import numpy as np
import pytest

from crlm_lib import metrics as M
from crlm_lib import point_metrics as P


@pytest.fixture
def small_censoring():
    """Training censoring KM: G(1) = 1, G(2) = 2/3 (one of three at risk censored), support 3."""
    return M.CensoringKM(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1, 0, 1, 0]))


def test_ipcw_point_metrics_hand_case(small_censoring):
    time, event, pred = np.array([1.5, 3.5, 2.5]), np.array([1, 1, 0]), np.array([1.0, 1.0, 5.0])
    g = P.censoring_prob_at(small_censoring, time)  # 3.5 y is beyond the support: G(3)
    np.testing.assert_allclose(g, [1.0, 2 / 3, 2 / 3])
    out = P.ipcw_point_metrics(pred, time, event, g)
    # bins 1 and 3 against predicted 1: errors 0 and -2, weights 1 and 1.5
    assert out == pytest.approx({"taa": 1 / 2.5, "mae": 3 / 2.5, "mse": 6 / 2.5, "n_events": 2})
    assert math.isnan(P.ipcw_point_metrics(pred, time, np.zeros(3), g)["mae"])
    with pytest.raises(ValueError, match="positive"):
        P.ipcw_point_metrics(pred, time, event, np.zeros(3))


def test_ipcw_mae_recovers_the_uncensored_mae():
    rng = np.random.default_rng(0)
    n = 20000
    t_event = rng.exponential(3.0, n)
    t_cens = rng.uniform(0.0, 30.0, n)
    time, event = np.minimum(t_event, t_cens), t_event <= t_cens
    km = M.CensoringKM(time, event)
    pred = np.full(n, 2.0)
    truth = M.paper_metrics(pred, t_event)  # what the metric would be without censoring
    ipcw = P.ipcw_point_metrics(pred, time, event, P.censoring_prob_at(km, time))
    observed = M.paper_metrics_observed(pred, time, event)
    assert ipcw["mae"] == pytest.approx(truth["mae"], abs=0.03)
    assert ipcw["taa"] == pytest.approx(truth["taa"], abs=0.01)
    assert abs(observed["mae"] - truth["mae"]) > 0.1  # deaths only: biased towards early deaths


def test_hinge_mae_hand_case():
    # event: |1 - 1| = 0 and |1 - 3| = 2; censored at 2.5 (bin 2) predicted 5: no error
    assert P.hinge_mae([1, 1, 5], [1.5, 3.5, 2.5], [1, 1, 0]) == pytest.approx(2 / 3)
    # censored at bin 4, predicted 1: error 3
    assert P.hinge_mae([1], [4.2], [0]) == 3.0
    assert P.hinge_mae([0.5], [4.2], [0], rule="median") == pytest.approx(3.7)
    assert math.isnan(P.hinge_mae([], [], []))


def _spread_reference(s, n_bins=10):
    """A censored patient's share of each bin, from Haider et al.'s definition, bin by bin."""
    out = np.zeros(n_bins)
    if s == 0:
        out[0] = 1.0
        return out
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        if hi <= s:
            out[b] = (hi - lo) / s
        elif lo <= s < hi or (s == 1.0 and b == n_bins - 1):
            out[b] = (s - lo) / s
    return out


def test_d_calibration_histogram_hand_cases():
    flat = np.tile(np.linspace(0.95, 0.05, 12), (1, 1))
    # events at year ends 1..10 of one curve: S = 0.95, 0.868, ..., 0.214
    surv = np.repeat(flat, 10, axis=0)
    d = P.d_calibration(np.arange(1.0, 11.0), np.ones(10), surv)
    np.testing.assert_allclose(d.counts, [0, 0, 2, 1, 1, 1, 1, 2, 1, 1])
    assert d.statistic == pytest.approx(4.0) and d.p_value == pytest.approx(0.9114, abs=1e-4)
    # censored patients: S(c) = 0.55, 1 (censored at time 0) and 0 (a curve at 0)
    curves = np.array([np.full(12, 0.55), np.full(12, 0.3), np.zeros(12)])
    h = P.d_calibration_histogram(np.array([3.0, 0.0, 2.0]), np.zeros(3), curves)
    expected = _spread_reference(0.55) + _spread_reference(1.0) + _spread_reference(0.0)
    np.testing.assert_allclose(h, expected, atol=1e-12)
    np.testing.assert_allclose(_spread_reference(0.55)[:6], [0.1 / 0.55] * 5 + [0.05 / 0.55])
    assert h.sum() == pytest.approx(3.0)


def test_d_calibration_separates_true_from_shifted_curves():
    rng = np.random.default_rng(1)
    n = 3000
    rate = np.exp(rng.normal(scale=0.7, size=n)) / 4.0
    t_event = rng.exponential(1 / rate)
    t_cens = rng.uniform(0.5, 12.0, n)
    time, event = np.minimum(t_event, t_cens), t_event <= t_cens
    years = np.arange(1, 13)
    true = np.exp(-rate[:, None] * years[None, :])
    shifted = np.exp(-2.0 * rate[:, None] * years[None, :])  # twice the hazard
    # the true curves are linear between year ends only approximately: allow a coarse test
    assert P.d_calibration(time, event, true).p_value > 0.01
    assert P.d_calibration(time, event, shifted).p_value < 1e-6


def test_best_constant_years_hand_case():
    time = np.array([0.5, 1.2, 1.7, 2.0, 5.5])  # bins 0, 1, 1, 2, 5
    event = np.ones(5)
    best = P.best_constant_years(time, event, np.ones(5))
    assert best["taa"] == 1.0  # 4 of 5 within one year of bin 1
    assert best["mae"] == 1.0  # the median bin
    assert best["mse"] == 2.0  # closest bin to the mean 1.8
    assert set(best) == set(P.POINT_METRICS)
