"""Tests of crlm_lib.concordance: Antolini's C_td and Uno's C under both tie conventions, with
hand-computed answers and agreement with scikit-survival."""

from __future__ import annotations

import numpy as np
import pytest
from sksurv.metrics import concordance_index_censored, concordance_index_ipcw
from sksurv.util import Surv

from crlm_lib import concordance as C
from crlm_lib import metrics as M


def _curves(*rows: list[float]) -> np.ndarray:
    """Curves at year ends 1..12 from their first values, continued linearly down to 0.05."""
    out = []
    for r in rows:
        tail = np.linspace(r[-1], 0.05, 12 - len(r) + 1)[1:]
        out.append(np.r_[r, tail])
    return np.array(out)


def _pairs_reference(time, event, surv, ties):
    """Antolini's C_td from its definition, one pair at a time (pycox's 'antolini' counting
    for ties='discordant')."""
    at = M.curve_at_times(surv, time)  # [N, N]: S_j(t_i) in column i
    num = den = 0.0
    for i in range(time.size):
        if not event[i]:
            continue
        for j in range(time.size):
            if time[i] < time[j] or (time[i] == time[j] and not event[j]):
                den += 1
                s_i, s_j = at[i, i], at[j, i]
                if s_i < s_j:
                    num += 1
                elif s_i == s_j and ties == "half":
                    num += 0.5
    return num / den


def test_antolini_hand_case_with_a_tie():
    time = np.array([1.5, 3.0, 2.0])
    event = np.array([1, 1, 0])
    surv = _curves([0.6, 0.4], [0.9, 0.7, 0.5], [0.7, 0.3])
    # at 1.5 y: S_0 = 0.5, S_1 = 0.8, S_2 = 0.5; comparable pairs (0, 1), (0, 2)
    assert C.antolini_c(time, event, surv) == pytest.approx(0.75)
    assert C.antolini_c(time, event, surv, ties="discordant") == pytest.approx(0.5)


def test_antolini_equals_harrell_for_proportional_hazards_curves():
    rng = np.random.default_rng(3)
    n = 80
    lp = rng.normal(size=n)
    base = np.exp(-0.15 * np.arange(1, 13))
    surv = base[None, :] ** np.exp(lp)[:, None]  # curves that never cross
    time = rng.uniform(0.1, 11.0, n)
    event = rng.random(n) < 0.6
    harrell = concordance_index_censored(event, time, lp)[0]
    assert C.antolini_c(time, event, surv) == pytest.approx(harrell, abs=1e-12)


def test_antolini_agrees_with_pairwise_definition_on_tied_data():
    rng = np.random.default_rng(5)
    n = 60
    time = np.round(rng.uniform(0.2, 8.0, n) * 2) / 2  # half-year ties
    event = rng.random(n) < 0.5
    levels = np.sort(rng.uniform(0.05, 0.95, (4, 12)), axis=1)[:, ::-1]
    surv = levels[rng.integers(0, 4, n)]  # four distinct curves: many tied pairs
    for ties in ("half", "discordant"):
        assert C.antolini_c(time, event, surv, ties=ties) == pytest.approx(
            _pairs_reference(time, event, surv, ties), abs=1e-12
        )
    with pytest.raises(ValueError, match="ties"):
        C.antolini_c(time, event, surv, ties="drop")


def test_antolini_nan_without_comparable_pairs():
    with pytest.warns(M.MetricWarning, match="c_antolini"):
        assert np.isnan(C.antolini_c(np.array([1.0, 2.0]), np.array([0, 0]), _curves([0.5], [0.5])))


def test_uno_conventions_hand_case_on_tied_times():
    time = np.array([1.0, 2.0, 2.0, 3.0, 4.0])
    event = np.array([1, 0, 1, 1, 0])
    risk = np.array([4.0, 3.0, 1.0, 2.0, 0.0])
    out = C.uno_c_conventions(time, event, time, event, risk)
    # G (censoring KM, events before censorings): G(1) = 1, G(2) = 2/3, support 3 = tau;
    # the death at 2 y ties with a censoring: weight 1/G(2)^2 = 2.25 under G(T), 1 under G(T-)
    assert out["tau"] == 3.0
    assert out["c_uno_g_t"] == pytest.approx((4 + 2.25 * 1) / (4 + 2.25 * 3))
    assert out["c_uno_g_t_minus"] == pytest.approx((4 + 1) / (4 + 3))
    # G(T) is scikit-survival's own convention
    cut = np.where(time > 3.0, 3.0, time)
    y = Surv.from_arrays(event.astype(bool) & (time <= 3.0), cut)
    sk = concordance_index_ipcw(Surv.from_arrays(event.astype(bool), time), y, risk, tau=3.0)
    assert out["c_uno_g_t"] == pytest.approx(sk[0], abs=1e-12)


def _tied_cohort(seed=2, n=200):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    t_event = rng.exponential(4.0 * np.exp(-0.8 * x))
    t_cens = rng.uniform(0.3, 8.0, n)
    return x, np.minimum(t_event, t_cens), (t_event <= t_cens).astype(int)


def test_uno_g_t_is_survival_metrics_c_uno_and_conventions_agree_without_ties():
    x, time, event = _tied_cohort()
    surv = np.tile(np.linspace(0.9, 0.1, 12), (time.size, 1))
    out = C.uno_c_conventions(time[:120], event[:120], time[120:], event[120:], x[120:])
    ref = M.survival_metrics(
        time[:120], event[:120], time[120:], event[120:], x[120:], surv[120:], horizons=()
    )
    assert out["c_uno_g_t"] == ref["c_uno"] and out["tau"] == ref["tau"]
    # continuous times: no censoring ties an event, G(T) = G(T-) at every event time
    assert out["c_uno_g_t_minus"] == out["c_uno_g_t"]


def test_month_resolution_makes_the_conventions_differ():
    x, time, event = _tied_cohort()
    months = C.round_to_resolution(time, C.MONTH_YEARS)
    assert np.allclose(months * 12, np.round(months * 12))
    out = C.uno_c_conventions(time, event, time, event, x, resolution_years=C.MONTH_YEARS)
    ref = C.uno_c_conventions(months, event, months, event, x)
    assert out == ref
    assert out["c_uno_g_t_minus"] != out["c_uno_g_t"]
    with pytest.raises(ValueError, match="positive"):
        C.round_to_resolution(time, 0.0)
