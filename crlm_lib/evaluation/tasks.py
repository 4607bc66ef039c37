"""The fits of a protocol as tasks: one (model, repeat, fold, seed) per task, one run folder each.

Both protocols first list their fits (:func:`cv_fit_tasks`, :func:`paper_fit_tasks`), run the
unfinished torch fits with the chosen executor (:func:`run_fits`, ``crlm_lib.executors``:
this process, a Dask cluster or Slurm jobs), then read every prediction back from the run
folders. So a table is made of the same files whichever executor trained them, a finished fit
(``predictions.csv`` of the same run identity, and its image-permutation control when one is
due) is never run again, and a fit killed part-way resumes from its ``last.pt`` when its task
runs again. Anchors (Fong, Cox, the forest, the oracle) take milliseconds: they are fitted in
the protocol's own process as before, since a Slurm job or a Dask round trip would cost more
than the fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib.config import Profile
from crlm_lib.evaluation.cohort import Cohort
from crlm_lib.evaluation.runs import (
    PERMUTED_FILE,
    _cached_fit,
    permuted_predictions,
    run_identity,
)
from crlm_lib.evaluation.specs import ModelSpec, Split
from crlm_lib.executors import ExecutorSpec, run_tasks
from crlm_lib.model_registry import CT_OR_LESION_MODELS
from crlm_lib.runfolder import RunFolder


@dataclass(frozen=True)
class FitTask:
    """One fit of a protocol: a model on one split, with its run folder.

    Attributes
    ----------
    spec : the model (``ModelSpec``)
    repeat, fold : the CV repeat and fold (None in the papers' split)
    seed : the fit's seed (CV: protocol seed + repeat)
    train_ids, val_ids, test_ids : the split (val: early stopping; empty for anchors)
    run_dir : the run folder (None: fitted in memory, anchors only)
    epochs : epochs of a torch fit (None: the profile's)
    control_seed : seed of the image-permutation control predicted after the fit
        (``runs.permuted_predictions``), None when no control is due
    """

    spec: ModelSpec
    repeat: int | None
    fold: int | None
    seed: int
    train_ids: tuple[str, ...]
    val_ids: tuple[str, ...]
    test_ids: tuple[str, ...]
    run_dir: Path | None
    epochs: int | None = None
    control_seed: int | None = None

    @property
    def split(self) -> Split:
        """The task's patients as a :class:`~crlm_lib.evaluation.specs.Split`."""
        return Split.of(self.train_ids, self.val_ids, self.test_ids)

    @property
    def label(self) -> str:
        """``"cnn3d r0 f1"`` / ``"acfnet seed0"``: the task's name in progress bars and errors."""
        where = f"seed{self.seed}" if self.fold is None else f"r{self.repeat} f{self.fold}"
        return f"{self.spec.key} {where}"


def _inner_val_split(train_ids: Sequence[str], events: np.ndarray, seed: int, frac: float = 0.1):
    """Stratified ~10% of a CV training fold held out for early stopping (choice: CV folds have
    no validation set of their own; the test fold is never used for stopping)."""
    from sklearn.model_selection import train_test_split

    n_val = max(2, int(round(frac * len(train_ids))))
    strat = events if np.bincount(np.asarray(events, dtype=int)).min() >= 2 else None
    tr, va = train_test_split(
        list(train_ids), test_size=n_val, random_state=seed, stratify=strat, shuffle=True
    )
    return sorted(tr), sorted(va)


def cv_fit_tasks(
    specs: Sequence[ModelSpec],
    cohort: Cohort,
    profile: Profile,
    splits: list,
    seed: int,
    base: Path | None,
    protocol: str = "cv",
    controls: bool = False,
) -> list[FitTask]:
    """The fits of ``evaluation.run_cv_protocol``, model by model, repeat by repeat, fold by fold.

    Models fed the CT or lesion features (``model_registry.CT_OR_LESION_MODELS``) use ``eval.cv_repeats_3d`` repeats and ``cv_epochs_3d``
    epochs, the others ``cv_repeats``; a torch model's training fold gives a stratified 10% to
    early stopping (seed ``seed + 1000 * repeat + fold``); the fit's seed is ``seed + repeat``;
    image models with a run folder get the permutation control of seed ``seed + fold``.
    Run folder: ``<base>/<protocol>/<model key>/r<repeat>_f<fold>``.
    """
    ev = profile.eval
    tasks = []
    for spec in specs:
        image = spec.name in CT_OR_LESION_MODELS
        repeats = ev.cv_repeats_3d if image else ev.cv_repeats
        for rep, fold, tr, te in (s for s in splits if s[0] < repeats):
            run_dir = base / protocol / spec.key / f"r{rep}_f{fold}" if base else None
            tr = [str(i) for i in tr]
            val: list[str] = []
            if not spec.is_anchor:
                events = cohort.outcomes.loc[tr, "os_event"].to_numpy()
                tr, val = _inner_val_split(tr, events, seed + 1000 * rep + fold)
            control = seed + fold if controls and image and run_dir is not None else None
            epochs = ev.cv_epochs_3d if image else None
            tasks.append(
                FitTask(spec, rep, fold, seed + rep, tuple(tr), tuple(val), tuple(te), run_dir,
                        epochs, control)
            )  # fmt: skip
    return tasks


def paper_fit_tasks(
    specs: Sequence[ModelSpec],
    split: tuple[Sequence[str], Sequence[str], Sequence[str]],
    seed: int,
    base: Path | None,
    protocol: str = "paper_split",
    epochs: int | None = None,
) -> list[FitTask]:
    """The fits of ``evaluation.run_paper_protocol``: every model on one 8:1:1 split.

    Anchors have no early stopping: they fit on train + val. Run folder:
    ``<base>/<protocol>/seed<seed>/<model key>``.
    """
    train, val, test = (tuple(ids) for ids in split)
    return [
        FitTask(spec, None, None, seed, train + val if spec.is_anchor else train, val, test,
                base / protocol / f"seed{seed}" / spec.key if base is not None else None, epochs)
        for spec in specs
    ]  # fmt: skip


def fit_task(
    task: FitTask, cohort: Cohort, profile: Profile
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Run one task, or read it back from its run folder when finished: its test Predictions
    frame and, when due, its image-permutation control (``runs.permuted_predictions``, the
    frames of every permutation stacked with the column ``permutation``; else None)."""
    pred = _cached_fit(task.spec, cohort, profile, task.split, task.run_dir, task.epochs, task.seed)
    if task.control_seed is None:
        return pred, None
    return pred, permuted_predictions(task.run_dir, cohort, profile, seed=task.control_seed)


def task_finished(task: FitTask, cohort: Cohort, profile: Profile) -> bool:
    """Whether the task's run folder holds its finished fit: ``predictions.csv``, a ``run.json``
    of the same run identity whose training ended (training reference stored) and, when due,
    the image-permutation control."""
    if task.run_dir is None:
        return False
    folder = RunFolder(task.run_dir)
    if not folder.has_predictions():
        return False
    if task.control_seed is not None and not folder.has_predictions(PERMUTED_FILE):
        return False
    if not folder.has_record():
        return False
    rec = folder.read_record()
    if task.spec.is_anchor:
        return True
    identity = run_identity(task.spec, profile, cohort, task.split, task.seed)
    return "training_reference" in rec and rec.get("identity") == identity


def run_fits(
    tasks: Sequence[FitTask],
    cohort: Cohort,
    profile: Profile,
    executor: str | ExecutorSpec | None = None,
    log_dir: Path | None = None,
) -> list[FitTask]:
    """Run the unfinished torch fits of ``tasks`` with ``executor`` (None: the profile's,
    ``Profile.executor``); return those it ran.

    Anchors and fits without a run folder are left to the caller (fitted in its process).
    Raises ``executors.ExecutorError`` naming the failed fits, after the others finished.
    """
    pending = [
        t
        for t in tasks
        if t.run_dir is not None and not t.spec.is_anchor and not task_finished(t, cohort, profile)
    ]
    run = partial(_fit_in_worker, cohort=cohort, profile=profile)
    executor = profile.executor if executor is None else executor
    run_tasks(run, pending, executor, labels=[t.label for t in pending], log_dir=log_dir)
    return pending


def _fit_in_worker(task: FitTask, cohort: Cohort, profile: Profile) -> int:
    """:func:`fit_task` in an executor's worker; returns the number of test patients (the
    predictions themselves are read back from the run folder by the protocol)."""
    return len(fit_task(task, cohort, profile)[0])
