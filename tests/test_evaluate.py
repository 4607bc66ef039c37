"""Tests of crlm_lib.evaluation: bootstrap coverage, paired comparison, protocols on a simulated
clinical-only cohort (anchors + oracle), calibration, Kaplan–Meier by risk, published numbers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold, train_test_split

from crlm_lib import evaluation as ev
from crlm_lib import metrics as M
from crlm_lib.config import N_YEARS, get_profile
from crlm_lib.data.clinical import PREDICTORS
from crlm_lib.evaluation import bootstrap as B
from crlm_lib.evaluation import protocols, runs
from crlm_lib.models.clinical import SURV_COLS, frame_from_curves
from crlm_lib.types import Predictions

YEARS = np.arange(1, N_YEARS + 1)


def simulate_cohort(n: int, seed: int = 0) -> ev.Cohort:
    """Clinical-only cohort: every predictor column, exponential OS/DFS from a linear hazard
    of three predictors, uniform censoring, and the oracle table of the true curves."""
    rng = np.random.default_rng(seed)
    ids = [f"SIM-{i:04d}" for i in range(n)]
    clin = pd.DataFrame(rng.normal(size=(n, len(PREDICTORS))), columns=PREDICTORS, index=ids)
    lp = 0.8 * clin["age"] - 0.5 * clin["body_mass_index"] + 0.6 * clin["max_tumor_size"]
    clin["clinrisk_score"] = np.clip(np.round(lp + 2.5), 0, 5)
    lam_os, lam_dfs = 0.15 * np.exp(lp), 0.3 * np.exp(lp)
    t_os, t_dfs = rng.exponential(1 / lam_os), rng.exponential(1 / lam_dfs)
    t_dfs = np.minimum(t_os, t_dfs)
    cens = rng.uniform(1.0, 10.0, n)
    out = pd.DataFrame(
        {
            "os_years": np.minimum(t_os, cens),
            "os_event": (t_os <= cens).astype(int),
            "dfs_years": np.minimum(t_dfs, cens),
            "dfs_event": (t_dfs <= cens).astype(int),
        },
        index=ids,
    )
    oracle = pd.DataFrame({"Patient-ID": ids, "os_risk": lp.to_numpy(), "dfs_risk": lp.to_numpy()})
    for k in YEARS:
        oracle[f"os_surv_y{k}"] = np.exp(-lam_os.to_numpy() * k)
        oracle[f"dfs_surv_y{k}"] = np.exp(-lam_dfs.to_numpy() * k)
    return ev.Cohort(clinical=clin, outcomes=out, ids=ids, paths=None, oracle=oracle)


def fake_cv_splits(ids, events, folds, repeats, seed):
    out = []
    for r in range(repeats):
        skf = StratifiedKFold(folds, shuffle=True, random_state=seed + r)
        for f, (a, b) in enumerate(skf.split(np.zeros(len(ids)), events)):
            out.append((r, f, [ids[i] for i in a], [ids[i] for i in b]))
    return out


def fake_paper_split(ids, events, seed):
    tr, rest = train_test_split(list(ids), test_size=0.2, random_state=seed, stratify=events)
    va, te = train_test_split(rest, test_size=0.5, random_state=seed)
    return tr, va, te


@pytest.fixture
def splits(monkeypatch):
    """Stand-ins for data.dataset's split functions (the protocol logic is what is tested)."""
    monkeypatch.setattr(protocols, "cv_split_ids", fake_cv_splits)
    monkeypatch.setattr(protocols, "paper_split_ids", fake_paper_split)


def oracle_frame(cohort: ev.Cohort) -> pd.DataFrame:
    return ev.fit_predict_anchor("oracle", cohort, cohort.ids, cohort.ids)


# ---------------------------------------------------------------------------------------------


def test_bootstrap_interval_covers_truth_at_nominal_rate():
    """Percentile bootstrap of a mean covers the true mean in about 95% of simulated cohorts."""
    rng = np.random.default_rng(0)
    true_mean, hits, sims = 2.0, 0, 60
    for s in range(sims):
        y = rng.exponential(true_mean, 80)
        frame = pd.DataFrame({"patient_id": [f"p{i}" for i in range(80)], "y": y})
        res = ev.bootstrap_scores(
            frame, n_boot=150, seed=s, metric_fn=lambda p, t: {"mean": p["y"].mean()}
        )
        low, high = res.loc[0, ["low", "high"]]
        hits += low <= true_mean <= high
    assert 0.85 <= hits / sims <= 1.0


