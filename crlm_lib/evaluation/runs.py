"""One model on one split, and its run folder.

Anchors are fitted in memory (:func:`fit_predict_anchor`); torch models train into a run folder
(:func:`fit_predict_torch`, ``run.json`` + checkpoints + ``history.csv``, every file through its
one writer, :class:`~crlm_lib.runfolder.RunFolder`) whose identity
(:func:`run_identity`: cohort, split and configuration hashes) decides whether it may resume
(:func:`check_run_dir` for ``crlm train``, :func:`_clear_stale_run` inside the protocols).
:func:`_cached_fit` reuses a finished run's ``predictions.csv``; :func:`load_run` reloads a
trained model with its stored clinical encoder (:func:`stored_encoder`)."""

from __future__ import annotations

import functools
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.config import PROFILES, Paths, Profile, get_profile
from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.evaluation.cohort import Cohort, as_cohort, cohort_profile
from crlm_lib.evaluation.specs import (
    ANCHOR_NAMES,
    IMAGE_ORACLE,
    VOLUMETRIC_ANCHORS,
    ModelSpec,
    Split,
)
from crlm_lib.models.clinical import (
    CoxPH,
    FongScore,
    Oracle,
    RandomSurvivalForest,
)
from crlm_lib.runfolder import PERMUTED_FILE, RUN_FILES, STEP0_FILE, RunFolder
from crlm_lib.training_reference import store_training_reference
from crlm_lib.types import BEYOND_COL, PATIENT_ID

__all__ = [
    "N_PERMUTATIONS",
    "PERMUTED_FILE",
    "RUN_FILES",
    "RUN_REVISION",
    "STEP0_FILE",
    "LoadedRun",
    "RunProgress",
    "check_run_dir",
    "fit_predict_anchor",
    "fit_predict_torch",
    "load_run",
    "permuted_predictions",
    "read_run_record",
    "require_finished",
    "resume_command",
    "run_identity",
    "run_progress",
    "step0_predictions",
    "stored_encoder",
]


def fit_predict_anchor(
    name: str,
    cohort: Cohort,
    train_ids: Sequence[str],
    test_ids: Sequence[str],
    seed: int = 0,
) -> pd.DataFrame:
    """Fit a clinical anchor on ``train_ids`` (OS and DFS) and predict ``test_ids``.

    ``fong`` reads ``clinrisk_score``; ``cox`` and ``rsf`` read ``encode_predictors`` features
    standardised with the training rows; ``cox_vol`` the SEG volumetrics
    (``data.preprocess.volumetrics``) standardised with the training rows, ``cox_clinvol`` both,
    ``cox_clinrad`` both and the tumours' first-order HU (``data.preprocess.tumour_first_order``);
    ``cox_trueimg`` the clinical features and the generator's true image quantities (synthetic
    only); ``oracle`` looks up the true curves.
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
    elif name in ("cox", "rsf", "cox_vol", "cox_clinvol", "cox_clinrad", IMAGE_ORACLE):
        from crlm_lib.data.clinical import encode_predictors

        ref = cohort.clinical.loc[train_ids]
        x_tr, _ = encode_predictors(ref, reference=ref)
        x_te, _ = encode_predictors(cohort.clinical.loc[test_ids], reference=ref)
        if name in VOLUMETRIC_ANCHORS or name == IMAGE_ORACLE:
            v_tr, v_te = _image_features(name, cohort, train_ids, test_ids)
            keep = name != "cox_vol"
            x_tr = np.hstack([x_tr, v_tr]) if keep else v_tr
            x_te = np.hstack([x_te, v_te]) if keep else v_te
        model = RandomSurvivalForest(random_state=seed) if name == "rsf" else CoxPH()
    else:
        raise EvaluationError(f"unknown anchor {name!r}; choose one of {ANCHOR_NAMES}")
    model.fit_outcomes(x_tr, out_tr)
    return model.predict_frame(x_te, test_ids, cohort.outcomes)


def _image_features(
    name: str, cohort: Cohort, train_ids, test_ids
) -> tuple[np.ndarray, np.ndarray]:
    """The image features of anchor ``name`` for the training and test patients, standardised
    with the training rows: SEG volumetrics (``cox_vol``, ``cox_clinvol``), with the tumours'
    first-order HU (``cox_clinrad``; a patient without a tumour segment gets the training
    mean), or the generator's true image quantities (:data:`IMAGE_ORACLE`, log volume)."""
    from crlm_lib.data.preprocess import tumour_first_order, volumetrics

    ids = [*train_ids, *test_ids]
    if name == IMAGE_ORACLE:
        if cohort.oracle is None:
            raise EvaluationError(f"{name} exists for synthetic cohorts only (no oracle.csv)")
        from crlm_lib.data.synthetic import IMAGE_COVARIATES

        table = cohort.oracle.set_index(cohort.oracle["Patient-ID"].astype(str))
        feats = table.loc[ids, list(IMAGE_COVARIATES)].astype(float)
        feats["tumour_volume_ml"] = np.log(feats["tumour_volume_ml"])
    else:
        if cohort.paths is None:
            raise EvaluationError("the volumetric anchors need a preprocessed cohort (Paths)")
        feats = volumetrics(cohort.paths.processed_dir, ids)
        if name == "cox_clinrad":
            first = tumour_first_order(cohort.paths.processed_dir, ids)
            first = first.fillna(first.loc[list(train_ids)].mean())
            feats = feats.join(first)
    tr, te = feats.loc[list(train_ids)].to_numpy(float), feats.loc[list(test_ids)].to_numpy(float)
    mu, sd = tr.mean(axis=0), tr.std(axis=0)
    sd[sd == 0] = 1.0
    return (tr - mu) / sd, (te - mu) / sd


