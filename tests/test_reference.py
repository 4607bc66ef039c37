"""The Kaplan–Meier null model and the Holm-adjusted paired comparisons
(evaluation.reference)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import KaplanMeierFitter

from crlm_lib import evaluation as ev
from crlm_lib.config import get_profile
from crlm_lib.evaluation import protocols, reference
from crlm_lib.types import Predictions
from tests.test_evaluate import fake_cv_splits, simulate_cohort


@pytest.fixture(scope="module")
def cv(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr(protocols, "cv_split_ids", fake_cv_splits)
    cohort = simulate_cohort(80, seed=5)
    res = ev.run_cv_protocol(
        [], cohort, get_profile("smoke"), n_boot=20, anchors=("fong", "cox"),
        runs_dir=tmp_path_factory.mktemp("runs"), ci_heads=("os",),
    )  # fmt: skip
    mp.undo()
    return cohort, res


def test_km_null_gives_each_fold_its_training_kaplan_meier(cv):
    cohort, res = cv
    frame = res.predictions["cox"][0]
    null = reference.km_null_predictions(frame, cohort)
    assert sorted(null["patient_id"]) == sorted(frame["patient_id"])
    curve = Predictions.from_frame(null).curve("os")
    for rows in null.groupby("fold").indices.values():
        assert np.ptp(curve[rows], axis=0).max() == 0.0  # one curve for the whole fold
        train = cohort.outcomes.drop(index=null["patient_id"].iloc[rows])
        km = KaplanMeierFitter().fit(train["os_years"], train["os_event"])
        expected = km.survival_function_at_times(np.arange(1.0, 13.0)).to_numpy()
        np.testing.assert_allclose(curve[rows[0]], expected, atol=1e-9)


def test_km_null_row_is_uninformative_and_placed_before_the_oracle(cv):
    cohort, res = cv
    null = reference.km_null_tidy(res.predictions, cohort, n_boot=10, horizons=(1.0, 3.0))
    est = null.set_index("metric")["estimate"]
    # tied within a fold; pooled over folds, pairs across folds compare two training KMs
    assert est["os_c_harrell"] == pytest.approx(0.5, abs=0.1)
    oracle_ibs = res.tidy.query("model == 'oracle' and metric == 'os_ibs'")["estimate"].iloc[0]
    assert est["os_ibs"] > oracle_ibs
    merged = reference.with_reference(res.tidy, null)
    assert list(dict.fromkeys(merged["model"])) == ["fong", "cox", "km_null", "oracle"]
    assert ev.model_label("km_null").startswith("Kaplan–Meier")


def test_km_null_rows_carry_the_corrected_t_interval_of_the_other_cv_rows(cv):
    cohort, res = cv
    null = reference.km_null_tidy(res.predictions, cohort, horizons=(1.0, 3.0))
    assert set(null["interval"]) == {"corrected_t"}
    ibs = null.set_index("metric").loc["os_ibs"]
    frames = [reference.km_null_predictions(f, cohort) for f in res.predictions["cox"]]
    score = lambda p, t: ev.head_metrics(p, t, horizons=(1.0, 3.0))  # noqa: E731
    per_fold = ev.split_scores(frames, res_censoring(cohort, frames), score)["os_ibs"]
    assert ibs["estimate"] == pytest.approx(per_fold.mean())  # mean of the fold values
    expected = ev.corrected_t_interval(per_fold.to_numpy(), ibs_ratio(frames, cohort))
    assert (ibs["low"], ibs["high"]) == pytest.approx((expected.low, expected.high))
    # within a fold every pair is tied: C is 0.5 on every fold, so the interval has no width
    c = null.set_index("metric").loc["os_c_harrell"]
    assert (c["estimate"], c["low"], c["high"]) == pytest.approx((0.5, 0.5, 0.5))
    boot = reference.km_null_tidy(
        res.predictions, cohort, n_boot=10, horizons=(1.0, 3.0), interval="conditional_bootstrap"
    )
    assert set(boot["interval"]) == {"conditional_bootstrap"}
    with pytest.raises(ValueError, match="interval"):
        reference.km_null_tidy(res.predictions, cohort, interval="wald")


def res_censoring(cohort, frames):
    from crlm_lib import metrics as M
    from crlm_lib.evaluation._common import iter_test_sets, training_outcomes

    return M.TrainingOutcomes(
        {
            key: training_outcomes(cohort, f["patient_id"].iloc[rows])
            for f in frames
            for key, rows in iter_test_sets(f)
        }
    )


def ibs_ratio(frames, cohort):
    n_test = frames[0].groupby(["repeat", "fold"]).size().mean()
    return n_test / (len(cohort.ids) - n_test)


def test_holm_p_values_known_answers():
    se = 0.01
    z = 1.959963984540054
    diffs = pd.DataFrame(
        {
            "model": ["a", "b", "c", "a"],
            "baseline": ["cox", "cox", "cox", "fong"],
            "metric": ["os_c_harrell"] * 4,
            "estimate": [0.0, z * se, 4 * z * se, 0.5],
            "low": [-z * se, 0.0, 3 * z * se, 0.4],
            "high": [z * se, 2 * z * se, 5 * z * se, 0.6],
        }
    )
    table = reference.holm_table(diffs, baseline="cox", metrics=("os_c_harrell",))
    assert len(table) == 3  # the comparison with Fong is another family
    p = table["p (unadjusted)"].to_numpy()
    np.testing.assert_allclose(p[:2], [1.0, 0.05], atol=1e-9)
    assert p[2] < 1e-10
    holm = table["p (Holm)"].to_numpy()
    # Holm: sorted p times (m - rank), made monotone, capped at 1
    np.testing.assert_allclose(holm, [1.0, 0.10, 3 * p[2]], rtol=1e-9)
    assert list(table["rejected at 0.05 (Holm)"]) == ["no", "no", "yes"]
    assert reference.holm_table(diffs, baseline="rsf").empty
