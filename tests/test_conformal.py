"""Tests of crlm_lib.conformal: the split-conformal band for the true survival probability."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crlm_lib import conformal, ensemble
from crlm_lib.config import N_YEARS


def _refuse(name: str):
    raise ValueError(f"non-standard JSON constant {name}")


def test_quantile_is_the_finite_sample_rank_and_infinite_when_too_few():
    scores = np.arange(1.0, 11.0)[:, None]  # 10 scores
    # ceil(11 * 0.9) = 10th smallest
    assert conformal.conformal_quantile(scores, 0.9).tolist() == [10.0]
    assert conformal.conformal_quantile(scores, 0.5).tolist() == [6.0]
    # 5 scores: ceil(6 * 0.9) = 6 > 5, no finite band
    assert conformal.conformal_quantile(scores[:5], 0.9).tolist() == [np.inf]
    with_nan = np.array([[1.0], [np.nan], [2.0], [3.0]])
    assert conformal.conformal_quantile(with_nan, 0.5).tolist() == [2.0]


def _simulate(n: int, rng: np.random.Generator):
    """True curves of a Weibull-like model, and a model that errs around them (a random bias
    per patient, larger at late years) and five fold models scattered a little around it."""
    t = np.arange(1, N_YEARS + 1)
    scale = rng.lognormal(np.log(6.0), 0.5, n)
    truth = np.exp(-((t[None, :] / scale[:, None]) ** 1.2))
    err = rng.normal(0.0, 0.08, (n, 1)) * np.sqrt(t / 5.0)[None, :]
    pred = np.clip(truth + err, 0.0, 1.0)
    members = np.clip(pred[None] + rng.normal(0.0, 0.01, (5, n, N_YEARS)), 0.0, 1.0)
    return truth, pred, members


def test_band_holds_the_truth_at_the_nominal_rate_where_the_spread_does_not():
    """Calibrated on 300 patients, checked on 3000 others: the conformal band holds 90% of the
    true 1/3/5-year probabilities (within 3 points); the models' 5-95% spread, which only shows
    their disagreement, holds far fewer."""
    rng = np.random.default_rng(0)
    truth_cal, pred_cal, _ = _simulate(300, rng)
    truth, _, members = _simulate(3000, rng)
    q = conformal.conformal_quantile(np.abs(pred_cal - truth_cal), 0.9)
    band = conformal.ConformalBand(0.9, {"os": tuple(q), "dfs": tuple(q)}, 300, (), "test")
    low, high = band.band(members.mean(axis=0), "os")
    years = (1, 3, 5)
    cols = [y - 1 for y in years]
    cov = ensemble.band_coverage(truth[:, cols], low[:, cols], high[:, cols], years)
    assert abs(cov["pooled"] - 0.9) <= 0.03, cov
    s_low, s_high = ensemble.band(members)
    spread = ensemble.band_coverage(truth[:, cols], s_low[:, cols], s_high[:, cols], years)
    assert spread["pooled"] < 0.5, spread
    assert (low >= 0).all() and (high <= 1).all()


def _fold(folder, ids, rng, identity):
    pmf = rng.dirichlet(np.ones(N_YEARS), size=len(ids))
    rec = np.sort(rng.uniform(0, 1, (len(ids), N_YEARS)), axis=1)
    frame = pd.DataFrame(pmf, columns=[f"surv_p{k}" for k in range(1, N_YEARS + 1)])
    frame[[f"rec_p{k}" for k in range(1, N_YEARS + 1)]] = rec
    frame.insert(0, "patient_id", ids)
    frame["os_years"] = rng.uniform(0.5, 8, len(ids))
    frame["os_event"] = rng.integers(0, 2, len(ids))
    frame["dfs_years"] = frame["os_years"] * 0.7
    frame["dfs_event"] = rng.integers(0, 2, len(ids))
    folder.mkdir(parents=True)
    frame.to_csv(folder / "predictions.csv", index=False)
    (folder / "run.json").write_text(json.dumps({"identity": identity}))
    return frame


def _oracle(ids, rng):
    oracle = pd.DataFrame({"Patient-ID": ids})
    for head in ("os", "dfs"):
        curves = np.sort(rng.uniform(0, 1, (len(ids), N_YEARS)), axis=1)[:, ::-1]
        for k in range(N_YEARS):
            oracle[f"{head}_surv_y{k + 1}"] = curves[:, k]
    return oracle


def test_calibration_is_written_beside_the_folds_and_only_fits_its_own_runs(tmp_path):
    rng = np.random.default_rng(1)
    cv = tmp_path / "cv" / "acfnet"
    ids = {"r0_f0": [f"A{i}" for i in range(6)], "r0_f1": [f"B{i}" for i in range(6)]}
    frames = [_fold(cv / f, i, rng, {"cohort": "c", "split": f, "config": "k"})
              for f, i in ids.items()]  # fmt: skip
    oracle = _oracle(ids["r0_f0"] + ids["r0_f1"], rng)
    cal = conformal.write_calibration(cv, oracle)
    # 12 patients: the 12th smallest score (ceil(13 * 0.9) = 12), i.e. the largest
    from crlm_lib.types import Predictions

    pooled = pd.concat(frames, ignore_index=True)
    truth = oracle[[f"os_surv_y{k}" for k in range(1, N_YEARS + 1)]].to_numpy()
    expect = np.abs(Predictions.from_frame(pooled).curve("os") - truth).max(axis=0)
    np.testing.assert_allclose(cal.half_width["os"], expect, atol=1e-6)
    text = (cv / conformal.CALIBRATION_FILE).read_text()
    stored = json.loads(text, parse_constant=_refuse)
    assert stored["n"] == 12 and stored["level"] == 0.9
    folds = [cv / "r0_f0", cv / "r0_f1"]
    loaded = conformal.load_calibration(folds)
    assert loaded is not None
    assert loaded.half_width["os"] == pytest.approx(cal.half_width["os"], abs=1e-6)
    assert "split-conformal 90% band" in loaded.method(2) and "over 12 patients" in loaded.method(2)
    assert conformal.load_calibration(folds[:1]) is None  # one run: no ensemble
    (cv / "r0_f1" / "run.json").write_text(json.dumps({"identity": {"cohort": "retrained"}}))
    assert conformal.load_calibration(folds) is None  # a fold retrained since: not this band
    assert conformal.write_calibration(tmp_path / "cv" / "acfnet", None) is None


def test_too_few_patients_give_the_whole_range_written_as_strict_json(tmp_path):
    rng = np.random.default_rng(2)
    cv = tmp_path / "cv"
    _fold(cv / "r0_f0", ["A0", "A1"], rng, {"cohort": "c"})
    _fold(cv / "r0_f1", ["B0", "B1"], rng, {"cohort": "d"})
    cal = conformal.write_calibration(cv, _oracle(["A0", "A1", "B0", "B1"], rng))
    low, high = cal.band(np.full(N_YEARS, 0.4), "os")
    assert (low == 0).all() and (high == 1).all()
    stored = json.loads((cv / conformal.CALIBRATION_FILE).read_text(), parse_constant=_refuse)
    assert stored["half_width"]["os"] == [None] * N_YEARS


def test_a_band_on_observed_outcomes_is_nearly_the_whole_range_even_for_the_true_curves():
    """Why the band is calibrated against the truth: the outcome scatters around the true
    probability with variance p(1 - p), so even the TRUE curves need a half-width near the
    larger of p and 1 - p to cover 90% of outcomes."""
    rng = np.random.default_rng(3)
    n = 2000
    scale = rng.lognormal(np.log(5.0), 0.4, n)
    t = np.arange(1, N_YEARS + 1)
    truth = np.exp(-t[None, :] / scale[:, None])
    death = rng.exponential(scale)
    censor = rng.uniform(2, 12, n)
    years, events = np.minimum(death, censor), (death <= censor).astype(int)
    width = conformal.outcome_halfwidth(truth, years, events, (1, 3, 5))
    assert all(v > 0.5 for v in width.values()), width
    assert width[5] > 0.6, width
