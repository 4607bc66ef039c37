"""Bootstrap intervals and paired differences: the one bootstrap engine of the library.

Uncertainty (choices)
---------------------
* Estimate of a CV metric = the mean over repeats of the metric computed on that repeat's
  pooled OOF predictions (one prediction per patient per repeat).
* Interval = percentile bootstrap over *patients* (``profile.eval.bootstrap`` replicates): one
  draw of patients per replicate, applied to every repeat, the replicate value being the mean
  over repeats. Rows are sorted by patient ID first, so results do not depend on patient order.
  The out-of-fold predictions are held FIXED: the interval is **conditional on the fitted
  models**. It ignores the variability of refitting on another sample, so as an interval for
  the expected performance of the modelling procedure it is too narrow
  (``benchmarks/interval_coverage.py`` measures its coverage); the CV protocol's default is
  the refit-aware corrected t of :mod:`crlm_lib.evaluation.intervals`, and this bootstrap
  serves the papers' single split and, labelled as conditional, the CV protocol's
  ``interval="conditional_bootstrap"``.
* Paired difference A - B: the same draws applied to both models (paired bootstrap over
  patients of the pooled OOF predictions).
* IPCW metrics (Uno's C, IBS, AUC) need the censoring distribution, always estimated on the
  TRAINING patients: the training split in the paper protocol; in CV, each test fold's own
  training fold (the metric is computed per fold and averaged over the folds of a repeat,
  weighted by fold size; ``metrics.all_metrics`` with a ``{(repeat, fold): outcomes}``
  mapping). Harrell's C and TAA / MAE / MSE are computed on the pooled OOF predictions.
* Uno's C and the IBS use a fixed 5-year horizon (``metrics.HORIZON_YEARS``): Uno's C counts
  events strictly before 5 years, the IBS integrates the Brier score over years 1-5.
* Risk for the C-indices (``types.Predictions.ranking_score``): the predicted probability of
  death by 5 years (OS) and of recurrence by 3 years (DFS), for every model alike: the Fong
  score's, Cox's, the forest's, the deep models' and the oracle's curves read at the same
  horizon. ``score="mixed"`` (``head_metrics``, ``harrell_metrics``) restores the functionals
  used before (an anchor's own score, else minus the 12-year restricted mean survival time)
  as a sensitivity analysis."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crlm_lib.concordance import antolini_c
from crlm_lib.config import with_options
from crlm_lib.data.parallel import run_jobs_in_order
from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.metrics import MetricWarning
from crlm_lib.types import PATIENT_ID, Predictions

# --------------------------------------------------------------------------------------------
# the engine: patient draws and percentile intervals (every bootstrap of the library)
# --------------------------------------------------------------------------------------------


class BootstrapResult(NamedTuple):
    """Point estimate on all patients and percentile bootstrap interval ``[low, high]``."""

    estimate: float
    low: float
    high: float


def draws(n_patients: int, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """The ``n_boot`` patient draws of a bootstrap: indices ``[n_patients]`` drawn with
    replacement, from ``numpy.random.default_rng(seed)``.

    Every bootstrap of the library draws through here, so the same seed gives the same
    patients to :func:`bootstrap_scores`, :func:`paired_difference`, :func:`bootstrap_ci` and
    :func:`paired_bootstrap_diff`.
    """
    rng = np.random.default_rng(seed)
    for _ in range(n_boot):
        yield rng.integers(0, n_patients, n_patients)


def percentile_interval(
    values: np.ndarray, alpha: float, what: str | None = None
) -> tuple[float, float]:
    """Percentile interval ``[alpha/2, 1 - alpha/2]`` of the finite replicate values.

    Replicates where the metric is NaN (no comparable pairs, no events...) are dropped; when
    more than half of them are (or none is finite) the interval is NaN, with a
    :class:`~crlm_lib.metrics.MetricWarning` naming ``what`` when ``what`` is given
    (Efron & Tibshirani 1993, ch. 13).
    """
    values = np.asarray(values, dtype=float)
    finite = values[np.isfinite(values)]
    if finite.size < 0.5 * values.size or finite.size == 0:
        if what is not None:
            warnings.warn(
                f"{what}: only {finite.size}/{values.size} bootstrap replicates are finite; "
                "interval is NaN",
                MetricWarning,
                stacklevel=3,
            )
        return math.nan, math.nan
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------
# every metric of a protocol's Predictions frames
# --------------------------------------------------------------------------------------------

MetricFn = Callable[[pd.DataFrame, pd.DataFrame], dict[str, float]]


def head_metrics(
    pred: pd.DataFrame | Predictions,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    heads: Sequence[str] = ("os", "dfs"),
    rule: str = "argmax",
    horizons: Sequence[float] = (1.0, 3.0, 5.0),
    score: str = "risk",
) -> dict[str, float]:
    """Every metric of a Predictions frame for the chosen heads (``metrics`` module functions).

    Same keys as ``metrics.all_metrics`` (``os_taa``, ``os_obs_mae``, ``os_c_uno``,
    ``os_auc_3y``, ``dfs_c_harrell`` ...), restricted to ``heads`` so the bootstrap can skip
    the recurrence head when it is not reported. ``train_outcomes`` is the training patients'
    outcomes (censoring distribution of the IPCW metrics), or for pooled CV predictions a
    mapping ``{(repeat, fold): training-fold outcomes}``. ``score``: the ranking functional
    of the C-indices (``metrics.all_metrics``). Beside them, ``<head>_c_antolini``:
    Antolini's time-dependent C of the predicted curves (``concordance.antolini_c``; no
    censoring weights, so pooled over the folds as Harrell's C).
    """
    from crlm_lib import metrics as M

    unknown = set(heads) - {"os", "dfs"}
    if unknown:
        raise EvaluationError(f"unknown head(s) {sorted(unknown)}")
    preds = Predictions.of(pred)  # validated once for both
    out = M.all_metrics(
        preds, train_outcomes, rule=rule, horizons=horizons, heads=heads, score=score
    )
    for head in heads:
        time, event = preds.outcomes(head)
        out[f"{head}_c_antolini"] = antolini_c(time, event, preds.curve(head))
    return out


def harrell_metrics(
    pred: pd.DataFrame | Predictions,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    heads: Sequence[str] = ("os", "dfs"),
    score: str = "risk",
) -> dict[str, float]:
    """Harrell's C of each head only (``<head>_c_harrell``, the same value as
    :func:`head_metrics`: ``Predictions.ranking_score(head, score)`` against the head's
    outcome; no IPCW, so ``train_outcomes`` is unused). The cheap metric of the
    image-permutation controls, whose bootstrap would otherwise recompute every IPCW metric
    for every permutation."""
    from crlm_lib import metrics as M

    preds = Predictions.of(pred)
    out = {}
    for head in heads:
        time, event = preds.outcomes(head)
        out[f"{head}_c_harrell"] = M._harrell(event, time, preds.ranking_score(head, score))
    return out


def _aligned(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """Frames sorted by patient ID (content-defined order: results ignore the input order)."""
    return [f.sort_values(PATIENT_ID, kind="mergesort").reset_index(drop=True) for f in frames]


@dataclass(frozen=True)
class BootstrapOptions:
    """Settings of :func:`bootstrap_scores` and :func:`paired_difference` (both also take
    every field as a keyword).

    Attributes
    ----------
    n_boot : int
        Bootstrap replicates.
    seed : int
        Seed of the patient draws (:func:`draws`).
    alpha : float
        1 - confidence level of the percentile interval.
    metric_fn : callable, optional
        ``metric_fn(pred, train_outcomes) -> dict`` (default :func:`head_metrics`).
    desc : str, optional
        Label of a progress bar over the replicates (none when omitted).
    cache : dict, optional
        Memo of ``metric_fn`` values keyed by (frame content, draw). Calls that share a
        ``cache`` must share ``metric_fn``, ``train_outcomes`` and ``seed``: then the paired
        differences reuse the replicate values that the per-model pass computed (the same
        seed gives the same draws), which makes them nearly free.
    predictions_in : bool
        ``metric_fn`` also takes a validated :class:`~crlm_lib.types.Predictions` (as
        :func:`head_metrics` and :func:`harrell_metrics` do; true when ``metric_fn`` is
        omitted): each frame is then validated once and a replicate is its rows
        (``Predictions.take``), the same values at about half the cost of slicing and
        validating the frame in every replicate. ``False`` (default for a given
        ``metric_fn``): the replicate is the sliced DataFrame.
    """

    n_boot: int = 1000
    seed: int = 0
    alpha: float = 0.05
    metric_fn: MetricFn | None = None
    desc: str | None = None
    cache: dict | None = None
    predictions_in: bool = False


def bootstrap_scores(
    frames_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    options: BootstrapOptions | None = None,
    *,
    baseline_by_repeat: Sequence[pd.DataFrame] | None = None,
    **changes: Any,
) -> pd.DataFrame:
    """Estimate and percentile bootstrap CI of every metric (or of a paired difference).

    Parameters
    ----------
    frames_by_repeat : DataFrame or list of DataFrames
        Predictions frames, one per CV repeat (each covering the same patients once), or one
        frame (paper protocol).
    train_outcomes : DataFrame or mapping, optional
        Training outcomes for the IPCW censoring distribution (default: each frame itself);
        a ``{(repeat, fold): outcomes}`` mapping for pooled CV predictions (per-fold IPCW).
    options : BootstrapOptions, optional
        Replicates, seed, alpha, metric function, progress label and memo (defaults when
        omitted).
    baseline_by_repeat : list of DataFrames, optional
        When given, the quantity is ``metric(model) - metric(baseline)`` with the same patient
        draws for both (paired bootstrap).
    **changes
        Fields of :class:`BootstrapOptions` as keywords (``n_boot=200, seed=1``), applied over
        ``options``; a keyword that is no field raises ``TypeError`` naming the valid ones.

    Returns
    -------
    DataFrame
        Columns ``metric, estimate, low, high, n_boot`` (one row per metric). The estimate is
        the mean over repeats on all patients; a replicate draws patients with replacement
        once and applies the draw to every repeat. The predictions are not refitted in a
        replicate: the interval is conditional on the fitted models.
    """
    opts = with_options(BootstrapOptions, options, changes)
    n_boot, metric_fn = opts.n_boot, opts.metric_fn or (lambda p, t: head_metrics(p, t))
    frames = [frames_by_repeat] if isinstance(frames_by_repeat, pd.DataFrame) else frames_by_repeat
    frames = _aligned(frames)
    base = _aligned(baseline_by_repeat) if baseline_by_repeat is not None else None
    ids = frames[0][PATIENT_ID].to_numpy()
    for f in frames[1:] + (base or []):
        if not np.array_equal(f[PATIENT_ID].to_numpy(), ids):
            raise EvaluationError("frames to compare must hold the same patients")

    memo = opts.cache if opts.cache is not None else {}
    digest = {
        id(f): int(pd.util.hash_pandas_object(f, index=False).sum()) for f in frames + (base or [])
    }

    takes = opts.metric_fn is None or opts.predictions_in
    whole: dict[int, Predictions] = {}  # each frame validated once (``predictions_in``)

    def replicate(frame: pd.DataFrame, index: np.ndarray | None) -> pd.DataFrame | Predictions:
        if not takes:
            return frame if index is None else frame.iloc[index].reset_index(drop=True)
        if id(frame) not in whole:
            whole[id(frame)] = Predictions.from_frame(frame)
        return whole[id(frame)] if index is None else whole[id(frame)].take(index)

    def score(frame: pd.DataFrame, index: np.ndarray | None, draw: int | None):
        key = (digest[id(frame)], draw)
        if key not in memo:
            memo[key] = metric_fn(replicate(frame, index), train_outcomes)
        return memo[key]

    def value(index: np.ndarray | None) -> dict[str, float]:
        draw = None if index is None else hash(index.tobytes())
        vals: list[dict[str, float]] = []
        for r, f in enumerate(frames):
            m = score(f, index, draw)
            if base is not None:
                mb = score(base[r], index, draw)
                m = {k: m[k] - mb.get(k, math.nan) for k in m}
            vals.append(m)
        keys = list(vals[0])
        return {k: float(np.nanmean([v.get(k, math.nan) for v in vals])) for k in keys}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = value(None)
        it = draws(len(ids), n_boot, opts.seed)
        if opts.desc:
            it = tqdm(it, total=n_boot, desc=opts.desc, leave=False)
        reps = [value(index) for index in it]
    rows = []
    for k, e in est.items():
        low, high = percentile_interval([r.get(k, math.nan) for r in reps], opts.alpha)
        rows.append({"metric": k, "estimate": e, "low": low, "high": high})
    out = pd.DataFrame(rows)
    out["n_boot"] = n_boot
    return out


#: Replicate evaluations (frames x ``n_boot``) from which :func:`bootstrap_each` scores its
#: frames in a process pool. Below it, starting the workers (each imports pandas,
#: scikit-survival and this library: about 3-4 s on the 2-core CPU) costs more than it saves;
#: one replicate of :func:`head_metrics` on 20 test patients takes about 7 ms.
POOL_MIN_REPLICATES: int = 2000


def bootstrap_each(
    predictions: Mapping[str, pd.DataFrame],
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    options: BootstrapOptions | None = None,
    *,
    n_jobs: int = 1,
    desc: str = "bootstrap",
) -> dict[str, pd.DataFrame]:
    """:func:`bootstrap_scores` of every frame of ``predictions``, keyed and ordered as it.

    The frames are independent jobs: with ``n_jobs > 1`` and at least
    :data:`POOL_MIN_REPLICATES` replicate evaluations in all they run in a pool of ``n_jobs``
    processes (``data.parallel.run_jobs_in_order``), else one after the other here. The
    numbers do not depend on ``n_jobs``: every frame's draws come from ``options.seed`` alone.
    In a pool, ``options.metric_fn`` must be picklable (a module-level function or a
    ``functools.partial`` of one, not a lambda) and ``options.cache`` is not shared back.
    """
    opts = options or BootstrapOptions()
    jobs = [(pred, train_outcomes, opts) for pred in predictions.values()]
    pooled = n_jobs > 1 and len(jobs) > 1 and len(jobs) * opts.n_boot >= POOL_MIN_REPLICATES
    results, broken = run_jobs_in_order(
        bootstrap_scores, jobs, n_jobs if pooled else 1, desc=desc, leave=False
    )
    if broken is not None:
        raise EvaluationError(f"a bootstrap worker process died ({desc}): {broken}")
    return dict(zip(predictions, results, strict=True))


def paired_difference(
    a_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    b_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    options: BootstrapOptions | None = None,
    **changes: Any,
) -> pd.DataFrame:
    """Paired bootstrap of ``metric(A) - metric(B)`` over patients (same draws for both).

    Invariant to the order of the patients (frames are aligned by patient ID). An interval
    that excludes 0 marks a difference at level ``alpha``; for ``mae``/``mse``/``ibs`` a
    negative difference favours A. ``options`` and ``**changes`` as in
    :func:`bootstrap_scores` (:class:`BootstrapOptions`).

    Returns
    -------
    DataFrame ``metric, estimate, low, high, n_boot``.
    """
    opts = with_options(BootstrapOptions, options, changes)
    a = [a_by_repeat] if isinstance(a_by_repeat, pd.DataFrame) else list(a_by_repeat)
    b = [b_by_repeat] if isinstance(b_by_repeat, pd.DataFrame) else list(b_by_repeat)
    return bootstrap_scores(a, train_outcomes, opts, baseline_by_repeat=b)


# --------------------------------------------------------------------------------------------
# one metric of arrays (patients in rows)
# --------------------------------------------------------------------------------------------


def _canonical_order(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """A row order that depends only on row contents, so results ignore patient order.

    Rows are sorted lexicographically on every column of every array; rows that tie are
    identical in every array, hence interchangeable.
    """
    keys: list[np.ndarray] = []
    for a in arrays:
        arr = np.asarray(a)
        if arr.dtype.kind in "OUS":
            arr = np.unique(arr.astype(str), return_inverse=True)[1].reshape(arr.shape)
        arr = arr.reshape(arr.shape[0], -1)
        keys.extend(arr[:, j] for j in range(arr.shape[1]))
    return np.lexsort(keys[::-1])


def _check_rows(arrays: Sequence[np.ndarray]) -> int:
    if not arrays:
        raise ValueError("give at least one array")
    n = {len(a) for a in arrays}
    if len(n) != 1:
        raise ValueError(f"arrays must have the same number of rows (patients), got {sorted(n)}")
    return n.pop()


def bootstrap_ci(
    metric_fn: Callable[..., float],
    *arrays: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    what: str | None = None,
) -> BootstrapResult:
    """Percentile bootstrap confidence interval of a metric over patients.

    Rows (patients) are resampled with replacement, jointly across ``arrays``, ``n_boot``
    times (:func:`draws`); the interval is the ``alpha/2`` and ``1 - alpha/2`` quantiles of
    the replicate metrics (:func:`percentile_interval`; Efron & Tibshirani 1993, ch. 13).
    Replicates where the metric is NaN (e.g. no comparable pairs) are dropped; if more than
    half are, the interval is NaN with a warning. Rows are first put in a content-defined
    order, so the result does not depend on the order of the patients.

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(*arrays_resampled) -> float``.
    *arrays : arrays with the same first dimension ``N``.
    n_boot : int
        Replicates (``profile.eval.bootstrap``).
    seed : int
    alpha : float
        1 - confidence level.
    what : str, optional
        Name in the warning (default ``metric_fn.__name__``).

    Returns
    -------
    BootstrapResult
        ``(estimate, low, high)``; ``estimate = metric_fn(*arrays)`` on all patients.

    Examples
    --------
    >>> x = np.arange(50.0)
    >>> est, low, high = bootstrap_ci(np.mean, x, n_boot=200, seed=0)
    >>> bool(low < est < high)
    True
    """
    n = _check_rows(arrays)
    order = _canonical_order(arrays)
    arrs = [np.asarray(a)[order] for a in arrays]
    estimate = float(metric_fn(*arrs))
    values = np.empty(n_boot)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MetricWarning)
        for b, idx in enumerate(draws(n, n_boot, seed)):
            values[b] = metric_fn(*(a[idx] for a in arrs))
    low, high = percentile_interval(values, alpha, what or getattr(metric_fn, "__name__", "metric"))
    return BootstrapResult(estimate, low, high)


def paired_bootstrap_diff(
    metric_fn: Callable[..., float],
    a_pred: np.ndarray,
    b_pred: np.ndarray,
    *truth: np.ndarray,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> BootstrapResult:
    """Paired percentile bootstrap of ``metric(a) - metric(b)`` on the same patients.

    Each replicate draws one set of patients and evaluates both models on it, so the
    between-patient variability common to both cancels: :func:`bootstrap_ci` of the
    difference, with ``a_pred``, ``b_pred`` and ``truth`` resampled jointly. The interval
    excluding 0 marks a difference at level ``alpha``. Invariant to the order of the
    patients (rows are put in a content-defined order first).

    Parameters
    ----------
    metric_fn : callable
        ``metric_fn(pred, *truth) -> float``.
    a_pred, b_pred : arrays ``[N, ...]``
        Predictions of models A and B for the same patients, same row order.
    *truth : arrays ``[N, ...]``
        Ground truth (e.g. times and events).

    Returns
    -------
    BootstrapResult
        ``(metric(a) - metric(b), low, high)``.
    """

    def difference(a: np.ndarray, b: np.ndarray, *tr: np.ndarray) -> float:
        return metric_fn(a, *tr) - metric_fn(b, *tr)

    return bootstrap_ci(
        difference, a_pred, b_pred, *truth, n_boot=n_boot, seed=seed, alpha=alpha,
        what="paired difference",
    )  # fmt: skip
