"""Split-conformal band for a new patient's true survival probabilities, calibrated on the
cross-validation's out-of-fold predictions where the truth is known.

What it covers
--------------
For year ``t`` and head ``h`` (overall survival, ``"os"``; recurrence-free, ``"dfs"``) the
band is ``clip(p_hat(t) +/- q_t, 0, 1)`` around the ensemble's mean prediction, where ``q_t``
is the split-conformal quantile (Vovk et al. 2005; Lei et al., JASA 2018, Eq. (1)) of the
calibration scores ``|p_hat_oof_i(t) - p_i(t)|``: ``q_t`` is the ``ceil((n + 1) * level)``-th
smallest of the ``n`` scores (``+inf``, a band of [0, 1], when ``n`` is too small). The scores
come from the cohort the ensemble was cross-validated on: each patient's out-of-fold prediction
(the fold model that did not train on it) against its true probability ``p_i(t)`` (the
synthetic generator's ``oracle.csv``). For a new patient drawn like the cohort's (exchangeable)
the band then holds the true ``t``-year probability with probability at least ``level``,
marginally over patients, for each year separately.

Choice: the calibration scores are single fold models' errors, the band is centred on the mean
of all fold models. For any one patient the ensemble's absolute error is at most the average
of its members' absolute errors (triangle inequality), and each member's error on a new patient
is distributed like an out-of-fold error (a model trained on the same share of the cohort), so
the band is, if anything, conservative.

Why only where the truth is known
---------------------------------
A real cohort records each patient's outcome, not the probability. The outcome at ``t``,
``Y = 1{T > t}``, scatters around the probability with variance ``p (1 - p)`` whatever the
model (0.25 at ``p = 0.5``), far above a useful model's error, so a conformal band on
``|Y - p_hat|`` (:func:`outcome_halfwidth`, IPCW for censoring) covers the *outcome* and is
about as wide as [0, 1]; the model's error ``p - p_hat`` is not identifiable from one outcome
per patient. ``benchmarks/prediction_honesty.py`` prints that half-width beside the
truth-calibrated one. A run without a calibration (a real cohort, a single run) keeps the
ensemble spread of :mod:`crlm_lib.ensemble`, stated as such.

Usage::

    cal = write_calibration(runs_dir / "cv" / "acfnet", cohort.oracle)   # once, after the CV
    cal = load_calibration(run_dirs)          # crlm predict: None unless it fits these runs
    low, high = cal.band(mean_curve, "os")
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.config import N_YEARS
from crlm_lib.runfolder import RunFolder
from crlm_lib.types import PATIENT_ID, Predictions

__all__ = [
    "CALIBRATION_FILE",
    "LEVEL",
    "ConformalBand",
    "calibrate",
    "conformal_quantile",
    "load_calibration",
    "outcome_halfwidth",
    "pooled_out_of_fold",
    "write_calibration",
]

#: Nominal coverage of the band.
LEVEL: float = 0.9
#: The calibration beside a cross-validation's fold runs (``runs/<tag>/cv/<model>/``).
CALIBRATION_FILE = "conformal.json"
#: Oracle columns of the true curves, per head: ``<prefix><year>``.
ORACLE_PREFIX = {"os": "os_surv_y", "dfs": "dfs_surv_y"}


def conformal_quantile(scores: np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Split-conformal quantile of ``scores`` ``[n, K]`` per column: the
    ``ceil((n + 1) * level)``-th smallest value, ``+inf`` when that rank exceeds ``n``
    (finite-sample validity, Lei et al. 2018). NaN scores are dropped per column.

    >>> conformal_quantile(np.arange(1.0, 20.0)[:, None], 0.9).tolist()
    [18.0]
    """
    scores = np.asarray(scores, dtype=float)
    out = np.full(scores.shape[1], np.inf)
    for k in range(scores.shape[1]):
        col = np.sort(scores[np.isfinite(scores[:, k]), k])
        rank = math.ceil((len(col) + 1) * level)
        if 1 <= rank <= len(col):
            out[k] = col[rank - 1]
    return out


