"""Intervals of cross-validated metrics that allow for refitting: the corrected repeated-CV t.

What the interval is for
------------------------
A cross-validated C-index estimates how well *the modelling procedure* (fit this model on
``n (K-1) / K`` patients of this population) ranks new patients: its expected C over the
training sets the population could have given. The percentile bootstrap over patients of the
pooled out-of-fold predictions (:func:`crlm_lib.evaluation.bootstrap_scores`) holds the fitted
models fixed, so it leaves out the training-set variability and the correlation that reusing
every patient for training and testing creates; it covers the fitted models' performance, not
the procedure's (``benchmarks/interval_coverage.py`` measures both).

The corrected repeated cross-validation t interval
--------------------------------------------------
Each of the ``J = R x K`` train/test splits of R repeats of K-fold CV gives one estimate
``m_j`` (the metric on that test fold; for a paired difference, model minus baseline on the
same fold). Their mean ``m`` is the estimate and

    ``Var(m) = (1 / J + n_test / n_train) s²``,  ``m ± t_{J-1, 1-alpha/2} sqrt(Var(m))``

with ``s²`` the sample variance of the ``m_j`` (Nadeau & Bengio 2003, Mach. Learn. 52:239,
the "corrected resampled t"; Bouckaert & Frank 2004 for repeated K-fold CV, where
``n_test / n_train = 1 / (K - 1)``). The term ``n_test / n_train`` stands for the correlation
between split estimates that share training patients, which the naive ``s² / J`` ignores.

With one repeat (``J = K``, the image models on the cpu profile) the interval is the same
formula over the K fold estimates with ``K - 1`` degrees of freedom: it covers the same
quantity, is wide because four degrees of freedom give ``t = 2.78`` for 95%, and its centre
carries the chance of one partition into folds (more repeats average it out).

Fold estimates are averaged unweighted (folds differ by at most one patient). A split whose
metric is undefined (NaN: no comparable pair, no event before the AUC's horizon) is left out;
with fewer than two finite splits the interval is NaN."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.metrics import MetricWarning
from crlm_lib.types import PATIENT_ID

#: Name of the refit-aware interval in the tables' ``interval`` column.
CORRECTED_T = "corrected_t"
#: Name of the percentile bootstrap over patients with the fitted models held fixed.
CONDITIONAL_BOOTSTRAP = "conditional_bootstrap"
#: The interval methods of the CV protocol.
INTERVAL_METHODS: tuple[str, ...] = (CORRECTED_T, CONDITIONAL_BOOTSTRAP)


class CorrectedT(NamedTuple):
    """Estimate (mean of the split estimates), interval, standard error and finite splits."""

    estimate: float
    low: float
    high: float
    se: float
    n_splits: int


def corrected_t_interval(
    values: Sequence[float] | np.ndarray, test_train_ratio: float, alpha: float = 0.05
) -> CorrectedT:
    """The corrected repeated-CV t interval of the mean of ``J`` split estimates.

    Parameters
    ----------
    values : array [J]
        One estimate per train/test split (R repeats x K folds); NaN entries are left out.
    test_train_ratio : float
        ``n_test / n_train`` of one split: ``1 / (K - 1)`` for K-fold CV (0.25 for 5 folds).
    alpha : float
        1 - confidence level.

    Returns
    -------
    CorrectedT
        ``m ± t_{J-1, 1-alpha/2} sqrt((1/J + test_train_ratio) s²)`` (Nadeau & Bengio 2003;
        Bouckaert & Frank 2004), ``s²`` the sample variance (``ddof=1``); NaN interval when
        fewer than two values are finite.

    Examples
    --------
    >>> r = corrected_t_interval([0.60, 0.70, 0.65, 0.55, 0.75], 0.25)
    >>> round(r.estimate, 3), round(r.se, 4), r.n_splits
    (0.65, 0.053, 5)
    """
    if not test_train_ratio >= 0:
        raise ValueError(f"test_train_ratio must be >= 0, got {test_train_ratio}")
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    j = v.size
    if j == 0:
        return CorrectedT(math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(v.mean())
    if j < 2:
        return CorrectedT(mean, math.nan, math.nan, math.nan, j)
    se = math.sqrt((1.0 / j + test_train_ratio) * float(v.var(ddof=1)))
    half = float(stats.t.ppf(1 - alpha / 2, j - 1)) * se
    return CorrectedT(mean, mean - half, mean + half, se, j)


MetricFn = Callable[[pd.DataFrame, Any], dict[str, float]]


def _folds(frame: pd.DataFrame, what: str) -> dict[tuple[int, int], pd.DataFrame]:
    if not {"repeat", "fold"} <= set(frame.columns):
        raise EvaluationError(f"{what}: out-of-fold predictions need 'repeat' and 'fold' columns")
    return {
        (int(r), int(f)): g.sort_values(PATIENT_ID, kind="mergesort").reset_index(drop=True)
        for (r, f), g in frame.groupby(["repeat", "fold"], sort=True)
    }


def split_scores(
    frames_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    train_outcomes: Any,
    metric_fn: MetricFn,
    baseline_by_repeat: Sequence[pd.DataFrame] | None = None,
) -> pd.DataFrame:
    """The metric of every test fold: one row per (repeat, fold) split, one column per metric.

    ``frames_by_repeat``: out-of-fold Predictions frames with ``repeat`` and ``fold`` columns
    (``CVResult.predictions[key]``); ``metric_fn(fold_frame, train_outcomes) -> dict`` (e.g.
    :func:`~crlm_lib.evaluation.bootstrap.head_metrics`; a ``{(repeat, fold): outcomes}``
    mapping or ``metrics.TrainingOutcomes`` gives each fold its own training censoring). With
    ``baseline_by_repeat`` (the same patients in the same folds) each value is model minus
    baseline on that fold. Several frames of one split (the permutations of an image-
    permutation control) are averaged into one row. Columns ``repeat, fold, n_test`` first.
    """
    frames = [frames_by_repeat] if isinstance(frames_by_repeat, pd.DataFrame) else frames_by_repeat
    base = list(baseline_by_repeat) if baseline_by_repeat is not None else [None] * len(frames)
    if len(base) != len(frames):
        raise EvaluationError("give one baseline frame per model frame")
    rows: dict[tuple[int, int], list[dict[str, float]]] = {}
    sizes: dict[tuple[int, int], int] = {}
    for frame, other in zip(frames, base, strict=True):
        folds = _folds(frame, "model")
        others = _folds(other, "baseline") if other is not None else None
        for key, fold in folds.items():
            m = metric_fn(fold, train_outcomes)
            if others is not None:
                ref = others.get(key)
                if ref is None or not np.array_equal(ref[PATIENT_ID], fold[PATIENT_ID]):
                    raise EvaluationError(
                        f"repeat {key[0]} fold {key[1]}: the model and the baseline hold "
                        "different test patients"
                    )
                mb = metric_fn(ref, train_outcomes)
                m = {k: m[k] - mb.get(k, math.nan) for k in m}
            rows.setdefault(key, []).append(m)
            sizes[key] = len(fold)
    out = []
    for key in sorted(rows):
        metrics = pd.DataFrame(rows[key]).mean(axis=0, skipna=False).to_dict()
        out.append({"repeat": key[0], "fold": key[1], "n_test": sizes[key], **metrics})
    return pd.DataFrame(out)


def cv_intervals(
    frames_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    train_outcomes: Any = None,
    metric_fn: MetricFn | None = None,
    baseline_by_repeat: Sequence[pd.DataFrame] | None = None,
    alpha: float = 0.05,
    n_patients: int | None = None,
) -> pd.DataFrame:
    """Every metric of a model's CV (or a paired difference) with the corrected t interval.

    Parameters
    ----------
    frames_by_repeat, train_outcomes, metric_fn, baseline_by_repeat
        As :func:`split_scores` (``metric_fn`` default
        :func:`~crlm_lib.evaluation.bootstrap.head_metrics`).
    alpha : float
        1 - confidence level.
    n_patients : int, optional
        Patients of the cohort (``n_train = n_patients - n_test``); default: the patients of
        one repeat's frame.

    Returns
    -------
    DataFrame
        ``metric, estimate, low, high, se, splits, interval``: the estimate is the mean of the
        split estimates (:func:`corrected_t_interval`, ``n_test / n_train`` from the mean fold
        size), ``splits`` the finite ones, ``interval`` = :data:`CORRECTED_T`.
    """
    from crlm_lib.evaluation.bootstrap import head_metrics

    metric_fn = metric_fn or (lambda p, t: head_metrics(p, t))
    frames = [frames_by_repeat] if isinstance(frames_by_repeat, pd.DataFrame) else frames_by_repeat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        table = split_scores(frames, train_outcomes, metric_fn, baseline_by_repeat)
    n = n_patients if n_patients is not None else frames[0][PATIENT_ID].nunique()
    n_test = float(table["n_test"].mean())
    ratio = n_test / (n - n_test)
    rows = []
    for metric in table.columns.drop(["repeat", "fold", "n_test"]):
        r = corrected_t_interval(table[metric].to_numpy(float), ratio, alpha)
        rows.append(
            {"metric": metric, "estimate": r.estimate, "low": r.low, "high": r.high,
             "se": r.se, "splits": r.n_splits}
        )  # fmt: skip
    out = pd.DataFrame(rows)
    out["interval"] = CORRECTED_T
    return out
