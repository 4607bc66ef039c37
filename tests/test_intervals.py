"""The corrected repeated-CV t interval (``evaluation.intervals``): the formula against a hand
computation, the per-fold scores of frames, and coverage in a known-truth simulation where
the uncorrected t interval over the same folds under-covers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import crlm_lib.evaluation as ev
from crlm_lib.evaluation.intervals import corrected_t_interval

# ---------------------------------------------------------------------------------------------
# the formula


def test_corrected_t_matches_a_hand_computation():
    values = [0.60, 0.70, 0.65, 0.55, 0.75, 0.62]
    # mean 0.645; squared deviations 0.002025 0.003025 0.000025 0.009025 0.011025 0.000625
    # s² = 0.025750 / 5 = 0.00515; Var = (1/6 + 0.25) s² = 0.0021458333; se = 0.0463231
    # t_{5, 0.975} = 2.5705818
    r = corrected_t_interval(values, 0.25)
    assert r.estimate == pytest.approx(0.645)
    assert r.se == pytest.approx(math.sqrt(0.0021458333333), rel=1e-9)
    assert r.high - r.estimate == pytest.approx(2.5705818 * 0.0463231, rel=1e-6)
    assert r.estimate - r.low == pytest.approx(r.high - r.estimate)
    assert r.n_splits == 6
    # no correction: the naive t interval s / sqrt(J)
    naive = corrected_t_interval(values, 0.0)
    assert naive.se == pytest.approx(math.sqrt(0.00515 / 6), rel=1e-9)


def test_corrected_t_drops_nan_and_needs_two_values():
    r = corrected_t_interval([0.6, np.nan, 0.7], 0.25, alpha=0.1)
    assert r.n_splits == 2 and r.estimate == pytest.approx(0.65)
    half = stats.t.ppf(0.95, 1) * math.sqrt((0.5 + 0.25) * np.var([0.6, 0.7], ddof=1))
    assert r.high == pytest.approx(0.65 + half)
    one = corrected_t_interval([0.6, np.nan], 0.25)
    assert one.estimate == 0.6 and math.isnan(one.low) and math.isnan(one.high)
    assert math.isnan(corrected_t_interval([np.nan], 0.25).estimate)
    with pytest.raises(ValueError):
        corrected_t_interval([0.6, 0.7], -0.1)


# ---------------------------------------------------------------------------------------------
# frames: one value per test fold, paired by fold


def _frames(seed: int, repeats: int = 2, folds: int = 4, n: int = 60):
    """Predictions-like frames with ``repeat``/``fold`` columns and one score column."""
    rng = np.random.default_rng(seed)
    ids = [f"P{i:03d}" for i in range(n)]
    out = []
    for r in range(repeats):
        fold = rng.permutation(np.arange(n) % folds)
        out.append(
            pd.DataFrame({"patient_id": ids, "repeat": r, "fold": fold, "y": rng.normal(size=n)})
        )
    return out


def _mean_y(frame: pd.DataFrame, _train) -> dict[str, float]:
    return {"y_mean": float(frame["y"].mean())}


def test_split_scores_one_row_per_fold_and_paired_differences():
    frames = _frames(0)
    table = ev.split_scores(frames, None, _mean_y)
    assert list(table[["repeat", "fold"]].itertuples(index=False, name=None)) == [
        (r, f) for r in range(2) for f in range(4)
    ]
    first = frames[0]
    assert table.loc[0, "y_mean"] == pytest.approx(first.loc[first["fold"] == 0, "y"].mean())
    assert table["n_test"].tolist() == [15] * 8
    # a model minus itself is 0 on every fold, so its interval is [0, 0]
    same = ev.cv_intervals(frames, None, _mean_y, baseline_by_repeat=frames)
    assert same.loc[0, ["estimate", "low", "high"]].tolist() == [0.0, 0.0, 0.0]
    other = _frames(1)
    other = [o.assign(fold=f["fold"]) for o, f in zip(other, frames, strict=True)]
    diff = ev.split_scores(frames, None, _mean_y, baseline_by_repeat=other)
    base = ev.split_scores(other, None, _mean_y)
    assert np.allclose(diff["y_mean"], table["y_mean"] - base["y_mean"])


def test_cv_intervals_ratio_from_fold_sizes_and_refusals():
    frames = _frames(2, repeats=3, folds=5, n=50)
    out = ev.cv_intervals(frames, None, _mean_y).set_index("metric").loc["y_mean"]
    values = ev.split_scores(frames, None, _mean_y)["y_mean"]
    ref = corrected_t_interval(values, 10 / 40)
    assert out["estimate"] == pytest.approx(ref.estimate) and out["low"] == pytest.approx(ref.low)
    assert out["splits"] == 15 and out["interval"] == ev.CORRECTED_T
    moved = [f.assign(fold=(f["fold"] + 1) % 5) if i == 0 else f for i, f in enumerate(frames)]
    with pytest.raises(ev.EvaluationError, match="repeat 0 fold"):
        ev.split_scores(frames, None, _mean_y, baseline_by_repeat=moved)
    with pytest.raises(ev.EvaluationError, match="'repeat' and 'fold'"):
        ev.split_scores([frames[0].drop(columns="fold")], None, _mean_y)


def test_permutations_of_one_split_count_once():
    """Frames that share a (repeat, fold) split (an image-permutation control's permutations)
    are averaged into one split estimate, not counted as extra splits."""
    frames = _frames(3, repeats=1)
    copies = [frames[0].assign(y=frames[0]["y"] + k) for k in (0.0, 1.0, 2.0)]
    table = ev.split_scores(copies, None, _mean_y)
    assert len(table) == 4
    assert np.allclose(table["y_mean"], ev.split_scores(frames, None, _mean_y)["y_mean"] + 1.0)


# ---------------------------------------------------------------------------------------------
# coverage in a known-truth simulation (a cheap learner, so the whole test takes seconds)

BETA = np.array([0.6, -0.4, 0.3, 0.0, 0.0, 0.0, 0.0, 0.0])


def _draw(n: int, rng: np.random.Generator):
    """Exponential times with log-hazard ``x @ BETA``, uniform censoring on [0.2, 3]."""
    x = rng.normal(size=(n, BETA.size))
    t = rng.exponential(np.exp(-x @ BETA))
    c = rng.uniform(0.2, 3.0, n)
    return x, np.minimum(t, c), t <= c


def _fit(x: np.ndarray, time: np.ndarray):
    """The learner: least squares of log observed time on the 8 features (risk = minus the
    prediction); unstable at 80 patients, so refitting matters."""
    design = np.column_stack([np.ones(len(x)), x])
    coef = np.linalg.lstsq(design, np.log(time), rcond=None)[0]
    return lambda z: -(np.column_stack([np.ones(len(z)), z]) @ coef)


def _harrell(time, event, risk) -> float:
    """Harrell's C: pairs with ``time_i < time_j`` and an event at ``i``, concordant when
    ``risk_i > risk_j`` (ties in risk one half)."""
    comparable = (time[:, None] < time[None, :]) & event[:, None]
    diff = risk[:, None] - risk[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0))[comparable].sum() / comparable.sum())


def _population_c(time, event, risk, blocks: int = 10) -> float:
    """Harrell's C of a large population: the mean over equal blocks (no n² matrix)."""
    parts = np.array_split(np.arange(len(time)), blocks)
    return float(np.mean([_harrell(time[p], event[p], risk[p]) for p in parts]))


def test_corrected_t_covers_the_procedures_expected_c_where_the_naive_t_does_not():
    rng = np.random.default_rng(0)
    n, folds, repeats = 100, 5, 3
    x_pop, t_pop, e_pop = _draw(5000, rng)
    truth = np.mean(
        [
            _population_c(t_pop, e_pop, _fit(*_draw(n * (folds - 1) // folds, rng)[:2])(x_pop))
            for _ in range(100)
        ]
    )
    hits = {"corrected": 0, "one repeat": 0, "naive": 0}
    cohorts = 150
    for _ in range(cohorts):
        x, t, e = _draw(n, rng)
        values = []
        for _r in range(repeats):
            fold = rng.permutation(np.arange(n) % folds)
            for f in range(folds):
                tr, te = fold != f, fold == f
                values.append(_harrell(t[te], e[te], _fit(x[tr], t[tr])(x[te])))
        for name, v, ratio in (
            ("corrected", values, 0.25),
            ("one repeat", values[:folds], 0.25),
            ("naive", values, 0.0),
        ):
            r = corrected_t_interval(v, ratio)
            hits[name] += r.low <= truth <= r.high
    coverage = {k: h / cohorts for k, h in hits.items()}
    assert coverage["corrected"] >= 0.88, coverage
    assert coverage["one repeat"] >= 0.88, coverage
    assert coverage["naive"] <= 0.80, coverage


# ---------------------------------------------------------------------------------------------
# the CV protocol: corrected t by default, the conditional bootstrap on request


def _generator_cohort(n: int, seed: int):
    from crlm_lib.data import synthetic as S
    from crlm_lib.data.clinical import outcomes, validate_clinical

    sim = S.simulate_cohort(n, seed, oracle_curves=False)
    clin = validate_clinical(sim.clinical)
    clin.index = clin.index.astype(str)
    return ev.Cohort(clinical=clin, outcomes=outcomes(clin), ids=list(clin.index))


def test_cv_protocol_corrected_t_by_default_conditional_bootstrap_on_request(tmp_path):
    from dataclasses import replace

    from crlm_lib.config import get_profile
    from crlm_lib.evaluation.bootstrap import harrell_metrics

    cohort = _generator_cohort(80, seed=3)
    smoke = get_profile("smoke")
    prof = smoke.with_(eval=replace(smoke.eval, cv_folds=4, cv_repeats=2))
    kw = {"runs_dir": tmp_path, "anchors": ("fong", "cox"), "oracle": False, "controls": False,
          "baselines": ("fong",), "ci_heads": ("os",)}  # fmt: skip
    res = ev.run_cv_protocol([], cohort, prof, **kw)
    assert set(res.tidy["interval"]) == set(res.differences["interval"]) == {ev.CORRECTED_T}

    def c(frame):
        return harrell_metrics(frame, heads=("os",))["os_c_harrell"]

    def per_fold(key):
        return np.array([c(g) for f in res.predictions[key] for _, g in f.groupby("fold")])

    cox, fong = per_fold("cox"), per_fold("fong")
    assert cox.size == 8  # 2 repeats x 4 folds
    ref = corrected_t_interval(cox, 20 / 60)
    row = res.tidy.set_index(["model", "metric"]).loc[("cox", "os_c_harrell")]
    assert (row["estimate"], row["low"], row["high"]) == pytest.approx(ref[:3])
    assert row["splits"] == 8
    diff = res.differences.set_index(["model", "metric"]).loc[("cox", "os_c_harrell")]
    assert diff["baseline"] == "fong"
    assert diff["estimate"] == pytest.approx((cox - fong).mean())
    assert diff["high"] - diff["low"] == pytest.approx(
        2 * stats.t.ppf(0.975, 7) * math.sqrt((1 / 8 + 1 / 3) * np.var(cox - fong, ddof=1))
    )

    boot = ev.run_cv_protocol([], cohort, prof, n_boot=20, interval="conditional_bootstrap", **kw)
    assert set(boot.tidy["interval"]) == {ev.CONDITIONAL_BOOTSTRAP}
    pooled = np.mean([c(f) for f in res.predictions["cox"]])  # pooled OOF C, mean of repeats
    row = boot.tidy.set_index(["model", "metric"]).loc[("cox", "os_c_harrell")]
    assert row["estimate"] == pytest.approx(pooled) and row["n_boot"] == 20
    with pytest.raises(ev.EvaluationError, match="interval"):
        ev.run_cv_protocol([], cohort, prof, interval="naive", **kw)