@dataclass(frozen=True)
class ConformalBand:
    """A calibrated band: ``half_width[head]`` ``[12]`` (years 1..12) at ``level``, from ``n``
    calibration patients; ``runs`` the identities of the fold runs it was calibrated for;
    ``source`` says where the scores come from."""

    level: float
    half_width: dict[str, tuple[float, ...]]
    n: int
    runs: tuple[str, ...]
    source: str

    def band(self, point: np.ndarray, head: str) -> tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` ``[..., 12]`` around ``point`` (clipped to [0, 1])."""
        q = np.asarray(self.half_width[head], dtype=float)
        point = np.asarray(point, dtype=float)
        return np.clip(point - q, 0.0, 1.0), np.clip(point + q, 0.0, 1.0)

    def method(self, n_models: int) -> str:
        """The band's meaning in one sentence (report, ``predictions.csv``, console)."""
        return (
            f"split-conformal {self.level:.0%} band for the true survival probability: the "
            f"mean of the {n_models} models +/- the {self.level:.0%} conformal quantile of "
            f"|out-of-fold prediction - true probability| over {self.n} patients of the "
            f"cross-validation ({self.source}); it holds the true probability of a new patient "
            f"like them with probability at least {self.level:.0%}, each year separately"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: half-widths rounded up to 6 decimals (the band never narrows), an
        infinite one written as ``null`` (strict JSON)."""
        width = {h: [None if not np.isfinite(v) else math.ceil(v * 1e6) / 1e6 for v in q]
                 for h, q in self.half_width.items()}  # fmt: skip
        return {"level": self.level, "half_width": width, "n": self.n,
                "runs": list(self.runs), "source": self.source}  # fmt: skip

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConformalBand:
        width = {h: tuple(np.inf if v is None else float(v) for v in q)
                 for h, q in d["half_width"].items()}  # fmt: skip
        return cls(float(d["level"]), width, int(d["n"]), tuple(d["runs"]), str(d["source"]))


def _truth(oracle: pd.DataFrame, ids: Sequence[str], head: str) -> np.ndarray:
    """True curves ``[n, 12]`` of ``ids`` from the oracle table (``Patient-ID`` column or
    index)."""
    table = oracle.set_index("Patient-ID") if "Patient-ID" in oracle.columns else oracle
    table.index = table.index.astype(str)
    cols = [f"{ORACLE_PREFIX[head]}{k}" for k in range(1, N_YEARS + 1)]
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise ValueError(f"oracle table lacks the true curves ({', '.join(missing[:3])}, ...)")
    absent = [i for i in ids if i not in table.index]
    if absent:
        raise ValueError(f"oracle table has no row for patient(s) {', '.join(absent[:5])}")
    return table.loc[list(ids), cols].to_numpy(dtype=float)


def calibrate(
    oof: pd.DataFrame,
    oracle: pd.DataFrame,
    level: float = LEVEL,
    runs: Sequence[str] = (),
    source: str = "synthetic generator's true curves",
) -> ConformalBand:
    """The :class:`ConformalBand` of out-of-fold predictions ``oof`` (a Predictions frame,
    one row per patient) against the true curves of ``oracle`` (``os_surv_y1..12``,
    ``dfs_surv_y1..12``)."""
    pred = Predictions.from_frame(oof)
    ids = [str(i) for i in oof[PATIENT_ID]]
    width = {}
    for head in ORACLE_PREFIX:
        scores = np.abs(pred.curve(head)[:, :N_YEARS] - _truth(oracle, ids, head))
        width[head] = tuple(float(v) for v in conformal_quantile(scores, level))
    return ConformalBand(level, width, len(ids), tuple(runs), source)


def pooled_out_of_fold(run_dirs: Sequence[Path]) -> pd.DataFrame | None:
    """The fold runs' ``predictions.csv`` pooled, when they are disjoint test folds with
    outcomes (a cross-validation), else ``None``."""
    if len(run_dirs) < 2:
        return None
    frames = []
    for run in run_dirs:
        path = Path(run) / "predictions.csv"
        if not path.is_file():
            return None
        frames.append(pd.read_csv(path, dtype={PATIENT_ID: str}))
    pooled = pd.concat(frames, ignore_index=True)
    if pooled[PATIENT_ID].duplicated().any():
        return None
    if not {"os_years", "os_event", "dfs_years", "dfs_event"} <= set(pooled.columns):
        return None
    return pooled


def _fold_runs(cv_dir: Path) -> list[Path]:
    return sorted(p for p in cv_dir.iterdir() if RunFolder(p).has_record())


def _identity(run_dir: Path, identity: dict | None = None) -> str:
    """A run's identity as one string: ``identity`` (``run.json``'s cohort, split and config
    hashes), read from ``run_dir/run.json`` when not given."""
    if identity is None:
        identity = RunFolder(run_dir).read_record().get("identity") or {}
    return "/".join(str(identity.get(k, "")) for k in ("cohort", "split", "config"))


def write_calibration(
    cv_dir: str | Path, oracle: pd.DataFrame | None, level: float = LEVEL
) -> ConformalBand | None:
    """Calibrate the fold runs of ``cv_dir`` (the first repeat's ``r0_f*`` folds, one
    out-of-fold prediction per patient) against ``oracle`` and write
    ``cv_dir/conformal.json``; ``None`` (nothing written) without an oracle with true curves
    or without the folds' ``predictions.csv``."""
    cv_dir = Path(cv_dir)
    if oracle is None or f"{ORACLE_PREFIX['os']}1" not in oracle.columns:
        return None
    folds = [p for p in _fold_runs(cv_dir) if p.name.startswith("r0_")]
    pooled = pooled_out_of_fold(folds)
    if pooled is None:
        return None
    cal = calibrate(pooled, oracle, level, [_identity(p) for p in _fold_runs(cv_dir)])
    atomic.write_json(cv_dir / CALIBRATION_FILE, cal.to_dict(), indent=2)
    return cal


def load_calibration(
    run_dirs: Sequence[str | Path], identities: Sequence[dict] | None = None
) -> ConformalBand | None:
    """The calibration of ``run_dirs`` when they are fold runs of one cross-validation folder
    holding ``conformal.json`` and each run is one it was calibrated for (same identity:
    ``identities``, the runs' ``run.json`` ``identity`` entries, read from the folders when not
    given); else ``None`` (a single run, runs of several folders, a retrained fold)."""
    dirs = [Path(r) for r in run_dirs]
    idents = list(identities) if identities is not None else [None] * len(dirs)
    parents = {d.parent for d in dirs}
    if len(dirs) < 2 or len(parents) != 1:
        return None
    path = parents.pop() / CALIBRATION_FILE
    if not path.is_file():
        return None
    cal = ConformalBand.from_dict(json.loads(path.read_text()))
    if not all(_identity(d, i) in cal.runs for d, i in zip(dirs, idents, strict=True)):
        return None
    return cal


def outcome_halfwidth(
    pred_curves: np.ndarray,
    years: np.ndarray,
    events: np.ndarray,
    horizons: Sequence[int],
    level: float = LEVEL,
) -> dict[int, float]:
    """Half-width of a conformal band for the observed outcome ``1{T > t}`` around the
    predicted ``S(t)``: the weighted split-conformal quantile of ``|1{T > t} - S_hat(t)|``
    over the patients whose status at ``t`` is known (event by ``t``, or followed beyond it),
    each weighted by ``1 / G(min(T, t))`` (IPCW, ``G`` the Kaplan–Meier estimate of
    censoring; Tibshirani et al. 2019's weighted quantile, the new patient's weight
    ``1 / G(t)`` added at ``+inf``).

    Parameters
    ----------
    pred_curves : np.ndarray
        ``[n, 12]`` out-of-fold predicted survival at the ends of years 1..12.
    years, events : np.ndarray
        ``[n]`` follow-up in years and event indicator (1 = event).
    horizons : sequence of int
        Years ``t`` to compute.

    Returns
    -------
    dict
        ``{t: half-width}`` (``+inf`` when the weights never reach ``level``).
    """
    from lifelines import KaplanMeierFitter

    years, events = np.asarray(years, dtype=float), np.asarray(events, dtype=int)
    censoring = KaplanMeierFitter().fit(years, 1 - events)

    def g(t: np.ndarray) -> np.ndarray:
        return np.clip(censoring.survival_function_at_times(t).to_numpy(), 1e-3, 1.0)

    out = {}
    for t in horizons:
        known = (years > t) | (events == 1)
        alive = (years[known] > t).astype(float)
        scores = np.abs(alive - np.asarray(pred_curves, dtype=float)[known, t - 1])
        w = 1.0 / g(np.minimum(years[known], float(t)))
        order = np.argsort(scores)
        total = w.sum() + 1.0 / g(np.array([float(t)]))[0]
        cum = np.cumsum(w[order]) / total
        reached = np.nonzero(cum >= level)[0]
        out[int(t)] = float(scores[order][reached[0]]) if len(reached) else float("inf")
    return out
