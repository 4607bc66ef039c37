"""Reference rows beside the models and the multiplicity of the paired comparisons.

* The **Kaplan–Meier null model**: every test patient gets the Kaplan–Meier curves (overall
  and disease-free survival) of the training patients of its fold. It knows nothing about the
  patient, so its integrated Brier score is the IBS a model must beat to have learnt anything
  (Graf et al. 1999). Within a fold every pair is tied (C = 0.5); Harrell's C of pooled
  out-of-fold predictions also compares patients of different folds, whose training
  Kaplan–Meier curves differ a little, so the pooled C of the null model is near, not at, 0.5.
  Its rows carry the interval of the other CV rows (the corrected repeated-CV t over the test
  folds, :mod:`crlm_lib.evaluation.intervals`), or the conditional bootstrap on request.
* **Holm-adjusted p-values** of the paired comparisons with one anchor (statsmodels
  ``multipletests``, Holm 1979). The p-value of a paired bootstrap difference is read from its
  percentile interval by the normal approximation: standard error ``(high - low) / (2 z)``
  with ``z = 1.96``, ``p = 2 (1 - Phi(|estimate| / SE))``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from crlm_lib import metrics as M
from crlm_lib.evaluation._common import iter_test_sets, training_outcomes
from crlm_lib.evaluation.bootstrap import bootstrap_scores, head_metrics
from crlm_lib.evaluation.intervals import CONDITIONAL_BOOTSTRAP, CORRECTED_T, cv_intervals
from crlm_lib.evaluation.point import _km_at_year_ends
from crlm_lib.evaluation.specs import LABELS, model_label
from crlm_lib.models.clinical import frame_from_curves
from crlm_lib.types import CV_COLS, PATIENT_ID, Cohort

__all__ = ["KM_NULL_KEY", "holm_table", "km_null_predictions", "km_null_tidy", "with_reference"]

#: Row key of the Kaplan–Meier null model (``specs.LABELS``).
KM_NULL_KEY = "km_null"


def km_null_predictions(frame: pd.DataFrame, cohort: Cohort) -> pd.DataFrame:
    """The Kaplan–Meier null model's Predictions frame for the test sets of ``frame``.

    ``frame`` is any model's pooled out-of-fold frame of one repeat (``repeat``/``fold``
    columns) or one test split; each test set gets the Kaplan–Meier curves (at the ends of
    years 1..12) of the cohort's patients outside it, the same for every patient.
    """
    parts = []
    for _, rows in iter_test_sets(frame):
        test = frame.iloc[rows]
        train = training_outcomes(cohort, test[PATIENT_ID])
        curves = {
            head: np.tile(
                _km_at_year_ends(
                    train[f"{head}_years"].to_numpy(float), train[f"{head}_event"].to_numpy()
                ),
                (len(rows), 1),
            )
            for head in ("os", "dfs")
        }
        part = frame_from_curves(
            test[PATIENT_ID].to_numpy(), curves["os"], curves["dfs"], cohort.outcomes
        )
        for col in CV_COLS:
            if col in test.columns:
                part[col] = test[col].to_numpy()
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def km_null_tidy(
    predictions: Mapping[str, Sequence[pd.DataFrame]],
    cohort: Cohort,
    like: str = "cox",
    n_boot: int = 1000,
    seed: int = 0,
    horizons: Sequence[float] = (1.0, 3.0, 5.0),
    interval: str = CORRECTED_T,
) -> pd.DataFrame:
    """Scores of the Kaplan–Meier null model in the cross-validation, as tidy rows.

    Built on the folds of model ``like`` (every repeat it has; the clinical anchors have all
    of them) and scored as the cross-validation scores every model (``head_metrics``; each
    fold's censoring weights from its own training patients).

    Parameters
    ----------
    interval : ``"corrected_t"`` (default: the mean of the per-test-fold values with the
        corrected repeated-CV t interval, as ``run_cv_protocol`` gives the other rows) or
        ``"conditional_bootstrap"`` (percentile bootstrap over patients, ``n_boot`` draws,
        ``seed``).

    Returns
    -------
    DataFrame
        The columns of ``CVResult.tidy`` that :func:`~crlm_lib.evaluation.tables.wide_table`
        reads (``model, label, metric, estimate, low, high, repeats, interval``), model
        :data:`KM_NULL_KEY`.
    """
    frames = [km_null_predictions(f, cohort) for f in predictions[like]]
    censoring = M.TrainingOutcomes(
        {
            key: training_outcomes(cohort, f[PATIENT_ID].iloc[rows])
            for f in frames
            for key, rows in iter_test_sets(f)
        }
    )

    def metric_fn(p, t):
        return head_metrics(p, t, horizons=horizons)

    if interval == CORRECTED_T:
        tidy = cv_intervals(frames, censoring, metric_fn, n_patients=len(cohort.ids))
    elif interval == CONDITIONAL_BOOTSTRAP:
        tidy = bootstrap_scores(frames, censoring, n_boot=n_boot, seed=seed, metric_fn=metric_fn)
        tidy["interval"] = CONDITIONAL_BOOTSTRAP
    else:
        raise ValueError(f"interval must be {CORRECTED_T!r} or {CONDITIONAL_BOOTSTRAP!r}")
    tidy.insert(0, "model", KM_NULL_KEY)
    tidy.insert(1, "label", model_label(KM_NULL_KEY))
    tidy["repeats"] = len(frames)
    return tidy


def with_reference(tidy: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """``tidy`` with the ``reference`` rows placed just before the oracle (last otherwise),
    so that a wide table keeps the oracle as its last row."""
    is_oracle = tidy["model"] == "oracle"
    return pd.concat([tidy[~is_oracle], reference, tidy[is_oracle]], ignore_index=True)


def _p_from_interval(estimate, low, high, alpha: float = 0.05) -> np.ndarray:
    """Two-sided p-value of a difference from its percentile interval (normal approximation)."""
    z = stats.norm.ppf(1 - alpha / 2)
    se = (np.asarray(high, float) - np.asarray(low, float)) / (2 * z)
    with np.errstate(divide="ignore", invalid="ignore"):
        stat = np.abs(np.asarray(estimate, float)) / se
    return 2 * stats.norm.sf(stat)


def holm_table(
    differences: pd.DataFrame,
    baseline: str = "cox",
    metrics: Sequence[str] = ("os_c_harrell", "dfs_c_harrell"),
    alpha: float = 0.05,
    digits: int = 3,
) -> pd.DataFrame:
    """The paired comparisons with ``baseline`` as one family, with Holm-adjusted p-values.

    Parameters
    ----------
    differences : DataFrame ``model, baseline, metric, estimate, low, high``
        ``CVResult.differences`` (model minus baseline, paired bootstrap intervals).
    baseline : the anchor every model is compared with (default: the clinical Cox model).
    metrics : the metrics of the family (one test per model and metric).
    alpha : family-wise error rate of the Holm procedure.

    Returns
    -------
    DataFrame
        One row per comparison and metric: ``comparison``, ``metric``, ``difference (95%
        interval)``, ``p (unadjusted)``, ``p (Holm)``, ``rejected at 0.05 (Holm)``. Empty
        when there is no comparison with ``baseline``.
    """
    from statsmodels.stats.multitest import multipletests

    if differences is None or differences.empty:
        return pd.DataFrame()
    sub = differences[
        (differences["baseline"] == baseline)
        & differences["metric"].isin(metrics)
        & np.isfinite(differences["estimate"].astype(float))
        & np.isfinite(differences["low"].astype(float))
    ].reset_index(drop=True)
    if sub.empty:
        return pd.DataFrame()
    p = _p_from_interval(sub["estimate"], sub["low"], sub["high"])
    rejected, p_holm, _, _ = multipletests(p, alpha=alpha, method="holm")
    base = LABELS.get(baseline) or model_label(baseline)
    return pd.DataFrame(
        {
            "comparison": [f"{model_label(m)} − {base}" for m in sub["model"]],
            "metric": [M_LABELS.get(m, m) for m in sub["metric"]],
            "difference (95% interval)": [
                f"{e:+.{digits}f} ({lo:+.{digits}f} to {hi:+.{digits}f})"
                for e, lo, hi in zip(sub["estimate"], sub["low"], sub["high"], strict=True)
            ],
            "p (unadjusted)": p,
            "p (Holm)": p_holm,
            "rejected at 0.05 (Holm)": np.where(rejected, "yes", "no"),
        }
    )


#: Readable names of the metrics of :func:`holm_table`.
M_LABELS: dict[str, str] = {
    "os_c_harrell": "Harrell's C, overall survival",
    "os_c_uno": "Uno's C, overall survival",
    "dfs_c_harrell": "Harrell's C, disease-free survival",
}
