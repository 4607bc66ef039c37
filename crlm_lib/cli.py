"""The ``crlm`` command: ``synth``, ``preprocess``, ``data``, ``train``, ``cv``, ``evaluate``,
``predict``, ``model-card``, ``notebooks`` and ``render``.

``crlm --help`` prints :data:`DESCRIPTION` and one line per sub-command (each sub-parser's
``help``); ``crlm COMMAND --help`` gives a command's options. Each sub-command is a thin shell
over one library function, so everything the command line does can be done from a notebook
too. Heavy imports happen inside the sub-commands, so ``crlm --help`` is instant.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from crlm_lib.config import PROFILES

if TYPE_CHECKING:  # annotations only: crlm --help imports no pandas or torch
    import pandas as pd

    from crlm_lib.config import Profile
    from crlm_lib.evaluation import Cohort


class _RegistryNames(Sequence[str]):
    """``crlm train --model`` choices: ``models.MODEL_NAMES``, then the anchors of
    ``evaluation.ANCHOR_NAMES`` and the oracle, read from the registry the first time they are
    needed (checking a ``--model`` value, or printing it wrong), so that building the parser and
    every other command imports no torch."""

    @functools.cached_property
    def _names(self) -> tuple[str, ...]:
        from crlm_lib.evaluation.specs import ANCHOR_NAMES
        from crlm_lib.models import MODEL_NAMES

        return (*MODEL_NAMES, *ANCHOR_NAMES, "oracle")

    def __getitem__(self, index):
        return self._names[index]

    def __len__(self) -> int:
        return len(self._names)


#: What ``crlm --help`` says above the list of sub-commands.
DESCRIPTION = (
    "Reproduce the CRLM prognosis paper from the command line: write or read a cohort in the "
    "TCIA layout, preprocess it, train and evaluate models, score new patients, run the "
    "notebooks and render the manuscript. It works in one folder, --workdir (default: the "
    "repository root when run inside a checkout, else the current directory), where data/, "
    "runs/ and results/ are made (running the notebooks and rendering the manuscript need a "
    "checkout: notebooks/, paper/). "
    "Paths given as arguments are relative to the current directory. Research code, not a "
    "medical device."
)

#: What ``crlm --help`` says below the list of sub-commands.
EPILOG = (
    "Run 'crlm COMMAND --help' for the options of one command. A user error prints one line "
    "and exits with status 2."
)

#: ``crlm train --model`` choices (the registry's names, read lazily: :class:`_RegistryNames`).
MODEL_CHOICES: Sequence[str] = _RegistryNames()


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum`` (``--n 0``, ``--tta -5``, ``--seed -1`` are
    refused with exit 2, naming the bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _add_seed_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=_nonnegative_int, default=0, help="random seed (>= 0)")


def _require_run_folder(run: str | Path, *files: str) -> Path:
    """``run`` as a path, after checking it is a folder holding ``files``; else
    :class:`~crlm_lib.errors.MissingRunError` naming what is missing, before any data is read."""
    from crlm_lib.errors import MissingRunError

    run_dir = Path(run)
    if not run_dir.is_dir():
        raise MissingRunError(
            f"run folder {run_dir} does not exist: train it first (crlm train --out {run_dir})"
        )
    for name in files:
        if not (run_dir / name).is_file():
            raise MissingRunError(
                f"{run_dir / name} not found: {run_dir} is not a finished run folder (crlm "
                f"train --out {run_dir} writes it)"
            )
    return run_dir


def _add_profile_arg(
    p: argparse.ArgumentParser, help_text: str, default: str | None = "cpu"
) -> None:
    p.add_argument("--profile", default=default, choices=sorted(PROFILES), help=help_text)


def _add_workdir_arg(p: argparse.ArgumentParser, default: str | None = argparse.SUPPRESS) -> None:
    p.add_argument(
        "--workdir",
        default=default,
        metavar="DIR",
        help="folder where data/, runs/ and results/ are made (default: the repository root "
        "when run inside a checkout, else the current directory)",
    )


def _resolve_workdir(workdir: str | None) -> Path:
    """``--workdir`` as an absolute folder, or :func:`crlm_lib.config.default_workdir`;
    :class:`~crlm_lib.errors.ArgumentError` for a folder that does not exist."""
    from crlm_lib.config import default_workdir
    from crlm_lib.errors import ArgumentError

    if workdir is None:
        return default_workdir()
    path = Path(workdir).expanduser().resolve()
    if not path.is_dir():
        raise ArgumentError(f"--workdir {workdir}: no such folder (create it first)")
    return path


def _require_checkout(workdir: Path, command: str) -> Path:
    """``workdir`` when it is a checkout (:func:`crlm_lib.config.is_checkout`), else
    :class:`~crlm_lib.errors.ArgumentError` saying what ``crlm <command>`` needs."""
    from crlm_lib.config import is_checkout
    from crlm_lib.errors import ArgumentError

    if not is_checkout(workdir):
        raise ArgumentError(
            f"crlm {command} needs a checkout of the repository (notebooks/, paper/): the work "
            f"folder {workdir} is not one; run it inside the checkout or pass --workdir CHECKOUT"
        )
    return workdir


def _run_profile(profile: str | None, runs: Sequence[str | Path]) -> str:
    """The profile of the ``--run`` folders (their ``run.json``), so that ``--profile`` may be
    left out; :class:`~crlm_lib.errors.ArgumentError` when ``profile`` names another, or the
    runs differ. Without a ``run.json``: ``profile``, else ``cpu``."""
    from crlm_lib.errors import ArgumentError
    from crlm_lib.runfolder import RunFolder

    found = {}
    for run in runs:
        folder = RunFolder(run)
        if folder.has_record():
            found[str(run)] = folder.read_record().get("profile")
    profiles = sorted({p for p in found.values() if p})
    if len(profiles) > 1:
        raise ArgumentError(f"--run folders of different profiles {found} cannot be used together")
    if profiles and profile is not None and profile != profiles[0]:
        raise ArgumentError(
            f"--profile {profile}: the run {next(iter(found))} was trained with profile "
            f"{profiles[0]}; leave --profile out to use the run's"
        )
    return profile or (profiles[0] if profiles else "cpu")


def _nonnegative_seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0 (``--lock-timeout -1`` is refused with exit 2)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be at least 0 seconds, got {text}")
    return value


def _add_lock_timeout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--lock-timeout",
        dest="lock_timeout",
        type=_nonnegative_seconds,
        default=None,
        metavar="SECONDS",
        help="longest wait for another run's lock on a folder this command writes (the "
        "synthetic cohort, the preprocessing cache); then fail naming the lock file and its "
        "owner PID (default: wait until it finishes)",
    )


def _add_data_args(p: argparse.ArgumentParser, run_profile: bool = False) -> None:
    if run_profile:  # commands given a --run: its run.json knows the profile
        _add_profile_arg(p, "smoke | cpu | paper (default: the run's, from run.json)", None)
    else:
        _add_profile_arg(p, "smoke | cpu | paper (default: cpu)")
    p.add_argument(
        "--data",
        dest="data_dir",
        default=None,
        help="root of a real TCIA download (default: the synthetic cohort of the profile)",
    )
    p.add_argument("--clinical", default=None, help="clinical table of a real download")


def _cmd_synth(a: argparse.Namespace) -> int:
    from crlm_lib.config import get_profile
    from crlm_lib.data.synthetic import write_cohort

    synth = get_profile(a.profile).synth
    if a.setting is not None:
        synth = replace(synth, setting=a.setting)
    n = a.n if a.n is not None else synth.n_patients
    out = write_cohort(
        Path(a.out), n_patients=n, seed=a.seed, synth=synth, n_jobs=a.jobs,
        lock_timeout_s=a.lock_timeout,
    )  # fmt: skip
    print(f"synthetic cohort of {n} patients written to {out}")
    return 0


def _cmd_preprocess(a: argparse.Namespace) -> int:
    from crlm_lib.config import get_profile, resolve_paths
    from crlm_lib.data.clinical import load_clinical
    from crlm_lib.data.preprocess import preprocess_cohort
    from crlm_lib.pipeline import check_cohort_not_empty, format_exclusions, write_exclusions

    paths = resolve_paths(a.profile, a.data_dir or a.cohort, a.clinical, root=a.workdir)
    if not paths.cohort_dir.is_dir():
        raise FileNotFoundError(f"cohort folder {paths.cohort_dir} does not exist")
    table = load_clinical(paths.clinical_csv)  # validated before the long step
    report = preprocess_cohort(
        paths, get_profile(a.profile), n_jobs=a.jobs, lock_timeout_s=a.lock_timeout
    )
    check_cohort_not_empty(paths, report)
    print(report["status"].value_counts().to_string())
    print(format_exclusions(write_exclusions(paths, table, report), paths))
    return 0


def _cmd_data(a: argparse.Namespace) -> int:
    from crlm_lib.pipeline import ensure_data

    ensure_data(
        a.profile,
        a.data_dir,
        a.clinical,
        seed=a.seed,
        verbose=True,
        lock_timeout_s=a.lock_timeout,
        root=a.workdir,
        reuse=False,  # the full step: every source file hashed against the cache
    )
    return 0


def _cmd_train(a: argparse.Namespace) -> int:
    from crlm_lib import distributed

    distributed.init_from_env()  # data parallel when launched by torchrun (WORLD_SIZE > 1)
    try:
        return train_cli(
            model_name=a.model,
            source=CohortSource.from_args(a),
            run_dir=Path(a.out),
            epochs=a.epochs,
            seed=a.seed,
            objective=a.objective,
            restart=a.restart,
        )
    finally:
        distributed.cleanup()


def _cmd_cv(a: argparse.Namespace) -> int:
    from crlm_lib import distributed
    from crlm_lib.executors import parse_executor

    # a bad --executor stops before the data step; none named: the profile's
    executor = None if a.executor is None else parse_executor(a.executor)
    rank = distributed.init_from_env()  # every fit data parallel when launched by torchrun
    try:
        if rank.enabled and executor is None:
            executor = parse_executor("local")  # torchrun's processes run the fits together
        if rank.enabled and executor.kind != "local":
            from crlm_lib.errors import ArgumentError

            raise ArgumentError(
                f"--executor {executor}: under torchrun every process runs the same fits "
                "together (data parallel); use --executor local, or drop torchrun"
            )
        return cv_cli(a, CohortSource.from_args(a), executor, rank.is_main)
    finally:
        distributed.cleanup()


def _cmd_evaluate(a: argparse.Namespace) -> int:
    run_dir = _require_run_folder(a.run, "predictions.csv")
    a.profile = _run_profile(a.profile, [run_dir])
    return evaluate_cli(run_dir=run_dir, source=CohortSource.from_args(a))


def _cmd_predict(a: argparse.Namespace) -> int:
    from crlm_lib.ensemble import expand_run_dirs

    runs = expand_run_dirs(a.run)
    for run in runs:
        _require_run_folder(run, "run.json")
    a.profile = _run_profile(a.profile, runs)
    if a.template:
        return _write_template(a, runs[0])
    if a.out is None:
        from crlm_lib.errors import ArgumentError

        raise ArgumentError("--out is required (an output folder, or a CSV without --patient)")
    if a.patient:
        from crlm_lib.predict import PredictOptions, predict_new

        options = PredictOptions(
            n_tta=a.tta,
            allow_missing=a.allow_missing,
            report=not a.no_report,
            heatmaps=not a.no_heatmaps,
            seed=a.seed,
        )
        summary = predict_new(runs, [Path(p) for p in a.patient], Path(a.out), a.clinical, options)
        for pid, line in zip(summary["patient_id"], summary["summary"], strict=True):
            print(f"{pid}: {line}")
        print(f"predictions for {len(summary)} patient(s) written to {a.out}")
        return 0
    from crlm_lib.predict import PredictError

    if len(runs) > 1:
        raise PredictError("several --run make an ensemble for --patient predictions only")
    return predict_cli(run_dir=runs[0], source=CohortSource.from_args(a), out=Path(a.out))


def _write_template(a: argparse.Namespace, run_dir: Path) -> int:
    """``crlm predict --template FILE``: the clinical table to fill in for this run."""
    from crlm_lib.clinical_input import write_template
    from crlm_lib.runfolder import RunFolder

    rec = RunFolder(run_dir).read_record()
    columns = [c["column"] for c in (rec.get("clinical_encoder") or {}).get("columns", [])]
    ids: list[str] = []
    if a.patient:
        from crlm_lib.data.new_patients import discover_patient_ids

        ids = discover_patient_ids([Path(p) for p in a.patient])
    path = write_template(a.template, columns, ids)
    print(
        f"clinical template with {len(columns)} predictor column(s) and {len(ids)} patient "
        f"row(s) written to {path}; its first row gives each column's unit and coding. Rows are "
        "matched to patients by the DICOM PatientID, else by the patient's folder name "
        "(predictions.csv says which)."
    )
    return 0


def _cmd_model_card(a: argparse.Namespace) -> int:
    from crlm_lib.model_card import write_model_card

    _require_run_folder(a.run, "run.json")
    out = write_model_card(Path(a.run), Path(a.out), a.results)
    print(f"model card written to {out}")
    return 0


def _cmd_notebooks(a: argparse.Namespace) -> int:
    from crlm_lib.executors import parse_executor
    from crlm_lib.notebooks import run_notebooks, select_notebooks
    from crlm_lib.pipeline import ensure_data

    root = _require_checkout(a.workdir, "notebooks")
    select_notebooks(a.only, root)  # an unknown --only number stops here
    # a bad --executor stops here too; none named: each notebook uses the profile's
    executor = None if a.executor is None else str(parse_executor(a.executor))
    # the data step first, in this process: a bad table or folder stops here in one line, and
    # the exclusion report is printed and written before any notebook runs
    ensure_data(a.profile, a.data_dir, a.clinical, seed=a.seed, show_exclusions=True, root=root)
    run_notebooks(
        a.profile, a.data_dir, a.clinical, seed=a.seed, only=a.only, root=root,
        executor=executor,
    )  # fmt: skip
    return 0


def _cmd_render(a: argparse.Namespace) -> int:
    from crlm_lib.manuscript import render

    root = _require_checkout(a.workdir, "render")
    out = render(profile=a.profile, real=a.real, renderer=a.renderer, root=root)
    print(f"manuscript written to {out}")
    if not a.check:
        return 0
    from crlm_lib.config import resolve_paths
    from crlm_lib.manuscript import check_manuscript

    phi: list[str] = []
    paths = resolve_paths(a.profile, root=root)
    if not a.real and paths.clinical_csv.is_file():
        from crlm_lib.data.synthetic import phi_values

        phi = phi_values(paths.cohort_dir)
    problems = check_manuscript(out, root / "paper" / "index.qmd", phi)
    for p in problems:
        print(f"FAILED {p}")
    print(f"manuscript check: {len(phi)} PHI strings searched, {len(problems)} problem(s)")
    return 1 if problems else 0


# --------------------------------------------------------------------------------------------
# the hooks of crlm train / evaluate / predict (library calls; heavy imports inside)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CohortSource:
    """Where a ``crlm train / evaluate / predict`` call takes its cohort from: the profile name,
    the TCIA download (``--data``; None: the profile's synthetic cohort), the clinical table
    (``--clinical``) and the work folder (``--workdir``; None: found from the current
    directory). :meth:`load` runs the data step and resolves the profile, once."""

    profile: str = "cpu"
    data_dir: str | Path | None = None
    clinical: str | Path | None = None
    root: Path | None = None

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> CohortSource:
        return cls(a.profile, a.data_dir, a.clinical, getattr(a, "workdir", None))

    def load(self) -> tuple[Profile, Cohort]:
        """The resolved profile and the cohort (data step first: exclusions are printed)."""
        from crlm_lib.config import get_profile
        from crlm_lib.pipeline import build_cohort, ensure_data

        prof = get_profile(self.profile)
        paths = ensure_data(
            prof, self.data_dir, self.clinical, seed=prof.seed, verbose=False,
            show_exclusions=True, root=self.root,
        )  # fmt: skip
        return prof, build_cohort(paths, profile=prof)


def train_cli(
    model_name: str,
    source: CohortSource,
    run_dir: Path,
    epochs: int | None,
    seed: int,
    objective: str,
    restart: bool = False,
) -> int:
    """``crlm train``: train one model on the 8:1:1 split and write the run folder.

    Writes ``run.json``, checkpoints and ``history.csv`` (engine), ``predictions.csv`` (test
    split) and ``metrics.json`` (``taa``, ``mae``, ``mse``, ``c_index`` = Harrell's OS C-index,
    plus every metric of :func:`crlm_lib.evaluation.head_metrics`). Anchors (``fong``,
    ``cox``, ``rsf``) work too.

    An existing run folder is resumed only when its cohort, split and configuration hashes
    (:func:`crlm_lib.evaluation.run_identity`, kept in ``run.json``) match; otherwise nothing
    is written and :class:`~crlm_lib.errors.RunMismatchError` is raised, unless ``restart``
    (``--restart``) discards the old run first.

    Raises
    ------
    ArgumentError
        For ``epochs`` < 1.
    RunMismatchError
        For a run folder made on another cohort, split or configuration.
    """
    from crlm_lib.errors import ArgumentError
    from crlm_lib.evaluation import (
        ModelSpec,
        check_run_dir,
        fit_predict_anchor,
        fit_predict_torch,
        paper_split_ids,
        run_identity,
    )
    from crlm_lib.runfolder import RunFolder

    if epochs is not None and int(epochs) < 1:
        raise ArgumentError(f"--epochs must be at least 1, got {epochs}")
    prof, cohort = source.load()
    run_dir = Path(run_dir)
    spec = ModelSpec(model_name, objective=objective)
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    tr, va, te = paper_split_ids(cohort.ids, events, seed)
    identity = run_identity(spec, prof, cohort, (tr, va, te), seed)
    check_run_dir(run_dir, identity, restart=restart)
    folder = RunFolder(run_dir)
    if spec.is_anchor:
        run_dir.mkdir(parents=True, exist_ok=True)
        pred = fit_predict_anchor(spec.name, cohort, list(tr) + list(va), te, seed=seed)
        folder.write_record({"model": spec.name, "profile": prof.name, "seed": seed,
                             "train_ids": list(tr) + list(va), "test_ids": list(te),
                             "identity": identity})  # fmt: skip
    else:
        pred, _ = fit_predict_torch(
            spec, cohort, prof, (tr, va, te), run_dir, epochs=epochs, seed=seed
        )
    folder.write_predictions(pred)
    m = _cli_metrics(pred, cohort.outcomes.loc[list(tr)], prof)
    folder.write_metrics(m)
    print(
        f"{model_name}: test TAA {m['taa']:.3f}  MAE {m['mae']:.3f}  MSE {m['mse']:.3f}  "
        f"C (Harrell, OS) {m['c_index']:.3f}  -> {run_dir}"
    )
    return 0


def _cli_metrics(pred: pd.DataFrame, train_out: pd.DataFrame, prof: Profile) -> dict[str, float]:
    from crlm_lib.evaluation import head_metrics

    m = head_metrics(pred, train_out, horizons=prof.eval.horizons_years)
    m.update(taa=m["os_taa"], mae=m["os_mae"], mse=m["os_mse"], c_index=m["os_c_harrell"])
    return m


def cv_cli(a: argparse.Namespace, source: CohortSource, executor, show: bool = True) -> int:
    """``crlm cv``: the repeated stratified cross-validation (``evaluation.run_cv_protocol``)
    of ``--models`` (default: the profile's ``eval.cv_models``) with the anchors and the
    oracle, each fit one task of ``executor`` (``crlm_lib.executors``) with its own run folder
    under ``<runs>/<protocol>/<model>/r<repeat>_f<fold>/``. The notebooks (06) read the same
    folders, so fits finished here are not trained again there. Prints the wide table
    (``show``: rank 0 under torchrun) and where the tidy table was written."""
    from crlm_lib.evaluation import ANCHOR_NAMES, run_cv_protocol

    prof, cohort = source.load()
    models = a.models if a.models is not None else list(prof.eval.cv_models)
    anchors = ANCHOR_NAMES if a.anchors is None else tuple(a.anchors)
    runs_dir = Path(a.runs_dir) if a.runs_dir else cohort.paths.runs_dir
    result = run_cv_protocol(
        models, cohort, prof, seed=a.seed, anchors=anchors, n_boot=a.n_boot,
        runs_dir=runs_dir, controls=not a.no_controls, executor=executor,
    )  # fmt: skip
    if show:
        print(result.wide.to_string())
        print(f"cross-validation table written to {runs_dir / 'cv' / 'results_tidy.csv'}")
    return 0


def evaluate_cli(run_dir: Path, source: CohortSource) -> int:
    """``crlm evaluate``: rescore a run's ``predictions.csv`` (with bootstrap CIs)."""
    from crlm_lib.evaluation import EvaluationError, bootstrap_scores, wide_table
    from crlm_lib.metrics import TrainingOutcomes
    from crlm_lib.runfolder import RunFolder

    prof, cohort = source.load()
    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    pred = folder.read_predictions()
    if pred is None:
        raise EvaluationError(
            f"{folder.file('predictions.csv')} not found: train the run first (crlm train)"
        )
    record = folder.read_record() if folder.has_record() else {}
    train_ids = record.get("train_ids") or sorted(set(cohort.ids) - set(pred["patient_id"]))
    train_out = TrainingOutcomes(
        cohort.outcomes.loc[[i for i in train_ids if i in cohort.outcomes.index]]
    )
    tidy = bootstrap_scores(pred, train_out, n_boot=prof.eval.bootstrap, seed=prof.seed)
    folder.write_metrics_ci(tidy)
    print(wide_table(tidy.assign(model=run_dir.name)).T.to_string())
    return 0


def predict_cli(run_dir: Path, source: CohortSource, out: Path) -> int:
    """``crlm predict`` without ``--patient``: year-by-year predictions of a trained run for
    every preprocessed patient of a cohort (outcomes required; for new patients without
    follow-up use ``--patient``, :func:`crlm_lib.predict.predict_new`).

    Reloads the model from ``run.json`` and the best checkpoint; clinical features are encoded
    with the run's stored encoder (:func:`crlm_lib.evaluation.stored_encoder`), lesion
    features with the run's training statistics. Probabilities are written with 3 decimals.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.evaluation import (
        ANCHOR_NAMES,
        fit_predict_anchor,
        load_run,
        require_finished,
        stored_encoder,
    )
    from crlm_lib.evaluation._common import _atomic_write_csv
    from crlm_lib.evaluation.runs import read_run_record
    from crlm_lib.train import predict

    run_dir = Path(run_dir)
    rec, rec_path = read_run_record(run_dir)
    require_finished(run_dir, rec)  # before the data step
    prof, cohort = source.load()
    if rec["model"] in ANCHOR_NAMES:
        pred = fit_predict_anchor(rec["model"], cohort, rec["train_ids"], cohort.ids)
    else:
        run = load_run(run_dir, cohort, prof)
        ds = CRLMDataset(
            cohort.paths.processed_dir,
            cohort.clinical,
            cohort.ids,
            prof,
            clinical_encoder=stored_encoder(rec, rec_path),
            feature_stats=run.train_ds.feature_stats,
        )
        pred = predict(run.model, ds, progress=True)
    _atomic_write_csv(pred.round(3), Path(out))
    print(f"predictions for {len(pred)} patients written to {out}")
    return 0


def _add_synth_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm synth``."""
    p = sub.add_parser("synth", help="write a synthetic cohort in the TCIA layout")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--n", type=_positive_int, default=None, help="patients (default: the profile's, 197)"
    )
    _add_seed_arg(p)
    p.add_argument("--jobs", type=_positive_int, default=2, help="patients written in parallel")
    p.add_argument(
        "--setting",
        choices=("image_effect", "null"),
        default=None,
        help="outcome model: image_effect (default; image-only quantities carry part of the "
        "hazard) or null (the outcome depends on the clinical table alone)",
    )
    _add_profile_arg(p, "sets the image size of the synthetic CT")
    _add_lock_timeout_arg(p)
    p.set_defaults(func=_cmd_synth)


def _add_preprocess_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm preprocess``."""
    p = sub.add_parser("preprocess", help="the papers' preprocessing, cached per patient")
    _add_data_args(p)
    p.add_argument("--cohort", default=None, help="alias of --data for a synthetic cohort folder")
    p.add_argument("--jobs", type=_positive_int, default=2, help="patients processed in parallel")
    _add_lock_timeout_arg(p)
    p.set_defaults(func=_cmd_preprocess)


def _add_data_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm data``."""
    p = sub.add_parser("data", help="synthesise (when no --data) and preprocess the cohort")
    _add_data_args(p)
    _add_seed_arg(p)
    _add_lock_timeout_arg(p)
    p.set_defaults(func=_cmd_data)


def _add_train_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm train``."""
    p = sub.add_parser("train", help="train one registered model on the papers' 8:1:1 split")
    _add_data_args(p)
    p.add_argument(
        "--model",
        required=True,
        choices=MODEL_CHOICES,
        metavar="MODEL",  # not the choices: listing them would import the registry (torch)
        help="a name of the model registry (crlm_lib.models.MODEL_NAMES: acfnet, star, ...) or "
        "a clinical anchor (fong, cox, rsf, oracle)",
    )
    p.add_argument(
        "--out", required=True, help="run folder (checkpoints, history.csv, metrics.json)"
    )
    p.add_argument("--epochs", type=_positive_int, default=None, help="default: the profile's")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard a run folder made on another cohort, split or configuration",
    )
    _add_seed_arg(p)
    p.add_argument("--objective", default="paper", choices=["paper", "censored"])
    p.set_defaults(func=_cmd_train)


def _add_executor_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--executor",
        default=None,
        metavar="SPEC",
        help="where the fits run (default: the profile's, crlm_lib.config.Profile.executor, "
        "local for every profile): local (one after another in this process), dask (worker "
        "processes "
        "on this machine, one GPU each where there are GPUs; dask:workers=4,threads=1), "
        "dask:address=tcp://HOST:8786 (a running Dask cluster), slurm:partition=NAME[,"
        "timeout_min=...,account=...] (one Slurm job per fit, submitit); see README, "
        "'Scaling out'",
    )


def _add_cv_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm cv``."""
    p = sub.add_parser(
        "cv", help="cross-validate the profile's models, each fit a task of an executor"
    )
    _add_data_args(p)
    _add_seed_arg(p)
    p.add_argument(
        "--models", nargs="+", default=None, metavar="MODEL",
        help="registry names (default: the profile's eval.cv_models)",
    )  # fmt: skip
    p.add_argument(
        "--anchors", nargs="*", default=None, metavar="ANCHOR",
        help="clinical anchors appended (default: all; none: --anchors with no name)",
    )  # fmt: skip
    p.add_argument(
        "--n-boot", dest="n_boot", type=_nonnegative_int, default=None,
        help="bootstrap replicates (default: the profile's)",
    )  # fmt: skip
    p.add_argument(
        "--runs-dir", dest="runs_dir", default=None,
        help="runs folder (default: runs/<profile> of the work folder, where the notebooks "
        "look)",
    )  # fmt: skip
    p.add_argument("--no-controls", action="store_true", help="skip the image-permutation controls")
    _add_executor_arg(p)
    p.set_defaults(func=_cmd_cv)


def _add_evaluate_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm evaluate``."""
    p = sub.add_parser("evaluate", help="score a trained run on its test split")
    _add_data_args(p, run_profile=True)
    p.add_argument("--run", required=True)
    p.set_defaults(func=_cmd_evaluate)


def _add_predict_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm predict``."""
    p = sub.add_parser(
        "predict",
        help="predictions of a trained run: new patients (--patient) or a training cohort",
        description="With --patient: score new patients (no follow-up needed) and write "
        "predictions.csv, predictions_yearly.csv and per patient a report (HTML, PDF) and "
        "Grad-CAM heatmaps (NIfTI, DICOM Parametric Map) into the --out folder. Without: "
        "predictions for every patient of the profile's (or --data) cohort into the --out CSV.",
    )
    _add_data_args(p, run_profile=True)
    p.add_argument(
        "--run",
        required=True,
        action="append",
        help="run folder, or a cross-validation folder (all its fold runs: an ensemble with a "
        "band); repeat for an ensemble",
    )
    p.add_argument(
        "--patient",
        nargs="+",
        default=None,
        help="patient folder(s) or ZIP(s) in the TCIA layout (CT series + SEG); a folder of "
        "several patients scores them all",
    )
    p.add_argument("--out", default=None, help="output folder (--patient) or CSV")
    p.add_argument(
        "--template",
        default=None,
        metavar="FILE",
        help="write the clinical table to fill in (every predictor of the run with its unit "
        "and coding; one row per --patient) and stop",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="score patients with missing clinical predictors (default: refused), averaging "
        "over values drawn from the training cohort; the report's headline says so",
    )
    p.add_argument(
        "--tta",
        type=_nonnegative_int,
        default=0,
        help="test-time augmentations per model, averaged into its prediction (default 0)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML/PDF reports")
    p.add_argument("--no-heatmaps", action="store_true", help="skip the NIfTI/DICOM heatmaps")
    _add_seed_arg(p)
    p.set_defaults(func=_cmd_predict)


def _add_model_card_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm model-card``."""
    p = sub.add_parser("model-card", help="write the model card of a run (numbers from its files)")
    p.add_argument("--run", required=True, help="run folder (crlm train)")
    p.add_argument("--results", default=None, help="results folder with cv_tidy.csv (notebook 06)")
    p.add_argument("--out", default="MODEL_CARD.md", help="Markdown file (default MODEL_CARD.md)")
    p.set_defaults(func=_cmd_model_card)


def _add_notebooks_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm notebooks``."""
    p = sub.add_parser("notebooks", help="execute the numbered notebooks with papermill")
    _add_data_args(p)
    _add_seed_arg(p)
    p.add_argument("--only", nargs="*", default=None, help="notebook numbers, e.g. 01 02")
    _add_executor_arg(p)
    p.set_defaults(func=_cmd_notebooks)


def _add_render_parser(sub: argparse._SubParsersAction) -> None:
    """``crlm render``."""
    p = sub.add_parser("render", help="render the manuscript (Quarto, or the offline fallback)")
    _add_profile_arg(p, "smoke | cpu | paper (default: cpu)")
    p.add_argument("--real", action="store_true", help="notebooks were run on the real cohort")
    p.add_argument("--renderer", default="auto", choices=["auto", "quarto", "offline"])
    p.add_argument(
        "--check",
        action="store_true",
        help="fail unless every embed is present and no synthetic PHI string is in the site",
    )
    p.set_defaults(func=_cmd_render)


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter with room for the sub-command names: argparse measures them at the
    group's indent but prints them one level further in, which would put ``preprocess`` and
    ``model-card`` on a line of their own in ``crlm --help``."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction) and action.help != argparse.SUPPRESS:
            longest = max(len(name) for name in action.choices)
            self._action_max_length = max(
                self._action_max_length, longest + self._current_indent + self._indent_increment
            )


def build_parser() -> argparse.ArgumentParser:
    """The ``crlm`` parser: one sub-parser per command, each added by its own function."""
    parser = argparse.ArgumentParser(
        prog="crlm", description=DESCRIPTION, epilog=EPILOG, formatter_class=_HelpFormatter
    )
    _add_workdir_arg(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
    _add_synth_parser(sub)
    _add_preprocess_parser(sub)
    _add_data_parser(sub)
    _add_train_parser(sub)
    _add_cv_parser(sub)
    _add_evaluate_parser(sub)
    _add_predict_parser(sub)
    _add_model_card_parser(sub)
    _add_notebooks_parser(sub)
    _add_render_parser(sub)
    for command in sub.choices.values():  # also after the command: crlm data --workdir DIR
        _add_workdir_arg(command)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command.

    A user error (:class:`crlm_lib.errors.CRLMUserError` and its subclasses, a missing file, a
    bad argument) prints one line, ``crlm <command>: <ErrorClass>: <message>`` (a clinical
    table's problems follow, one per line), without a traceback, and exits with status 2;
    argparse refuses unknown choices and out-of-range numbers the same way before any data is
    read. A file that cannot be written or read (read-only folder or file system, full disk, no
    permission) is such an error too: the ``OSError`` is mapped here, once, to an
    :class:`~crlm_lib.errors.FileAccessError` naming the path
    (:func:`crlm_lib.errors.file_access_error`). Anything else is a bug and keeps its
    traceback.
    """
    args = build_parser().parse_args(argv)
    from crlm_lib.errors import CRLMUserError, file_access_error

    try:
        args.workdir = _resolve_workdir(args.workdir)
        return int(args.func(args) or 0)
    except (CRLMUserError, FileNotFoundError) as err:
        return _report(args.command, err)
    except OSError as err:
        user_error = file_access_error(err)
        if user_error is None:
            raise
        return _report(args.command, user_error)


def _report(command: str, err: BaseException) -> int:
    """Print a user error in one line (``crlm <command>: <ErrorClass>: <message>``); exit 2."""
    print(f"crlm {command}: {type(err).__name__}: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
