"""The censoring distribution of the IPCW metrics, fitted once per training set.

:class:`CensoringKM` is the Kaplan–Meier estimate ``G`` of a training set's censoring
distribution (scikit-survival's estimator, kept with its step function); :func:`censoring_km`
returns ``None`` where it cannot be estimated; :class:`TrainingOutcomes` keeps one fit per
(training fold, head) for all the bootstrap replicates scored against it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sksurv.nonparametric import CensoringDistributionEstimator
from sksurv.util import Surv


class CensoringKM:
    """Kaplan–Meier estimate ``G`` of a training set's censoring distribution, fitted once.

    Fitted by scikit-survival (``CensoringDistributionEstimator``, the estimator behind its
    IPCW metrics), then kept with its step function (``time_``, ``prob_``) so that the IPCW
    metrics of many test sets scored against the same training patients (bootstrap
    replicates) neither refit it nor re-validate their inputs. :meth:`prob` and :meth:`ipcw`
    repeat ``predict_proba`` and ``predict_ipcw`` of scikit-survival 0.28 line for line
    (the same numbers; tests compare every metric with scikit-survival's own functions).

    Parameters
    ----------
    train_time : array ``[N_train]``, years
    train_event : array ``[N_train]`` (1/True = event)

    Raises
    ------
    ValueError
        When scikit-survival cannot fit it (e.g. every training patient censored).

    Attributes
    ----------
    support : float
        Largest time (years) at which ``G`` is still positive.
    """

    def __init__(self, train_time: np.ndarray, train_event: np.ndarray) -> None:
        time = np.asarray(train_time, dtype=np.float64).ravel()
        event = np.asarray(train_event).astype(bool).ravel()
        self.y_train = Surv.from_arrays(event, time)
        est = CensoringDistributionEstimator().fit(self.y_train)
        self.time_, self.prob_ = est.unique_time_, est.prob_
        positive = np.flatnonzero(self.prob_ > 0)
        self.support = float(self.time_[positive[-1]] if positive.size else self.time_[0])

    def prob(self, time: np.ndarray) -> np.ndarray:
        """``G(t)`` at ``time`` (years): ``CensoringDistributionEstimator.predict_proba``."""
        time = np.asarray(time, dtype=np.float64)
        extends = time > self.time_[-1]
        if self.prob_[-1] > 0 and extends.any():
            raise ValueError(
                f"time must be smaller than largest observed time point: {self.time_[-1]}"
            )
        out = np.empty(time.shape, dtype=float)
        out[extends] = 0.0
        valid = ~extends
        t = time[valid]
        idx = np.searchsorted(self.time_, t)
        eps = np.finfo(self.time_.dtype).eps
        exact = np.absolute(self.time_[idx] - t) < eps
        idx[~exact] -= 1
        out[valid] = self.prob_[idx]
        return out

    def prob_before(self, time: np.ndarray) -> np.ndarray:
        """``G(t-)``, the censoring survival just before ``time`` (years): censorings at
        ``t`` itself not yet removed. The other tie convention of the IPCW weights
        (``concordance.uno_c_conventions``); :meth:`prob` (scikit-survival's) is ``G(t)``."""
        time = np.asarray(time, dtype=np.float64)
        idx = np.searchsorted(self.time_, time, side="left") - 1  # time_[0] is -inf
        return self.prob_[np.maximum(idx, 0)]

    def ipcw(self, event: np.ndarray, time: np.ndarray) -> np.ndarray:
        """``event_i / G(time_i)``: ``CensoringDistributionEstimator.predict_ipcw``."""
        if not event.any():
            raise ValueError("all samples are censored")
        g = self.prob(time[event])
        if (g == 0.0).any():
            raise ValueError("censoring survival function is zero at one or more time points")
        weights = np.zeros(time.shape[0])
        weights[event] = 1.0 / g
        return weights


def censoring_km(train_time: np.ndarray, train_event: np.ndarray) -> CensoringKM | None:
    """:class:`CensoringKM` of the training outcomes, or ``None`` when it cannot be estimated
    (fewer than two patients, every one censored): the IPCW metrics are then NaN."""
    if np.asarray(train_time).size < 2:
        return None
    try:
        return CensoringKM(train_time, train_event)
    except ValueError:
        return None


class TrainingOutcomes:
    """Training outcomes for the IPCW metrics, each censoring distribution fitted once.

    Wraps what :func:`all_metrics` takes as ``train_df`` (a DataFrame of training outcomes,
    or a ``{(repeat, fold): DataFrame}`` mapping for pooled CV predictions) and keeps the
    :class:`CensoringKM` of each (training set, head) after its first use. Pass one instance
    to every :func:`all_metrics` call that scores against the same training patients (the
    replicates of a bootstrap): the censoring Kaplan–Meier is then fitted once per fold and
    head instead of four times per call. Same numbers as the plain DataFrame or mapping.

    Parameters
    ----------
    outcomes : DataFrame, mapping of DataFrames, or TrainingOutcomes
        Columns ``os_years, os_event, dfs_years, dfs_event``.
    """

    def __init__(self, outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | TrainingOutcomes):
        if isinstance(outcomes, TrainingOutcomes):
            outcomes = outcomes.outcomes
        self.outcomes = outcomes
        self._fitted: dict[tuple[Any, str], CensoringKM | None] = {}

    @property
    def by_fold(self) -> bool:
        """Whether the outcomes are a ``{(repeat, fold): outcomes}`` mapping."""
        return isinstance(self.outcomes, Mapping)

    def frame(self, key: Any = None) -> pd.DataFrame:
        """The training outcomes (of fold ``key`` for a mapping)."""
        if not self.by_fold:
            return self.outcomes
        if key not in self.outcomes:
            raise ValueError(f"no training outcomes for (repeat, fold) = {key}")
        return self.outcomes[key]

    def censoring(self, head: str, key: Any = None) -> CensoringKM | None:
        """The censoring distribution of head ``head`` (``"os"``, ``"dfs"``), fitted once."""
        if (key, head) not in self._fitted:
            train = self.frame(key)
            self._fitted[key, head] = censoring_km(
                train[f"{head}_years"].to_numpy(np.float64), train[f"{head}_event"].to_numpy()
            )
        return self._fitted[key, head]
