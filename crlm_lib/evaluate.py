"""Evaluation protocols, uncertainty, the oracle reference, calibration and published numbers.

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
  TAA / MAE restricted to patients whose event was observed; bootstrap CIs and paired
  differences against the Fong score and Cox.

Every row is a *Predictions* frame (``patient_id``, ``surv_p1..12``, ``rec_p1..12``, outcomes)
scored by the same code, so the clinical anchors (``models.clinical``) and the oracle (the
synthetic generator's true curves; always the LAST row) are comparable with the deep models.
The oracle is the ceiling of discrimination (C-index, AUC) in expectation, NOT of TAA / MAE /
MSE: the argmax of the true year-of-death pmf is its mode, not the time that minimises the
absolute or squared error, so a model can beat the oracle on those. Published numbers (:data:`PUBLISHED`) are kept as data and never mixed into our
rows.

Uncertainty (choices)
---------------------
* Estimate of a CV metric = the mean over repeats of the metric computed on that repeat's
  pooled OOF predictions (one prediction per patient per repeat).
* Interval = percentile bootstrap over *patients* (``profile.eval.bootstrap`` replicates): one
  draw of patients per replicate, applied to every repeat, the replicate value being the mean
  over repeats. Rows are sorted by patient ID first, so results do not depend on patient order.
  The out-of-fold predictions are held FIXED: the interval is **conditional on the fitted
  models** (it ignores the variability of refitting on another sample, so it is too narrow as
  an interval for the performance of the modelling procedure; about 87% coverage of a nominal
  95% in simulation). Table captions say so.
* Paired difference A - B: the same draws applied to both models (paired bootstrap over
  patients of the pooled OOF predictions).
* IPCW metrics (Uno's C, IBS, AUC) need the censoring distribution, always estimated on the
  TRAINING patients: the training split in the paper protocol; in CV, each test fold's own
  training fold (the metric is computed per fold and averaged over the folds of a repeat,
  weighted by fold size; ``metrics.all_metrics`` with a ``{(repeat, fold): outcomes}``
  mapping). Harrell's C and TAA / MAE / MSE are computed on the pooled OOF predictions.
* Uno's C and the IBS use a fixed 5-year horizon (``metrics.HORIZON_YEARS``): Uno's C counts
  events strictly before 5 years, the IBS integrates the Brier score over years 1-5.
* Risk for the C-indices: an anchor's own score where it has one (``native_risk``: the Fong
  score itself, Cox's linear predictor, the forest's cumulative hazard, the oracle's true
  5-year risk), else minus the restricted mean survival time of the predicted pmf.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crlm_lib import atomic, resources
from crlm_lib.config import N_YEARS, Paths, Profile, get_profile
from crlm_lib.models import MODEL_NAMES
from crlm_lib.models.clinical import (
    BEYOND_COL,
    REC_COLS,
    SURV_COLS,
    CoxPH,
    FongScore,
    Oracle,
    RandomSurvivalForest,
)

#: Clinical anchors, in the order of every table (before the oracle, after the deep models).
ANCHOR_NAMES: tuple[str, ...] = ("fong", "cox", "rsf")
#: Registry models that read the CT (3D/4D image or lesion models): CV uses ``cv_repeats_3d``.
IMAGE_MODELS: frozenset[str] = frozenset(m for m in MODEL_NAMES if m != "clinical_mlp")
#: Metric columns of the pretty tables, in order (OS head unless prefixed ``dfs_``).
HEADLINE_METRICS: tuple[str, ...] = (
    "os_taa",
    "os_mae",
    "os_mse",
    "os_obs_taa",
    "os_obs_mae",
    "os_c_harrell",
    "os_c_uno",
    "os_ibs",
    "os_auc_1y",
    "os_auc_3y",
    "os_auc_5y",
    "dfs_c_harrell",
)
#: Metrics where lower is better (used for the direction of paired differences in captions).
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "mse", "ibs"})
LABELS: dict[str, str] = {
    "acfnet": "4D-ACFNet",
    "star": "STAR",
    "cnn3d": "3D CNN",
    "cnn3d_lstm": "3D CNN + LSTM",
    "resnet18_3d": "3D ResNet-18",
    "resnet34_3d": "3D ResNet-34",
    "resnet50_3d": "3D ResNet-50",
    "aminn": "AMINN",
    "stg": "STG",
    "stg_lite": "STG-lite",
    "clinical_mlp": "Clinical MLP",
    "fong": "Fong score",
    "cox": "Cox PH (clinical)",
    "rsf": "Random survival forest (clinical)",
    "oracle": "Oracle (true curves, synthetic)",
}


class EvaluationError(RuntimeError):
    """A protocol could not run (missing data, unknown model, inconsistent run folder)."""


# --------------------------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------------------------


def _atomic_write_csv(frame: pd.DataFrame, path: Path) -> None:
    atomic.write_csv(path, frame, index=False)


def _write_json(obj: Any, path: Path) -> None:
    atomic.write_json(path, obj, indent=2, allow_nan=True)


def _read_predictions(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype={"patient_id": str})


@dataclass(frozen=True)
class ModelSpec:
    """One row of a comparison: a registry model or an anchor, with its options.

    Attributes
    ----------
    name : str
        Registry name (``acfnet``, ``star``, ..., ``clinical_mlp``) or anchor (``fong``,
        ``cox``, ``rsf``, ``oracle``).
    label : str
        Row label and cache folder name (default: ``name``, plus ``-censored`` for the
        censoring-aware objective).
    objective : str
        ``"paper"`` (the papers' cross-entropy) or ``"censored"`` (discrete-time likelihood).
    options : dict
        Passed to ``build_model(name, n_clinical, cfg, **options)``.
    loss_weights : dict, optional
        Passed to ``train.fit``.
    """

    name: str
    label: str = ""
    objective: str = "paper"
    options: dict = field(default_factory=dict)
    loss_weights: dict | None = None

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        return self.name if self.objective == "paper" else f"{self.name}-{self.objective}"

    @property
    def is_anchor(self) -> bool:
        return self.name in ANCHOR_NAMES or self.name == "oracle"


def as_specs(
    models: Iterable[str | ModelSpec],
    objective: str = "paper",
    options_by_name: dict[str, dict] | None = None,
) -> list[ModelSpec]:
    """Normalise model names to :class:`ModelSpec` (``"acfnet:censored"`` picks the objective)."""
    out = []
    for m in models:
        if isinstance(m, ModelSpec):
            out.append(m)
            continue
        name, _, obj = str(m).partition(":")
        out.append(
            ModelSpec(
                name=name,
                objective=obj or objective,
                options=dict((options_by_name or {}).get(name, {})),
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# the cohort
# --------------------------------------------------------------------------------------------


@dataclass
class Cohort:
    """What the protocols need about the cohort (built from a ``pipeline.Study`` or ``Paths``).

    Attributes
    ----------
    clinical : DataFrame, index = patient ID (validated table)
    outcomes : DataFrame, index = patient ID (``os_years`` ... ``dfs_event``)
    ids : list of str (analysis cohort)
    paths : Paths or None
    oracle : DataFrame or None (synthetic cohorts only)
    """

    clinical: pd.DataFrame
    outcomes: pd.DataFrame
    ids: list[str]
    paths: Paths | None = None
    oracle: pd.DataFrame | None = None

    @property
    def synthetic(self) -> bool:
        return self.oracle is not None


def _usable_processed_ids(paths: Paths) -> set[str]:
    """Patients of the last preprocessing run with a usable volume: from ``report.csv`` when it
    exists (a volume left in the cache by another download or an earlier run whose patient is
    now excluded must not enter), else every ``*.npz`` of the folder."""
    if not paths.processed_dir.is_dir():
        return set()
    report = paths.processed_dir / "report.csv"
    if report.is_file():
        from crlm_lib.data.preprocess import USABLE_STATUSES

        rep = pd.read_csv(report, dtype={"patient_id": str})
        usable = rep.loc[rep["status"].isin(USABLE_STATUSES), "patient_id"].astype(str)
        return {i for i in usable if (paths.processed_dir / f"{i}.npz").is_file()}
    return {p.stem for p in paths.processed_dir.glob("*.npz")}


def as_cohort(source: Any, ids: Sequence[str] | None = None) -> Cohort:
    """A :class:`Cohort` from a ``pipeline.Study``, a ``config.Paths`` or a :class:`Cohort`.

    For ``Paths`` the analysis cohort is every clinical row with a usable preprocessed volume
    (the patients ``report.csv`` of the last preprocessing run marks usable; every clinical row
    when nothing is preprocessed: anchors only), the same patients as ``pipeline.load_study``.
    """
    if isinstance(source, Cohort):
        return source
    from crlm_lib.data.clinical import load_clinical, outcomes

    if isinstance(source, Paths):
        paths = source
        clinical = load_clinical(paths.clinical_csv)
        clinical.index = clinical.index.astype(str)
        processed = _usable_processed_ids(paths)
        all_ids = sorted(clinical.index)
        chosen = sorted(i for i in all_ids if i in processed) or all_ids
    else:  # pipeline.Study
        paths = source.paths
        clinical = source.clinical
        clinical.index = clinical.index.astype(str)
        chosen = list(source.ids)
    if ids is not None:
        chosen = [str(i) for i in ids]
    oracle = None
    if paths is not None and paths.oracle_csv is not None and Path(paths.oracle_csv).is_file():
        oracle = pd.read_csv(paths.oracle_csv, dtype={"Patient-ID": str})
    out = outcomes(clinical.loc[chosen])
    return Cohort(clinical=clinical, outcomes=out, ids=list(chosen), paths=paths, oracle=oracle)


# --------------------------------------------------------------------------------------------
# splits (thin wrappers so the protocol can be tested without the torch data stack)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# fitting one model on one split
# --------------------------------------------------------------------------------------------


def fit_predict_anchor(
    name: str,
    cohort: Cohort,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    seed: int = 0,
) -> pd.DataFrame:
    """Fit a clinical anchor on ``train_ids`` (OS and DFS) and predict ``test_ids``.

    ``fong`` reads ``clinrisk_score``; ``cox`` and ``rsf`` read ``encode_predictors`` features
    standardised with the training rows; ``oracle`` looks up the true curves.
    """
    train_ids, test_ids = [str(i) for i in train_ids], [str(i) for i in test_ids]
    out_tr = cohort.outcomes.loc[train_ids]
    if name == "oracle":
        if cohort.oracle is None:
            raise EvaluationError("the oracle exists for synthetic cohorts only (no oracle.csv)")
        return Oracle(cohort.oracle).predict_frame(None, test_ids, cohort.outcomes)
    if name == "fong":
        model = FongScore()
        x_tr, x_te = cohort.clinical.loc[train_ids], cohort.clinical.loc[test_ids]
    elif name in ("cox", "rsf"):
        from crlm_lib.data.clinical import encode_predictors

        ref = cohort.clinical.loc[train_ids]
        x_tr, _ = encode_predictors(ref, reference=ref)
        x_te, _ = encode_predictors(cohort.clinical.loc[test_ids], reference=ref)
        model = CoxPH() if name == "cox" else RandomSurvivalForest(random_state=seed)
    else:
        raise EvaluationError(f"unknown anchor {name!r}; choose one of {ANCHOR_NAMES}")
    model.fit_outcomes(x_tr, out_tr)
    return model.predict_frame(x_te, test_ids, cohort.outcomes)


def _datasets(
    cohort: Cohort, profile: Profile, train_ids, val_ids, test_ids, reads_ct: bool = True
):
    """Train/val/test datasets; the image augmentation only for models that read the CT
    (AMINN and the clinical MLP never see it, so deforming it would only cost time)."""
    from crlm_lib.data.dataset import CRLMDataset

    if cohort.paths is None:
        raise EvaluationError("image models need a preprocessed cohort (Paths)")
    kw = {"clinical_reference_ids": list(train_ids)}
    pdir = cohort.paths.processed_dir
    aug = bool(profile.train.augment) and reads_ct
    train_ds = CRLMDataset(pdir, cohort.clinical, list(train_ids), profile, augment=aug, **kw)
    val_ds = CRLMDataset(pdir, cohort.clinical, list(val_ids), profile, **kw)
    test_ds = CRLMDataset(pdir, cohort.clinical, list(test_ids), profile, **kw)
    return train_ds, val_ds, test_ds


def fit_predict_torch(
    spec: ModelSpec,
    cohort: Cohort,
    profile: Profile,
    train_ids: Sequence[str],
    val_ids: Sequence[str],
    test_ids: Sequence[str],
    run_dir: Path,
    epochs: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, Any]:
    """Build a registry model, ``train.fit`` it (early stopping on ``val_ids``), predict test.

    Writes ``run_dir/run.json`` (model, options, objective, profile, seed, split IDs, clinical
    feature names and training statistics) so that the run can be reloaded.
    """
    import torch

    from crlm_lib.models import build_model
    from crlm_lib.train import fit, predict

    torch.manual_seed(seed)
    from crlm_lib.models import IMAGING_MODELS

    reads_ct = spec.name in IMAGING_MODELS
    train_ds, val_ds, test_ds = _datasets(cohort, profile, train_ids, val_ids, test_ids, reads_ct)
    first = train_ds[0]
    n_clinical = int(np.asarray(first["clinical"]).shape[-1])
    if spec.name in ("aminn", "stg", "stg_lite") and "n_lesion_features" not in spec.options:
        n_les = int(np.asarray(first["lesion_features"]).shape[-1])
        spec = replace(spec, options={**spec.options, "n_lesion_features": n_les})
    model = build_model(spec.name, n_clinical, profile.model, **spec.options)
    identity = run_identity(spec, profile, cohort, train_ids, val_ids, test_ids, seed)
    if hasattr(model, "anchor_clinical"):  # 4D-ACFNet/STAR: Cox-initialised clinical residual
        o = train_ds.outcomes
        model.anchor_clinical(
            train_ds.clinical, o["os_years"], o["os_event"],
            dfs_years=o["dfs_years"], dfs_event=o["dfs_event"],
        )  # fmt: skip
    run_dir.mkdir(parents=True, exist_ok=True)
    record = _run_record(
        spec, profile, cohort, train_ids, val_ids, test_ids, seed, epochs, n_clinical
    )
    _write_json({**record, "identity": identity}, run_dir / "run.json")
    history = fit(
        model,
        train_ds,
        val_ds,
        profile,
        run_dir,
        epochs=epochs,
        objective=spec.objective,
        loss_weights=spec.loss_weights,
        seed=seed,
        run_key=identity,
    )
    pred = predict(model, test_ds)
    pred["patient_id"] = pred["patient_id"].astype(str)
    _save_history(history, run_dir)
    from crlm_lib.predict import store_training_reference

    store_training_reference(model, cohort, profile, train_ids, train_ds.feature_stats, run_dir)
    return pred, history


def _save_history(history: Any, run_dir: Path) -> None:
    path = run_dir / "history.csv"
    if path.exists() or history is None:
        return
    frame = None
    if isinstance(history, pd.DataFrame):
        frame = history
    elif hasattr(history, "to_frame"):
        frame = history.to_frame()
    elif hasattr(history, "__dataclass_fields__"):
        try:
            frame = pd.DataFrame(asdict(history))
        except (TypeError, ValueError):
            frame = None
    if frame is not None:
        _atomic_write_csv(frame, path)


def _run_record(spec, profile, cohort, train_ids, val_ids, test_ids, seed, epochs, n_clinical):
    from crlm_lib.data.clinical import ClinicalEncoder

    encoder = ClinicalEncoder.fit(cohort.clinical.loc[list(train_ids)])
    names = encoder.feature_names
    return {
        "model": spec.name,
        "label": spec.key,
        "objective": spec.objective,
        "options": spec.options,
        "loss_weights": spec.loss_weights,
        "profile": profile.name,
        "seed": seed,
        "epochs": epochs,
        "n_clinical": n_clinical,
        "clinical_feature_names": names,
        "clinical_reference_ids": list(map(str, train_ids)),
        "clinical_encoder": encoder.to_dict(),
        "train_ids": list(map(str, train_ids)),
        "val_ids": list(map(str, val_ids)),
        "test_ids": list(map(str, test_ids)),
        "synthetic": cohort.synthetic,
    }


#: Files of a run folder that belong to one (cohort, split, configuration).
RUN_FILES: tuple[str, ...] = (
    "best.pt",
    "last.pt",
    "history.csv",
    "predictions.csv",
    "metrics.json",
    "metrics_ci.csv",
    "run.json",
)


def _sha256_json(obj: Any) -> str:
    import hashlib

    text = json.dumps(obj, sort_keys=True, default=atomic.json_default, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _image_sources(cohort: Cohort, ids: Sequence[str]) -> dict[str, dict[str, int]] | None:
    """``{patient: {SOP instance UID: file size}}`` from the preprocessing cache entries.

    ``None`` without a cache folder (cohorts built in memory, tests). Entries written before
    the cache recorded its sources give an empty dict for that patient.
    """
    from crlm_lib.data.preprocess import cache_path

    if cohort.paths is None or not cohort.paths.processed_dir.is_dir():
        return None
    out: dict[str, dict[str, int]] = {}
    for pid in ids:
        path = cache_path(cohort.paths.processed_dir, pid)
        manifest: dict[str, list[int]] = {}
        if path.is_file():
            with np.load(path, allow_pickle=False) as z:
                if "source_manifest" in z.files:
                    manifest = json.loads(str(z["source_manifest"]))
        out[pid] = {uid: int(v[0]) for uid, v in sorted(manifest.items())}
    return out


def run_identity(
    spec: ModelSpec, profile: Profile, cohort: Cohort, train_ids, val_ids, test_ids, seed: int
) -> dict[str, str]:
    """Hashes saying what a run folder was trained on; a run resumes only when all three match.

    - ``cohort``: the sorted analysis IDs, their clinical rows (every column, as CSV) and the
      identity of their source images (each cache entry's SOP instance UIDs and file sizes,
      :func:`_image_sources`; modification times are left out so that a copied cohort still
      resumes), so a changed table, patient set or image series changes it;
    - ``split``: the sorted train, validation and test IDs;
    - ``config``: model, options, objective, loss weights, seed, and the profile's
      preprocessing, model and training settings except ``epochs`` (a run may be extended) and
      ``num_workers`` (no effect on the result).

    Returns
    -------
    dict
        ``{"cohort": hex16, "split": hex16, "config": hex16}``.
    """
    ids = sorted(map(str, cohort.ids))
    rows = cohort.clinical.loc[[i for i in ids if i in cohort.clinical.index]]
    train_cfg = {
        k: v for k, v in asdict(profile.train).items() if k not in ("epochs", "num_workers")
    }
    return {
        "cohort": _sha256_json(
            {
                "ids": ids,
                "clinical": rows.to_csv(float_format="%.12g"),
                "images": _image_sources(cohort, ids),
            }
        ),
        "split": _sha256_json(
            {
                k: sorted(map(str, v))
                for k, v in (("train", train_ids), ("val", val_ids), ("test", test_ids))
            }
        ),
        "config": _sha256_json(
            {
                "model": spec.name,
                "options": spec.options,
                "objective": spec.objective,
                "loss_weights": spec.loss_weights,
                "seed": int(seed),
                "preprocess": asdict(profile.preprocess),
                "model_config": asdict(profile.model),
                "train": train_cfg,
            }
        ),
    }


def _run_dir_state(run_dir: Path, identity: dict[str, str]) -> list[str]:
    """What of ``identity`` differs from the run already in ``run_dir`` ([] = same or empty)."""
    present = [n for n in RUN_FILES if (run_dir / n).exists()]
    if not present:
        return []
    record = run_dir / "run.json"
    if not record.is_file():
        return ["run.json missing"]
    try:
        old = json.loads(record.read_text()).get("identity")
    except (json.JSONDecodeError, AttributeError):
        return ["run.json unreadable"]
    if not isinstance(old, dict):
        return ["run.json made before run identities were recorded"]
    return [k for k in identity if old.get(k) != identity[k]]


def _remove_run_files(run_dir: Path) -> None:
    for name in RUN_FILES:
        (run_dir / name).unlink(missing_ok=True)


def check_run_dir(run_dir: Path, identity: dict[str, str], restart: bool = False) -> None:
    """Refuse to resume or overwrite a run folder made on another cohort, split or config.

    Called before anything is written. With ``restart`` the folder's run files
    (:data:`RUN_FILES`) are removed instead.

    Raises
    ------
    RunMismatchError
        Naming the folder and what differs (``cohort``, ``split``, ``config``).
    """
    from crlm_lib.errors import RunMismatchError

    differs = _run_dir_state(Path(run_dir), identity)
    if not differs:
        return
    if restart:
        from crlm_lib import distributed

        rank = distributed.info()
        if rank.is_main:  # under torchrun only rank 0 removes; the others wait for it
            warnings.warn(
                f"{run_dir}: --restart: discarding the run ({', '.join(differs)})", stacklevel=2
            )
            _remove_run_files(Path(run_dir))
        distributed.barrier()
        return
    if set(differs) <= set(identity):
        what = f"a run made on another {', '.join(differs)}"
    else:
        what = f"a run that cannot be checked ({differs[0]})"
    raise RunMismatchError(
        f"{run_dir} holds {what}; resuming would train on other patients or settings. "
        "Choose another --out, or pass --restart to discard it"
    )


def _clear_stale_run(
    run_dir: Path, train_ids, val_ids, test_ids, identity: dict[str, str] | None = None
) -> None:
    """Remove checkpoints and outputs of ``run_dir`` when its ``run.json`` has other split IDs
    (or, given ``identity``, another cohort, split or configuration: :func:`run_identity`)."""
    record = run_dir / "run.json"
    if not record.is_file():
        return
    rec = json.loads(record.read_text())
    same = all(
        sorted(map(str, rec.get(key, []))) == sorted(map(str, ids))
        for key, ids in (("train_ids", train_ids), ("val_ids", val_ids), ("test_ids", test_ids))
        if key in rec
    )
    if identity is not None:
        same = same and rec.get("identity") == identity
    # runs written before the clinical encoder and training reference were stored cannot be
    # reloaded for prediction (load_run refuses them): retrain those too. A run still training
    # (no predictions.csv yet) has no training reference and is kept, so that it resumes.
    finished = (run_dir / "predictions.csv").is_file()
    complete = rec.get("model") in ANCHOR_NAMES or (
        "clinical_encoder" in rec and ("training_reference" in rec or not finished)
    )
    if same and complete:
        return
    why = "trained on another split" if not same else "stores no clinical encoder or reference"
    warnings.warn(f"{run_dir}: {why}; retraining from scratch", stacklevel=3)
    _remove_run_files(run_dir)


def _cached_fit(
    spec: ModelSpec,
    cohort: Cohort,
    profile: Profile,
    train_ids,
    val_ids,
    test_ids,
    run_dir: Path | None,
    epochs: int | None,
    seed: int,
) -> pd.DataFrame:
    """Predictions of one (model, split), reused from ``run_dir/predictions.csv`` if present.

    A run folder left by another split (the cohort or seed changed) is cleared first, so that
    the engine never resumes from a checkpoint trained on other patients.
    """
    if run_dir is not None:
        identity = None
        if not spec.is_anchor:
            identity = run_identity(spec, profile, cohort, train_ids, val_ids, test_ids, seed)
        _clear_stale_run(run_dir, train_ids, val_ids, test_ids, identity)
    if run_dir is not None and (run_dir / "predictions.csv").is_file():
        cached = _read_predictions(run_dir / "predictions.csv")
        same_ids = sorted(cached["patient_id"]) == sorted(map(str, test_ids))
        # anchors written before the beyond-horizon mass was kept out of bin 12 are refitted
        if same_ids and not (spec.is_anchor and BEYOND_COL not in cached.columns):
            return cached
    if spec.is_anchor:
        pred = fit_predict_anchor(spec.name, cohort, train_ids, test_ids, seed=seed)
    else:
        if run_dir is None:
            raise EvaluationError("torch models need a run folder")
        pred, _ = fit_predict_torch(
            spec, cohort, profile, train_ids, val_ids, test_ids, run_dir, epochs, seed
        )
    if run_dir is not None:
        _atomic_write_csv(pred, run_dir / "predictions.csv")
    return pred


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------

MetricFn = Callable[[pd.DataFrame, pd.DataFrame], dict[str, float]]


def head_metrics(
    pred: pd.DataFrame,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    heads: Sequence[str] = ("os", "dfs"),
    rule: str = "argmax",
    horizons: Sequence[float] = (1.0, 3.0, 5.0),
) -> dict[str, float]:
    """Every metric of a Predictions frame for the chosen heads (``metrics`` module functions).

    Same keys as ``metrics.all_metrics`` (``os_taa``, ``os_obs_mae``, ``os_c_uno``,
    ``os_auc_3y``, ``dfs_c_harrell`` ...), restricted to ``heads`` so the bootstrap can skip
    the recurrence head when it is not reported. ``train_outcomes`` is the training patients'
    outcomes (censoring distribution of the IPCW metrics), or for pooled CV predictions a
    mapping ``{(repeat, fold): training-fold outcomes}``.
    """
    from crlm_lib import metrics as M

    unknown = set(heads) - {"os", "dfs"}
    if unknown:
        raise EvaluationError(f"unknown head(s) {sorted(unknown)}")
    return M.all_metrics(pred, train_outcomes, rule=rule, horizons=horizons, heads=heads)


def _aligned(frames: Sequence[pd.DataFrame]) -> list[pd.DataFrame]:
    """Frames sorted by patient ID (content-defined order: results ignore the input order)."""
    return [f.sort_values("patient_id", kind="mergesort").reset_index(drop=True) for f in frames]


def bootstrap_scores(
    frames_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_fn: MetricFn | None = None,
    baseline_by_repeat: Sequence[pd.DataFrame] | None = None,
    desc: str | None = None,
    cache: dict | None = None,
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
    n_boot, seed, alpha
        Replicates, seed, 1 - confidence level.
    metric_fn : callable, optional
        ``metric_fn(pred, train_outcomes) -> dict`` (default :func:`head_metrics`).
    baseline_by_repeat : list of DataFrames, optional
        When given, the quantity is ``metric(model) - metric(baseline)`` with the same patient
        draws for both (paired bootstrap).
    cache : dict, optional
        Memo of ``metric_fn`` values keyed by (frame content, draw). Calls that share a
        ``cache`` must share ``metric_fn``, ``train_outcomes`` and ``seed``: then the paired
        differences reuse the replicate values that the per-model pass computed (the same
        seed gives the same draws), which makes them nearly free.

    Returns
    -------
    DataFrame
        Columns ``metric, estimate, low, high, n_boot`` (one row per metric). The estimate is
        the mean over repeats on all patients; a replicate draws patients with replacement
        once and applies the draw to every repeat. The predictions are not refitted in a
        replicate: the interval is conditional on the fitted models.
    """
    metric_fn = metric_fn or (lambda p, t: head_metrics(p, t))
    frames = [frames_by_repeat] if isinstance(frames_by_repeat, pd.DataFrame) else frames_by_repeat
    frames = _aligned(frames)
    base = _aligned(baseline_by_repeat) if baseline_by_repeat is not None else None
    ids = frames[0]["patient_id"].to_numpy()
    for f in frames[1:] + (base or []):
        if not np.array_equal(f["patient_id"].to_numpy(), ids):
            raise EvaluationError("frames to compare must hold the same patients")

    memo = cache if cache is not None else {}
    digest = {
        id(f): int(pd.util.hash_pandas_object(f, index=False).sum()) for f in frames + (base or [])
    }

    def score(frame: pd.DataFrame, index: np.ndarray | None, draw: int | None):
        key = (digest[id(frame)], draw)
        if key not in memo:
            sub = frame if index is None else frame.iloc[index].reset_index(drop=True)
            memo[key] = metric_fn(sub, train_outcomes)
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
        rng = np.random.default_rng(seed)
        reps = []
        it = range(n_boot)
        if desc:
            it = tqdm(it, desc=desc, leave=False)
        for _ in it:
            reps.append(value(rng.integers(0, len(ids), len(ids))))
    rows = []
    for k, e in est.items():
        v = np.array([r.get(k, math.nan) for r in reps], dtype=float)
        fin = v[np.isfinite(v)]
        if n_boot and fin.size >= 0.5 * n_boot and fin.size > 0:
            low, high = np.quantile(fin, [alpha / 2, 1 - alpha / 2])
        else:
            low = high = math.nan
        rows.append({"metric": k, "estimate": e, "low": float(low), "high": float(high)})
    out = pd.DataFrame(rows)
    out["n_boot"] = n_boot
    return out


#: Readable names of the metric keys of :func:`head_metrics`, for tables meant for people.
METRIC_LABELS: dict[str, str] = {
    "os_taa": "TAA (OS year)",
    "os_mae": "MAE (years)",
    "os_mse": "MSE (years²)",
    "os_obs_taa": "TAA, deaths observed",
    "os_obs_mae": "MAE, deaths observed (years)",
    "os_c_harrell": "C-index OS (Harrell)",
    "os_c_uno": "C-index OS (Uno)",
    "os_ibs": "IBS OS",
    "os_auc_1y": "AUC OS 1 y",
    "os_auc_3y": "AUC OS 3 y",
    "os_auc_5y": "AUC OS 5 y",
    "dfs_c_harrell": "C-index DFS (Harrell)",
    "dfs_c_uno": "C-index DFS (Uno)",
    "dfs_taa": "TAA (DFS year)",
    "dfs_mae": "MAE DFS (years)",
}


def pretty(table: pd.DataFrame) -> pd.DataFrame:
    """Rename metric keys (columns) and model keys (index) of a wide table for people."""
    out = table.rename(columns=lambda c: METRIC_LABELS.get(c, c))
    return out.rename(index=lambda k: model_label(k) if isinstance(k, str) else k)


def model_label(key: str) -> str:
    """``"acfnet-censored"`` -> ``"4D-ACFNet (censoring-aware objective)"``."""
    name, _, rest = key.partition("-")
    base = LABELS.get(name, key if name not in LABELS else name)
    if rest == "censored":
        return f"{base} (censoring-aware objective)"
    return base if not rest else key


def wide_table(
    tidy: pd.DataFrame,
    metrics: Sequence[str] = HEADLINE_METRICS,
    digits: int = 3,
    row: str = "model",
) -> pd.DataFrame:
    """Pretty table: one row per model, one column per metric, cells ``"0.712 (0.65–0.77)"``.

    Row order follows the first appearance in ``tidy`` (the oracle stays last). The interval
    is printed with two decimals to keep the tables narrow.
    """
    order = list(dict.fromkeys(tidy[row]))
    sub = tidy[tidy["metric"].isin(metrics)]

    def cell(r) -> str:
        if not np.isfinite(r["estimate"]):
            return "–"
        s = f"{r['estimate']:.{digits}f}"
        if np.isfinite(r.get("low", np.nan)) and np.isfinite(r.get("high", np.nan)):
            ci = max(digits - 1, 1)
            s += f" ({r['low']:.{ci}f}–{r['high']:.{ci}f})"
        return s

    sub = sub.assign(cell=sub.apply(cell, axis=1))
    wide = sub.pivot_table(index=row, columns="metric", values="cell", aggfunc="first")
    cols = [m for m in metrics if m in wide.columns]
    wide = wide.reindex(index=order)[cols]
    wide.columns.name = None
    return wide


# --------------------------------------------------------------------------------------------
# paper protocol
# --------------------------------------------------------------------------------------------


def _with_anchors(specs: list[ModelSpec], anchors: Sequence[str], oracle: bool, cohort: Cohort):
    names = {s.key for s in specs}
    out = [s for s in specs if s.name != "oracle"]
    out += [ModelSpec(a) for a in anchors if a not in names]
    if oracle and cohort.synthetic:
        out.append(ModelSpec("oracle"))
    return out


def run_paper_protocol(
    model_names: Iterable[str | ModelSpec],
    source: Any,
    profile: str | Profile,
    objective: str = "paper",
    options_by_name: dict[str, dict] | None = None,
    seed: int = 0,
    anchors: Sequence[str] = ("fong", "cox"),
    oracle: bool = True,
    epochs: int | None = None,
    n_boot: int | None = None,
    runs_dir: str | Path | None = None,
    protocol: str = "paper_split",
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
        ``["acfnet", "acfnet:censored"]`` puts both objectives side by side.
    source : pipeline.Study, config.Paths or Cohort
    profile : str or Profile
    objective : {"paper", "censored"}
        Default objective for names without ``:objective``.
    options_by_name : dict, optional
        ``build_model`` options per registry name.
    anchors : names of clinical anchors appended after the models (default Fong and Cox).
    oracle : bool
        Append the oracle as the LAST row when the cohort is synthetic.
    n_boot : int, optional
        Bootstrap replicates of the 95% CI over the test patients (default
        ``profile.eval.bootstrap``).

    Returns
    -------
    results : DataFrame
        Tidy: ``model, label, protocol, metric, estimate, low, high, n_test, synthetic``.
    predictions_by_model : dict[str, DataFrame]
        Test-set Predictions frame of each model (keyed by ``ModelSpec.key``).
    """
    prof = get_profile(profile)
    cohort = as_cohort(source)
    specs = _with_anchors(
        as_specs(model_names, objective, options_by_name), anchors, oracle, cohort
    )
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    train_ids, val_ids, test_ids = paper_split_ids(cohort.ids, events, seed)
    base = Path(runs_dir) if runs_dir else (cohort.paths.runs_dir if cohort.paths else None)
    n_boot = prof.eval.bootstrap if n_boot is None else n_boot
    train_out = cohort.outcomes.loc[list(train_ids)]
    horizons = prof.eval.horizons_years
    tables, preds = [], {}
    for spec in tqdm(specs, desc="paper protocol", leave=False):
        run_dir = base / protocol / f"seed{seed}" / spec.key if base is not None else None
        # anchors have no early stopping: they fit on train + val (177 patients for 197)
        anchor_train = list(train_ids) + list(val_ids) if spec.is_anchor else train_ids
        pred = _cached_fit(
            spec, cohort, prof, anchor_train, val_ids, test_ids, run_dir, epochs, seed
        )
        preds[spec.key] = pred
        tidy = bootstrap_scores(
            pred,
            train_out,
            n_boot=n_boot,
            seed=seed,
            metric_fn=lambda p, t: head_metrics(p, t, horizons=horizons),
        )
        tidy.insert(0, "model", spec.key)
        tidy.insert(1, "label", LABELS.get(spec.name, spec.name))
        tidy["protocol"] = protocol
        tidy["n_test"] = len(test_ids)
        tidy["synthetic"] = cohort.synthetic
        tables.append(tidy)
        if run_dir is not None:
            metrics = dict(zip(tidy["metric"], tidy["estimate"], strict=True))
            _write_json(metrics, run_dir / "metrics.json")
    return pd.concat(tables, ignore_index=True), preds


# --------------------------------------------------------------------------------------------
# repeated stratified k-fold CV
# --------------------------------------------------------------------------------------------


@dataclass
class CVResult:
    """Output of :func:`run_cv_protocol`.

    Attributes
    ----------
    tidy : DataFrame ``model, label, metric, estimate, low, high, repeats, folds, epochs``
    wide : DataFrame (pretty; oracle last)
    differences : DataFrame ``model, baseline, metric, estimate, low, high`` (A - baseline)
    predictions : dict[model key, list of OOF Predictions frames, one per repeat]
    """

    tidy: pd.DataFrame
    wide: pd.DataFrame
    differences: pd.DataFrame
    predictions: dict[str, list[pd.DataFrame]]


def run_cv_protocol(
    model_names: Iterable[str | ModelSpec],
    source: Any,
    profile: str | Profile,
    objective: str = "paper",
    options_by_name: dict[str, dict] | None = None,
    seed: int = 0,
    anchors: Sequence[str] = ANCHOR_NAMES,
    oracle: bool = True,
    baselines: Sequence[str] = ("fong", "cox"),
    n_boot: int | None = None,
    ci_heads: Sequence[str] = ("os", "dfs"),
    runs_dir: str | Path | None = None,
    protocol: str = "cv",
    censoring_from: str = "training_fold",
) -> CVResult:
    """Repeated stratified k-fold CV of every model, anchors and oracle, with CIs.

    Folds/repeats: ``profile.eval.cv_folds`` x ``cv_repeats`` for clinical models; image
    models use ``cv_repeats_3d`` repeats and ``cv_epochs_3d`` epochs (``repeats`` and
    ``epochs`` columns). Every repeat of a model yields one OOF prediction per patient. Each
    (model, repeat, fold) is cached in ``<runs_dir>/<protocol>/<label>/r<R>_f<F>/`` and reused.
    CV training folds hold out a stratified 10% for early stopping.

    Paired differences against ``baselines`` use the repeats both models have (the first
    ``min(R_a, R_b)``).

    ``censoring_from``: ``"training_fold"`` (default) estimates the IPCW censoring
    distribution of each test fold on its own training fold (metrics per fold, averaged);
    ``"cohort"`` uses the whole cohort for the pooled OOF predictions (the earlier choice:
    about 4x cheaper in the bootstrap, since scikit-survival is called once per repeat instead
    of once per fold, but the test patients then inform their own weights).

    Returns
    -------
    CVResult
    """
    prof = get_profile(profile)
    cohort = as_cohort(source)
    specs = _with_anchors(
        as_specs(model_names, objective, options_by_name), anchors, oracle, cohort
    )
    ev = prof.eval
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    max_rep = max(ev.cv_repeats, ev.cv_repeats_3d)
    splits = cv_split_ids(cohort.ids, events, ev.cv_folds, max_rep, seed)
    base = Path(runs_dir) if runs_dir else (cohort.paths.runs_dir if cohort.paths else None)
    n_boot = ev.bootstrap if n_boot is None else n_boot
    # IPCW censoring distribution of each test fold: its own training fold's outcomes
    if censoring_from not in ("training_fold", "cohort"):
        raise EvaluationError(
            f"censoring_from must be 'training_fold' or 'cohort', not {censoring_from!r}"
        )
    censoring = (
        {(rep, fold): cohort.outcomes.loc[[str(i) for i in tr]] for rep, fold, tr, _ in splits}
        if censoring_from == "training_fold"
        else cohort.outcomes.loc[cohort.ids]
    )
    horizons = ev.horizons_years

    def metric_fn(p, t):
        return head_metrics(p, t, heads=ci_heads, horizons=horizons)

    preds: dict[str, list[pd.DataFrame]] = {}
    info: dict[str, tuple[int, int | None]] = {}
    for spec in specs:
        image = spec.name in IMAGE_MODELS
        repeats = ev.cv_repeats_3d if image else ev.cv_repeats
        epochs = ev.cv_epochs_3d if image else None
        info[spec.key] = (repeats, epochs)
        by_rep: dict[int, list[pd.DataFrame]] = {}
        todo = [s for s in splits if s[0] < repeats]
        for rep, fold, tr, te in tqdm(todo, desc=f"CV {spec.key}", leave=False):
            run_dir = base / protocol / spec.key / f"r{rep}_f{fold}" if base else None
            tr = [str(i) for i in tr]
            val: list[str] = []
            if not spec.is_anchor:
                ev_tr = cohort.outcomes.loc[tr, "os_event"].to_numpy()
                tr, val = _inner_val_split(tr, ev_tr, seed + 1000 * rep + fold)
            pred = _cached_fit(spec, cohort, prof, tr, val, te, run_dir, epochs, seed + rep)
            pred = pred.assign(repeat=rep, fold=fold)
            by_rep.setdefault(rep, []).append(pred)
        preds[spec.key] = [pd.concat(by_rep[r], ignore_index=True) for r in sorted(by_rep)]

    tables = []
    memo: dict = {}  # one metric_fn, train_outcomes and seed: replicate values are shared
    for spec in specs:
        tidy = bootstrap_scores(
            preds[spec.key], censoring, n_boot=n_boot, seed=seed, metric_fn=metric_fn,
            desc=f"bootstrap {spec.key}", cache=memo,
        )  # fmt: skip
        tidy.insert(0, "model", spec.key)
        tidy.insert(1, "label", LABELS.get(spec.name, spec.name))
        tidy["repeats"], tidy["epochs"] = info[spec.key]
        tidy["folds"] = ev.cv_folds
        tidy["synthetic"] = cohort.synthetic
        tables.append(tidy)
    tidy_all = pd.concat(tables, ignore_index=True)

    diffs = []
    for spec in specs:
        for b in baselines:
            if b not in preds or b == spec.key or spec.name == "oracle":
                continue
            r = min(len(preds[spec.key]), len(preds[b]))
            d = paired_difference(
                preds[spec.key][:r], preds[b][:r], censoring, n_boot=n_boot, seed=seed,
                metric_fn=metric_fn, cache=memo,
            )  # fmt: skip
            d.insert(0, "model", spec.key)
            d.insert(1, "baseline", b)
            diffs.append(d)
    differences = pd.concat(diffs, ignore_index=True) if diffs else pd.DataFrame()
    if base is not None:
        out_dir = base / protocol
        _atomic_write_csv(tidy_all, out_dir / "results_tidy.csv")
        if len(differences):
            _atomic_write_csv(differences, out_dir / "differences.csv")
    return CVResult(tidy_all, wide_table(tidy_all), differences, preds)


def paired_difference(
    a_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    b_by_repeat: Sequence[pd.DataFrame] | pd.DataFrame,
    train_outcomes: pd.DataFrame | Mapping[Any, pd.DataFrame] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    metric_fn: MetricFn | None = None,
    cache: dict | None = None,
) -> pd.DataFrame:
    """Paired bootstrap of ``metric(A) - metric(B)`` over patients (same draws for both).

    Invariant to the order of the patients (frames are aligned by patient ID). An interval
    that excludes 0 marks a difference at level ``alpha``; for ``mae``/``mse``/``ibs`` a
    negative difference favours A.

    Returns
    -------
    DataFrame ``metric, estimate, low, high, n_boot``.
    """
    a = [a_by_repeat] if isinstance(a_by_repeat, pd.DataFrame) else list(a_by_repeat)
    b = [b_by_repeat] if isinstance(b_by_repeat, pd.DataFrame) else list(b_by_repeat)
    return bootstrap_scores(
        a, train_outcomes, n_boot, seed, alpha, metric_fn=metric_fn, baseline_by_repeat=b,
        cache=cache,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# calibration and Kaplan–Meier by predicted risk
# --------------------------------------------------------------------------------------------


def _curve_and_risk(pred: pd.DataFrame, head: str) -> tuple[np.ndarray, np.ndarray]:
    """Event-free probability at year ends ``[N, 12]`` and risk ``[N]`` of a frame's head."""
    from crlm_lib import metrics as M

    if head == "os":
        p = pred[SURV_COLS].to_numpy(np.float64)
        return M.survival_curve(p), M.risk_from_survival(p)
    q = pred[REC_COLS].to_numpy(np.float64)
    return M.recurrence_free_curve(q), M.risk_from_recurrence(q)


def default_n_groups(n: int) -> int:
    """Risk groups of the calibration table: deciles when ``n >= 100``, tertiles otherwise.

    Choice: with fewer than 100 patients a decile holds < 10 patients and its Kaplan–Meier
    estimate at 3–5 years is mostly noise; tertiles keep >= ~7 per group for the 20-patient
    test set of the paper protocol.
    """
    return 10 if n >= 100 else 3


def calibration_table(
    predictions: pd.DataFrame,
    horizon_years: Sequence[float] = (1.0, 3.0, 5.0),
    groups: int | None = None,
    head: str = "os",
) -> pd.DataFrame:
    """Predicted vs observed (Kaplan–Meier) event risk at each horizon per risk group.

    Patients are ranked by their predicted risk *at that horizon* (``1 - S(h)``) and cut into
    ``groups`` quantile groups (default :func:`default_n_groups`). Per group: mean predicted
    risk and ``1 - KM(h)`` with its 95% confidence interval (lifelines, Greenwood exponential
    formula). ``S(h)`` between year ends is the step function of ``metrics.survival_curve``.

    Parameters
    ----------
    predictions : DataFrame (Predictions frame; pooled OOF for CV)
    horizon_years : years
    groups : int, optional
    head : {"os", "dfs"}

    Returns
    -------
    DataFrame
        ``horizon_years, group (1 = lowest risk), n, n_events, predicted, observed,
        observed_low, observed_high``; ``len(horizon_years) * groups`` rows.
    """
    from lifelines import KaplanMeierFitter

    curve, _ = _curve_and_risk(predictions, head)
    time = predictions[f"{head}_years"].to_numpy(float)
    event = predictions[f"{head}_event"].to_numpy(int)
    n = len(predictions)
    g = groups or default_n_groups(n)
    rows = []
    for h in horizon_years:
        k = int(np.floor(h))
        s_h = np.ones(n) if k < 1 else curve[:, min(k, N_YEARS) - 1]
        risk_h = 1.0 - s_h
        ranks = pd.Series(risk_h).rank(method="first").to_numpy()
        grp = np.minimum((ranks - 1) * g // n, g - 1).astype(int)
        for j in range(g):
            m = grp == j
            kmf = KaplanMeierFitter().fit(time[m], event[m])
            s = float(kmf.survival_function_at_times([h]).iloc[0])
            ci = kmf.confidence_interval_survival_function_
            idx = ci.index.searchsorted(h, side="right") - 1
            lo, hi = ci.iloc[max(idx, 0)].to_numpy(float) if idx >= 0 else (1.0, 1.0)
            rows.append(
                {
                    "horizon_years": float(h),
                    "group": j + 1,
                    "n": int(m.sum()),
                    "n_events": int(event[m].sum()),
                    "predicted": float(risk_h[m].mean()),
                    "observed": 1.0 - s,
                    "observed_low": 1.0 - float(hi),
                    "observed_high": 1.0 - float(lo),
                }
            )
    return pd.DataFrame(rows)


def plot_calibration(table: pd.DataFrame, title: str = "", ax=None):
    """Calibration plot: predicted vs Kaplan–Meier observed risk per group, one panel per horizon.

    Returns the matplotlib Figure (axes in probability units, 0..1; the diagonal is perfect
    calibration).
    """
    import matplotlib.pyplot as plt

    horizons = sorted(table["horizon_years"].unique())
    if ax is None:
        fig, axes = plt.subplots(
            1, len(horizons), figsize=(3.6 * len(horizons), 3.6), squeeze=False
        )
        axes = axes[0]
    else:
        axes, fig = np.atleast_1d(ax), np.atleast_1d(ax)[0].figure
    for a, h in zip(axes, horizons, strict=False):
        t = table[table["horizon_years"] == h]
        yerr = np.vstack(
            [t["observed"] - t["observed_low"], t["observed_high"] - t["observed"]]
        ).clip(0)
        a.errorbar(t["predicted"], t["observed"], yerr=yerr, fmt="o", capsize=3)
        a.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        a.set_xlim(0, 1)
        a.set_ylim(0, 1)
        a.set_xlabel(f"predicted risk by {h:g} years")
        a.set_ylabel(f"observed risk by {h:g} years (Kaplan–Meier)")
        a.set_title(f"{h:g}-year horizon")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


@dataclass
class KMByRisk:
    """Kaplan–Meier curves by predicted-risk group: ``table`` (patient, group), log-rank test."""

    groups: pd.DataFrame
    p_value: float
    test_statistic: float
    figure: Any = None


def km_by_predicted_risk(
    predictions: pd.DataFrame,
    split: str = "median",
    head: str = "os",
    plot: bool = True,
    title: str = "",
) -> KMByRisk:
    """Kaplan–Meier curves of patients split by predicted risk, with a log-rank test.

    Risk = ``metrics.risk_from_survival`` (OS head) or ``risk_from_recurrence`` (DFS head).
    ``split="median"``: low / high (above the median); ``"tertiles"``: low / mid / high.
    The p-value is the lifelines log-rank test (``multivariate_logrank_test`` across groups).

    Returns
    -------
    KMByRisk
        ``groups`` (``patient_id, risk, group, time_years, event``), ``p_value``,
        ``test_statistic`` and a matplotlib ``figure`` (x: years after resection; y: survival
        probability) when ``plot``.
    """
    from lifelines import KaplanMeierFitter
    from lifelines.statistics import multivariate_logrank_test

    _, risk = _curve_and_risk(predictions, head)
    n_g = {"median": 2, "tertiles": 3}.get(split)
    if n_g is None:
        raise EvaluationError(f"split must be 'median' or 'tertiles', not {split!r}")
    names = ["low", "high"] if n_g == 2 else ["low", "mid", "high"]
    ranks = pd.Series(risk).rank(method="first").to_numpy()
    grp = np.minimum((ranks - 1) * n_g // len(risk), n_g - 1).astype(int)
    time = predictions[f"{head}_years"].to_numpy(float)
    event = predictions[f"{head}_event"].to_numpy(int)
    labels = np.array(names)[grp]
    res = multivariate_logrank_test(time, labels, event)
    table = pd.DataFrame(
        {
            "patient_id": predictions["patient_id"].to_numpy(),
            "risk": risk,
            "group": labels,
            "time_years": time,
            "event": event,
        }
    )
    fig = None
    if plot:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5.5, 4))
        for name in names:
            m = labels == name
            KaplanMeierFitter(label=f"{name} predicted risk (n={m.sum()})").fit(
                time[m], event[m]
            ).plot_survival_function(ax=ax, ci_show=True)
        what = "overall survival" if head == "os" else "disease-free survival"
        ax.set_xlabel("years after hepatic resection")
        ax.set_ylabel(f"{what} probability")
        ax.set_ylim(0, 1.02)
        ax.set_title(title or f"Kaplan–Meier by predicted risk (log-rank p = {res.p_value:.3g})")
        fig.tight_layout()
    return KMByRisk(table, float(res.p_value), float(res.test_statistic), fig)


# --------------------------------------------------------------------------------------------
# published numbers (data, never mixed into our rows)
# --------------------------------------------------------------------------------------------


def _load_published() -> tuple[dict[str, list[dict[str, Any]]], dict[str, str]]:
    """``resources/published.csv`` (long form) -> table -> rows ``{"model", metric: value}`` in
    the file's order, and table -> source."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    for rec in resources.read_rows("published.csv"):
        key = rec["table"]
        sources.setdefault(key, rec["source"])
        row = tables.setdefault(key, {}).setdefault(rec["model"], {"model": rec["model"]})
        row[rec["metric"]] = float(rec["value"])
    return {key: list(rows.values()) for key, rows in tables.items()}, sources


#: Published reference numbers, read from ``crlm_lib/resources/published.csv``: table key ->
#: rows ``{"model": ..., metric: value}`` (values as the papers print them).
PUBLISHED: dict[str, list[dict[str, Any]]]
PUBLISHED, _SOURCES = _load_published()


def published_table(key: str) -> pd.DataFrame:
    """One published table as a DataFrame with a ``source`` column (numbers as printed).

    Keys: ``acfnet_table1``, ``acfnet_table2``, ``star_table1``, ``star_table2``, ``stg``,
    ``dypro``, ``radiomics``. Published TAA/MSE/MAE come from one 20-patient test split and
    ignore censoring; they are shown beside, never inside, our tables.
    """
    if key not in PUBLISHED:
        raise KeyError(f"unknown published table {key!r}; choose one of {sorted(PUBLISHED)}")
    frame = pd.DataFrame(PUBLISHED[key])
    frame.insert(0, "source", _SOURCES[key])
    return frame


def published_all() -> pd.DataFrame:
    """Every published number in long form: ``source, table, model, metric, value``."""
    rows = []
    for key in PUBLISHED:
        t = published_table(key)
        for _, r in t.iterrows():
            for m in t.columns:
                if m in ("source", "model") or pd.isna(r[m]):
                    continue
                rows.append(
                    {
                        "source": r["source"],
                        "table": key,
                        "model": r["model"],
                        "metric": m,
                        "value": float(r[m]),
                    }
                )
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# CLI hooks (crlm train / evaluate / predict)
# --------------------------------------------------------------------------------------------


def _cli_cohort(profile: str, cohort_dir, clinical) -> tuple[Profile, Cohort]:
    from crlm_lib.pipeline import ensure_data

    prof = get_profile(profile)
    paths = ensure_data(
        prof, cohort_dir, clinical, seed=prof.seed, verbose=False, show_exclusions=True
    )
    return prof, as_cohort(paths)


def train_cli(
    model_name: str,
    profile: str,
    cohort_dir: str | Path | None,
    clinical: str | Path | None,
    run_dir: Path,
    epochs: int | None,
    seed: int,
    objective: str,
    restart: bool = False,
) -> int:
    """``crlm train``: train one model on the 8:1:1 split and write the run folder.

    Writes ``run.json``, checkpoints and ``history.csv`` (engine), ``predictions.csv`` (test
    split) and ``metrics.json`` (``taa``, ``mae``, ``mse``, ``c_index`` = Harrell's OS C-index,
    plus every metric of :func:`head_metrics`). Anchors (``fong``, ``cox``, ``rsf``) work too.

    An existing run folder is resumed only when its cohort, split and configuration hashes
    (:func:`run_identity`, kept in ``run.json``) match; otherwise nothing is written and
    :class:`~crlm_lib.errors.RunMismatchError` is raised, unless ``restart`` (``--restart``)
    discards the old run first.

    Raises
    ------
    ArgumentError
        For ``epochs`` < 1.
    RunMismatchError
        For a run folder made on another cohort, split or configuration.
    """
    from crlm_lib.errors import ArgumentError

    if epochs is not None and int(epochs) < 1:
        raise ArgumentError(f"--epochs must be at least 1, got {epochs}")
    prof, cohort = _cli_cohort(profile, cohort_dir, clinical)
    run_dir = Path(run_dir)
    spec = ModelSpec(model_name, objective=objective)
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    tr, va, te = paper_split_ids(cohort.ids, events, seed)
    identity = run_identity(spec, prof, cohort, tr, va, te, seed)
    check_run_dir(run_dir, identity, restart=restart)
    if spec.is_anchor:
        run_dir.mkdir(parents=True, exist_ok=True)
        pred = fit_predict_anchor(spec.name, cohort, list(tr) + list(va), te, seed=seed)
        _write_json({"model": spec.name, "profile": prof.name, "seed": seed,
                     "train_ids": list(tr) + list(va), "test_ids": list(te),
                     "identity": identity},
                    run_dir / "run.json")  # fmt: skip
    else:
        pred, _ = fit_predict_torch(spec, cohort, prof, tr, va, te, run_dir, epochs, seed)
    _atomic_write_csv(pred, run_dir / "predictions.csv")
    m = _cli_metrics(pred, cohort.outcomes.loc[list(tr)], prof)
    _write_json(m, run_dir / "metrics.json")
    print(
        f"{model_name}: test TAA {m['taa']:.3f}  MAE {m['mae']:.3f}  MSE {m['mse']:.3f}  "
        f"C (Harrell, OS) {m['c_index']:.3f}  -> {run_dir}"
    )
    return 0


def _cli_metrics(pred: pd.DataFrame, train_out: pd.DataFrame, prof: Profile) -> dict[str, float]:
    m = head_metrics(pred, train_out, horizons=prof.eval.horizons_years)
    m.update(taa=m["os_taa"], mae=m["os_mae"], mse=m["os_mse"], c_index=m["os_c_harrell"])
    return m


def evaluate_cli(
    run_dir: Path, profile: str, cohort_dir: str | Path | None, clinical: str | Path | None
) -> int:
    """``crlm evaluate``: rescore a run's ``predictions.csv`` (with bootstrap CIs)."""
    prof, cohort = _cli_cohort(profile, cohort_dir, clinical)
    run_dir = Path(run_dir)
    path = run_dir / "predictions.csv"
    if not path.is_file():
        raise EvaluationError(f"{path} not found: train the run first (crlm train)")
    pred = _read_predictions(path)
    record = (
        json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    )
    train_ids = record.get("train_ids") or sorted(set(cohort.ids) - set(pred["patient_id"]))
    train_out = cohort.outcomes.loc[[i for i in train_ids if i in cohort.outcomes.index]]
    tidy = bootstrap_scores(pred, train_out, n_boot=prof.eval.bootstrap, seed=prof.seed)
    _atomic_write_csv(tidy, run_dir / "metrics_ci.csv")
    print(wide_table(tidy.assign(model=run_dir.name)).T.to_string())
    return 0


# --------------------------------------------------------------------------------------------
# the papers' tables: ablation rows, comparison tables beside the published numbers
# --------------------------------------------------------------------------------------------

_A_OFF = {"attention4d": False, "reconstruction": False}

#: Ablation rows of 4D-ACFNet Table 2 and STAR Table 2 (key, display name, spec, published rows).
#: A = 4D attention, B = alignment, C = disentanglement, D = STAR's reconstruction branch with the
#: reconstruction-normalised alignment (our reading). 4D-ACFNet always has the reconstruction
#: branch when A is on; STAR's "A + B" row is read as A + B without D. The base "3D-CNN" row is
#: image-only (``clinical=False``): the papers' baseline has "no multimodal fusion" (STAR
#: section 4.4), so B is the row that brings in the clinical path with the alignment. Row
#: "A + B + C (L_dis cross-correlation)" reports the scale-correct disentanglement
#: (``losses.cross_correlation_loss``) beside Eq. (4), which barely acts at these widths.
ABLATION_ROWS: tuple[tuple[str, str, ModelSpec, dict[str, str]], ...] = (
    (
        "abl-3dcnn-image",
        "3D-CNN",
        ModelSpec(
            "acfnet",
            "abl-3dcnn-image",
            options={**_A_OFF, "clinical": False, "align": False, "disentangle": False},
        ),
        {"acfnet_table2": "3D-CNN", "star_table2": "3D-CNN"},
    ),
    (
        "abl-3dcnn-b",
        "3D-CNN + B",
        ModelSpec("acfnet", "abl-3dcnn-b", options={**_A_OFF, "align": True, "disentangle": False}),
        {"acfnet_table2": "3D-CNN + Alignment", "star_table2": "3D-CNN + B"},
    ),
    (
        "abl-ab-acfnet",
        "A + B (4D-ACFNet: with reconstruction)",
        ModelSpec("acfnet", "abl-ab-acfnet", options={"disentangle": False}),
        {"acfnet_table2": "4D attention + Alignment"},
    ),
    (
        "abl-ab-star",
        "A + B (STAR: without D)",
        ModelSpec("acfnet", "abl-ab-star", options={"disentangle": False, "reconstruction": False}),
        {"star_table2": "A + B"},
    ),
    (
        "abl-3dcnn-bc",
        "3D-CNN + B + C",
        ModelSpec("acfnet", "abl-3dcnn-bc", options={**_A_OFF, "align": True, "disentangle": True}),
        {
            "acfnet_table2": "3D-CNN + Alignment + Disentanglement",
            "star_table2": "3D-CNN + B + C",
        },
    ),
    (
        "acfnet",
        "A + B + C (full 4D-ACFNet)",
        ModelSpec("acfnet"),
        {"acfnet_table2": "4D attention + Alignment + Disentanglement (full)"},
    ),
    (
        "abl-acfnet-xcorr",
        "A + B + C (L_dis cross-correlation)",
        ModelSpec("acfnet", "abl-acfnet-xcorr", options={"dis_mode": "xcorr"}),
        {},
    ),
    (
        "star",
        "A + B + C + D (full STAR)",
        ModelSpec("star"),
        {"star_table2": "A + B + C + D (full STAR)"},
    ),
)

#: Registry name -> published row name, per published table.
PUBLISHED_ROWS: dict[str, dict[str, str]] = {
    "acfnet_table1": {
        "cnn3d": "3D CNN only",
        "cnn3d_lstm": "3D CNN + LSTM",
        "acfnet": "4D spatiotemporal attention",
    },
    "star_table1": {
        "star": "STAR",
        "aminn": "AMINN",
        "resnet18_3d": "3D ResNet-18",
        "resnet34_3d": "3D ResNet-34",
        "resnet50_3d": "3D ResNet-50",
    },
    "stg": {"stg": "STG"},
}


def ablation_specs() -> list[ModelSpec]:
    """The :data:`ABLATION_ROWS` as specs for :func:`run_paper_protocol` (cache keys reuse the
    full 4D-ACFNet and STAR runs of notebooks 02 and 04)."""
    return [spec for _, _, spec, _ in ABLATION_ROWS]


def _ours(tidy: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    return wide_table(tidy, metrics=metrics).rename(
        columns={m: f"ours: {METRIC_LABELS.get(m, m)}" for m in metrics}
    )


def _published_cell(key: str, row: str) -> str | None:
    """``"0.7000 / 2.5750 / 1.1250"`` (TAA / MSE / MAE, "–" where not reported)."""
    pub = published_table(key)
    hit = pub[pub["model"] == row]
    if hit.empty:
        return None
    r = hit.iloc[0]
    vals = [r.get(m) for m in ("taa", "mse", "mae")]
    return " / ".join(f"{v:.4f}" if v is not None and pd.notna(v) else "–" for v in vals)


_PUBLISHED_COLUMN = "published on the real cohort: TAA / MSE / MAE"


def ablation_table(
    tidy: pd.DataFrame, metrics: Sequence[str] = ("os_taa", "os_mse", "os_mae", "os_c_harrell")
) -> pd.DataFrame:
    """Our ablation rows (95% CIs) beside both papers' Table 2 (published, real cohort)."""
    ours = _ours(tidy, metrics)
    rows = []
    for key, name, _, published in ABLATION_ROWS:
        if key not in ours.index:
            continue
        row = {"configuration": name, **ours.loc[key].to_dict()}
        for table, pub_row in published.items():
            paper = "4D-ACFNet" if table.startswith("acfnet") else "STAR"
            row[f"published, {paper} Table 2: TAA / MSE / MAE"] = _published_cell(table, pub_row)
        rows.append(row)
    for key in ours.index:
        if key == "oracle":
            rows.append({"configuration": LABELS["oracle"], **ours.loc[key].to_dict()})
    return pd.DataFrame(rows).set_index("configuration").fillna("–")


def comparison_table(
    tidy: pd.DataFrame,
    published_key: str,
    metrics: Sequence[str] = ("os_taa", "os_mse", "os_mae", "os_c_harrell"),
) -> pd.DataFrame:
    """One comparison table: our rows (95% CIs) with the published numbers of ``published_key``
    (and of STG for its rows) in their own columns, never mixed into ours."""
    ours = _ours(tidy, metrics)
    out = []
    for key in ours.index:
        row = {"model": model_label(key)}
        row.update(ours.loc[key].to_dict())
        for table in (published_key, "stg"):
            pub_row = PUBLISHED_ROWS.get(table, {}).get(key)
            if pub_row:
                row[_PUBLISHED_COLUMN] = _published_cell(table, pub_row)
        out.append(row)
    return pd.DataFrame(out).set_index("model").fillna("–")


def parameter_table(source: Any, profile: str | Profile) -> pd.DataFrame:
    """Trainable parameters of every registered model at ``profile``'s widths.

    Input widths (clinical features, per-lesion features) are read from the cohort's first
    patient, so the counts are those of the models the notebooks train.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.models import MODEL_NAMES, build_model, count_parameters

    prof = get_profile(profile)
    cohort = as_cohort(source)
    ds = CRLMDataset(cohort.paths.processed_dir, cohort.clinical, cohort.ids[:1], prof)
    item = ds[0]
    n_clin = int(np.asarray(item["clinical"]).shape[-1])
    n_les = int(np.asarray(item["lesion_features"]).shape[-1])
    from crlm_lib.models.common import separable_param_counts

    c = 2 * prof.model.width
    block = separable_param_counts(c, c)
    sep, full, two = block["separable"], block["full_4d"], block["two_3d"]
    rows = [
        {
            "what": f"one block, {c}→{c} channels",
            "model": "separable: 3x3x3 spatial + 3 temporal",
            "parameters": sep,
            "note": f"{100 * (1 - sep / full):.1f}% fewer than a full 4D kernel, "
            f"{100 * (1 - sep / two):.1f}% fewer than 3x3x3 + 3x3x3 (paper: 41%)",
        },
        {"what": f"one block, {c}→{c} channels", "model": "full 3x3x3x3 kernel",
         "parameters": full, "note": ""},
        {"what": f"one block, {c}→{c} channels", "model": "3x3x3 + 3x3x3",
         "parameters": two, "note": ""},
    ]  # fmt: skip
    for name in MODEL_NAMES:
        opts = {"n_lesion_features": n_les} if name in ("aminn", "stg", "stg_lite") else {}
        model = build_model(name, n_clin, prof.model, **opts)
        rows.append(
            {"what": "whole model", "model": LABELS.get(name, name),
             "parameters": count_parameters(model), "note": ""}
        )  # fmt: skip
    table = pd.DataFrame(rows).set_index(["what", "model"])
    whole = table.xs("whole model")
    stg, lite = whole.loc[LABELS["stg"], "parameters"], whole.loc[LABELS["stg_lite"], "parameters"]
    table.loc[("whole model", LABELS["stg_lite"]), "note"] = (
        f"{100 * (1 - lite / stg):.2f}% fewer than STG (paper: 78.55%)"
    )
    return table


def paired_table(
    differences: pd.DataFrame,
    metrics: Sequence[str] = ("os_c_harrell", "os_c_uno", "dfs_c_harrell"),
    digits: int = 3,
) -> pd.DataFrame:
    """Pretty paired differences: one row per (model, anchor), cells ``"+0.041 (-0.01–0.09)"``."""
    if differences.empty:
        return pd.DataFrame()
    sub = differences[differences["metric"].isin(metrics)].copy()
    sub["cell"] = [
        "–" if not np.isfinite(e) else f"{e:+.{digits}f} ({lo:+.{digits}f} to {hi:+.{digits}f})"
        for e, lo, hi in zip(sub["estimate"], sub["low"], sub["high"], strict=True)
    ]
    sub["comparison"] = [
        f"{LABELS.get(m.split('-')[0], m)}{'' if '-' not in m else ' (' + m + ')'}"
        f" − {LABELS.get(b, b)}"
        for m, b in zip(sub["model"], sub["baseline"], strict=True)
    ]
    order = list(dict.fromkeys(sub["comparison"]))
    wide = sub.pivot_table(index="comparison", columns="metric", values="cell", aggfunc="first")
    wide = wide.reindex(index=order)[[m for m in metrics if m in wide.columns]]
    wide.columns = [f"Δ {m.replace('_', ' ')}" for m in wide.columns]
    return wide


def pooled_predictions(cv: CVResult, key: str, repeat: int = 0) -> pd.DataFrame:
    """Out-of-fold predictions of model ``key`` in CV repeat ``repeat`` (one row per patient)."""
    if key not in cv.predictions:
        raise EvaluationError(f"no CV predictions for {key!r}; have {sorted(cv.predictions)}")
    return cv.predictions[key][repeat]


def environment_table(source: Any) -> pd.DataFrame:
    """Software versions, hardware, profile, seed and notebook timings of this build."""
    import platform

    import torch

    rows: dict[str, str] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "processor cores": str(os.cpu_count()),
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)",
    }
    for pkg in (
        "torch",
        "monai",
        "torchio",
        "torch_geometric",
        "pydicom",
        "highdicom",
        "SimpleITK",
        "lifelines",
        "sksurv",
        "shap",
        "captum",
        "numpy",
        "pandas",
    ):
        try:
            mod = __import__(pkg)
            rows[pkg] = str(getattr(mod, "__version__", "?"))
        except ImportError:
            rows[pkg] = "not installed"
    cohort = as_cohort(source)
    if cohort.paths is not None:
        rows["data"] = "synthetic cohort" if cohort.synthetic else "real TCIA cohort"
        rows["profile"] = cohort.paths.profile
        times = cohort.paths.results_dir / "notebook_times.csv"
        if times.is_file():
            for r in pd.read_csv(times).itertuples():
                rows[f"time: {r.notebook}"] = f"{r.seconds / 60:.1f} min"
    return pd.DataFrame({"value": rows})


#: TRIPOD+AI (Collins et al., BMJ 2024) items, condensed, with where this manuscript meets them
#: (``item``, ``topic``, ``where met / why not``), read from ``crlm_lib/resources/tripod_ai.csv``.
TRIPOD_AI: tuple[tuple[str, str, str], ...] = tuple(
    (r["item"], r["topic"], r["where met / why not"]) for r in resources.read_rows("tripod_ai.csv")
)


def tripod_checklist() -> pd.DataFrame:
    """The TRIPOD+AI checklist items with where this manuscript meets them (or why not)."""
    return pd.DataFrame(TRIPOD_AI, columns=["item", "topic", "where met / why not"]).set_index(
        "item"
    )


@dataclass
class LoadedRun:
    """A trained run reloaded from its folder (see :func:`load_run`).

    Attributes
    ----------
    model : torch.nn.Module
        The registry model with the best checkpoint's weights, in eval mode.
    record : dict
        ``run.json``: model name, options, objective, profile, seed, split IDs, clinical feature
        names and reference IDs.
    train_ds, test_ds : CRLMDataset
        The run's training and test patients, clinical features standardised with the run's
        training statistics (no augmentation).
    """

    model: Any
    record: dict
    train_ds: Any
    test_ds: Any


def stored_encoder(record: dict, where: str | Path = "run.json"):
    """The :class:`~crlm_lib.data.clinical.ClinicalEncoder` stored in a run record.

    Raises
    ------
    EvaluationError
        When the run has none (trained before encoders were stored): standardising with any
        other rows' statistics (e.g. the test set's own) would shift every prediction.
    """
    from crlm_lib.data.clinical import ClinicalEncoder

    if not record.get("clinical_encoder"):
        raise EvaluationError(
            f"{where}: the run stores no clinical encoder (training means, SDs, indicator "
            "columns), so new patients cannot be encoded as in training; retrain the run"
        )
    return ClinicalEncoder.from_dict(record["clinical_encoder"])


def load_run(run_dir: str | Path, source: Any, profile: str | Profile) -> LoadedRun:
    """Reload a trained torch run (``run.json`` + ``best.pt``, else ``last.pt``).

    Parameters
    ----------
    run_dir : path
        A run folder written by :func:`fit_predict_torch` (``crlm train``, the protocols).
    source : pipeline.Study, config.Paths or Cohort
        The cohort the run was trained on (its preprocessing cache is read).
    profile : str or Profile
        Sizes of the model (must be the run's).

    Raises
    ------
    EvaluationError
        When the folder holds no ``run.json``, no stored clinical encoder or no checkpoint, or
        belongs to an anchor.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.models import build_model
    from crlm_lib.train import load_checkpoint

    prof = get_profile(profile)
    cohort = as_cohort(source)
    run_dir = Path(run_dir)
    rec_path = run_dir / "run.json"
    if not rec_path.is_file():
        raise EvaluationError(f"{rec_path} not found: not a run folder")
    rec = json.loads(rec_path.read_text())
    if rec["model"] in ANCHOR_NAMES:
        raise EvaluationError(f"{run_dir} is a clinical anchor's run: nothing to reload")
    model = build_model(rec["model"], int(rec["n_clinical"]), prof.model, **rec["options"])
    ckpt = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    if not ckpt.is_file():
        raise EvaluationError(f"no checkpoint (best.pt / last.pt) in {run_dir}")
    load_checkpoint(model, ckpt)
    model.eval()
    kw = {"clinical_encoder": stored_encoder(rec, rec_path)}
    pdir = cohort.paths.processed_dir
    train_ids = [i for i in rec.get("train_ids", []) if i in cohort.clinical.index]
    test_ids = [i for i in rec.get("test_ids", []) if i in cohort.clinical.index]
    stats = rec.get("lesion_feature_stats")
    if stats is not None:
        kw["feature_stats"] = {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}
    train_ds = CRLMDataset(pdir, cohort.clinical, train_ids, prof, **kw)
    # the test lesions are standardised with the training lesions' statistics, never their own
    kw["feature_stats"] = train_ds.feature_stats
    test_ds = CRLMDataset(pdir, cohort.clinical, test_ids, prof, **kw)
    return LoadedRun(model=model, record=rec, train_ds=train_ds, test_ds=test_ds)


def predict_cli(
    run_dir: Path,
    profile: str,
    cohort_dir: str | Path | None,
    clinical: str | Path | None,
    out: Path,
) -> int:
    """``crlm predict`` without ``--patient``: year-by-year predictions of a trained run for
    every preprocessed patient of a cohort (outcomes required; for new patients without
    follow-up use ``--patient``, :func:`crlm_lib.predict.predict_new`).

    Reloads the model from ``run.json`` and the best checkpoint; clinical features are encoded
    with the run's stored encoder (:func:`stored_encoder`), lesion features with the run's
    training statistics. Probabilities are written with 3 decimals.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.train import predict

    prof, cohort = _cli_cohort(profile, cohort_dir, clinical)
    run_dir = Path(run_dir)
    rec_path = run_dir / "run.json"
    if not rec_path.is_file():
        raise EvaluationError(f"{rec_path} not found: not a run folder")
    rec = json.loads(rec_path.read_text())
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


__all__ = [
    "ANCHOR_NAMES",
    "IMAGE_MODELS",
    "PUBLISHED",
    "CVResult",
    "Cohort",
    "EvaluationError",
    "KMByRisk",
    "METRIC_LABELS",
    "pretty",
    "model_label",
    "paired_table",
    "pooled_predictions",
    "environment_table",
    "tripod_checklist",
    "ABLATION_ROWS",
    "ablation_specs",
    "ablation_table",
    "comparison_table",
    "parameter_table",
    "LoadedRun",
    "ModelSpec",
    "as_cohort",
    "as_specs",
    "bootstrap_scores",
    "calibration_table",
    "default_n_groups",
    "evaluate_cli",
    "fit_predict_anchor",
    "fit_predict_torch",
    "head_metrics",
    "km_by_predicted_risk",
    "load_run",
    "stored_encoder",
    "paired_difference",
    "plot_calibration",
    "predict_cli",
    "published_all",
    "published_table",
    "run_cv_protocol",
    "run_paper_protocol",
    "train_cli",
    "wide_table",
]
