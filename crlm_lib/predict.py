"""Predictions of a trained run for NEW patients (no follow-up): ``crlm predict --patient``.

A run folder (``crlm train``) stores everything needed to score a patient it has never seen:
the model weights, the clinical encoder (training means, SDs, categories and missing
indicators, :class:`~crlm_lib.data.clinical.ClinicalEncoder`), the lesion-feature statistics,
the tertile cut points of the training patients' predicted risk and the training cohort's
Kaplan–Meier curves (:func:`store_training_reference`, called at the end of training). The
patient's own CT series + SEG (TCIA layout of one patient, a folder or a ZIP of it) and,
optionally, one clinical row are all that is read at prediction time.

Outputs per patient
-------------------
* overall survival ``S(t)`` (``metrics.survival_curve``) and recurrence-free probability
  ``R(t)`` (``metrics.recurrence_free_curve``) at the end of each of the 12 years, with a 95%
  interval; 1/3/5-year values in the one-row-per-patient table;
* risk group (low / intermediate / high) against the tertiles of the training patients'
  predicted risk (``types.Predictions.ranking_score(score="mixed")``: minus the 12-year
  restricted mean survival, ``metrics.risk_from_survival``, for OS, and
  ``metrics.risk_from_recurrence`` for recurrence; the score the training references stored
  in run folders were computed with, named in their ``risk_score`` entry);
* a plain-language line, the predictors that were missing (filled as in training) and whether
  the patient's CT images were among the model's training (or early-stopping) images
  (:func:`in_training_set`: by the images' SOP instance UIDs, not the patient ID; unknown for a
  run that does not record them).

Interval (choice)
-----------------
The registry models have no dropout layer, so Monte-Carlo dropout is not available. The
interval is the 2.5–97.5 percentile band over an ensemble of *members*: each run given (e.g.
the runs of several CV folds or seeds: a deep ensemble, Lakshminarayanan et al. 2017) scores
the unchanged input and ``n_tta`` inputs perturbed with the training augmentations
(test-time augmentation, Wang et al., Neurocomputing 2019). The point estimate is the mean over
runs of the unchanged-input predictions. With one run and ``n_tta = 0`` the interval collapses
to the point (reported as such). The band reflects model and acquisition variability, not the
sampling uncertainty of the training cohort; it is not a calibrated confidence interval.
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from crlm_lib import atomic
from crlm_lib.config import N_YEARS, Profile, get_profile
from crlm_lib.errors import ArgumentError, CRLMUserError
from crlm_lib.types import PATIENT_ID, REC_COLS, SURV_COLS, Predictions

if TYPE_CHECKING:
    import torch

#: Risk groups, lowest first (tertiles of the training patients' predicted risk).
RISK_GROUPS: tuple[str, ...] = ("low", "intermediate", "high")
#: Years reported in the one-row-per-patient table.
SUMMARY_YEARS: tuple[int, ...] = (1, 3, 5)
#: Decimals of every probability written.
DECIMALS = 3


class PredictError(CRLMUserError):
    """A new patient cannot be scored (bad archive, run without stored training reference)."""


# --------------------------------------------------------------------------------------------
# what the run stores at training time
# --------------------------------------------------------------------------------------------


def _km_table(years: np.ndarray, events: np.ndarray) -> dict[str, list[float]]:
    """Kaplan–Meier estimate (lifelines) at t = 0..12 years with its 95% (log-log) band."""
    from lifelines import KaplanMeierFitter

    kmf = KaplanMeierFitter().fit(years, events, timeline=np.arange(N_YEARS + 1, dtype=float))
    ci = kmf.confidence_interval_
    return {
        "years": [float(t) for t in kmf.survival_function_.index],
        "estimate": [round(float(v), 4) for v in kmf.survival_function_.iloc[:, 0]],
        "lower": [round(float(v), 4) for v in ci.iloc[:, 0]],
        "upper": [round(float(v), 4) for v in ci.iloc[:, 1]],
    }


def training_reference(pred_train: pd.DataFrame, outcomes_train: pd.DataFrame) -> dict:
    """Tertile cut points of the training patients' predicted risk and their KM curves.

    Parameters
    ----------
    pred_train : DataFrame
        ``train.predict`` of the training patients (``surv_p1..12``, ``rec_p1..12``).
    outcomes_train : DataFrame
        ``clinical.outcomes`` of the same patients (``os_years``, ``os_event``, ``dfs_years``,
        ``dfs_event``).

    Returns
    -------
    dict (JSON-ready)
        ``{"n": N, "risk_tertiles": {"os": [q1, q2], "dfs": [q1, q2]}, "risk_score": {...},
        "km": {"os": {...}, "dfs": {...}}}``; KM tables as :func:`_km_table`.
    """
    os_risk, dfs_risk = _risks(pred_train)
    return {
        "n": int(len(pred_train)),
        "risk_tertiles": {
            "os": [float(v) for v in np.quantile(os_risk, [1 / 3, 2 / 3])],
            "dfs": [float(v) for v in np.quantile(dfs_risk, [1 / 3, 2 / 3])],
        },
        "risk_score": {
            "os": "metrics.risk_from_survival (minus expected survival, years)",
            "dfs": "metrics.risk_from_recurrence (recurrence probability by 3 years)",
        },
        "km": {
            "os": _km_table(outcomes_train["os_years"], outcomes_train["os_event"]),
            "dfs": _km_table(outcomes_train["dfs_years"], outcomes_train["dfs_event"]),
        },
    }


def _risks(pred: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """The risk-group scores of OS and DFS (``types.Predictions.ranking_score`` with
    ``score="mixed"``: the functional of the stored training references, see the module
    docstring; the evaluation's C-indices rank by the 5-year risk instead)."""
    p = Predictions.from_frame(pred)
    return p.ranking_score("os", "mixed"), p.ranking_score("dfs", "mixed")


def store_training_reference(
    model: torch.nn.Module,
    cohort: Any,
    profile: Profile,
    train_ids: Sequence[str],
    lesion_stats: dict[str, np.ndarray] | None,
    run_dir: Path,
) -> dict:
    """Score the training patients once and add the reference to ``run_dir/run.json``.

    Adds ``training_reference`` (:func:`training_reference`) and ``lesion_feature_stats``
    (the lesion-feature transform fitted on the training lesions) to the record, atomically.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.evaluation._common import _write_json
    from crlm_lib.train import predict

    ids = [str(i) for i in train_ids]
    ds = CRLMDataset(
        cohort.paths.processed_dir,
        cohort.clinical,
        ids,
        profile,
        clinical_reference_ids=ids,
        feature_stats=lesion_stats,
    )
    pred = predict(model, ds)
    ref = training_reference(pred, cohort.outcomes.loc[ids])
    path = Path(run_dir) / "run.json"
    record = json.loads(path.read_text())
    record["training_reference"] = ref
    record["lesion_feature_stats"] = {
        k: np.asarray(v).tolist() for k, v in ds.feature_stats.items()
    }
    _write_json(record, path)
    return ref


# --------------------------------------------------------------------------------------------
# reading new patients
# --------------------------------------------------------------------------------------------


@dataclass
class NewPatient:
    """One new patient, preprocessed like the training cohort.

    ``arrays`` holds the keys of the preprocessing cache (``ct`` ``[D, H, W]``, ``masks``
    ``[K, D, H, W]``, ``lesion_features``, ``z_index``, ``source_shape``, ``source_spacing_mm``,
    ``origin_mm``, ``direction``, ...); ``ct_files`` the CT series in slice order (for DICOM
    export); ``source`` the folder or ZIP given.
    """

    patient_id: str
    arrays: dict[str, Any]
    ct_files: list[Path]
    source: Path


def _safe_extract(archive: Path, dest: Path) -> Path:
    """Extract a ZIP refusing members that would land outside ``dest`` (zip-slip)."""
    try:
        with zipfile.ZipFile(archive) as zf:
            root = dest.resolve()
            for member in zf.infolist():
                target = (dest / member.filename).resolve()
                if root != target and root not in target.parents:
                    raise PredictError(f"{archive}: member {member.filename!r} leaves the archive")
            zf.extractall(dest)
    except zipfile.BadZipFile as err:
        raise PredictError(f"{archive}: not a readable ZIP archive ({err})") from err
    return dest


def load_new_patients(
    sources: Sequence[str | Path],
    profile: Profile,
    work_dir: str | Path,
    progress: bool = True,
) -> tuple[list[NewPatient], pd.DataFrame]:
    """Read and preprocess every patient under ``sources`` (folders or ZIPs).

    A source may hold one patient (TCIA layout of one patient) or several (a cohort folder):
    patients are found by their DICOM headers (``tcia.discover``). ZIPs are extracted under
    ``work_dir``.

    Returns
    -------
    patients : list of NewPatient
    excluded : DataFrame
        ``patient_id``, ``path``, ``reason`` for every patient that could not be read.

    Raises
    ------
    FileNotFoundError
        If a source does not exist.
    """
    from crlm_lib.data.preprocess import preprocess_patient
    from crlm_lib.data.tcia import CohortDataError, discover, load_patient

    prof = profile
    work_dir = Path(work_dir)
    refs = []
    for i, src in enumerate(sources):
        src = Path(src)
        if not src.exists():
            raise FileNotFoundError(f"patient folder or ZIP not found: {src}")
        folder = src
        if src.is_file() and zipfile.is_zipfile(src):
            folder = _safe_extract(src, work_dir / f"zip{i:03d}_{src.stem}")
        elif src.is_file():
            raise PredictError(f"{src}: neither a folder nor a ZIP archive")
        found = discover(folder)
        if not found:
            raise PredictError(f"{src}: no DICOM patient found (CT series + SEG expected)")
        refs.extend((ref, src) for ref in found)
    patients, excluded = [], []
    for ref, src in tqdm(refs, desc="read patients", unit="patient", disable=not progress):
        try:
            p = load_patient(ref)
            arrays = preprocess_patient(p, prof.preprocess)
        except CohortDataError as err:
            excluded.append({"patient_id": ref.patient_id, "path": str(src), "reason": str(err)})
            continue
        patients.append(NewPatient(p.patient_id, arrays, list(p.ct_files), src))
    return patients, pd.DataFrame(excluded, columns=["patient_id", "path", "reason"])


def read_patient_clinical(path: str | Path) -> pd.DataFrame:
    """Clinical rows of new patients: any subset of the predictor columns, no outcome needed.

    Columns are matched as in :func:`~crlm_lib.data.clinical.load_clinical`; absent columns
    (outcomes included) become missing, then the table is validated (codes, ranges) with
    every outcome optional.
    """
    from crlm_lib.data import clinical as C

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clinical table not found: {path}")
    raw, info = C._read_table(path)
    present = {C._canonical_name(c) for c in raw.columns}
    for col in C.COLUMNS:
        if C._canonical_name(col) not in present and col != C.ID_COLUMN:
            raw[col] = np.nan
    return C.validate_clinical(
        raw,
        source=str(path),
        optional_outcomes=C.OUTCOME_COLUMNS,
        percent_from_format=info.get("percent_from_format", ()),
    )


# --------------------------------------------------------------------------------------------
# scoring
# --------------------------------------------------------------------------------------------


@dataclass
class RunModel:
    """A run folder loaded for prediction (no training data needed)."""

    run_dir: Path
    record: dict
    model: torch.nn.Module
    encoder: Any
    lesion_stats: dict[str, np.ndarray]
    reference: dict

    @property
    def training_images(self) -> set[str] | None:
        """Image fingerprints of the training and early-stopping patients
        (``run.json``'s ``training_images``); ``None`` for a run that does not record them."""
        stored = self.record.get("training_images")
        if not stored or not stored.get("fingerprints"):
            return None
        return {str(fp) for fp in stored["fingerprints"]}


def in_training_set(runs: Sequence[RunModel], patient: NewPatient) -> bool | None:
    """Whether ``patient``'s CT images were among the training (or early-stopping) images of
    any run: decided by image identity (``image_fingerprint``: the SOP instance UIDs of its
    CT series), never by patient ID, since two cohorts may use one ID scheme (the synthetic
    cohort uses the collection's). ``None`` (unknown) when no run found it and a run does not
    record its training images."""
    fingerprint = str(patient.arrays.get("image_fingerprint", ""))
    known = [run.training_images for run in runs]
    if fingerprint and any(s is not None and fingerprint in s for s in known):
        return True
    if not fingerprint or any(s is None for s in known):
        return None
    return False


def load_run_model(run_dir: str | Path, profile: Profile | str | None = None) -> RunModel:
    """Model + stored encoder + training reference of a run folder.

    Raises
    ------
    IncompleteRunError
        When the run's training never ended (killed after some epochs).
    PredictError
        When the folder is not a torch run, or lacks the stored encoder / training reference
        (runs trained before they were stored: retrain).
    """
    from crlm_lib.evaluation import ANCHOR_NAMES, EvaluationError, require_finished, stored_encoder
    from crlm_lib.models import build_model
    from crlm_lib.train import load_checkpoint

    run_dir = Path(run_dir)
    rec_path = run_dir / "run.json"
    if not rec_path.is_file():
        raise PredictError(f"{rec_path} not found: not a run folder (crlm train writes it)")
    rec = json.loads(rec_path.read_text())
    if rec.get("model") in ANCHOR_NAMES:
        raise PredictError(f"{run_dir}: clinical anchors are not saved as models; use a torch run")
    require_finished(run_dir, rec)  # a killed run: say so, not "an older version"
    try:
        encoder = stored_encoder(rec, rec_path)
    except EvaluationError as err:
        raise PredictError(str(err)) from err
    for key in ("training_reference", "lesion_feature_stats"):
        if key not in rec:
            raise PredictError(f"{rec_path}: no {key!r} stored (run trained by an older version)")
    prof = get_profile(profile or rec["profile"])
    model = build_model(rec["model"], int(rec["n_clinical"]), prof.model, **rec["options"])
    ckpt = run_dir / "best.pt" if (run_dir / "best.pt").is_file() else run_dir / "last.pt"
    if not ckpt.is_file():
        raise PredictError(f"no checkpoint (best.pt / last.pt) in {run_dir}")
    load_checkpoint(model, ckpt)
    model.eval()
    stats = {k: np.asarray(v, dtype=np.float64) for k, v in rec["lesion_feature_stats"].items()}
    return RunModel(run_dir, rec, model, encoder, stats, rec["training_reference"])


def patient_item(
    patient: NewPatient,
    clinical_vector: np.ndarray,
    lesion_stats: dict[str, np.ndarray],
    augment_seed: int | None = None,
    profile: Profile | None = None,
) -> dict[str, Any]:
    """A model input (the keys of ``CRLMDataset`` items, without outcomes) for one patient.

    ``augment_seed`` applies the training augmentations (test-time augmentation).
    """
    import torch

    from crlm_lib.data.dataset import L_MAX, apply_lesion_stats, processed_spacing

    a = patient.arrays
    ct = torch.from_numpy(np.asarray(a["ct"], dtype=np.float32))[None]
    masks = torch.from_numpy(np.asarray(a["masks"], dtype=np.float32))
    if augment_seed is not None:
        from crlm_lib.data.augment import augment_sample

        spacing = processed_spacing(a, a["ct"].shape)
        ct, masks = augment_sample(ct, masks, spacing, augment_seed, profile)
    raw = np.asarray(a["lesion_features"], dtype=np.float64)
    names = [str(n) for n in a["lesion_feature_names"]]
    n_feat = len(lesion_stats["mean"])
    feats = np.zeros((L_MAX, n_feat), np.float32)
    lmask = np.zeros(L_MAX, bool)
    if len(raw):
        if len(raw) > L_MAX and "volume_mm3" in names:
            raw = raw[np.argsort(-raw[:, names.index("volume_mm3")], kind="stable")[:L_MAX]]
        feats[: len(raw)] = apply_lesion_stats(raw, lesion_stats)
        lmask[: len(raw)] = True
    return {
        "patient_id": patient.patient_id,
        "ct": ct,
        "masks": masks,
        "clinical": torch.from_numpy(np.asarray(clinical_vector, dtype=np.float32)),
        "lesion_features": torch.from_numpy(feats),
        "lesion_mask": torch.from_numpy(lmask),
    }


def _curves(model: torch.nn.Module, item: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """``S`` and ``R`` at year ends, the death pmf and the recurrence sigmoids (``[12]`` each)."""
    import torch

    from crlm_lib import metrics as M
    from crlm_lib.train import collate

    with torch.no_grad():
        out = model(collate([item]))
    surv = torch.softmax(out["survival_logits"].float(), -1).numpy().astype(np.float64)
    rec = torch.sigmoid(out["recurrence_logits"].float()).numpy().astype(np.float64)
    return M.survival_curve(surv)[0], M.recurrence_free_curve(rec)[0], surv[0], rec[0]


def _group(risk: float, cuts: Sequence[float]) -> str:
    return RISK_GROUPS[int(np.searchsorted(np.asarray(cuts, dtype=float), risk, side="right"))]


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def plain_language(row: dict, synthetic: bool) -> str:
    """One line for the clinician (5-year values, intervals, risk groups, caveat)."""
    text = (
        f"Predicted 5-year overall survival {_pct(row['os_5y'])} "
        f"(95% band {_pct(row['os_5y_lo'])}-{_pct(row['os_5y_hi'])}) and recurrence-free "
        f"probability {_pct(row['rfs_5y'])} ({_pct(row['rfs_5y_lo'])}-{_pct(row['rfs_5y_hi'])}); "
        f"{row['os_risk_group']} risk of death and {row['rfs_risk_group']} risk of recurrence "
        f"compared with the {row['n_training']} training patients."
    )
    member = row.get("in_training_set")
    if member is True:
        text += " This patient was in the model's training set: the prediction is optimistic."
    elif member is None:
        text += (
            " Whether this patient was in the model's training set is unknown (the run does "
            "not record its training images)."
        )
    if row.get("missing_predictors"):
        n = len(str(row["missing_predictors"]).split("; "))
        text += f" {n} clinical predictor(s) missing, filled with the training means."
    text += (
        " Research model trained on SYNTHETIC data: not for clinical use."
        if synthetic
        else " Research model: not validated for clinical decisions."
    )
    return text


@dataclass
class PatientPrediction:
    """Everything predicted for one patient.

    ``surv_members``/``rfs_members`` ``[members, 12]``; ``surv``/``rfs`` ``[3, 12]`` = point,
    2.5% and 97.5% band; ``surv_pmf``/``rec_probs`` ``[12]`` (mean over runs); ``row`` the
    one-line summary (rounded).
    """

    patient_id: str
    surv_members: np.ndarray
    rfs_members: np.ndarray
    surv: np.ndarray
    rfs: np.ndarray
    surv_pmf: np.ndarray
    rec_probs: np.ndarray
    row: dict


def predict_patient(
    runs: Sequence[RunModel],
    patient: NewPatient,
    clinical_row: pd.DataFrame | None,
    n_tta: int = 8,
    seed: int = 0,
    profile: Profile | None = None,
) -> PatientPrediction:
    """Score one patient with every run (+ ``n_tta`` augmented inputs each): see module doc."""
    prof = profile or get_profile(runs[0].record["profile"])
    clin = clinical_row
    if clin is None:
        clin = pd.DataFrame(index=pd.Index([patient.patient_id], name="Patient-ID"))
    missing = runs[0].encoder.missing_predictors(clin).get(patient.patient_id, [])
    points_s, points_r, members_s, members_r, pmfs, recs = [], [], [], [], [], []
    for run in runs:
        x, _ = run.encoder.transform(clin)
        item = patient_item(patient, x[0], run.lesion_stats)
        s, r, pmf, rec = _curves(run.model, item)
        points_s.append(s)
        points_r.append(r)
        pmfs.append(pmf)
        recs.append(rec)
        members_s.append(s)
        members_r.append(r)
        for t in range(n_tta):
            aug = patient_item(patient, x[0], run.lesion_stats, seed + 1000 * t + 1, prof)
            s_t, r_t, _, _ = _curves(run.model, aug)
            members_s.append(s_t)
            members_r.append(r_t)
    ms, mr = np.stack(members_s), np.stack(members_r)
    s_hat, r_hat = np.mean(points_s, axis=0), np.mean(points_r, axis=0)
    pmf_hat, rec_hat = np.mean(pmfs, axis=0), np.mean(recs, axis=0)
    s_lo, s_hi = np.percentile(ms, [2.5, 97.5], axis=0)
    r_lo, r_hi = np.percentile(mr, [2.5, 97.5], axis=0)
    ref = runs[0].reference
    os_risk, dfs_risk = _risks(
        pd.DataFrame(
            [
                {
                    PATIENT_ID: patient.patient_id,
                    **{c: pmf_hat[k] for k, c in enumerate(SURV_COLS)},
                    **{c: rec_hat[k] for k, c in enumerate(REC_COLS)},
                }
            ]
        )
    )
    row: dict[str, Any] = {"patient_id": patient.patient_id}
    for y in SUMMARY_YEARS:
        row[f"os_{y}y"] = s_hat[y - 1]
        row[f"os_{y}y_lo"], row[f"os_{y}y_hi"] = s_lo[y - 1], s_hi[y - 1]
    for y in SUMMARY_YEARS:
        row[f"rfs_{y}y"] = r_hat[y - 1]
        row[f"rfs_{y}y_lo"], row[f"rfs_{y}y_hi"] = r_lo[y - 1], r_hi[y - 1]
    row = {k: (round(float(v), DECIMALS) if k != "patient_id" else v) for k, v in row.items()}
    row["os_risk_group"] = _group(float(os_risk[0]), ref["risk_tertiles"]["os"])
    row["rfs_risk_group"] = _group(float(dfs_risk[0]), ref["risk_tertiles"]["dfs"])
    row["in_training_set"] = in_training_set(runs, patient)
    row["n_training"] = int(ref["n"])
    row["n_members"] = len(ms)
    row["missing_predictors"] = "; ".join(missing)
    row["summary"] = plain_language(row, bool(runs[0].record.get("synthetic")))
    return PatientPrediction(
        patient_id=patient.patient_id,
        surv_members=ms,
        rfs_members=mr,
        surv=np.stack([s_hat, s_lo, s_hi]),
        rfs=np.stack([r_hat, r_lo, r_hi]),
        surv_pmf=pmf_hat,
        rec_probs=rec_hat,
        row=row,
    )


def yearly_table(preds: Sequence[PatientPrediction]) -> pd.DataFrame:
    """Long table: one row per patient and year 1..12 with ``os``/``rfs`` and 95% bands."""
    rows = []
    for p in preds:
        for k in range(N_YEARS):
            rows.append(
                {
                    "patient_id": p.patient_id,
                    "year": k + 1,
                    "os": p.surv[0, k],
                    "os_lo": p.surv[1, k],
                    "os_hi": p.surv[2, k],
                    "rfs": p.rfs[0, k],
                    "rfs_lo": p.rfs[1, k],
                    "rfs_hi": p.rfs[2, k],
                }
            )
    return pd.DataFrame(rows).round(DECIMALS)


def _safe_name(patient_id: str) -> str:
    """The folder name of a patient's outputs: the ID itself when it is plain ASCII letters,
    digits, ``.``, ``_`` and ``-``; otherwise the ID with every other run of characters made
    ``_`` plus ``-`` and the first 8 hex digits of the SHA-256 of the ID (UTF-8). Sanitising
    alone maps ``Müller-01`` and ``Mäller-01`` both to ``M_ller-01``, and the second
    patient's report would overwrite the first's; the hash keeps distinct IDs apart, and the
    name stays the same from run to run."""
    import hashlib
    import re

    name = re.sub(r"[^A-Za-z0-9._-]+", "_", patient_id).strip("._")
    if name == patient_id and name:
        return name
    digest = hashlib.sha256(patient_id.encode("utf-8")).hexdigest()[:8]
    return f"{name or 'patient'}-{digest}"


def explain_patient(
    run: RunModel,
    patient: NewPatient,
    clinical_row: pd.DataFrame,
    shap_samples: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, float]]:
    """Year-by-year Grad-CAM ``[12, D, H, W]`` (recurrence head, inside the liver) and the SHAP
    value of each clinical feature for one patient (first run of the ensemble).

    SHAP reference (choice): the average training patient (:meth:`ClinicalEncoder.baseline`),
    because the run does not keep the training rows; the values explain the difference between
    this patient's risk and the risk of the same CT with average clinical factors.
    """
    from crlm_lib.explain import clinical_shap, yearly_gradcam

    x, names = run.encoder.transform(clinical_row)
    item = patient_item(patient, x[0], run.lesion_stats)
    heat = yearly_gradcam(run.model, item, restrict_to="liver", target="recurrence")
    expl = clinical_shap(
        run.model,
        item,
        background=run.encoder.baseline()[None],
        feature_names=names,
        nsamples=shap_samples,
        seed=seed,
        progress=False,
    )
    values = {n: float(v) for n, v in zip(names, expl.values[0], strict=True)}
    return np.asarray(heat, dtype=np.float32), values


def _patient_outputs(
    runs: Sequence[RunModel],
    patient: NewPatient,
    pred: PatientPrediction,
    clinical_row: pd.DataFrame,
    out_dir: Path,
    report: bool,
    heatmaps: bool,
    shap_samples: int,
    seed: int,
) -> None:
    """``<out_dir>/<patient>/``: Grad-CAM as NIfTI + DICOM Parametric Maps, report HTML + PDF."""
    heat, shap_values = explain_patient(runs[0], patient, clinical_row, shap_samples, seed)
    folder = out_dir / _safe_name(patient.patient_id)
    if heatmaps:
        from crlm_lib.explain import export_heatmaps_nifti
        from crlm_lib.export import export_heatmaps_dicom

        export_heatmaps_nifti(
            heat, patient.arrays, folder / "heatmaps" / "gradcam_recurrence.nii.gz"
        )
        export_heatmaps_dicom(heat, patient.arrays, patient.ct_files, folder / "heatmaps" / "dicom")
    if report:
        from crlm_lib.report import PatientReport, write_report

        rec = runs[0].record
        provenance = {
            "model": f"{rec['model']} ({len(runs)} run(s): "
            f"{', '.join(r.run_dir.name for r in runs)})",
            "training data": "synthetic cohort" if rec.get("synthetic") else "real",
            "profile": str(rec["profile"]),
            "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "source": str(patient.source),
        }
        a = patient.arrays
        write_report(
            PatientReport(
                row=pred.row,
                surv=pred.surv,
                rfs=pred.rfs,
                reference=runs[0].reference,
                ct=a["ct"],
                masks=a["masks"],
                heatmaps=heat,
                shap_values=shap_values,
                provenance=provenance,
            ),
            folder,
        )


def predict_new(
    run_dirs: Sequence[str | Path],
    sources: Sequence[str | Path],
    out_dir: str | Path,
    clinical: str | Path | None = None,
    n_tta: int = 8,
    report: bool = True,
    heatmaps: bool = True,
    seed: int = 0,
    progress: bool = True,
    shap_samples: int = 64,
) -> pd.DataFrame:
    """Score new patients and write ``out_dir`` (the work of ``crlm predict --patient``).

    Writes ``predictions.csv`` (one row per patient: 1/3/5-year values with bands, risk
    groups, summary line, training-set flag), ``predictions_yearly.csv`` (years 1..12 with
    bands), ``excluded.csv`` when a patient could not be read, and per patient
    ``<patient>/report.html`` + ``report.pdf`` (``report=True``) and
    ``<patient>/heatmaps/gradcam_recurrence.nii.gz`` + ``dicom/*.dcm`` Parametric Maps
    (``heatmaps=True``).

    Returns
    -------
    DataFrame
        The ``predictions.csv`` table.
    """

    if int(n_tta) < 0:
        raise ArgumentError(f"n_tta (--tta) must be at least 0, got {n_tta}")
    runs = [load_run_model(r) for r in run_dirs]
    profiles = {r.record["profile"] for r in runs}
    if len(profiles) > 1:
        raise PredictError(f"runs of different profiles {sorted(profiles)} cannot be ensembled")
    prof = get_profile(profiles.pop())
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = read_patient_clinical(clinical) if clinical is not None else None
    # ZIPs are extracted under out_dir and kept until the heatmaps have read the CT files
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".unzip.") as work:
        patients, excluded = load_new_patients(sources, prof, work, progress=progress)
        if not excluded.empty:
            atomic.write_csv(out_dir / "excluded.csv", excluded, index=False)
        if not patients:
            raise PredictError(
                f"no patient could be read: {'; '.join(excluded['reason'].astype(str))}"
            )
        preds = []
        for patient in tqdm(patients, desc="predict", unit="patient", disable=not progress):
            pid = patient.patient_id
            row = None
            if table is not None:
                if pid not in table.index:
                    warnings.warn(
                        f"{pid}: no row in {clinical}; every clinical predictor is filled with "
                        "the training means",
                        stacklevel=2,
                    )
                else:
                    row = table.loc[[pid]]
            pred = predict_patient(runs, patient, row, n_tta=n_tta, seed=seed, profile=prof)
            preds.append(pred)
            if report or heatmaps:
                clin = row if row is not None else pd.DataFrame(index=pd.Index([pid]))
                _patient_outputs(runs, patient, pred, clin, out_dir, report, heatmaps,
                                 shap_samples, seed)  # fmt: skip
        summary = pd.DataFrame([p.row for p in preds])
        atomic.write_csv(out_dir / "predictions.csv", summary, index=False)
        atomic.write_csv(out_dir / "predictions_yearly.csv", yearly_table(preds), index=False)
        return summary
