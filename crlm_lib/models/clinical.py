"""Clinical anchors with the same 12-year outputs as the deep models.

Every anchor turns a predicted survival curve into the project's *Predictions* frame (the format
of ``crlm_lib.train.predict``), so that every metric of ``crlm_lib.metrics`` and every table of
``crlm_lib.evaluation`` applies unchanged:

- ``FongScore``: the clinical risk score of Fong et al. (1999), column ``clinrisk_score`` (0..5),
  with Kaplan–Meier curves of the training patients that share the score;
- ``CoxPH``: a penalised Cox proportional-hazards model (lifelines) on
  ``crlm_lib.data.clinical.encode_predictors`` features;
- ``RandomSurvivalForest``: scikit-survival's random survival forest on the same features;
- ``Oracle``: the synthetic generator's TRUE curves (``oracle.csv``): the ceiling of
  discrimination (C-index, AUC) and calibration in expectation, but NOT of the point-prediction
  metrics TAA / MAE / MSE (the argmax of the true pmf is its mode, not the error-minimising
  time).

From survival curve to the frame (one place, :func:`frame_from_curves`)
-----------------------------------------------------------------------
With :math:`S(k)` the predicted overall survival at the end of year :math:`k` (years after
surgery, :math:`k = 1..12`) and :math:`S(0) = 1`,

.. math::  p_k = S(k-1) - S(k), \\quad k = 1..12, \\qquad p_{>12} = S(12)

i.e. ``surv_pk`` is the probability of death during postoperative year ``k`` and the mass still
alive after 12 years is an explicit 13th value, column ``surv_p_beyond``: it is NOT folded into
the last bin (that made the argmax rule of ``metrics.predicted_years`` predict "year 12" for
every patient likely to survive the horizon). The 12 bins then sum to ``1 - S(12)``, which
``crlm_lib.metrics`` reads as the beyond-horizon mass. ``rec_pk = 1 - S_DFS(k)`` is the cumulative
probability of recurrence (or death) by the end of year ``k``. An anchor fitted on OS only
uses ``1 - S_OS(k)`` for the recurrence head (documented fallback: a lower bound, since DFS
counts deaths as events).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib.config import N_YEARS
from crlm_lib.types import (  # noqa: F401  (re-exported: the column names live in types)
    BEYOND_COL,
    NATIVE_RISK,
    OUTCOME_COLS,
    PATIENT_ID,
    REC_COLS,
    SURV_COLS,
)

#: Year ends (years after surgery) at which every anchor evaluates its curves.
YEAR_ENDS: np.ndarray = np.arange(1, N_YEARS + 1, dtype=float)


class AnchorError(ValueError):
    """An anchor was used before fitting or given inconsistent inputs."""


# --------------------------------------------------------------------------------------------
# curves -> Predictions frame
# --------------------------------------------------------------------------------------------


def monotone_survival(surv: np.ndarray) -> np.ndarray:
    """Clip a survival table ``[N, T]`` to [0, 1] and make it non-increasing along T."""
    s = np.clip(np.asarray(surv, dtype=float), 0.0, 1.0)
    return np.minimum.accumulate(s, axis=1)


def pmf_from_survival(surv_year_ends: np.ndarray) -> np.ndarray:
    """Year-of-death pmf ``[N, 12]`` from the survival at the 12 year ends ``[N, 12]``.

    ``p_k = S(k-1) - S(k)`` for ``k = 1..12`` with ``S(0) = 1``. The mass still alive after 12
    years, ``S(12)``, is left out (rows sum to ``1 - S(12)``; :func:`frame_from_curves` stores
    it as ``surv_p_beyond``), so it never enters the argmax of ``metrics.predicted_years``.

    Examples
    --------
    >>> float(pmf_from_survival(np.full((1, 12), 1.0)).sum())  # all mass beyond year 12
    0.0
    """
    s = monotone_survival(surv_year_ends)
    if s.shape[1] != N_YEARS:
        raise AnchorError(f"expected survival at {N_YEARS} year ends, got shape {s.shape}")
    prev = np.concatenate([np.ones((s.shape[0], 1)), s[:, :-1]], axis=1)
    return prev - s


def frame_from_curves(
    ids: list[str] | np.ndarray,
    os_surv: np.ndarray,
    dfs_surv: np.ndarray | None,
    outcomes_df: pd.DataFrame | None,
    risk: np.ndarray | None = None,
) -> pd.DataFrame:
    """Build a Predictions frame from survival curves at the 12 year ends.

    Parameters
    ----------
    ids : sequence of str [N]
        Patient IDs (``patient_id`` column).
    os_surv, dfs_surv : ndarray [N, 12]
        Overall / disease-free survival at the end of years 1..12. ``dfs_surv=None`` uses
        ``os_surv`` for the recurrence head (see the module docstring).
    outcomes_df : DataFrame or None
        ``crlm_lib.data.clinical.outcomes`` (indexed by patient ID); its four outcome columns are
        copied for ``ids``. ``None`` leaves them out (prediction for new patients).
    risk : ndarray [N], optional
        The anchor's native risk score (higher = worse), stored as ``native_risk`` (the Fong
        score itself, Cox's linear predictor, the forest's cumulative hazard, the oracle's
        true 5-year risk). The evaluation ranks every model by the 5-year risk read from its
        curves (``types.Predictions.ranking_score``); ``native_risk`` is read only by the
        ``score="mixed"`` sensitivity analysis.
    """
    ids = [str(i) for i in ids]
    os_surv = monotone_survival(os_surv)
    dfs = os_surv if dfs_surv is None else monotone_survival(dfs_surv)
    frame = pd.DataFrame({PATIENT_ID: ids})
    frame[SURV_COLS] = pmf_from_survival(os_surv)
    frame[BEYOND_COL] = os_surv[:, -1]
    frame[REC_COLS] = 1.0 - dfs
    if risk is not None:
        frame[NATIVE_RISK] = np.asarray(risk, dtype=float)
    if outcomes_df is not None:
        missing = [i for i in ids if i not in outcomes_df.index]
        if missing:
            raise AnchorError(f"no outcomes for patients {missing[:5]} (of {len(missing)})")
        out = outcomes_df.loc[ids, OUTCOME_COLS].to_numpy(dtype=float)
        frame[OUTCOME_COLS] = out
    return frame


def step_at(times: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Right-continuous step function ``values`` on ``times`` ``[T]`` (or ``[N, T]``) at ``query``.

    Before the first time the value is 1 (survival); after the last it stays at the last value.
    """
    idx = np.searchsorted(np.asarray(times), np.asarray(query), side="right") - 1
    values = np.asarray(values, dtype=float)
    padded = np.concatenate([np.ones(values.shape[:-1] + (1,)), values], axis=-1)
    return padded[..., idx + 1]