def _datasets(cohort: Cohort, profile: Profile, split: Split, reads_ct: bool = True):
    """Train/val/test datasets; the image augmentation only for models that read the CT
    (AMINN and the clinical MLP never see it, so deforming it would only cost time)."""
    from crlm_lib.data.dataset import CRLMDataset

    if cohort.paths is None:
        raise EvaluationError("image models need a preprocessed cohort (Paths)")
    train_ids, val_ids, test_ids = split
    kw = {"clinical_reference_ids": list(train_ids)}
    pdir = cohort.paths.processed_dir
    aug = bool(profile.train.augment) and reads_ct
    train_ds = CRLMDataset(pdir, cohort.clinical, list(train_ids), profile, augment=aug, **kw)
    val_ds = CRLMDataset(pdir, cohort.clinical, list(val_ids), profile, **kw)
    test_ds = CRLMDataset(pdir, cohort.clinical, list(test_ids), profile, **kw)
    return train_ds, val_ds, test_ds


def _built_model(spec: ModelSpec, profile: Profile, train_ds) -> tuple[ModelSpec, Any, int]:
    """The registry model of ``spec`` sized by the first training item (clinical features;
    lesion features for the set models, added to ``spec.options``), with that ``spec`` and the
    number of clinical features."""
    from crlm_lib.models import LESION_MODELS, build_model

    first = train_ds[0]
    n_clinical = int(np.asarray(first["clinical"]).shape[-1])
    if spec.name in LESION_MODELS and "n_lesion_features" not in spec.options:
        n_les = int(np.asarray(first["lesion_features"]).shape[-1])
        spec = replace(spec, options={**spec.options, "n_lesion_features": n_les})
    return spec, build_model(spec.name, n_clinical, profile.model, **spec.options), n_clinical


