"""The two types every step exchanges: :class:`Predictions` (one model's 12-year outputs for a
set of patients) and :class:`Cohort` (the analysis cohort: clinical table, outcomes, IDs,
folders, oracle).

Why one module named ``types`` and not ``predictions``: the two types are read by the same
modules (``metrics``, ``evaluation``, ``predict``, ``pipeline``), neither has any behaviour of
its own beyond validation and accessors, and the column names of the Predictions frame are
constants that ``models.clinical``, ``train``, ``metrics``, ``evaluation``, ``predict`` and
``plots`` import from here instead of spelling them. The numerical core (the
formulas of curves and risks over arrays) is :mod:`crlm_lib.curves`, a layer below, as pycox
keeps its functions beside ``EvalSurv``; :class:`Predictions` only picks the columns and calls
them.

The frame stays the currency between modules and on disk (``predictions.csv``):
``Predictions.from_frame(df).to_frame()`` returns ``df`` unchanged (same columns, order,
dtypes, values), so no CSV and no table moves.

Risk, defined once
------------------
:meth:`Predictions.risk` ``(head, horizon_years)`` is the predicted probability of the event
(death for ``"os"``, recurrence for ``"dfs"``) by the end of year ``horizon_years``, i.e.
``1 - S(horizon)`` of :meth:`Predictions.curve`. It is also what the evaluation ranks every
model by (:meth:`Predictions.ranking_score`): the risk at :data:`RISK_HORIZON_YEARS`, 5 years
for overall survival and 3 years for recurrence, for the Fong score, Cox, the forest, the deep
models and the oracle alike, so that a C-index compares models and not functionals. Two other
quantities that could be called "risk" have their own names because their numbers differ:

- :meth:`Predictions.expected_years` — the 12-year restricted mean event-free time (minus it
  is ``curves.risk_from_survival``);
- :meth:`Predictions.mean_recurrence_probability` — the mean of the 12 (running-max)
  recurrence sigmoids (``curves.risk_from_recurrence(horizon_years=None)``), the
  horizon-free alternative.

``ranking_score(head, score="mixed")`` keeps the functionals the evaluation used before
(an anchor's own ``native_risk``, else minus the 12-year restricted mean, for overall
survival), to show what the choice changes; ``crlm predict``'s risk groups still use it,
since the training references stored in run folders were computed with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from crlm_lib import curves
from crlm_lib.config import N_YEARS

if TYPE_CHECKING:
    from crlm_lib.config import Paths, Profile

Head = Literal["os", "dfs"]

#: Patient ID column of every Predictions frame.
PATIENT_ID: str = "patient_id"
#: ``surv_p1..surv_p12``: the survival head's year-of-death pmf (year k = death in year k).
SURV_COLS: list[str] = [f"surv_p{k}" for k in range(1, N_YEARS + 1)]
#: ``rec_p1..rec_p12``: the recurrence head's probability of recurrence by the end of year k.
REC_COLS: list[str] = [f"rec_p{k}" for k in range(1, N_YEARS + 1)]
#: Probability of surviving beyond year 12 (``S(12)``), kept out of the 12 ``surv_p`` bins
#: (anchors only; absent for a softmax head, whose pmf sums to 1).
BEYOND_COL: str = "surv_p_beyond"
#: An anchor's own OS risk score (higher = worse), used for the OS C-indices when present.
NATIVE_RISK: str = "native_risk"
#: Outcome columns (years and event indicators) of the two heads.
OUTCOME_COLS: list[str] = ["os_years", "os_event", "dfs_years", "dfs_event"]
#: The cross-validation columns of pooled out-of-fold predictions.
CV_COLS: list[str] = ["repeat", "fold"]
#: Attention over the 12 virtual years (models that have it).
ATTENTION_COLS: list[str] = [f"att_{k}" for k in range(1, N_YEARS + 1)]
HEADS: tuple[str, ...] = ("os", "dfs")
#: Horizon (years) of the risk every model is ranked by (:meth:`Predictions.ranking_score`):
#: the probability of death by 5 years, of recurrence (or death) by 3 years.
RISK_HORIZON_YEARS: dict[str, int] = {"os": 5, "dfs": 3}
#: The ranking functionals of :meth:`Predictions.ranking_score`: ``"risk"`` (every model
#: alike, the default) and ``"mixed"`` (each model its own: Fong its score, Cox its linear
#: predictor, the deep models minus their 12-year restricted mean; a sensitivity option).
RANKING_SCORES: tuple[str, ...] = ("risk", "mixed")


class PredictionsError(ValueError):
    """A Predictions frame lacks a column or holds values out of range."""


def prob_columns(prefix: str) -> list[str]:
    """Column names ``<prefix>1 .. <prefix>12`` of a Predictions frame (``surv_p``, ``rec_p``)."""
    return [f"{prefix}{k}" for k in range(1, N_YEARS + 1)]


def head_columns(head: str) -> list[str]:
    """The 12 probability columns of head ``head``: :data:`SURV_COLS` (``"os"``) or
    :data:`REC_COLS` (``"dfs"``)."""
    _check_head(head)
    return SURV_COLS if head == "os" else REC_COLS


def outcome_columns(head: str) -> tuple[str, str]:
    """``(<head>_years, <head>_event)``."""
    _check_head(head)
    return f"{head}_years", f"{head}_event"


def _check_head(head: str) -> None:
    if head not in HEADS:
        raise PredictionsError(f"unknown head {head!r}; use 'os' or 'dfs'")


@dataclass(frozen=True)
class Predictions:
    """One model's 12-year outputs for a set of patients (a thin, validated view of a frame).

    Parameters
    ----------
    frame : DataFrame
        Columns :data:`PATIENT_ID`, :data:`SURV_COLS` (pmf of the year of death, rows sum to
        ``<= 1``), :data:`REC_COLS` (probability of recurrence by the end of year k, in
        [0, 1]); optionally :data:`BEYOND_COL`, :data:`NATIVE_RISK`, :data:`OUTCOME_COLS`
        (``os_years``/``dfs_years`` in years, events 0/1), :data:`CV_COLS`,
        :data:`ATTENTION_COLS`. Other columns are kept as they are.
    require_outcomes : bool
        Also require the four outcome columns (scoring needs them; new patients have none).

    Raises
    ------
    PredictionsError
        Naming the first missing column or the column with values outside [0, 1].

    Examples
    --------
    >>> import pandas as pd
    >>> row = {"patient_id": "P1", **{c: 1 / 12 for c in SURV_COLS}, **{c: 0.5 for c in REC_COLS}}
    >>> p = Predictions.from_frame(pd.DataFrame([row]))
    >>> round(float(p.risk("dfs", 3)[0]), 3), round(float(p.expected_years("os")[0]), 3)
    (0.5, 6.0)
    """

    frame: pd.DataFrame
    require_outcomes: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        df = self.frame
        if not isinstance(df, pd.DataFrame):
            raise PredictionsError(f"Predictions wraps a DataFrame, not {type(df).__name__}")
        needed = [PATIENT_ID, *SURV_COLS, *REC_COLS]
        if self.require_outcomes:
            needed += OUTCOME_COLS
        have = set(df.columns)
        missing = [col for col in needed if col not in have]
        if missing:
            raise PredictionsError(
                f"Predictions frame has no column {missing[0]!r} "
                f"(columns: {list(df.columns)[:8]}...)"
            )
        if len(df) == 0:
            return
        # each head's 12 columns read once, in the layout ``metrics`` reads them
        # (same memory layout, hence the same floating-point sums), and kept for the accessors:
        # this runs in every bootstrap replicate
        pmf = df[SURV_COLS].to_numpy(np.float64)
        rec = df[REC_COLS].to_numpy(np.float64)
        pmf.flags.writeable = rec.flags.writeable = False  # shared by every accessor call
        self.__dict__["survival_pmf"], self.__dict__["recurrence_cdf"] = pmf, rec
        for cols, values in ((SURV_COLS, pmf), (REC_COLS, rec)):
            # NaN passes (a model that failed scores NaN downstream, as before)
            bad = (values < -1e-6) | (values > 1 + 1e-6)
            if bad.any():
                row, col = (int(i[0]) for i in np.nonzero(bad))
                raise PredictionsError(
                    f"Predictions column {cols[col]!r} holds {values[row, col]!r} for patient "
                    f"{df[PATIENT_ID].iloc[row]} (probabilities must lie in [0, 1])"
                )

    # ---- frame round trip -------------------------------------------------------------------
    @classmethod
    def from_frame(cls, frame: pd.DataFrame, require_outcomes: bool = False) -> Predictions:
        """Validate ``frame`` and wrap it (no copy, no change)."""
        return cls(frame, require_outcomes=require_outcomes)

    @classmethod
    def of(cls, predictions: pd.DataFrame | Predictions) -> Predictions:
        """``predictions`` when it is already a :class:`Predictions` (validated), else
        :meth:`from_frame` of it: for functions that take either."""
        return predictions if isinstance(predictions, cls) else cls.from_frame(predictions)

    def to_frame(self) -> pd.DataFrame:
        """The frame, unchanged (a copy: :class:`Predictions` is frozen)."""
        return self.frame.copy()

    def take(self, rows: np.ndarray) -> Predictions:
        """Rows ``rows`` (positions; repeats allowed), validated by being this table's rows.

        The frame is ``frame.iloc[rows]`` with a fresh index; the probability arrays are this
        table's rows in the memory layout that validating that frame would give (pandas'
        layout for this frame's blocks, probed once on two rows), so every metric sums in the
        same order and gives the same value. What a bootstrap replicate scores, without
        re-reading and re-checking 24 columns per replicate.
        """
        sub = object.__new__(Predictions)
        object.__setattr__(sub, "frame", self.frame.iloc[rows].reset_index(drop=True))
        object.__setattr__(sub, "require_outcomes", self.require_outcomes)
        for name, order in self._row_layouts.items():
            part = np.array(getattr(self, name)[rows], order=order)
            part.flags.writeable = False
            sub.__dict__[name] = part
        return sub

    @cached_property
    def _row_layouts(self) -> dict[str, str]:
        """``{"survival_pmf": order, "recurrence_cdf": order}``: the memory order (``"F"`` or
        ``"C"``) pandas gives these columns of any two or more of this frame's rows."""
        probe = self.frame.iloc[[0, 0]] if len(self.frame) else self.frame
        layouts = {}
        for name, cols in (("survival_pmf", SURV_COLS), ("recurrence_cdf", REC_COLS)):
            flags = probe[cols].to_numpy(np.float64).flags
            layouts[name] = "F" if flags.f_contiguous and not flags.c_contiguous else "C"
        return layouts

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def ids(self) -> list[str]:
        """Patient IDs as strings, in row order."""
        return [str(i) for i in self.frame[PATIENT_ID]]

    # ---- raw outputs ------------------------------------------------------------------------
    @cached_property
    def survival_pmf(self) -> np.ndarray:
        """``[N, 12]`` float64: probability of death in year k (``surv_p1..12``)."""
        return self.frame[SURV_COLS].to_numpy(np.float64)

    @cached_property
    def recurrence_cdf(self) -> np.ndarray:
        """``[N, 12]`` float64: probability of recurrence by the end of year k (``rec_p1..12``),
        as the head outputs it (not yet made monotone)."""
        return self.frame[REC_COLS].to_numpy(np.float64)

    def probs(self, head: str) -> np.ndarray:
        """:attr:`survival_pmf` (``"os"``) or :attr:`recurrence_cdf` (``"dfs"``)."""
        _check_head(head)
        return self.survival_pmf if head == "os" else self.recurrence_cdf

    @property
    def has_outcomes(self) -> bool:
        return set(OUTCOME_COLS) <= set(self.frame.columns)

    def outcomes(self, head: str) -> tuple[np.ndarray, np.ndarray]:
        """``(time_years [N] float64, event [N])`` of head ``head``."""
        years, event = outcome_columns(head)
        if years not in self.frame.columns or event not in self.frame.columns:
            raise PredictionsError(f"Predictions frame has no outcome columns {years!r}, {event!r}")
        return self.frame[years].to_numpy(np.float64), self.frame[event].to_numpy()

    # ---- curves, risk and the other scores --------------------------------------------------
    def curve(self, head: str) -> np.ndarray:
        """Event-free probability at the end of years 1..12, ``[N, 12]``.

        ``"os"``: survival ``S_k = 1 - sum_{j<=k} p_j`` (``curves.survival_curve``);
        ``"dfs"``: recurrence-free ``1 - max_{j<=k} q_j`` (``curves.recurrence_free_curve``).
        """
        _check_head(head)
        if head == "os":
            return curves.survival_curve(self.survival_pmf)
        return curves.recurrence_free_curve(self.recurrence_cdf)

    def risk(self, head: str, horizon_years: int = 3) -> np.ndarray:
        """THE risk: predicted probability of the event by the end of year ``horizon_years``.

        ``"os"``: ``sum_{j<=h} p_j`` (clipped to [0, 1]); ``"dfs"``: ``max_{j<=h} q_j``
        (``curves.risk_from_recurrence``). At :data:`RISK_HORIZON_YEARS` it is the score
        the evaluation ranks every model by (:meth:`ranking_score`).
        Higher = worse. ``[N]`` float64.
        """
        _check_head(head)
        if not 1 <= int(horizon_years) <= N_YEARS:
            raise PredictionsError(f"horizon_years must be in 1..{N_YEARS}, got {horizon_years}")
        if head == "dfs":
            return curves.risk_from_recurrence(self.recurrence_cdf, int(horizon_years))
        cum = np.cumsum(self.survival_pmf, axis=1)[:, int(horizon_years) - 1]
        return np.clip(cum, 0.0, 1.0)

    def expected_years(self, head: str = "os") -> np.ndarray:
        """12-year restricted mean event-free time in years, ``[N]``.

        ``"os"``: ``sum_k (k + 0.5) p_k + 12 S(12)`` (deaths at mid-year; minus
        ``curves.risk_from_survival``, the survival head's ranking score under
        ``ranking_score(score="mixed")``);
        ``"dfs"``: ``12 (1 - mean_k Q_k)``.
        """
        _check_head(head)
        if head == "os":
            return -curves.risk_from_survival(self.survival_pmf)
        return N_YEARS * (1.0 - self.mean_recurrence_probability())

    def mean_recurrence_probability(self) -> np.ndarray:
        """Mean of the 12 running-max recurrence probabilities ``[N]`` (the horizon-free score,
        ``curves.risk_from_recurrence(horizon_years=None)``)."""
        return curves.risk_from_recurrence(self.recurrence_cdf, None)

    def ranking_score(self, head: str, score: str = "risk") -> np.ndarray:
        """What the evaluation ranks patients by (higher = worse), ``[N]``.

        ``score="risk"`` (default, one functional for every model): :meth:`risk` at
        :data:`RISK_HORIZON_YEARS`, the predicted probability of death by 5 years (``"os"``)
        or of recurrence by 3 years (``"dfs"``). ``score="mixed"``: the functionals used
        before, each model its own, kept as a sensitivity analysis and for the training
        references already stored by ``crlm predict``: for ``"os"`` the anchor's
        :data:`NATIVE_RISK` where present and finite (the Fong score itself, Cox's linear
        predictor, the oracle's 5-year risk), else ``curves.risk_from_survival`` (minus
        the 12-year restricted mean survival time); ``"dfs"`` is the 3-year risk either way.
        """
        _check_head(head)
        if score not in RANKING_SCORES:
            raise PredictionsError(f"unknown score {score!r}; use one of {RANKING_SCORES}")
        if score == "risk" or head == "dfs":
            return self.risk(head, RISK_HORIZON_YEARS[head])
        if NATIVE_RISK in self.frame.columns:
            native_risk = self.frame[NATIVE_RISK].to_numpy(np.float64)
            if np.isfinite(native_risk).all():
                return native_risk
        return curves.risk_from_survival(self.survival_pmf)


