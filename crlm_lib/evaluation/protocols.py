"""The two evaluation protocols, with the oracle as reference.

Two protocols, one scorer:

- :func:`run_paper_protocol` — the papers' protocol: ONE 8:1:1 split (157/20/20 for 197
  patients, ``data.dataset.paper_split``) with a fixed seed; train on train, early-stop on val,
  score the 20 test patients with TAA / MSE / MAE exactly as the papers define them
  (``metrics.paper_metrics``: all test patients, censored times taken as event times), the
  censoring-aware metrics alongside, and a 95% percentile bootstrap CI over the 20 test patients
  to show how wide it is.
- :func:`run_cv_protocol` — repeated stratified k-fold CV on the whole cohort
  (``profile.eval.cv_folds`` x ``cv_repeats``; image models use ``cv_repeats_3d`` repeats and
  ``cv_epochs_3d`` epochs, reported in the ``repeats``/``epochs`` columns); out-of-fold (OOF)
  predictions per repeat; Harrell's and Uno's C, IBS, time-dependent AUC at 1/3/5 years, and
  TAA / MAE restricted to patients whose event was observed; refit-aware intervals (the
  corrected repeated-CV t over the test folds, ``evaluation.intervals``; the bootstrap
  conditional on the fitted models as an option) and paired differences against the Fong
  score and Cox.

Every row is a *Predictions* frame (``patient_id``, ``surv_p1..12``, ``rec_p1..12``, outcomes)
scored by the same code, so the clinical anchors (``models.clinical``) and the oracle (the
synthetic generator's true curves; always the LAST row) are comparable with the deep models.
The oracle is the ceiling of discrimination (C-index, AUC) in expectation, NOT of TAA / MAE /
MSE: the argmax of the true year-of-death pmf is its mode, not the time that minimises the
absolute or squared error, so a model can beat the oracle on those. Published numbers
(``evaluation.tables.PUBLISHED``) are kept as data and never mixed into our rows."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crlm_lib import metrics as M
from crlm_lib.config import Paths, Profile, with_options
from crlm_lib.conformal import write_calibration
from crlm_lib.evaluation._common import EvaluationError, _atomic_write_csv
from crlm_lib.evaluation.bootstrap import (
    BootstrapOptions,
    bootstrap_each,
    bootstrap_scores,
    harrell_metrics,
    head_metrics,
    paired_difference,
)
from crlm_lib.evaluation.cohort import Cohort, as_cohort, cohort_profile
from crlm_lib.evaluation.intervals import (
    CONDITIONAL_BOOTSTRAP,
    CORRECTED_T,
    INTERVAL_METHODS,
    cv_intervals,
)
from crlm_lib.evaluation.runs import permuted_predictions, step0_predictions
from crlm_lib.evaluation.specs import (
    ANCHOR_NAMES,
    IMAGE_ORACLE,
    PERMUTED_SUFFIX,
    STEP0_SUFFIX,
    VOLUMETRIC_ANCHORS,
    ModelSpec,
    as_specs,
    model_label,
)
from crlm_lib.evaluation.tables import wide_table
from crlm_lib.evaluation.tasks import (
    FitTask,
    cv_fit_tasks,
    fit_task,
    paper_fit_tasks,
    run_fits,
)
from crlm_lib.executors import ExecutorSpec
from crlm_lib.model_registry import CT_OR_LESION_MODELS
from crlm_lib.runfolder import RunFolder


@dataclass(frozen=True)
class ProtocolOptions:
    """Settings of :func:`run_paper_protocol` (and, with :class:`CVOptions`, of
    :func:`run_cv_protocol`); both functions also take every field as a keyword.

    Attributes
    ----------
    seed : int
        Seed of the split(s), of the fits and of the bootstrap draws.
    anchors : sequence of str
        Clinical anchors appended after the models (``evaluation.specs.ANCHOR_NAMES``; the
        SEG-volumetric ones only when the cohort has a preprocessing cache). Default Fong and
        Cox.
    oracle : bool
        Append the oracle as the LAST row when the cohort is synthetic (with the true-image
        Cox model ``IMAGE_ORACLE`` before it when the oracle table has the image quantities).
    n_boot : int, optional
        Bootstrap replicates of the 95% intervals (default ``profile.eval.bootstrap``).
    runs_dir : path, optional
        Folder of the run folders (default the cohort's ``paths.runs_dir``; ``None`` without
        paths: nothing cached).
    protocol : str
        Subfolder of ``runs_dir`` and the ``protocol`` column of the tables.
    executor : str or ExecutorSpec, optional
        Where the torch fits run (``crlm_lib.executors``: ``"local"``, ``"dask"``,
        ``"slurm:partition=gpu"`` ...; None, the default: the profile's ``Profile.executor``):
        each fit is one task with its own run folder; finished fits are read back, not rerun
        (``evaluation.tasks``).
    """

    seed: int = 0
    anchors: Sequence[str] = ("fong", "cox")
    oracle: bool = True
    n_boot: int | None = None
    runs_dir: str | Path | None = None
    protocol: str = "paper_split"
    executor: str | ExecutorSpec | None = None


@dataclass(frozen=True)
class CVOptions(ProtocolOptions):
    """Settings of :func:`run_cv_protocol`: those of :class:`ProtocolOptions` (with every
    anchor of ``ANCHOR_NAMES`` and the ``cv`` folder by default) and the CV's own.

    Attributes
    ----------
    baselines : sequence of str
        Models every other model is compared with (paired differences; default Fong and Cox).
    ci_heads : sequence of str
        Heads scored (``"os"``, ``"dfs"``).
    censoring_from : {"training_fold", "cohort"}
        Where the IPCW censoring distribution of a test fold comes from: its own training fold
        (default; metrics per fold, averaged) or the whole cohort (the pooled OOF predictions;
        about 4x cheaper in the bootstrap, but the test patients then inform their own
        weights).
    controls : bool
        Score every image model's image-permutation control and untrained start (default).
    interval : {"corrected_t", "conditional_bootstrap"}
        Method of the intervals (``evaluation.intervals``; see :func:`run_cv_protocol`).
    """

    anchors: Sequence[str] = ANCHOR_NAMES
    protocol: str = "cv"
    baselines: Sequence[str] = ("fong", "cox")
    ci_heads: Sequence[str] = ("os", "dfs")
    censoring_from: str = "training_fold"
    controls: bool = True
    interval: str = CORRECTED_T


def paper_split_ids(ids: Sequence[str], events: np.ndarray, seed: int):
    """``data.dataset.paper_split``: (train, val, test) ID lists, 8:1:1 (157/20/20 for 197)."""
    from crlm_lib.data.dataset import paper_split

    return paper_split(list(ids), np.asarray(events), seed)


def cv_split_ids(ids: Sequence[str], events: np.ndarray, folds: int, repeats: int, seed: int):
    """``data.dataset.repeated_stratified_kfold`` as a list of (repeat, fold, train, test)."""
    from crlm_lib.data.dataset import repeated_stratified_kfold

    out = []
    for i, item in enumerate(
        repeated_stratified_kfold(list(ids), np.asarray(events), folds, repeats, seed)
    ):
        if len(item) == 4:
            out.append(tuple(item))
        else:  # (train, test) form of docs/interfaces.md
            out.append((i // folds, i % folds, item[0], item[1]))
    return out


def _with_anchors(specs: list[ModelSpec], anchors: Sequence[str], oracle: bool, cohort: Cohort):
    names = {s.key for s in specs}
    out = [s for s in specs if s.name != "oracle"]
    cached = cohort.paths is not None and cohort.paths.processed_dir.is_dir()
    out += [
        ModelSpec(a) for a in anchors if a not in names and (cached or a not in VOLUMETRIC_ANCHORS)
    ]
    if oracle and cohort.synthetic:
        if IMAGE_ORACLE not in names and _has_image_truth(cohort):
            out.append(ModelSpec(IMAGE_ORACLE))
        out.append(ModelSpec("oracle"))
    return out


def _has_image_truth(cohort: Cohort) -> bool:
    """Whether the synthetic cohort's oracle table carries the true image quantities."""
    from crlm_lib.data.synthetic import IMAGE_COVARIATES

    return cohort.oracle is not None and set(IMAGE_COVARIATES) <= set(cohort.oracle.columns)


@dataclass
class _Setup:
    """What both protocols set up the same way: profile, cohort, model list (anchors and oracle
    appended), the cohort's OS events, runs folder and bootstrap size."""

    prof: Profile
    cohort: Cohort
    specs: list[ModelSpec]
    events: np.ndarray
    base: Path | None
    n_boot: int


def _setup(
    model_names: Iterable[str | ModelSpec],
    source: Cohort | Paths,
    profile: str | Profile | None,
    options: ProtocolOptions,
) -> _Setup:
    cohort = as_cohort(source)
    prof = cohort_profile(cohort, profile)
    specs = _with_anchors(as_specs(model_names), options.anchors, options.oracle, cohort)
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    runs_dir = options.runs_dir
    base = Path(runs_dir) if runs_dir else (cohort.paths.runs_dir if cohort.paths else None)
    n_boot = prof.eval.bootstrap if options.n_boot is None else options.n_boot
    return _Setup(prof, cohort, specs, events, base, n_boot)


def run_paper_protocol(
    model_names: Iterable[str | ModelSpec],
    source: Cohort | Paths,
    profile: str | Profile | None = None,
    options: ProtocolOptions | None = None,
    *,
    epochs: int | None = None,
    **changes: Any,
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The papers' protocol for a list of models: one table in one call.

    One 8:1:1 split with ``seed`` (``data.dataset.paper_split``, stratified on the OS event);
    every model trains on train, early-stops on val and is scored on test. Each model's run is
    cached under ``<runs_dir>/<protocol>/<seed>/<label>/`` (checkpoints, ``history.csv``,
    ``predictions.csv``, ``metrics.json``): re-running reuses finished runs.

    Parameters
    ----------
    model_names : iterable of str or ModelSpec
        Registry names; ``"acfnet:censored"`` selects the censoring-aware objective, so
        ``["acfnet", "acfnet:censored"]`` puts both objectives side by side. Other objectives,
        ``build_model`` options or loss weights: pass a :class:`ModelSpec` (or build the list
        with :func:`as_specs`).
    source : Cohort (``pipeline.load_study``) or config.Paths
    profile : str or Profile, optional
        Only for a cohort that carries no profile (``evaluation.cohort_profile``); by default
        the cohort's.
    options : ProtocolOptions, optional
        Seed, anchors (default Fong and Cox), oracle, bootstrap replicates of the 95% CI over
        the test patients, runs folder, protocol name and executor (each model is one task);
        defaults when omitted.
    epochs : int, optional
        Epochs of every torch model (default the profile's).
    **changes
        Fields of :class:`ProtocolOptions` as keywords (``seed=1, anchors=()``), applied over
        ``options``; a keyword that is no field raises ``TypeError`` naming the valid ones.

    Returns
    -------
    results : DataFrame
        Tidy: ``model, label, protocol, metric, estimate, low, high, n_test, synthetic``.
    predictions_by_model : dict[str, DataFrame]
        Test-set Predictions frame of each model (keyed by ``ModelSpec.key``).
    """
    opts = with_options(ProtocolOptions, options, changes)
    seed, protocol = opts.seed, opts.protocol
    setup = _setup(model_names, source, profile, opts)
    prof, cohort, specs, base = setup.prof, setup.cohort, setup.specs, setup.base
    n_boot = setup.n_boot
    train_ids, val_ids, test_ids = paper_split_ids(cohort.ids, setup.events, seed)
    # censoring distributions fitted once for all replicates (metrics.TrainingOutcomes)
    train_out = M.TrainingOutcomes(cohort.outcomes.loc[list(train_ids)])
    horizons = prof.eval.horizons_years
    tables, preds = [], {}
    tasks = paper_fit_tasks(specs, (train_ids, val_ids, test_ids), seed, base, protocol, epochs)
    run_fits(tasks, cohort, prof, opts.executor, _log_dir(base, protocol))
    for task in tasks:  # read back from the run folder when it has one
        preds[task.spec.key] = fit_task(task, cohort, prof)[0]
    boot = BootstrapOptions(
        n_boot=n_boot,
        seed=seed,
        metric_fn=partial(head_metrics, horizons=horizons),
        predictions_in=True,
    )
    scored = bootstrap_each(preds, train_out, boot, n_jobs=prof.n_jobs, desc="paper protocol")
    for task in tasks:
        spec, run_dir = task.spec, task.run_dir
        tidy = scored[spec.key]
        tidy.insert(0, "model", spec.key)
        tidy.insert(1, "label", model_label(spec.key))
        tidy["protocol"] = protocol
        tidy["n_test"] = len(test_ids)
        tidy["synthetic"] = cohort.synthetic
        tables.append(tidy)
        if run_dir is not None:
            metrics = dict(zip(tidy["metric"], tidy["estimate"], strict=True))
            RunFolder(run_dir).write_metrics(metrics)
    return pd.concat(tables, ignore_index=True), preds


def split_controls(
    predictions: dict[str, pd.DataFrame],
    source: Cohort | Paths,
    profile: str | Profile | None = None,
    *,
    seed: int = 0,
    n_boot: int | None = None,
    runs_dir: str | Path | None = None,
    protocol: str = "paper_split",
) -> pd.DataFrame:
    """The controls of every image model of a :func:`run_paper_protocol` call (same arguments;
    ``predictions`` is its second return value): Harrell's C of the model minus that of its own
    predictions with the images permuted among the test patients (baseline ``ct-permuted``,
    :func:`~crlm_lib.evaluation.runs.permuted_predictions`, 3 permutations) and, for an
    anchored model, minus its untrained start (baseline ``step-0``), paired bootstrap over the
    test patients. Reads the cached runs; a model without a run folder is skipped.

    Returns
    -------
    DataFrame ``model, baseline, metric, estimate, low, high, n_boot`` (``control_table``
    formats it).
    """
    opts = ProtocolOptions(seed=seed, anchors=(), oracle=False, n_boot=n_boot, runs_dir=runs_dir)
    setup = _setup([], source, profile, opts)
    cohort, prof, base = setup.cohort, setup.prof, setup.base
    if base is None:
        return pd.DataFrame()
    train_ids, _, _ = paper_split_ids(cohort.ids, setup.events, seed)
    train_out = M.TrainingOutcomes(cohort.outcomes.loc[list(train_ids)])
    boot = {
        "n_boot": setup.n_boot,
        "seed": seed,
        "metric_fn": lambda p, t: harrell_metrics(p, t),
        "predictions_in": True,
    }
    diffs = []
    for key, pred in predictions.items():
        run_dir = base / protocol / f"seed{seed}" / key
        spec_name = key.split("-")[0]
        if spec_name not in CT_OR_LESION_MODELS or not (run_dir / "run.json").is_file():
            continue
        perm = permuted_predictions(run_dir, cohort, prof, seed=seed)
        controls = {
            "ct-permuted": [f.drop(columns="permutation") for _, f in perm.groupby("permutation")],
            "step-0": step0_predictions(run_dir),
        }
        for baseline, frames in controls.items():
            if frames is None:
                continue
            frames = [frames] if isinstance(frames, pd.DataFrame) else frames
            d = paired_difference([pred] * len(frames), frames, train_out, **boot)
            d.insert(0, "model", key)
            d.insert(1, "baseline", baseline)
            diffs.append(d)
    return pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame()


# --------------------------------------------------------------------------------------------
# repeated stratified k-fold CV
# --------------------------------------------------------------------------------------------


@dataclass
class CVResult:
    """Output of :func:`run_cv_protocol`.

    Attributes
    ----------
    tidy : DataFrame ``model, label, metric, estimate, low, high, interval, repeats, folds,
        epochs`` (``interval``: the method of ``low``/``high``; ``se``, ``splits`` for the
        corrected t, ``n_boot`` for the conditional bootstrap)
    wide : DataFrame (pretty; oracle last)
    differences : DataFrame ``model, baseline, metric, estimate, low, high, interval``
        (A - baseline);
        baseline ``ct-permuted`` is the image-permutation control of the same model
    predictions : dict[model key, list of OOF Predictions frames, one per repeat]; the
        control of an image model is under ``<key>@ct-permuted`` (one frame per repeat and
        permutation)
    """

    tidy: pd.DataFrame
    wide: pd.DataFrame
    differences: pd.DataFrame
    predictions: dict[str, list[pd.DataFrame]]


def run_cv_protocol(
    model_names: Iterable[str | ModelSpec],
    source: Cohort | Paths,
    profile: str | Profile | None = None,
    options: CVOptions | None = None,
    **changes: Any,
) -> CVResult:
    """Repeated stratified k-fold CV of every model, anchors and oracle, with CIs.

    The settings are the fields of :class:`CVOptions` (``options``, defaults when omitted),
    each also accepted as a keyword (``run_cv_protocol(models, study, seed=1,
    executor="dask")``; a keyword that is no field raises ``TypeError`` naming the valid
    ones). ``profile`` only for a cohort that carries no profile.

    Folds/repeats: ``profile.eval.cv_folds`` x ``cv_repeats`` for clinical models; image
    models use ``cv_repeats_3d`` repeats and ``cv_epochs_3d`` epochs (``repeats`` and
    ``epochs`` columns). Every repeat of a model yields one OOF prediction per patient. Each
    (model, repeat, fold) is cached in ``<runs_dir>/<protocol>/<label>/r<R>_f<F>/`` and reused.
    CV training folds hold out a stratified 10% for early stopping.

    Paired differences against ``baselines`` use the repeats both models have (the first
    ``min(R_a, R_b)``), fold by fold: every model of a protocol run shares the same splits.

    ``interval``: ``"corrected_t"`` (default, ``evaluation.intervals.cv_intervals``) gives
    every metric and paired difference as the mean of its per-test-fold values with the
    corrected repeated-CV t interval (Nadeau & Bengio 2003), an interval for the expected
    performance of the modelling procedure that allows for refitting; with R repeats of K
    folds it rests on R x K fold values with R x K - 1 degrees of freedom.
    ``"conditional_bootstrap"``: the earlier percentile bootstrap over patients of the pooled
    OOF predictions (``n_boot`` replicates), conditional on the fitted models and narrower
    than the procedure's interval. The tidy tables name the method in their ``interval``
    column.

    ``censoring_from``: ``"training_fold"`` (default) estimates the IPCW censoring
    distribution of each test fold on its own training fold (metrics per fold, averaged);
    ``"cohort"`` uses the whole cohort for the pooled OOF predictions (the earlier choice:
    about 4x cheaper in the bootstrap, since scikit-survival is called once per repeat instead
    of once per fold, but the test patients then inform their own weights).

    ``controls`` (default): every model that reads the images (CT, masks or the lesion set)
    also predicts its test folds with the images permuted among the test patients
    (``evaluation.runs.permuted_predictions``, 3 permutations per fold); the permuted
    predictions get their own row ``<key>@ct-permuted`` and the difference model minus its
    permuted self is in ``differences`` with baseline ``ct-permuted``: an interval above 0
    shows that the model uses the image; one that holds 0 that it ranks patients as well
    without it.

    ``executor`` (``crlm_lib.executors``): where the torch fits run, each (model, repeat, fold,
    seed) one task with its own run folder (``evaluation.tasks``): ``"local"`` (default: one
    after another in this process), ``"dask"`` (worker processes, one GPU each where there
    are GPUs), ``"dask:address=..."``, ``"slurm:partition=..."``. Finished fits are read back
    from their run folders, never rerun; the table is computed from the same files whichever
    executor trained them.

    Returns
    -------
    CVResult
    """
    opts = with_options(CVOptions, options, changes)
    seed, protocol, ci_heads = opts.seed, opts.protocol, opts.ci_heads
    if opts.interval not in INTERVAL_METHODS:
        raise EvaluationError(f"interval must be one of {INTERVAL_METHODS}, not {opts.interval!r}")
    setup = _setup(model_names, source, profile, opts)
    cohort, ev, base = setup.cohort, setup.prof.eval, setup.base
    max_rep = max(ev.cv_repeats, ev.cv_repeats_3d)
    splits = cv_split_ids(cohort.ids, setup.events, ev.cv_folds, max_rep, seed)
    censoring = _cv_censoring(cohort, splits, opts.censoring_from)
    horizons = ev.horizons_years

    def metric_fn(p, t):
        return head_metrics(p, t, heads=ci_heads, horizons=horizons)

    tasks = cv_fit_tasks(
        setup.specs, cohort, setup.prof, splits, seed, base, protocol, opts.controls
    )
    run_fits(tasks, cohort, setup.prof, opts.executor, _log_dir(base, protocol))
    preds, info = _cv_predictions(setup, tasks)
    if base is not None:
        _write_calibrations(setup, base / protocol)
    memo: dict = {}  # one metric_fn, train_outcomes and seed: replicate values are shared
    boot = {"n_boot": setup.n_boot, "seed": seed, "metric_fn": metric_fn, "cache": memo,
            "predictions_in": True}  # fmt: skip
    boot["interval"], boot["n_patients"] = opts.interval, len(cohort.ids)
    # the controls' rows and differences report Harrell's C only (cheap: no IPCW per
    # permutation), with their own memo since the metric function differs
    boot_c = {**boot, "metric_fn": lambda p, t: harrell_metrics(p, t, heads=ci_heads), "cache": {}}
    tidy_all = _cv_scores(setup, preds, info, censoring, boot, boot_c)
    differences = _cv_differences(setup.specs, preds, opts.baselines, censoring, boot)
    if opts.controls:
        differences = pd.concat(
            [differences, _control_differences(setup.specs, preds, censoring, boot_c)],
            ignore_index=True,
        )
    if base is not None:
        out_dir = base / protocol
        _atomic_write_csv(tidy_all, out_dir / "results_tidy.csv")
        if len(differences):
            _atomic_write_csv(differences, out_dir / "differences.csv")
    return CVResult(tidy_all, wide_table(tidy_all), differences, preds)


def _write_calibrations(setup: _Setup, cv_dir: Path) -> None:
    """``conformal.json`` beside each torch model's fold runs when the cohort's true curves are
    known (``conformal.write_calibration``): the calibrated band ``crlm predict`` shows for the
    fold models as an ensemble."""
    for spec in setup.specs:
        if not spec.is_anchor and (cv_dir / spec.key).is_dir():
            write_calibration(cv_dir / spec.key, setup.cohort.oracle)


def _cv_censoring(cohort: Cohort, splits: list, censoring_from: str) -> M.TrainingOutcomes:
    """IPCW censoring distribution of each test fold: its own training fold's outcomes
    (``"training_fold"``) or the whole cohort's (``"cohort"``); fitted once per fold and head
    for every replicate (``metrics.TrainingOutcomes``)."""
    if censoring_from not in ("training_fold", "cohort"):
        raise EvaluationError(
            f"censoring_from must be 'training_fold' or 'cohort', not {censoring_from!r}"
        )
    return M.TrainingOutcomes(
        {(rep, fold): cohort.outcomes.loc[[str(i) for i in tr]] for rep, fold, tr, _ in splits}
        if censoring_from == "training_fold"
        else cohort.outcomes.loc[cohort.ids]
    )


def _cv_predictions(
    setup: _Setup, tasks: list[FitTask]
) -> tuple[dict[str, list[pd.DataFrame]], dict[str, tuple[int, int | None]]]:
    """Every model's OOF Predictions frames, one per repeat (``repeat``/``fold`` columns
    added), and its ``(repeats, epochs)``; the image-permutation control of every task that has
    one under ``<key>@ct-permuted`` (one frame per repeat and permutation). Fits with a run
    folder are read back from it (:func:`evaluation.tasks.run_fits` ran them)."""
    ev = setup.prof.eval
    preds: dict[str, list[pd.DataFrame]] = {}
    info: dict[str, tuple[int, int | None]] = {}
    for spec in setup.specs:
        image = spec.name in CT_OR_LESION_MODELS
        info[spec.key] = (ev.cv_repeats_3d, ev.cv_epochs_3d) if image else (ev.cv_repeats, None)
        by_rep: dict[int, list[pd.DataFrame]] = {}
        permuted: dict[tuple[int, int], list[pd.DataFrame]] = {}
        step0: dict[int, list[pd.DataFrame]] = {}
        own = [t for t in tasks if t.spec == spec]
        for task in tqdm(own, desc=f"CV {spec.key}", leave=False):
            rep, fold = task.repeat, task.fold
            pred, perm = fit_task(task, setup.cohort, setup.prof)
            by_rep.setdefault(rep, []).append(pred.assign(repeat=rep, fold=fold))
            if perm is None:
                continue
            for p, frame in perm.groupby("permutation", sort=True):
                frame = frame.drop(columns="permutation").assign(repeat=rep, fold=fold)
                permuted.setdefault((rep, int(p)), []).append(frame)
            start = step0_predictions(task.run_dir)
            if start is not None:
                step0.setdefault(rep, []).append(start.assign(repeat=rep, fold=fold))
        preds[spec.key] = [pd.concat(by_rep[r], ignore_index=True) for r in sorted(by_rep)]
        if permuted:
            preds[f"{spec.key}{PERMUTED_SUFFIX}"] = [
                pd.concat(permuted[k], ignore_index=True) for k in sorted(permuted)
            ]
            info[f"{spec.key}{PERMUTED_SUFFIX}"] = info[spec.key]
        if step0 and all(len(step0.get(r, [])) == len(by_rep[r]) for r in by_rep):
            preds[f"{spec.key}{STEP0_SUFFIX}"] = [
                pd.concat(step0[r], ignore_index=True) for r in sorted(step0)
            ]
            info[f"{spec.key}{STEP0_SUFFIX}"] = (info[spec.key][0], 0)
    return preds, info


def _log_dir(base: Path | None, protocol: str) -> Path | None:
    """Where Slurm job files and logs of a protocol's fits go: ``<runs>/<protocol>/slurm``."""
    return base / protocol / "slurm" if base is not None else None


def _scored(
    frames: list[pd.DataFrame],
    censoring: M.TrainingOutcomes,
    how: dict,
    baseline: list[pd.DataFrame] | None = None,
    desc: str | None = None,
) -> pd.DataFrame:
    """Every metric of ``frames`` (minus ``baseline``'s, paired) with the interval of
    ``how["interval"]``: the corrected repeated-CV t over the test folds, or the percentile
    bootstrap conditional on the fitted models (``how``: the bootstrap's keywords)."""
    if how["interval"] == CORRECTED_T:
        return cv_intervals(
            frames, censoring, how["metric_fn"], baseline_by_repeat=baseline,
            n_patients=how["n_patients"],
        )  # fmt: skip
    boot = {k: v for k, v in how.items() if k not in ("interval", "n_patients")}
    if baseline is None:
        out = bootstrap_scores(frames, censoring, desc=desc, **boot)
    else:
        out = paired_difference(frames, baseline, censoring, **boot)
    out["interval"] = CONDITIONAL_BOOTSTRAP
    return out


def _control_differences(
    specs: list[ModelSpec],
    preds: dict[str, list[pd.DataFrame]],
    censoring: M.TrainingOutcomes,
    boot: dict,
) -> pd.DataFrame:
    """Each image model minus its controls, paired over patients: its image-permutation
    control (same repeat, each permutation; baseline ``ct-permuted``) and, for an anchored
    model, its untrained start (same repeat; baseline ``step-0``: what training added)."""
    diffs = []
    for spec in specs:
        for suffix, baseline in ((PERMUTED_SUFFIX, "ct-permuted"), (STEP0_SUFFIX, "step-0")):
            key = f"{spec.key}{suffix}"
            if key not in preds:
                continue
            controls = preds[key]
            by_rep = {int(f["repeat"].iloc[0]): f for f in preds[spec.key]}
            own = [by_rep[int(f["repeat"].iloc[0])] for f in controls]
            d = _scored(own, censoring, boot, baseline=controls)
            d.insert(0, "model", spec.key)
            d.insert(1, "baseline", baseline)
            diffs.append(d)
    return pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame()


def _cv_scores(
    setup: _Setup,
    preds: dict[str, list[pd.DataFrame]],
    info: dict[str, tuple[int, int | None]],
    censoring: M.TrainingOutcomes,
    boot: dict,
    boot_controls: dict | None = None,
) -> pd.DataFrame:
    """The tidy table of every model: every metric with its interval (``boot["interval"]``)
    over the repeats (the image-permutation controls: the metrics of ``boot_controls``,
    Harrell's C)."""
    tables = []
    rows = [(spec.key, model_label(spec.key)) for spec in setup.specs]
    controls = [
        (f"{key}{suffix}", model_label(f"{key}{suffix}"))
        for key, _ in rows
        for suffix in (PERMUTED_SUFFIX, STEP0_SUFFIX)
        if f"{key}{suffix}" in preds
    ]
    oracle_last = [r for r in rows if r[0] == "oracle"]
    rows = [r for r in rows if r[0] != "oracle"] + controls + oracle_last
    control_keys = {key for key, _ in controls}
    for key, label in rows:
        how = boot_controls if (key in control_keys and boot_controls) else boot
        tidy = _scored(preds[key], censoring, how, desc=f"bootstrap {key}")
        tidy.insert(0, "model", key)
        tidy.insert(1, "label", label)
        tidy["repeats"], tidy["epochs"] = info[key]
        tidy["folds"] = setup.prof.eval.cv_folds
        tidy["synthetic"] = setup.cohort.synthetic
        tables.append(tidy)
    return pd.concat(tables, ignore_index=True)


def _cv_differences(
    specs: list[ModelSpec],
    preds: dict[str, list[pd.DataFrame]],
    baselines: Sequence[str],
    censoring: M.TrainingOutcomes,
    boot: dict,
) -> pd.DataFrame:
    """Paired differences of every model against each baseline, over the repeats both have
    (the first ``min(R_a, R_b)``), with the interval of ``boot["interval"]``. Two baselines are
    compared once, the later in ``baselines`` minus the earlier (Cox minus Fong), not also the
    mirrored difference."""
    diffs = []
    order = {b: i for i, b in enumerate(baselines)}
    for spec in specs:
        for b in baselines:
            if b not in preds or b == spec.key or spec.name == "oracle":
                continue
            if spec.key in order and order[spec.key] < order[b]:
                continue  # the mirror of a difference between two baselines
            r = min(len(preds[spec.key]), len(preds[b]))
            d = _scored(preds[spec.key][:r], censoring, boot, baseline=preds[b][:r])
            d.insert(0, "model", spec.key)
            d.insert(1, "baseline", b)
            diffs.append(d)
    return pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame()


def pooled_predictions(cv: CVResult, key: str, repeat: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions of model ``key`` in CV repeat ``repeat`` (one row per patient)."""
    if key not in cv.predictions:
        raise EvaluationError(f"no CV predictions for {key!r}; have {sorted(cv.predictions)}")
    return cv.predictions[key][repeat]