def _anchor(model, train_ds) -> None:
    """Fit what a model fits on its training rows before any step: the image standardisation
    (``calibrate_image``, rows in training order) and the Cox-initialised residuals of
    4D-ACFNet / STAR (``anchor_clinical``)."""
    image_rows = None
    if hasattr(model, "calibrate_image"):  # standardised on the training rows (in order)
        from torch.utils.data import DataLoader

        from crlm_lib.data.dataset import collate

        image_rows = model.calibrate_image(DataLoader(train_ds, batch_size=16, collate_fn=collate))
    if hasattr(model, "anchor_clinical"):  # 4D-ACFNet/STAR: Cox-initialised residuals
        o = train_ds.outcomes
        model.anchor_clinical(
            train_ds.clinical, o["os_years"], o["os_event"],
            dfs_years=o["dfs_years"], dfs_event=o["dfs_event"], image=image_rows,
        )  # fmt: skip


def fit_predict_torch(
    spec: ModelSpec,
    cohort: Cohort,
    profile: Profile,
    split: Split | tuple[Sequence[str], Sequence[str], Sequence[str]],
    run_dir: Path,
    *,
    epochs: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, Any]:
    """Build a registry model, ``train.fit`` it on ``split.train`` (early stopping on
    ``split.val``), predict ``split.test``.

    Writes ``run_dir/run.json`` (model, options, objective, profile, seed, split IDs, clinical
    feature names and training statistics) so that the run can be reloaded.
    """
    import torch

    from crlm_lib.models import CT_MODELS
    from crlm_lib.train import fit, predict

    torch.manual_seed(seed)
    split = Split.of(*split)
    reads_ct = spec.name in CT_MODELS
    train_ds, val_ds, test_ds = _datasets(cohort, profile, split, reads_ct)
    # the identity of the spec as asked (the one _cached_fit checks), before the lesion-feature
    # count read from the data is added to its options
    identity = run_identity(spec, profile, cohort, split, seed)
    spec, model, n_clinical = _built_model(spec, profile, train_ds)
    _anchor(model, train_ds)
    run_dir.mkdir(parents=True, exist_ok=True)
    folder = RunFolder(run_dir)
    if getattr(model, "anchored_start", False):  # the step-0 control, before any step
        with torch.random.fork_rng():
            step0 = predict(model, test_ds)
        step0[PATIENT_ID] = step0[PATIENT_ID].astype(str)
        folder.write_predictions(step0, STEP0_FILE)
    profile, epochs = _training_budget(model, profile, epochs, reads_ct)
    planned = profile.train.epochs if epochs is None else int(epochs)
    record = _run_record(spec, profile, cohort, split, seed, planned, n_clinical)
    folder.write_record({**record, "identity": identity})
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
    pred[PATIENT_ID] = pred[PATIENT_ID].astype(str)
    done = {"epochs_completed": len(history.records), "best_epoch": history.best_epoch,
            "stopped_early": bool(history.stopped_early)}  # fmt: skip
    store_training_reference(
        model, cohort, profile, split.train, train_ds.feature_stats, run_dir, training=done
    )
    return pred, history


def _training_budget(
    model: Any, profile: Profile, epochs: int | None, reads_volume: bool
) -> tuple[Profile, int | None]:
    """The profile and epoch count one model trains with (``TrainConfig.for_model``): a model
    that reads no CT volume takes ``epochs_no_volume`` in place of the protocol's ``epochs``."""
    anchored = bool(getattr(model, "anchored_start", False))
    tc = profile.train.for_model(anchored=anchored, reads_volume=reads_volume)
    if not reads_volume and profile.train.epochs_no_volume is not None:
        epochs = None
    return profile.with_(train=tc), epochs


def _run_record(
    spec: ModelSpec,
    profile: Profile,
    cohort: Cohort,
    split: Split,
    seed: int,
    epochs: int,
    n_clinical: int,
) -> dict[str, Any]:
    """``run.json``'s fields of a torch fit (the caller adds its ``identity``)."""
    from crlm_lib.data.clinical import ClinicalEncoder

    train_ids, val_ids, test_ids = split
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
        "training_images": _training_images(cohort, [*train_ids, *val_ids]),
    }