def test_paired_difference_is_invariant_to_patient_order():
    cohort = simulate_cohort(80, seed=1)
    a = ev.fit_predict_anchor("fong", cohort, cohort.ids, cohort.ids)
    b = oracle_frame(cohort)
    kw = {"n_boot": 8, "seed": 3, "train_outcomes": cohort.outcomes}
    d1 = ev.paired_difference(a, b, **kw)
    perm = np.random.default_rng(0).permutation(len(a))
    d2 = ev.paired_difference(a.iloc[perm], b.iloc[perm[::-1]], **kw)
    pd.testing.assert_frame_equal(d1, d2)
    c = d1.set_index("metric").loc["os_c_harrell"]
    assert c["estimate"] < 0 and c["low"] <= c["estimate"] <= c["high"]  # oracle beats Fong
    same = ev.paired_difference(a, a, **kw).set_index("metric")
    assert same.loc["os_c_harrell", ["estimate", "low", "high"]].abs().max() == 0.0


def test_paired_difference_refuses_different_patients():
    cohort = simulate_cohort(40, seed=2)
    a = oracle_frame(cohort)
    with pytest.raises(ev.EvaluationError):
        ev.paired_difference(a, a.iloc[:-1], n_boot=2)


def test_cv_protocol_anchors_oracle_last_and_resumable(splits, tmp_path, monkeypatch):
    cohort = simulate_cohort(70, seed=3)
    prof = get_profile("smoke")  # 2 folds x 1 repeat
    kw = {"n_boot": 4, "runs_dir": tmp_path, "anchors": ("fong", "cox"), "ci_heads": ("os",)}
    res = ev.run_cv_protocol([], cohort, prof, **kw)
    models = list(dict.fromkeys(res.tidy["model"]))
    assert models == ["fong", "cox", "oracle"]
    assert list(res.wide.index)[-1] == "oracle"
    assert {"model", "metric", "estimate", "low", "high", "repeats", "folds"} <= set(res.tidy)
    oof = res.predictions["cox"][0]
    assert sorted(oof["patient_id"]) == sorted(cohort.ids)  # one OOF prediction per patient
    c = res.tidy.set_index(["model", "metric"])["estimate"]
    assert c["oracle", "os_c_harrell"] >= max(c[m, "os_c_harrell"] for m in ("fong", "cox")) - 0.02
    # the two anchors are compared once (Cox minus Fong), not also mirrored
    pairs = set(zip(res.differences["model"], res.differences["baseline"], strict=True))
    assert pairs == {("cox", "fong")}
    assert "oracle" not in set(res.differences["model"])
    assert (tmp_path / "cv" / "cox" / "r0_f1" / "predictions.csv").is_file()
    # IPCW metrics: each test fold's censoring distribution comes from its own training fold
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    by_fold = {
        (r, f): cohort.outcomes.loc[tr]
        for r, f, tr, _ in fake_cv_splits(cohort.ids, events, 2, 1, 0)
    }
    per_fold = M.all_metrics(oof, by_fold, heads=("os",))
    assert c["cox", "os_c_uno"] == pytest.approx(per_fold["os_c_uno"])
    assert c["cox", "os_ibs"] == pytest.approx(per_fold["os_ibs"])
    whole = M.all_metrics(oof, cohort.outcomes, heads=("os",))
    assert c["cox", "os_c_uno"] != pytest.approx(whole["os_c_uno"], abs=1e-9)
    with pytest.raises(ev.EvaluationError, match="censoring_from"):
        ev.run_cv_protocol([], cohort, prof, censoring_from="test", **kw)

    # resumable: a second run reuses every cached fold (anchors are never refitted)
    def boom(*a, **k):
        raise AssertionError("refitted a cached fold")

    monkeypatch.setattr(runs, "fit_predict_anchor", boom)
    again = ev.run_cv_protocol([], cohort, prof, **kw)
    pd.testing.assert_frame_equal(res.tidy, again.tidy)