def _as_1d(x: np.ndarray | pd.Series | list, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=float).reshape(-1)
    if not np.isfinite(arr).all():
        raise AnchorError(f"{name} has {int((~np.isfinite(arr)).sum())} missing values")
    return arr


# --------------------------------------------------------------------------------------------
# base class
# --------------------------------------------------------------------------------------------


class SurvivalAnchor:
    """Common interface: fit on OS (and optionally DFS), predict curves, build the frame.

    Subclasses implement ``_fit_one(X, durations_years, events) -> fitted`` and
    ``_curve(fitted, X) -> ndarray [N, 12]`` (survival at the year ends) and ``_risk``.
    """

    name: str = "anchor"

    def __init__(self) -> None:
        self._os = None
        self._dfs = None

    # -- subclass hooks ---------------------------------------------------------------------
    def _fit_one(self, X, durations_years: np.ndarray, events: np.ndarray):  # pragma: no cover
        raise NotImplementedError

    def _curve(self, fitted, X) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _risk(self, fitted, X) -> np.ndarray:
        """Default native risk score (``native_risk`` column, not ``types.Predictions.risk``):
        expected number of years lost, ``12 - sum_k S(k)`` (higher = worse)."""
        return N_YEARS - self._curve(fitted, X).sum(axis=1)

    # -- public API -------------------------------------------------------------------------
    def fit(
        self,
        X,
        durations_years,
        events,
        dfs_years=None,
        dfs_events=None,
    ) -> SurvivalAnchor:
        """Fit on overall survival, and on disease-free survival when given.

        Parameters
        ----------
        X : array [N, F] (or the anchor's own input, see the subclass)
        durations_years : array [N]
            Follow-up time in years (OS).
        events : array [N]
            1 = death observed, 0 = censored.
        dfs_years, dfs_events : array [N], optional
            Disease-free survival time (years) and event (recurrence or death); fits the
            recurrence head.
        """
        t = _as_1d(durations_years, "durations_years")
        e = _as_1d(events, "events")
        self._os = self._fit_one(X, t, e)
        self._dfs = None
        if dfs_years is not None and dfs_events is not None:
            self._dfs = self._fit_one(
                X, _as_1d(dfs_years, "dfs_years"), _as_1d(dfs_events, "dfs_events")
            )
        return self

    def fit_outcomes(self, X, outcomes_df: pd.DataFrame) -> SurvivalAnchor:
        """Fit on OS and DFS from a ``data.clinical.outcomes`` frame (rows aligned with ``X``)."""
        return self.fit(
            X,
            outcomes_df["os_years"],
            outcomes_df["os_event"],
            outcomes_df["dfs_years"],
            outcomes_df["dfs_event"],
        )

    def _check(self) -> None:
        if self._os is None:
            raise AnchorError(f"{self.name}: call fit() before predicting")

    def survival_curves(self, X) -> tuple[np.ndarray, np.ndarray | None]:
        """Predicted OS and DFS survival at the end of years 1..12, each ``[N, 12]``."""
        self._check()
        os_s = self._curve(self._os, X)
        dfs_s = None if self._dfs is None else self._curve(self._dfs, X)
        return os_s, dfs_s

    def risk(self, X) -> np.ndarray:
        """Native OS risk score ``[N]`` (higher = worse)."""
        self._check()
        return np.asarray(self._risk(self._os, X), dtype=float)

    def predict_frame(self, X, ids, outcomes_df: pd.DataFrame | None) -> pd.DataFrame:
        """Predictions frame (``patient_id``, ``surv_p1..12``, ``rec_p1..12``, outcomes)."""
        os_s, dfs_s = self.survival_curves(X)
        return frame_from_curves(ids, os_s, dfs_s, outcomes_df, risk=self.risk(X))