def _training_images(cohort: Cohort, ids: Sequence[str]) -> dict | None:
    """``run.json``'s ``training_images`` (``data.preprocess.training_images``): the images of
    the training and early-stopping patients, by which ``crlm predict`` says whether a new
    patient was among them; ``None`` for a cohort without a cache folder."""
    from crlm_lib.data.preprocess import training_images

    if cohort.paths is None or not cohort.paths.processed_dir.is_dir():
        return None
    return training_images(cohort.paths.processed_dir, [str(i) for i in ids])


def _sha256_json(obj: Any) -> str:
    import hashlib

    text = json.dumps(obj, sort_keys=True, default=atomic.json_default, allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _image_sources(cohort: Cohort, ids: Sequence[str]) -> dict[str, dict[str, int]] | None:
    """``{patient: {SOP instance UID: file size}}`` from the preprocessing cache entries.

    ``None`` without a cache folder (cohorts built in memory, tests). Entries written before
    the cache recorded its sources give an empty dict for that patient. Read once per state
    of the cache files (their paths, sizes and modification times): a protocol asks for the
    identity of every fit several times, and each read opens every patient's archive.
    """
    from crlm_lib.data.preprocess import cache_path

    if cohort.paths is None or not cohort.paths.processed_dir.is_dir():
        return None
    paths = tuple(cache_path(cohort.paths.processed_dir, pid) for pid in ids)
    stamps = tuple(_stamp(path) for path in paths)
    return _read_image_sources(tuple(map(str, ids)), paths, stamps)


def _stamp(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, None when it does not exist."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_size, st.st_mtime_ns


@functools.lru_cache(maxsize=8)
def _read_image_sources(
    ids: tuple[str, ...], paths: tuple[Path, ...], stamps: tuple[tuple[int, int] | None, ...]
) -> dict[str, dict[str, int]]:
    """:func:`_image_sources` read from the archives (``stamps`` only key the cache)."""
    out: dict[str, dict[str, int]] = {}
    for pid, path, stamp in zip(ids, paths, stamps, strict=True):
        manifest: dict[str, list[int]] = {}
        if stamp is not None:
            with np.load(path, allow_pickle=False) as z:
                if "source_manifest" in z.files:
                    manifest = json.loads(str(z["source_manifest"]))
        out[pid] = {uid: int(v[0]) for uid, v in sorted(manifest.items())}
    return out


#: Revision of what trains a run, part of the ``config`` identity: bumped when a code change
#: alters the weights a run would end with although no option or setting changed, so that run
#: folders trained before are retrained (by the protocols) or refused (``crlm train``) instead
#: of silently reused. 1: MONAI's stride-1 stem in the 3D ResNets and STG, and AdamW's
#: per-tensor loop; 2: Hara et al.'s stem (same parameter shapes as MONAI's stride-1 stem, so
#: checkpoints of revision 1 would load without error) and the fused AdamW.
#: 3: 4D-ACFNet / STAR / 3D CNN read the liver and tumour masks and learn the SEG burden;
#: CT windowed -160..240 HU before CLAHE. 4: lesion pooling (standardised on the training rows)
#: and the tumour-intensity target in 4D-ACFNet / STAR / 3D CNN. 5: the heads' class beyond
#: year 12 and discrete-hazard recurrence (``models.heads``) in every network, the censored
#: likelihood's censoring year counted, recurrence targets not clamped into year 12.
#: 6: 4D-ACFNet's lesion anchor (``models.common.LesionAnchor``) and the step-0 control file.
#: 7: ``TrainConfig.for_model`` (a random start follows ``random_start_monitor``; a model that
#: reads no CT volume trains ``epochs_no_volume`` epochs).
RUN_REVISION = 7


def run_identity(
    spec: ModelSpec,
    profile: Profile,
    cohort: Cohort,
    split: Split | tuple[Sequence[str], Sequence[str], Sequence[str]],
    seed: int,
) -> dict[str, str]:
    """Hashes saying what a run folder was trained on; a run resumes only when all three match.

    - ``cohort``: the sorted analysis IDs, their clinical rows (every column, as CSV) and the
      identity of their source images (each cache entry's SOP instance UIDs and file sizes,
      :func:`_image_sources`; modification times are left out so that a copied cohort still
      resumes), so a changed table, patient set or image series changes it;
    - ``split``: the sorted train, validation and test IDs;
    - ``config``: model, options, objective, loss weights, seed, the profile's
      preprocessing, model and training settings except ``epochs`` (a run may be extended) and
      ``num_workers`` (no effect on the result), and :data:`RUN_REVISION`.

    Returns
    -------
    dict
        ``{"cohort": hex16, "split": hex16, "config": hex16}``.
    """
    train_ids, val_ids, test_ids = split
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
                "revision": RUN_REVISION,
            }
        ),
    }