def test_paper_protocol_rows_and_ci_width(splits, tmp_path):
    cohort = simulate_cohort(100, seed=4)
    table, preds = ev.run_paper_protocol([], cohort, "smoke", n_boot=30, runs_dir=tmp_path)
    assert list(dict.fromkeys(table["model"])) == ["fong", "cox", "oracle"]
    assert (table["n_test"] == 10).all()
    taa = table[(table["metric"] == "os_taa")].set_index("model")
    assert ((taa["low"] <= taa["estimate"]) & (taa["estimate"] <= taa["high"])).all()
    assert (taa["high"] - taa["low"]).max() > 0.1  # ten test patients: wide intervals
    assert all(len(p) == 10 for p in preds.values())
    for model in ("fong", "cox", "oracle"):  # strict JSON: a metric without value is null
        text = (tmp_path / "paper_split" / "seed0" / model / "metrics.json").read_text()
        metrics = json.loads(text, parse_constant=pytest.fail)
        assert metrics and "NaN" not in text


def test_calibration_table_shapes_and_range():
    small = oracle_frame(simulate_cohort(60, seed=5))
    t = ev.calibration_table(small)
    assert len(t) == 3 * 3 and set(t["group"]) == {1, 2, 3}
    assert t.groupby("horizon_years")["n"].sum().eq(60).all()
    assert t["predicted"].between(0, 1).all() and t["observed"].between(0, 1).all()
    # risk groups are ordered by predicted risk
    for _, g in t.groupby("horizon_years"):
        assert g.sort_values("group")["predicted"].is_monotonic_increasing
    large = oracle_frame(simulate_cohort(150, seed=6))
    assert len(ev.calibration_table(large, horizon_years=(3,))) == 10
    # the true curves are calibrated: observed near predicted at 3 years on a large cohort
    big = ev.calibration_table(oracle_frame(simulate_cohort(1500, seed=7)), (3,), groups=3)
    assert np.abs(big["observed"] - big["predicted"]).max() < 0.08
    fig = ev.plot_calibration(t)
    assert len(fig.axes) == 3