# --------------------------------------------------------------------------------------------
# Fong clinical risk score
# --------------------------------------------------------------------------------------------


def _scores_from(X) -> np.ndarray:
    if isinstance(X, pd.DataFrame):
        if "clinrisk_score" not in X.columns:
            raise AnchorError("FongScore needs the column 'clinrisk_score'")
        X = X["clinrisk_score"]
    return np.asarray(X, dtype=float).reshape(-1)


class FongScore(SurvivalAnchor):
    """Fong clinical risk score (Fong et al., Ann Surg 1999) as a survival anchor.

    Input ``X`` is the score itself: a DataFrame with ``clinrisk_score`` or an array ``[N]``
    (integers 0..5; NaN = missing). The risk is the score. The curves of a patient are the
    Kaplan–Meier estimate (lifelines ``KaplanMeierFitter``) of the *training* patients with the
    same score, read at the year ends.

    Choice (small strata): when fewer than ``min_group`` (default 5) training patients share a
    score, the neighbouring scores are pooled symmetrically (score ± 1, ± 2, ...) until at least
    ``min_group`` patients are included. A missing score gets the KM of all training patients
    and the training mean score as risk.
    """

    name = "fong"

    def __init__(self, min_group: int = 5) -> None:
        super().__init__()
        self.min_group = int(min_group)

    def _fit_one(self, X, durations_years, events):
        from lifelines import KaplanMeierFitter

        scores = _scores_from(X)
        if len(scores) != len(durations_years):
            raise AnchorError("FongScore: scores and durations differ in length")
        known = np.isfinite(scores)
        curves: dict[int, np.ndarray] = {}
        pooled_from: dict[int, list[int]] = {}
        kmf = KaplanMeierFitter()

        def km(mask: np.ndarray) -> np.ndarray:
            kmf.fit(durations_years[mask], events[mask])
            return kmf.survival_function_at_times(YEAR_ENDS).to_numpy(dtype=float)

        if known.any():
            levels = range(int(np.nanmin(scores)), int(np.nanmax(scores)) + 1)
            for s in sorted(set(range(0, 6)) | set(levels)):
                width = 0
                while True:
                    mask = known & (np.abs(scores - s) <= width)
                    if mask.sum() >= self.min_group or mask.sum() == known.sum():
                        break
                    width += 1
                curves[s] = km(mask)
                pooled_from[s] = sorted({int(v) for v in scores[mask]})
        overall = km(np.ones_like(scores, dtype=bool))
        mean_score = float(np.nanmean(scores)) if known.any() else 0.0
        return {
            "curves": curves,
            "overall": overall,
            "pooled_from": pooled_from,
            "mean_score": mean_score,
        }

    def _curve(self, fitted, X) -> np.ndarray:
        scores = _scores_from(X)
        out = np.empty((len(scores), N_YEARS))
        for i, s in enumerate(scores):
            if np.isfinite(s) and int(round(s)) in fitted["curves"]:
                out[i] = fitted["curves"][int(round(s))]
            else:
                out[i] = fitted["overall"]
        return out

    def _risk(self, fitted, X) -> np.ndarray:
        scores = _scores_from(X)
        return np.where(np.isfinite(scores), scores, fitted["mean_score"])

    @property
    def pooling(self) -> dict[int, list[int]]:
        """Scores pooled into each score's OS curve (documents the small-strata rule)."""
        self._check()
        return dict(self._os["pooled_from"])