def _run_dir_state(run_dir: Path, identity: dict[str, str]) -> list[str]:
    """What of ``identity`` differs from the run already in ``run_dir`` ([] = same or empty)."""
    folder = RunFolder(run_dir)
    if not folder.present_files():
        return []
    if not folder.has_record():
        return ["run.json missing"]
    try:
        old = folder.read_record().get("identity")
    except (json.JSONDecodeError, AttributeError):
        return ["run.json unreadable"]
    if not isinstance(old, dict):
        return ["run.json made before run identities were recorded"]
    return [k for k in identity if old.get(k) != identity[k]]


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
            RunFolder(run_dir).clear()
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


def _clear_stale_run(run_dir: Path, split: Split, identity: dict[str, str] | None = None) -> None:
    """Remove checkpoints and outputs of ``run_dir`` when its ``run.json`` has other split IDs
    (or, given ``identity``, another cohort, split or configuration: :func:`run_identity`)."""
    folder = RunFolder(run_dir)
    if not folder.has_record():
        return
    rec = folder.read_record()
    same = all(
        sorted(map(str, rec.get(key, []))) == sorted(map(str, ids))
        for key, ids in zip(("train_ids", "val_ids", "test_ids"), split, strict=True)
        if key in rec
    )
    if identity is not None:
        same = same and rec.get("identity") == identity
    # runs written before the clinical encoder and training reference were stored cannot be
    # reloaded for prediction (load_run refuses them): retrain those too. A run still training
    # (no predictions.csv yet) has no training reference and is kept, so that it resumes.
    finished = folder.has_predictions()
    complete = rec.get("model") in ANCHOR_NAMES or (
        "clinical_encoder" in rec and ("training_reference" in rec or not finished)
    )
    if same and complete:
        return
    why = "trained on another split" if not same else "stores no clinical encoder or reference"
    warnings.warn(f"{run_dir}: {why}; retraining from scratch", stacklevel=3)
    folder.clear()


def _cached_fit(
    spec: ModelSpec,
    cohort: Cohort,
    profile: Profile,
    split: Split,
    run_dir: Path | None,
    epochs: int | None,
    seed: int,
) -> pd.DataFrame:
    """Predictions of one (model, split), reused from ``run_dir/predictions.csv`` if present
    (a fresh fit's are written there and read back, so both give the same numbers).

    A run folder left by another split (the cohort or seed changed) is cleared first, so that
    the engine never resumes from a checkpoint trained on other patients.
    """
    split = Split.of(*split)
    train_ids, _, test_ids = split
    if run_dir is not None:
        identity = None
        if not spec.is_anchor:
            identity = run_identity(spec, profile, cohort, split, seed)
        _clear_stale_run(run_dir, split, identity)
    folder = None if run_dir is None else RunFolder(run_dir)
    cached = None if folder is None else folder.read_predictions()
    if cached is not None:
        same_ids = sorted(cached[PATIENT_ID]) == sorted(map(str, test_ids))
        # anchors written before the beyond-horizon mass was kept out of bin 12 are refitted
        if same_ids and not (spec.is_anchor and BEYOND_COL not in cached.columns):
            return cached
    if spec.is_anchor:
        pred = fit_predict_anchor(spec.name, cohort, train_ids, test_ids, seed=seed)
    else:
        if run_dir is None:
            raise EvaluationError("torch models need a run folder")
        pred, _ = fit_predict_torch(spec, cohort, profile, split, run_dir, epochs=epochs, seed=seed)
    if folder is None:
        return pred
    # read back: a table made on the first run equals one made later from the same file (the
    # CSV's decimal floats need not round-trip the last bit of the frame in memory)
    folder.write_predictions(pred)
    return folder.read_predictions()


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