def test_km_by_predicted_risk_separates_groups():
    n = 100
    rng = np.random.default_rng(8)
    risk_group = np.repeat([0, 1], n // 2)
    lam = np.where(risk_group == 1, 1.0, 0.05)
    t = rng.exponential(1 / lam)
    surv = np.exp(-lam[:, None] * YEARS[None, :])
    out = pd.DataFrame(
        {"os_years": t, "os_event": 1, "dfs_years": t, "dfs_event": 1},
        index=[f"p{i}" for i in range(n)],
    )
    frame = frame_from_curves(list(out.index), surv, surv, out)
    res = ev.km_by_predicted_risk(frame, split="median", plot=True)
    assert res.p_value < 1e-6
    assert set(res.groups["group"]) == {"low", "high"}
    assert (
        res.groups.loc[res.groups["group"] == "high", "risk"].min()
        >= res.groups.loc[res.groups["group"] == "low", "risk"].max()
    )
    assert res.figure.axes[0].get_xlabel().startswith("years")
    # the same test on risk unrelated to outcome is not significant
    shuffled = frame.copy()
    shuffled[SURV_COLS] = frame[SURV_COLS].to_numpy()[rng.permutation(n)]
    assert ev.km_by_predicted_risk(shuffled, split="tertiles", plot=False).p_value > 1e-3


def test_published_numbers_are_data_with_source():
    t1 = ev.published_table("acfnet_table1")
    assert list(t1["taa"]) == [0.700, 0.850, 1.000] and "source" in t1
    assert ev.published_table("star_table2").loc[4, "mae"] == 0.7500
    long = ev.published_all()
    assert {"source", "table", "model", "metric", "value"} == set(long.columns)
    dypro = long[long["table"] == "dypro"].set_index("metric")["value"]
    assert dypro["c_index_os"] == 0.755 and dypro["ibs"] == 0.143
    with pytest.raises(KeyError):
        ev.published_table("nope")


def test_as_specs_parses_objective():
    specs = ev.as_specs(["acfnet", "acfnet:censored"], options_by_name={"acfnet": {"a": 1}})
    assert [s.key for s in specs] == ["acfnet", "acfnet-censored"]
    assert specs[1].objective == "censored" and specs[1].options == {"a": 1}


def test_bootstrap_cache_gives_the_same_numbers_and_spares_the_paired_pass():
    rng = np.random.default_rng(3)
    ids = [f"P{i:03d}" for i in range(40)]
    a = pd.DataFrame({"patient_id": ids, "x": rng.normal(size=40)})
    b = pd.DataFrame({"patient_id": ids, "x": rng.normal(size=40)})
    calls = []

    def metric(p, _t):
        calls.append(1)
        return {"mean_x": float(p["x"].mean())}

    plain = ev.paired_difference(a, b, None, n_boot=30, seed=1, metric_fn=metric)
    memo: dict = {}
    ev.bootstrap_scores(a, None, n_boot=30, seed=1, metric_fn=metric, cache=memo)
    ev.bootstrap_scores(b, None, n_boot=30, seed=1, metric_fn=metric, cache=memo)
    before = len(calls)
    cached = ev.paired_difference(a, b, None, n_boot=30, seed=1, metric_fn=metric, cache=memo)
    assert len(calls) == before  # every replicate value came from the per-model passes
    pd.testing.assert_frame_equal(plain, cached)
    # the same settings as one BootstrapOptions value; keywords override its fields
    opts = ev.BootstrapOptions(n_boot=30, seed=1, metric_fn=metric)
    pd.testing.assert_frame_equal(ev.paired_difference(a, b, None, opts), plain)
    other = ev.paired_difference(a, b, None, opts, seed=2)
    reseeded = ev.BootstrapOptions(n_boot=30, seed=2, metric_fn=metric)
    pd.testing.assert_frame_equal(other, ev.paired_difference(a, b, None, reseeded))
    assert not other[["low", "high"]].equals(plain[["low", "high"]])


def test_bootstrap_each_gives_the_same_numbers_in_a_process_pool(monkeypatch):
    from functools import partial

    cohort = simulate_cohort(40, seed=4)
    frames = {
        name: ev.fit_predict_anchor(name, cohort, cohort.ids, cohort.ids)
        for name in ("fong", "oracle", "cox")
    }
    opts = ev.BootstrapOptions(n_boot=20, seed=3, metric_fn=partial(B.harrell_metrics))
    serial = B.bootstrap_each(frames, cohort.outcomes, opts, n_jobs=1)
    monkeypatch.setattr(B, "POOL_MIN_REPLICATES", 1)  # 3 x 20 evaluations go to the pool
    spawned = []
    real_run_jobs = B.run_jobs_in_order
    monkeypatch.setattr(
        B, "run_jobs_in_order", lambda *a, **k: spawned.append(a[2]) or real_run_jobs(*a, **k)
    )
    pooled = B.bootstrap_each(frames, cohort.outcomes, opts, n_jobs=2)
    assert spawned == [2] and list(pooled) == list(frames)
    for name, frame in frames.items():
        pd.testing.assert_frame_equal(pooled[name], serial[name])
        alone = ev.bootstrap_scores(frame, cohort.outcomes, opts)
        pd.testing.assert_frame_equal(pooled[name], alone)
    monkeypatch.setattr(B, "POOL_MIN_REPLICATES", 10_000)  # too little work: no pool
    B.bootstrap_each(frames, cohort.outcomes, opts, n_jobs=2)
    assert spawned == [2, 1]


def test_replicates_taken_from_validated_predictions_give_the_same_numbers():
    """``predictions_in``: a replicate is ``Predictions.take`` of the frame validated once,
    with exactly the numbers of slicing and validating the frame in every replicate."""
    from functools import partial

    cohort = simulate_cohort(60, seed=5)
    frames = {
        name: ev.fit_predict_anchor(name, cohort, cohort.ids[:40], cohort.ids[40:])
        for name in ("fong", "oracle", "cox")
    }
    # a frame whose probability columns sit in separate blocks (built column by column)
    split = pd.DataFrame({"patient_id": frames["cox"]["patient_id"]})
    for col in frames["cox"].columns.drop("patient_id"):
        split[col] = frames["cox"][col].to_numpy()
    frames["blocks"] = split
    mixed = frames["cox"].copy()  # one float32 column among the float64 ones
    mixed[SURV_COLS[0]] = mixed[SURV_COLS[0]].astype(np.float32)
    frames["mixed dtypes"] = mixed
    train = M.TrainingOutcomes(cohort.outcomes.loc[cohort.ids[:40]])
    for metric in (partial(B.head_metrics, horizons=(1.0, 3.0)), partial(B.harrell_metrics)):
        for frame in frames.values():
            kw = {"n_boot": 25, "seed": 2, "metric_fn": metric}
            sliced = ev.bootstrap_scores(frame, train, **kw)
            taken = ev.bootstrap_scores(frame, train, **kw, predictions_in=True)
            pd.testing.assert_frame_equal(taken, sliced, check_exact=True)
        kw = {"n_boot": 25, "seed": 2, "metric_fn": metric}
        paired = ev.paired_difference(frames["cox"], frames["fong"], train, **kw)
        paired_taken = ev.paired_difference(
            frames["cox"], frames["fong"], train, **kw, predictions_in=True
        )
        pd.testing.assert_frame_equal(paired_taken, paired, check_exact=True)
    # the layout validating the rows would give, also when a table of one row is resampled
    frames["one row"] = frames["cox"].iloc[:1]
    for frame in frames.values():
        rows = np.array([0, 0, 0]) if len(frame) == 1 else np.array([3, 3, 0, 7, 19])
        whole = Predictions.from_frame(frame)
        taken = whole.take(rows)
        again = Predictions.from_frame(frame.iloc[rows].reset_index(drop=True))
        pd.testing.assert_frame_equal(taken.frame, again.frame)
        for name in ("survival_pmf", "recurrence_cdf"):
            a, b = getattr(taken, name), getattr(again, name)
            assert np.array_equal(a, b) and a.flags.f_contiguous == b.flags.f_contiguous
            assert a.flags.c_contiguous == b.flags.c_contiguous and not a.flags.writeable


def test_ablation_base_row_is_image_only_and_both_dis_forms_are_rows():
    from crlm_lib.evaluation import ABLATION_ROWS
    from crlm_lib.models import build_model

    specs = {key: spec for key, _, spec, _ in ABLATION_ROWS}
    base = build_model("acfnet", 6, get_profile("smoke").model, **specs["abl-3dcnn-image"].options)
    assert base.clin_encoder.net is None and base.clin_residual is None
    assert specs["abl-3dcnn-b"].options.get("clinical", True)  # B brings the clinical path
    assert specs["abl-acfnet-xcorr"].options["dis_mode"] == "xcorr"
    assert specs["acfnet"].options.get("dis_mode", "paper") == "paper"


def test_published_networks_sit_beside_the_anchored_rows_in_the_split_tables():
    from crlm_lib.evaluation import ABLATION_ROWS
    from crlm_lib.evaluation.specs import PUBLISHED_OPTIONS

    rows = {key: (name, spec, pub) for key, name, spec, pub in ABLATION_ROWS}
    for anchored, published in (("acfnet", "acfnet-noanchor"), ("star", "star-noanchor")):
        name, spec, pub = rows[published]
        assert spec.options == PUBLISHED_OPTIONS and "as published" in name
        assert pub == rows[anchored][2]  # the same published row as the anchored form
    tidy = pd.DataFrame(
        [
            {"model": m, "metric": k, "estimate": v, "low": v - 0.1, "high": v + 0.1}
            for m in ("acfnet", "acfnet-noanchor", "cnn3d_lstm")
            for k, v in (("os_taa", 0.5), ("os_mse", 2.0), ("os_mae", 1.0), ("os_c_harrell", 0.6))
        ]
    )
    table = ev.comparison_table(tidy, "acfnet_table1")
    published = table.iloc[:, -1]
    assert list(table.index) == [
        "4D-ACFNet + Cox anchor",
        "4D-ACFNet, no Cox anchor (as published)",
        "3D CNN + LSTM",
    ]
    assert published.iloc[0] == published.iloc[1] != "–"  # both forms beside the paper's row


def test_one_engine_same_draws_and_intervals_for_frames_and_arrays():
    """bootstrap_scores (frames) and bootstrap_ci (arrays) draw the same patients for one seed
    and cut the same percentile interval, so one metric gives one interval either way."""
    rng = np.random.default_rng(11)
    ids = [f"P{i:03d}" for i in range(60)]  # already in patient-ID order
    x = rng.normal(size=60)
    frame = pd.DataFrame({"patient_id": ids, "x": x})
    tidy = ev.bootstrap_scores(
        frame, n_boot=80, seed=5, metric_fn=lambda p, _t: {"mean": float(p["x"].mean())}
    ).iloc[0]
    # IDs first: the arrays' content-defined order is then the patient-ID order of the frame
    res = B.bootstrap_ci(lambda _i, a: float(a.mean()), np.array(ids), x, n_boot=80, seed=5)
    assert (tidy["estimate"], tidy["low"], tidy["high"]) == pytest.approx(tuple(res), abs=1e-12)
    # the draws are the engine's
    first = next(B.draws(60, 1, 5))
    assert np.array_equal(first, np.random.default_rng(5).integers(0, 60, 60))
    # paired difference of arrays = interval of the difference
    y = x + rng.normal(scale=0.1, size=60)
    diff = B.paired_bootstrap_diff(lambda p: float(p.mean()), x, y, n_boot=50, seed=2)
    direct = B.bootstrap_ci(lambda a, b: float(a.mean() - b.mean()), x, y, n_boot=50, seed=2)
    assert tuple(diff) == tuple(direct)


def test_percentile_interval_is_nan_when_most_replicates_are_nan():
    vals = np.r_[np.full(6, np.nan), np.arange(4.0)]
    with pytest.warns(M.MetricWarning, match="4/10"):
        assert all(np.isnan(B.percentile_interval(vals, 0.05, what="c")))
    assert B.percentile_interval(np.arange(101.0), 0.1) == pytest.approx((5.0, 95.0))


def test_variants_labels_and_control_table():
    """Named variants give the published (unanchored) networks; control rows read as such."""
    from crlm_lib.evaluation.specs import VARIANTS

    (spec,) = ev.as_specs(["acfnet_noanchor"])
    assert spec == VARIANTS["acfnet_noanchor"]
    assert spec.options == {
        "clinical_residual": False,
        "mask_channels": (),
        "burden_target": False,
        "lesion_pooling": False,
        "intensity_target": False,
        "head_lr_scale": 1.0,
        "lesion_anchor": False,
        "survival_classes": "published12",
        "recurrence_form": "independent",
    }
    (cens,) = ev.as_specs(["acfnet_noanchor:censored"])
    assert cens.objective == "censored" and cens.key == "acfnet-noanchor-censored"
    assert ev.model_label("acfnet") == "4D-ACFNet + Cox anchor"
    assert ev.model_label("acfnet-noanchor") == "4D-ACFNet, no Cox anchor (as published)"
    assert ev.model_label("aminn@ct-permuted") == "AMINN, CT permuted (control)"
    diffs = pd.DataFrame(
        {
            "model": ["aminn", "aminn", "acfnet", "acfnet"],
            "baseline": ["ct-permuted", "cox", "step-0", "ct-permuted"],
            "metric": ["os_c_harrell"] * 4,
            "estimate": [0.07, -0.05, 0.02, 0.0],
            "low": [0.01, -0.13, -0.01, -0.001],
            "high": [0.13, 0.03, 0.05, 0.001],
        }
    )
    table = ev.control_table(diffs)
    assert list(table.index) == [
        "AMINN: trained − CT permuted",
        "4D-ACFNet + Cox anchor: trained − CT permuted",
        "4D-ACFNet + Cox anchor: trained − untrained start",
    ]
    assert ev.model_label("acfnet@step0") == (
        "4D-ACFNet + Cox anchor, untrained anchored start (control)"
    )
    assert table.iloc[0, 0].startswith("+0.070 (+0.010 to +0.130)")
    assert ev.control_table(diffs[diffs["baseline"] == "cox"]).empty


def test_image_increment_is_positive_under_image_effect_and_nil_under_null():
    """At 1,500 + 1,500 patients the true image quantities add clearly to a clinical Cox model
    under ``image_effect`` and nothing beyond noise under ``null``."""
    from crlm_lib.evaluation.bench import image_increment

    tab = image_increment(1500)
    effect = tab.loc[("image_effect", "image increment")]
    null = tab.loc[("null", "image increment")]
    assert effect["os"] > 0.04 and effect["dfs"] > 0.05, tab
    assert abs(null["os"]) < 0.015 and abs(null["dfs"]) < 0.015, tab
    oracle = tab.loc[("image_effect", "oracle (true 5-year risk)")]
    assert oracle["os"] > tab.loc[("image_effect", "Cox, clinical table")]["os"]


def test_harrell_metrics_equal_head_metrics_c(splits):
    """The controls' cheap metric is the same Harrell C as the full metric function."""
    from crlm_lib.evaluation.bootstrap import harrell_metrics

    cohort = simulate_cohort(70, seed=3)
    frame = oracle_frame(cohort)
    full = ev.head_metrics(frame)
    cheap = harrell_metrics(frame)
    assert set(cheap) == {"os_c_harrell", "dfs_c_harrell"}
    for key, value in cheap.items():
        assert value == pytest.approx(full[key], abs=1e-12)


def test_image_oracle_row_reads_the_true_image_quantities(splits, tmp_path):
    """``cox_trueimg`` (Cox on the clinical table + the generator's true image quantities) joins
    the CV when the oracle table carries them, and beats the clinical Cox model when the hazard
    depends on an image quantity absent from the table."""
    from crlm_lib.data.synthetic import IMAGE_COVARIATES

    cohort = simulate_cohort(300, seed=11)
    rng = np.random.default_rng(12)
    z = rng.normal(size=len(cohort.ids))
    for col in IMAGE_COVARIATES:
        cohort.oracle[col] = rng.uniform(0.5, 2.0, len(cohort.ids))
    cohort.oracle["tumour_attenuation_z"] = z
    # Rewrite OS so that z (in no clinical column) carries most of the hazard.
    t_os = rng.exponential(1 / (0.15 * np.exp(1.5 * z)))
    cohort.outcomes["os_years"] = np.minimum(t_os, 10.0)
    cohort.outcomes["os_event"] = (t_os <= 10.0).astype(int)
    prof = get_profile("smoke")
    kw = {"n_boot": 0, "runs_dir": tmp_path, "anchors": ("cox",), "ci_heads": ("os",)}
    res = ev.run_cv_protocol([], cohort, prof, **kw)
    assert list(dict.fromkeys(res.tidy["model"])) == ["cox", "cox_trueimg", "oracle"]
    c = res.tidy.set_index(["model", "metric"])["estimate"]
    assert c["cox_trueimg", "os_c_harrell"] > c["cox", "os_c_harrell"] + 0.1


# ---------------------------------------------------------------------------------------------
# point-metric table, tie sensitivity, decision curve (issue 21)


@pytest.fixture
def cv_two_repeats(splits, tmp_path):
    """Fong, Cox and the oracle in 2 folds x 2 repeats of a simulated cohort of 90."""
    from dataclasses import replace

    cohort = simulate_cohort(90, seed=4)
    smoke = get_profile("smoke")
    prof = smoke.with_(eval=replace(smoke.eval, cv_repeats=2))
    res = ev.run_cv_protocol(
        [], cohort, prof, n_boot=2, runs_dir=tmp_path, anchors=("fong", "cox"), controls=False
    )
    return cohort, res


def test_point_metric_table_rows_papers_metrics_and_constant(cv_two_repeats):
    from crlm_lib import point_metrics as P

    cohort, cv = cv_two_repeats
    table = ev.point_metric_table({**cv.predictions, "cox@ct-permuted": []}, cohort)
    assert list(table.index) == ["fong", "cox", "constant", "oracle"]
    assert list(table.columns) == [f"os_{m}" for m in ev.POINT_TABLE_METRICS]
    tidy = cv.tidy.set_index(["model", "metric"])["estimate"]
    for model in ("fong", "cox", "oracle"):  # the papers' columns are the main table's
        assert table.loc[model, "os_taa"] == pytest.approx(tidy[model, "os_taa"])
        assert table.loc[model, "os_obs_mae"] == pytest.approx(tidy[model, "os_obs_mae"])
        # a censored patient predicted to die after censoring adds no hinge error
        assert table.loc[model, "os_hinge_mae"] <= table.loc[model, "os_mae"]
    # the constant "always year k": k maximises TAA on each test fold's training fold
    per_repeat = []
    for frame in cv.predictions["cox"]:
        k = np.empty(len(frame))
        for f in (0, 1):
            test = (frame["fold"] == f).to_numpy()
            held_out = set(frame["patient_id"][test])
            train = cohort.outcomes.loc[[i for i in cohort.ids if i not in held_out]]
            t, e = train["os_years"].to_numpy(), train["os_event"].to_numpy()
            g = P.censoring_prob_at(M.CensoringKM(t, e), t)
            k[test] = P.best_constant_years(t, e, g)["taa"]
        per_repeat.append(M.paper_metrics(k, frame["os_years"])["taa"])
    assert table.loc["constant", "os_taa"] == pytest.approx(np.mean(per_repeat))
    assert table.loc["oracle", "os_dcal_p"] > 0.01  # the true curves are D-calibrated


def test_tie_sensitivity_matches_the_main_table_and_months_move_the_conventions(cv_two_repeats):
    cohort, cv = cv_two_repeats
    table = ev.tie_sensitivity_table(cv.predictions, cohort, heads=("os",))
    assert list(table.index) == ["fong", "cox", "oracle"]
    tidy = cv.tidy.set_index(["model", "metric"])["estimate"]
    for model in table.index:  # recorded times, G(T): the CV table's Uno C
        assert table.loc[model, "os_c_uno"] == pytest.approx(tidy[model, "os_c_uno"], abs=1e-12)
    months = table[["os_c_uno_months_g_t", "os_c_uno_months_g_t_minus"]]
    assert months.notna().all().all()
    assert (months.iloc[:, 0] != months.iloc[:, 1]).any()  # ties at month resolution


def _net_benefit_reference(time, event, risk, threshold, horizon):
    """Net benefit from its definition, with scikit-survival's Kaplan–Meier (not lifelines,
    which dcurves uses)."""
    from sksurv.nonparametric import kaplan_meier_estimator

    def km_risk(mask):
        if not mask.any():
            return 0.0
        t, s = kaplan_meier_estimator(event[mask].astype(bool), time[mask])
        i = np.searchsorted(t, horizon, side="right") - 1
        return 1.0 - (s[i] if i >= 0 else 1.0)

    flagged = risk >= threshold
    share, r = flagged.mean(), km_risk(flagged)
    return share * r - share * (1 - r) * threshold / (1 - threshold)


def test_decision_curve_matches_its_definition_and_has_the_references(cv_two_repeats):
    cohort, cv = cv_two_repeats
    dca = ev.decision_curve(cv.predictions, models=("fong", "cox", "acfnet", "oracle"))
    assert list(dict.fromkeys(dca["model"])) == ["fong", "cox", "oracle", "all", "none"]
    assert set(dca["threshold"].round(2)) == set(ev.DCA_THRESHOLDS) and (dca["n"] == 90).all()
    assert (dca.loc[dca["model"] == "none", "net_benefit"] == 0).all()
    frame = cv.predictions["cox"][0].sort_values("patient_id")
    time, event = frame["dfs_years"].to_numpy(), frame["dfs_event"].to_numpy()
    risk = Predictions.from_frame(frame).risk("dfs", 2)
    for model, score in (("cox", risk), ("all", np.ones_like(risk))):
        rows = dca[dca["model"] == model]
        expected = [_net_benefit_reference(time, event, score, t, 2.0) for t in rows["threshold"]]
        np.testing.assert_allclose(rows["net_benefit"], expected, atol=1e-9)
    fig = ev.plot_decision_curve(dca)
    assert len(fig.axes[0].lines) == 5
    with pytest.raises(ev.EvaluationError, match="none of"):
        ev.decision_curve(cv.predictions, models=("stg",))


def test_paired_table_labels_its_columns_and_shows_each_pair_once():
    diffs = pd.DataFrame(
        {
            "model": ["acfnet", "fong", "cox"],
            "baseline": ["cox", "cox", "fong"],
            "metric": ["os_c_harrell"] * 3,
            "estimate": [0.02, 0.14, -0.14],
            "low": [-0.05, 0.01, -0.29],
            "high": [0.09, 0.29, -0.01],
        }
    )
    table = ev.paired_table(diffs)
    assert list(table.columns) == ["Δ C-index OS (Harrell)"]
    assert len(table) == 2  # "Cox − Fong" is "Fong − Cox" negated: left out
    assert table.index[1].startswith("Fong") and table.iloc[0, 0] == "+0.020 (−0.050 to +0.090)"