def fong_agreement(df: pd.DataFrame) -> dict[str, float]:
    """Agreement of the recomputed Fong score with the table's ``clinrisk_score``.

    The score is recomputed from its five criteria by ``crlm_lib.data.clinical.fong_score``.

    Returns
    -------
    dict
        ``n`` (patients with both scores), ``n_missing`` (either score missing),
        ``agreement_pct`` (exact agreement, %), ``kappa`` (Cohen's kappa, sklearn, unweighted),
        ``kappa_quadratic`` (quadratic-weighted kappa, for an ordinal score).
    """
    from sklearn.metrics import cohen_kappa_score

    from crlm_lib.data.clinical import fong_score

    recomputed = np.asarray(fong_score(df), dtype=float).reshape(-1)
    table = pd.to_numeric(df["clinrisk_score"], errors="coerce").to_numpy(dtype=float)
    both = np.isfinite(recomputed) & np.isfinite(table)
    n = int(both.sum())
    res: dict[str, float] = {"n": n, "n_missing": int(len(table) - n)}
    if n == 0:
        res.update(agreement_pct=float("nan"), kappa=float("nan"), kappa_quadratic=float("nan"))
        return res
    a, b = recomputed[both].astype(int), table[both].astype(int)
    res["agreement_pct"] = float(100.0 * np.mean(a == b))
    labels = sorted(set(a) | set(b))
    if len(labels) == 1:  # kappa is undefined with one category; perfect agreement -> 1
        res["kappa"] = res["kappa_quadratic"] = 1.0 if (a == b).all() else 0.0
    else:
        res["kappa"] = float(cohen_kappa_score(a, b, labels=labels))
        res["kappa_quadratic"] = float(cohen_kappa_score(a, b, labels=labels, weights="quadratic"))
    return res


# --------------------------------------------------------------------------------------------
# Cox proportional hazards (lifelines)
# --------------------------------------------------------------------------------------------


class CoxPH(SurvivalAnchor):
    """Penalised Cox model (lifelines ``CoxPHFitter``) on encoded clinical features.

    ``X`` is ``encode_predictors(df, reference=train_df)[0]`` (float ``[N, F]``). Columns with
    zero variance in the training rows are dropped (they carry no information and make the
    Newton steps singular). ``penalizer=0.1`` (ridge, ``l1_ratio=0``) keeps the fit stable
    with ~20 features and ~100 events. Risk = the linear predictor (partial hazard, log scale).
    """

    name = "cox"

    def __init__(self, penalizer: float = 0.1, l1_ratio: float = 0.0) -> None:
        super().__init__()
        self.penalizer = float(penalizer)
        self.l1_ratio = float(l1_ratio)

    @staticmethod
    def _frame(X, keep: np.ndarray) -> pd.DataFrame:
        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        return pd.DataFrame(X[:, keep], columns=[f"x{j}" for j in np.flatnonzero(keep)])

    def _fit_one(self, X, durations_years, events):
        from lifelines import CoxPHFitter

        X = np.asarray(X, dtype=float)
        if X.ndim == 1:
            X = X[:, None]
        if not np.isfinite(X).all():
            raise AnchorError("CoxPH: X has missing values (encode_predictors imputes them)")
        keep = X.std(axis=0) > 1e-8
        frame = self._frame(X, keep)
        frame["T"] = np.maximum(durations_years, 1e-6)
        frame["E"] = events
        cph = CoxPHFitter(penalizer=self.penalizer, l1_ratio=self.l1_ratio)
        cph.fit(frame, duration_col="T", event_col="E")
        return {"model": cph, "keep": keep}

    def _curve(self, fitted, X) -> np.ndarray:
        sf = fitted["model"].predict_survival_function(
            self._frame(X, fitted["keep"]), times=YEAR_ENDS
        )
        return sf.to_numpy(dtype=float).T

    def _risk(self, fitted, X) -> np.ndarray:
        return fitted["model"].predict_log_partial_hazard(self._frame(X, fitted["keep"])).to_numpy()


# --------------------------------------------------------------------------------------------
# Random survival forest (scikit-survival)
# --------------------------------------------------------------------------------------------