def read_run_record(run_dir: str | Path) -> tuple[dict, Path]:
    """``run.json`` of a run folder and its path.

    Raises
    ------
    EvaluationError
        When the folder has no ``run.json`` (not a run folder).
    """
    folder = RunFolder(run_dir)
    if not folder.has_record():
        raise EvaluationError(f"{folder.record_path} not found: not a run folder")
    return folder.read_record(), folder.record_path


@dataclass(frozen=True)
class RunProgress:
    """How far a run folder got: the epochs in ``history.csv`` against those planned
    (``run.json``'s ``epochs``, else its profile's), and whether training ended (a torch run's
    ``run.json`` gains its ``training_reference`` last, after the final epoch and the
    prediction of the training patients; an anchor's run is written whole)."""

    epochs_done: int
    epochs_planned: int | None
    finished: bool

    def summary(self) -> str:
        """``"2 of 6 planned epochs done"``."""
        planned = "?" if self.epochs_planned is None else self.epochs_planned
        return f"{self.epochs_done} of {planned} planned epochs done"


def run_progress(run_dir: str | Path, rec: dict) -> RunProgress:
    """The :class:`RunProgress` of ``run_dir`` whose ``run.json`` is ``rec``."""
    done = RunFolder(run_dir).epochs_done()
    planned = rec.get("epochs")
    if planned is None and rec.get("profile") in PROFILES:
        planned = get_profile(rec["profile"]).train.epochs
    finished = rec.get("model") in ANCHOR_NAMES or "training_reference" in rec
    return RunProgress(done, None if planned is None else int(planned), finished)


def resume_command(run_dir: str | Path, rec: dict) -> str:
    """The ``crlm train`` line that resumes (or re-creates) the run of ``rec`` in ``run_dir``."""
    parts = ["crlm train", f"--model {rec.get('model')}", f"--profile {rec.get('profile')}"]
    parts += [f"--seed {rec.get('seed', 0)}", f"--out {run_dir}"]
    if rec.get("epochs") is not None:
        parts.append(f"--epochs {rec['epochs']}")
    return " ".join(parts)


def require_finished(run_dir: str | Path, rec: dict) -> None:
    """Refuse a run that stopped before training ended (killed, or still training).

    A run with ``predictions.csv`` but no training reference is a finished run of an older
    version, left to the callers' own message.

    Raises
    ------
    IncompleteRunError
        Naming the folder, the epochs done and planned, and the command that resumes it.
    """
    from crlm_lib.errors import IncompleteRunError

    progress = run_progress(run_dir, rec)
    if progress.finished or RunFolder(run_dir).has_predictions():
        return
    raise IncompleteRunError(
        f"{run_dir} is an incomplete run: {progress.summary()} (history.csv) and training "
        "never ended (run.json has no training reference); resume it with "
        f"`{resume_command(run_dir, rec)}` and the same --data/--clinical, or use a finished run"
    )