# --------------------------------------------------------------------------------------------
# the cohort
# --------------------------------------------------------------------------------------------


@dataclass
class Cohort:
    """The analysis cohort, as the notebooks, the protocols and ``crlm evaluate`` use it.

    Built in one place, ``pipeline.build_cohort`` (behind ``pipeline.load_study``, whose
    ``Study`` is an alias, and ``evaluation.as_cohort``); tests and benchmarks assemble one by
    hand.

    Attributes
    ----------
    clinical : DataFrame
        Validated clinical table (index = patient ID), all patients of the table.
    outcomes : DataFrame
        ``os_years``, ``os_event``, ``dfs_years``, ``dfs_event`` ... of the analysis cohort
        (index = patient ID).
    ids : list of str
        The analysis cohort (a preprocessed volume AND a clinical row; every clinical row for
        an anchors-only cohort).
    paths : Paths or None
        The run's folders.
    oracle : DataFrame or None
        The synthetic generator's true curves (synthetic cohorts only).
    profile : Profile or None
        The run's profile (``pipeline.build_cohort``): every function given the cohort reads
        it from here (``evaluation.cohort_profile``).
    excluded : DataFrame or None
        ``patient_id``, ``reason`` for every patient left out (``pipeline.build_cohort``).
    """

    clinical: pd.DataFrame
    outcomes: pd.DataFrame
    ids: list[str]
    paths: Paths | None = None
    oracle: pd.DataFrame | None = None
    profile: Profile | None = None
    excluded: pd.DataFrame | None = None

    @property
    def synthetic(self) -> bool:
        """Whether the oracle is known (synthetic cohort with its ``oracle.csv``): the protocols
        then append the oracle row."""
        return self.oracle is not None

    @property
    def label(self) -> str:
        """``"synthetic"`` or ``"real"``: printed in every caption (from the paths when known)."""
        synthetic = self.paths.synthetic if self.paths is not None else self.synthetic
        return "synthetic" if synthetic else "real"

    def subset(self, ids: Sequence[str]) -> Cohort:
        """The same cohort restricted to ``ids`` (outcomes recomputed for them)."""
        from crlm_lib.data.clinical import outcomes

        chosen = [str(i) for i in ids]
        return Cohort(
            clinical=self.clinical,
            outcomes=outcomes(self.clinical.loc[chosen]),
            ids=chosen,
            paths=self.paths,
            oracle=self.oracle,
            profile=self.profile,
            excluded=self.excluded,
        )