class RandomSurvivalForest(SurvivalAnchor):
    """scikit-survival ``RandomSurvivalForest`` on encoded clinical features.

    Modest ``n_estimators`` (default 200) for a 2-core CPU, ``min_samples_leaf=6`` against
    overfitting ~160 training patients, fixed ``random_state``, ``n_jobs=1`` (deterministic and
    polite on shared machines). Survival at the year ends is read from the forest's step function
    (value at the last event time at or before the year end). Risk = the forest's ensemble
    cumulative hazard (``predict``).
    """

    name = "rsf"

    def __init__(
        self,
        n_estimators: int = 200,
        min_samples_leaf: int = 6,
        random_state: int = 0,
        n_jobs: int = 1,
    ) -> None:
        super().__init__()
        self.n_estimators = int(n_estimators)
        self.min_samples_leaf = int(min_samples_leaf)
        self.random_state = int(random_state)
        self.n_jobs = n_jobs

    def _fit_one(self, X, durations_years, events):
        from sksurv.ensemble import RandomSurvivalForest as _RSF
        from sksurv.util import Surv

        X = np.asarray(X, dtype=float)
        y = Surv.from_arrays(event=events.astype(bool), time=np.maximum(durations_years, 1e-6))
        rsf = _RSF(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            random_state=self.random_state,
            n_jobs=self.n_jobs,
        )
        rsf.fit(X, y)
        return rsf

    def _curve(self, fitted, X) -> np.ndarray:
        surv = fitted.predict_survival_function(np.asarray(X, dtype=float), return_array=True)
        return step_at(fitted.unique_times_, surv, YEAR_ENDS)

    def _risk(self, fitted, X) -> np.ndarray:
        return fitted.predict(np.asarray(X, dtype=float))


# --------------------------------------------------------------------------------------------
# Oracle (synthetic cohort only)
# --------------------------------------------------------------------------------------------


class Oracle(SurvivalAnchor):
    """The synthetic generator's TRUE curves: the ceiling of discrimination, not of TAA/MAE.

    Reads ``oracle.csv`` (``Patient-ID``, ``os_risk``, ``dfs_risk``, ``os_surv_y1..12``,
    ``dfs_surv_y1..12``). Nothing is learned: ``fit`` is a no-op kept for the common interface,
    and ``X`` is ignored — predictions are looked up by patient ID. Never available on the real
    cohort.
    """

    name = "oracle"

    def __init__(self, oracle: str | Path | pd.DataFrame) -> None:
        super().__init__()
        if isinstance(oracle, pd.DataFrame):
            table = oracle.copy()
        else:
            path = Path(oracle)
            if not path.is_file():
                raise FileNotFoundError(f"oracle table not found: {path} (synthetic cohorts only)")
            table = pd.read_csv(path)
        if "Patient-ID" in table.columns:
            table = table.set_index("Patient-ID")
        table.index = table.index.astype(str)
        need = [f"os_surv_y{k}" for k in YEAR_ENDS.astype(int)] + ["os_risk"]
        missing = [c for c in need if c not in table.columns]
        if missing:
            raise AnchorError(f"oracle table lacks columns {missing}")
        self.table = table
        self._os = "oracle"

    def fit(self, X=None, durations_years=None, events=None, dfs_years=None, dfs_events=None):
        """No-op (the truth is not learned)."""
        return self

    def _rows(self, ids) -> pd.DataFrame:
        ids = [str(i) for i in ids]
        missing = [i for i in ids if i not in self.table.index]
        if missing:
            raise AnchorError(f"oracle has no row for patients {missing[:5]} (of {len(missing)})")
        return self.table.loc[ids]

    def curves_for(self, ids) -> tuple[np.ndarray, np.ndarray | None]:
        """True OS and DFS survival at the year ends for ``ids``, ``[N, 12]`` each."""
        rows = self._rows(ids)
        years = YEAR_ENDS.astype(int)
        os_s = rows[[f"os_surv_y{k}" for k in years]].to_numpy(dtype=float)
        dcols = [f"dfs_surv_y{k}" for k in years]
        dfs_s = rows[dcols].to_numpy(dtype=float) if set(dcols) <= set(rows.columns) else None
        return os_s, dfs_s

    def predict_frame(self, X, ids, outcomes_df: pd.DataFrame | None) -> pd.DataFrame:
        """Predictions frame from the true curves; ``native_risk`` = ``os_risk``."""
        os_s, dfs_s = self.curves_for(ids)
        risk = self._rows(ids)["os_risk"].to_numpy(dtype=float)
        return frame_from_curves(ids, os_s, dfs_s, outcomes_df, risk=risk)


#: Clinical anchors by name (the deep clinical-only model ``clinical_mlp`` is in the registry).
ANCHORS: dict[str, type[SurvivalAnchor]] = {
    "fong": FongScore,
    "cox": CoxPH,
    "rsf": RandomSurvivalForest,
}