def load_run(
    run_dir: str | Path, source: Cohort | Paths, profile: str | Profile | None = None
) -> LoadedRun:
    """Reload a trained torch run (``run.json`` + ``best.pt``, else ``last.pt``).

    Parameters
    ----------
    run_dir : path
        A run folder written by :func:`fit_predict_torch` (``crlm train``, the protocols).
    source : Cohort (``pipeline.load_study``) or config.Paths
        The cohort the run was trained on (its preprocessing cache is read).
    profile : str or Profile, optional
        Sizes of the model (must be the run's); by default the cohort's
        (``evaluation.cohort_profile``).

    Raises
    ------
    EvaluationError
        When the folder holds no ``run.json``, no stored clinical encoder or no checkpoint, or
        belongs to an anchor.
    """
    from crlm_lib.data.dataset import CRLMDataset

    cohort = as_cohort(source)
    prof = cohort_profile(cohort, profile)
    run_dir = Path(run_dir)
    rec, rec_path = read_run_record(run_dir)
    if rec["model"] in ANCHOR_NAMES:
        raise EvaluationError(f"{run_dir} is a clinical anchor's run: nothing to reload")
    try:
        model = RunFolder(run_dir).load_model(prof.model, rec)
    except FileNotFoundError as err:
        raise EvaluationError(str(err)) from err
    kw = {"clinical_encoder": stored_encoder(rec, rec_path)}
    pdir = cohort.paths.processed_dir
    train_ids = [i for i in rec.get("train_ids", []) if i in cohort.clinical.index]
    test_ids = [i for i in rec.get("test_ids", []) if i in cohort.clinical.index]
    stats = RunFolder.lesion_stats(rec)
    if stats is not None:
        kw["feature_stats"] = stats
    train_ds = CRLMDataset(pdir, cohort.clinical, train_ids, prof, **kw)
    # the test lesions are standardised with the training lesions' statistics, never their own
    kw["feature_stats"] = train_ds.feature_stats
    test_ds = CRLMDataset(pdir, cohort.clinical, test_ids, prof, **kw)
    return LoadedRun(model=model, record=rec, train_ds=train_ds, test_ds=test_ds)


def step0_predictions(run_dir: str | Path) -> pd.DataFrame | None:
    """The untrained-start control of an anchored run (its test predictions at step 0, from
    ``run_dir/predictions_step0.csv``); ``None`` for a run without one (a model that is not
    anchored, or a run written before the control existed)."""
    return RunFolder(run_dir).read_predictions(STEP0_FILE)


#: Permutations of the image-permutation control per run.
N_PERMUTATIONS = 3


def permuted_predictions(
    run_dir: str | Path,
    cohort: Cohort,
    profile: str | Profile,
    seed: int = 0,
    n_permutations: int = N_PERMUTATIONS,
) -> pd.DataFrame:
    """The CT-permutation control of a trained image model: its test predictions with every
    test patient's images (CT, masks, lesion set: ``data.dataset.IMAGE_KEYS``) taken from another
    test patient, clinical data kept.

    Permutation ``p`` is ``default_rng([seed, p]).permutation(n_test)``. The result is cached in
    ``run_dir/predictions_ct_permuted.csv`` (reused when present and the run's test patients
    are the same). A model that does not use the image ranks patients as well on these
    predictions as on its own (``evaluation.run_cv_protocol`` reports the difference).

    Returns
    -------
    DataFrame
        A Predictions frame per permutation, stacked, with the column ``permutation``.
    """
    from crlm_lib.data.dataset import ImagePermutation
    from crlm_lib.train import predict

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    record, _ = read_run_record(run_dir)
    test_ids = sorted(map(str, record.get("test_ids", [])))
    cached = folder.read_predictions(PERMUTED_FILE)  # reused without loading the model
    if cached is not None:
        if sorted(set(cached[PATIENT_ID])) == test_ids and cached["permutation"].nunique() == (
            n_permutations
        ):
            return cached
    loaded = load_run(run_dir, cohort, profile)
    n = len(loaded.test_ds)
    frames = []
    for p in range(n_permutations):
        perm = np.random.default_rng([seed, p]).permutation(n)
        pred = predict(loaded.model, ImagePermutation(loaded.test_ds, perm))
        pred[PATIENT_ID] = pred[PATIENT_ID].astype(str)
        frames.append(pred.assign(permutation=p))
    folder.write_predictions(pd.concat(frames, ignore_index=True), PERMUTED_FILE)
    return folder.read_predictions(PERMUTED_FILE)  # what a rerun reads: the same either way
