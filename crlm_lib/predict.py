"""Predictions of a trained run for NEW patients (no follow-up): ``crlm predict --patient``.

A run folder (``crlm train``) stores everything needed to score a patient it has never seen:
the model weights, the clinical encoder (training means, SDs, categories, missing indicators and
the training distribution of each predictor, :class:`~crlm_lib.data.clinical.ClinicalEncoder`),
the lesion-feature statistics, the tertile cut points of the training patients' predicted risk
and the training cohort's Kaplan–Meier curves with the numbers at risk
(:func:`store_training_reference`, called at the end of training). The patient's own CT series
+ SEG (TCIA layout of one patient, a folder or a ZIP of it, :mod:`crlm_lib.data.new_patients`)
and one clinical row (:mod:`crlm_lib.clinical_input`) are all that is read at prediction time.

Outputs per patient
-------------------
* overall survival ``S(t)`` (``metrics.survival_curve``) and recurrence-free probability
  ``R(t)`` (``metrics.recurrence_free_curve``) at the end of each of the 12 years, with the
  ensemble's band (see *Ensemble*; none for one model); 1/3/5-year values in the one-row-per-patient table; the years after
  the training cohort's follow-up runs out (fewer than ``config.MIN_AT_RISK`` training patients
  at risk) are flagged;
* risk group (low / intermediate / high) against tertiles of predicted risk (see *Ensemble*)
  (``types.Predictions.ranking_score(score="mixed")``: minus the 12-year
  restricted mean survival, ``metrics.risk_from_survival``, for OS, and
  ``metrics.risk_from_recurrence`` for recurrence; the score the training references stored
  in run folders were computed with, named in their ``risk_score`` entry);
* a plain-language line, the predictors that were missing and whether the patient's CT images
  were among the model's training (or early-stopping) images (:func:`in_training_set`: by the
  images' SOP instance UIDs, not the patient ID; unknown for a run that does not record them).

Missing clinical predictors
---------------------------
A patient without every predictor the model learnt from is refused
(``clinical_input.MissingPredictorError``) unless ``allow_missing``: then the prediction of each
model is the mean of its curves over ``n_imputations`` rows with the missing predictors drawn
from the training distribution (``clinical_input.imputation_draws``), and the report says so in
its headline.

Ensemble (choice)
-----------------
Each run given (or each fold run of a cross-validation folder, ``ensemble.expand_run_dirs``)
scores the unchanged input and ``n_tta`` inputs perturbed with the training augmentations
(test-time augmentation, Wang et al., Neurocomputing 2019), averaged into that model's
prediction; the point estimate is the mean over models. The band is the split-conformal band
of :mod:`crlm_lib.conformal` when the runs are the folds of a cross-validation calibrated
against true curves (``conformal.json``), else the models' spread (:mod:`crlm_lib.ensemble`),
each stated by its own sentence. The risk group compares the mean prediction's score with cut
points computed for the ensemble (:func:`risk_cut_points`: the cross-validation's out-of-fold
tertiles, else the mean of the models' own, said in ``risk_cut_points``); the explanations and
the training Kaplan–Meier curve are the first model's, and the report names it ("model 1 of
5"). The registry models have no dropout layer, so Monte-Carlo dropout is not available.
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crlm_lib import atomic, conformal, ensemble
from crlm_lib import clinical_input as CI
from crlm_lib.config import N_YEARS, Profile, get_profile
from crlm_lib.console import Console
from crlm_lib.data.new_patients import NewPatient, load_new_patients, patient_item
from crlm_lib.errors import ArgumentError, PredictError
from crlm_lib.patient_outputs import write_patient_outputs
from crlm_lib.runfolder import RunFolder
from crlm_lib.training_reference import (
    risk_group_scores,
    store_training_reference,
    supported_years,
    training_reference,
)
from crlm_lib.types import PATIENT_ID, REC_COLS, SURV_COLS

if TYPE_CHECKING:
    import torch

__all__ = [
    "NewPatient",
    "PatientPrediction",
    "PredictError",
    "PredictOptions",
    "RunModel",
    "in_training_set",
    "load_new_patients",
    "load_run_model",
    "predict_new",
    "predict_patient",
    "read_patient_clinical",
    "store_training_reference",
    "supported_years",
    "training_reference",
    "yearly_table",
]

#: Risk groups, lowest first (tertiles of the training patients' predicted risk).
RISK_GROUPS: tuple[str, ...] = ("low", "intermediate", "high")
#: Years reported in the one-row-per-patient table.
SUMMARY_YEARS: tuple[int, ...] = (1, 3, 5)
#: Decimals of every probability written.
DECIMALS = 3
#: Patient inputs scored in one forward pass (imputation draws x augmentations).
CHUNK = 64

read_patient_clinical = CI.read_patient_clinical


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


def _refuse_run(run_dir: Path, rec: dict, rec_path: Path) -> None:
    """The evaluation's own refusal of a run that cannot score new patients: a clinical anchor,
    a killed run, a run without stored encoder or training reference. Imported only here: the
    evaluation package costs seconds of ``crlm predict``'s start-up, and a finished torch run
    (registry model, training reference and encoder stored) needs none of its checks."""
    from crlm_lib.evaluation import ANCHOR_NAMES, EvaluationError, require_finished, stored_encoder

    if rec.get("model") in ANCHOR_NAMES:
        raise PredictError(f"{run_dir}: clinical anchors are not saved as models; use a torch run")
    require_finished(run_dir, rec)  # a killed run: say so, not "an older version"
    try:
        stored_encoder(rec, rec_path)
    except EvaluationError as err:
        raise PredictError(str(err)) from err
    raise PredictError(f"{rec_path}: no 'training_reference' stored (run trained by an older "
                       f"version) or model {rec.get('model')!r} unknown")  # fmt: skip


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
    from crlm_lib.checkpoints import TrainingError
    from crlm_lib.data.clinical import ClinicalEncoder
    from crlm_lib.models import MODEL_NAMES

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    rec_path = folder.record_path
    if not folder.has_record():
        raise PredictError(f"{rec_path} not found: not a run folder (crlm train writes it)")
    rec = folder.read_record()
    complete = rec.get("model") in MODEL_NAMES and "training_reference" in rec
    if not (complete and rec.get("clinical_encoder")):
        _refuse_run(run_dir, rec, rec_path)
    encoder = ClinicalEncoder.from_dict(rec["clinical_encoder"])
    stats = RunFolder.lesion_stats(rec)
    if stats is None:
        raise PredictError(f"{rec_path}: no 'lesion_feature_stats' stored (run trained by an "
                           "older version)")  # fmt: skip
    prof = get_profile(profile or rec["profile"])
    try:
        model = folder.load_model(prof.model, rec)
    except FileNotFoundError as err:
        raise PredictError(str(err)) from err
    except TrainingError as err:  # weights of another network version: one line, not a trace
        raise PredictError(
            f"{folder.checkpoint_path()}: the weights do not fit this version's {rec['model']} "
            "network (trained by an older version); retrain the run"
        ) from err
    return RunModel(run_dir, rec, model, encoder, stats, rec["training_reference"])


def _curves(model: torch.nn.Module, batch: dict[str, Any]) -> tuple[np.ndarray, ...]:
    """``S`` and ``R`` at year ends, the death pmf of years 1..12 and the recurrence
    probabilities, each ``[B, 12]``, of one batch (``models.heads.head_probabilities``: with
    the class beyond year 12, ``S(12)`` is its probability, not 0)."""
    import torch

    from crlm_lib import metrics as M
    from crlm_lib.models.heads import head_probabilities

    with torch.no_grad():
        out = model(batch)
    pmf, _, probs = (t.numpy().astype(np.float64) for t in head_probabilities(out))
    return M.survival_curve(pmf), M.recurrence_free_curve(probs), pmf, probs


def _clinical_batches(item: dict[str, Any], x: np.ndarray) -> list[dict[str, Any]]:
    """One patient's input ``item`` with each row of ``x`` ``[K, F]`` as its clinical vector,
    as batches of at most :data:`CHUNK` (the image tensors repeated, not collated K times)."""
    import torch

    from crlm_lib.data.dataset import collate

    one = collate([item])
    batches = []
    for start in range(0, len(x), CHUNK):
        rows = torch.from_numpy(np.ascontiguousarray(x[start : start + CHUNK], dtype=np.float32))
        k = len(rows)
        batch = {
            key: value.repeat(k, *([1] * (value.dim() - 1)))
            if torch.is_tensor(value)
            else value * k
            for key, value in one.items()
        }
        batch["clinical"] = rows
        batches.append(batch)
    return batches


@dataclass(frozen=True)
class PredictOptions:
    """How ``crlm predict`` scores (defaults = the command's).

    Attributes
    ----------
    n_tta : int
        Test-time augmentations per model, averaged into its prediction (0: none).
    allow_missing : bool
        Score patients with missing predictors (else :func:`predict_new` refuses them).
    n_imputations : int
        Draws of the missing predictors per model (``clinical_input.imputation_draws``); 0
        fills each with its training mean instead (the encoder's fill, kept to measure what it
        does: ``benchmarks/prediction_honesty.py``).
    report, heatmaps : bool
        Write the HTML/PDF report; the NIfTI and DICOM Grad-CAM maps.
    shap_samples : int
        KernelSHAP evaluations of the clinical explanation.
    seed : int
        Seed of the augmentations, draws and SHAP.
    progress : bool
        Stage lines on standard error (``console.Console``).
    """

    n_tta: int = 0
    allow_missing: bool = False
    n_imputations: int = 32
    report: bool = True
    heatmaps: bool = True
    shap_samples: int = 64
    seed: int = 0
    progress: bool = True


def _model_prediction(
    run: RunModel,
    patient: NewPatient,
    clinical_row: pd.DataFrame | None,
    options: PredictOptions,
    profile: Profile,
) -> tuple[np.ndarray, ...]:
    """One model's ``S``, ``R``, pmf and recurrence probabilities ``[12]`` each: the mean over
    the imputation draws of the missing predictors (one row when none is missing) and over the
    unchanged and ``n_tta`` augmented inputs."""
    pid = patient.patient_id
    if options.n_imputations > 0:
        rows = CI.imputation_draws(run.encoder, clinical_row, pid, options.n_imputations,
                                   options.seed)  # fmt: skip
    else:
        rows = clinical_row if clinical_row is not None else pd.DataFrame(index=pd.Index([pid]))
    x, _ = run.encoder.transform(rows)
    parts = []
    for t in range(options.n_tta + 1):
        aug = None if t == 0 else options.seed + 1000 * (t - 1) + 1
        item = patient_item(patient, x[0], run.lesion_stats, aug, profile)
        parts += [_curves(run.model, batch) for batch in _clinical_batches(item, x)]
    return tuple(np.concatenate(arrays).mean(axis=0) for arrays in zip(*parts, strict=True))


def _group(risk: float, cuts: Sequence[float]) -> str:
    return RISK_GROUPS[int(np.searchsorted(np.asarray(cuts, dtype=float), risk, side="right"))]


def _pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def headline(row: dict, synthetic: bool) -> list[str]:
    """What the reader must know before the numbers: the caveats of this prediction, most
    important first (training data; missing predictors; training-set membership; band)."""
    lines = [
        "Research model trained on SYNTHETIC data: not for clinical use."
        if synthetic
        else "Research model: not validated for clinical decisions."
    ]
    if row.get("missing_predictors"):
        names = str(row["missing_predictors"]).split("; ")
        how = (
            "averaged over values drawn from the training cohort"
            if row.get("n_imputations", 0)
            else "filled with the training means"
        )
        lines.append(
            f"INCOMPLETE CLINICAL DATA: {len(names)} predictor(s) missing "
            f"({', '.join(names)}), {how} (--allow-missing); the prediction knows less about "
            "this patient than one with a complete row."
        )
    member = row.get("in_training_set")
    if member is True:
        lines.append(
            "This patient's CT was in the model's training set: the prediction is optimistic."
        )
    elif member is None:
        lines.append(
            "Whether this patient's CT was in the model's training set is unknown (the run does "
            "not record its training images)."
        )
    if int(row.get("n_models", 1)) < ensemble.MIN_MEMBERS:
        method = ensemble.band_method(1)
        lines.append(f"{method[0].upper()}{method[1:]}.")
    return lines


def plain_language(row: dict, synthetic: bool) -> str:
    """One line for the clinician (5-year values, band, risk groups, the caveats of
    :func:`headline`)."""

    def value(head: str) -> str:
        v, lo, hi = row[f"{head}_5y"], row[f"{head}_5y_lo"], row[f"{head}_5y_hi"]
        band = f" (band {_pct(lo)}-{_pct(hi)})" if np.isfinite(lo) else ""
        return f"{_pct(v)}{band}"

    text = (
        f"Predicted 5-year overall survival {value('os')} and recurrence-free probability "
        f"{value('rfs')}; {row['os_risk_group']} risk of death and {row['rfs_risk_group']} "
        f"risk of recurrence ({row['risk_cut_points']})."
    )
    caveats = headline(row, synthetic)
    return " ".join([text, *caveats[1:], caveats[0]])


@dataclass
class PatientPrediction:
    """Everything predicted for one patient.

    ``surv_members``/``rfs_members`` ``[models, 12]``; ``surv``/``rfs`` ``[3, 12]`` = point
    (mean over models), band low and high (NaN with one model); ``surv_pmf``/``rec_probs``
    ``[12]`` (mean over models); ``row`` the one-line summary (rounded); ``headline`` the
    caveats (:func:`headline`); ``followed_years`` the last year the training follow-up backs,
    per head (:func:`supported_years`).
    """

    patient_id: str
    surv_members: np.ndarray
    rfs_members: np.ndarray
    surv: np.ndarray
    rfs: np.ndarray
    surv_pmf: np.ndarray
    rec_probs: np.ndarray
    row: dict
    headline: list[str]
    followed_years: dict[str, int | None]


def _with_band(
    members: np.ndarray, head: str, calibration: conformal.ConformalBand | None
) -> np.ndarray:
    """``[3, 12]``: mean over models, then the band's low and high: the conformal band of
    ``calibration`` when given, else the models' spread (NaN: one model, no band)."""
    point = members.mean(axis=0)
    if calibration is not None:
        low, high = calibration.band(point, head)
        return np.stack([point, low, high])
    spread = ensemble.band(members)
    low, high = spread if spread is not None else (np.full(N_YEARS, np.nan),) * 2
    return np.stack([point, low, high])


@functools.lru_cache(maxsize=8)
def _out_of_fold_cuts(run_dirs: tuple[str, ...]) -> tuple[dict, str] | None:
    """``ensemble.out_of_fold_cut_points``, read once per set of runs, not once per patient."""
    return ensemble.out_of_fold_cut_points(run_dirs)


def risk_cut_points(runs: Sequence[RunModel]) -> tuple[dict[str, np.ndarray], str]:
    """The cut points the ensemble's mean prediction is grouped by, and where they come from:
    the tertiles of the cross-validation's out-of-fold risk when ``runs`` are its folds
    (``ensemble.out_of_fold_cut_points``), else the mean of the models' training-patient
    tertiles (one model: its own)."""
    oof = _out_of_fold_cuts(tuple(str(r.run_dir) for r in runs))
    if oof is not None:
        return {h: np.asarray(v) for h, v in oof[0].items()}, oof[1]
    cuts = {h: np.mean([r.reference["risk_tertiles"][h] for r in runs], axis=0)
            for h in ("os", "dfs")}  # fmt: skip
    n = int(runs[0].reference["n"])
    if len(runs) == 1:
        return cuts, f"tertiles of the predicted risk of the model's {n} training patients"
    return cuts, (
        f"mean of the {len(runs)} models' tertiles of their training patients' predicted risk "
        "(not a cross-validation: no out-of-fold predictions to compute the ensemble's own)"
    )


def calibration_of(runs: Sequence[RunModel]) -> conformal.ConformalBand | None:
    """The conformal calibration of the ensemble ``runs`` (``conformal.load_calibration``:
    their cross-validation folder's ``conformal.json``, when it was made for these runs)."""
    return conformal.load_calibration(
        [r.run_dir for r in runs], [r.record.get("identity") or {} for r in runs]
    )


def band_text(runs: Sequence[RunModel], calibration: conformal.ConformalBand | None) -> str:
    """The band's meaning: the conformal band's when calibrated, else the ensemble spread's."""
    if calibration is not None:
        return calibration.method(len(runs))
    return ensemble.band_method(len(runs))


def _summary_values(surv: np.ndarray, rfs: np.ndarray) -> dict[str, float]:
    row = {}
    for name, curve in (("os", surv), ("rfs", rfs)):
        for y in SUMMARY_YEARS:
            for suffix, k in (("", 0), ("_lo", 1), ("_hi", 2)):
                row[f"{name}_{y}y{suffix}"] = round(float(curve[k, y - 1]), DECIMALS)
    return row


def predict_patient(
    runs: Sequence[RunModel],
    patient: NewPatient,
    clinical_row: pd.DataFrame | None,
    options: PredictOptions | None = None,
    profile: Profile | None = None,
) -> PatientPrediction:
    """Score one patient with every model (see module doc); missing predictors are drawn
    (``options.n_imputations``) whatever ``options.allow_missing`` says, which
    :func:`predict_new` checks first."""
    opts = options or PredictOptions()
    prof = profile or get_profile(runs[0].record["profile"])
    per_model = [_model_prediction(run, patient, clinical_row, opts, prof) for run in runs]
    s_members, r_members, pmfs, recs = (np.stack(a) for a in zip(*per_model, strict=True))
    cal = calibration_of(runs)
    surv, rfs = _with_band(s_members, "os", cal), _with_band(r_members, "dfs", cal)
    pmf_hat, rec_hat = pmfs.mean(axis=0), recs.mean(axis=0)
    frame = pd.DataFrame([{PATIENT_ID: patient.patient_id,
                           **dict(zip(SURV_COLS, pmf_hat, strict=True)),
                           **dict(zip(REC_COLS, rec_hat, strict=True))}])  # fmt: skip
    os_risk, dfs_risk = risk_group_scores(frame)
    cuts, cut_source = risk_cut_points(runs)
    missing = CI.missing_predictors(runs[0].encoder, clinical_row)
    row: dict[str, Any] = {"patient_id": patient.patient_id, **_summary_values(surv, rfs)}
    row["os_risk_group"] = _group(float(os_risk[0]), cuts["os"])
    row["rfs_risk_group"] = _group(float(dfs_risk[0]), cuts["dfs"])
    row["in_training_set"] = in_training_set(runs, patient)
    row["n_training"] = int(runs[0].reference["n"])
    row["risk_cut_points"] = cut_source
    row["n_models"] = len(runs)
    row["band"] = band_text(runs, cal)
    row["missing_predictors"] = "; ".join(missing)
    row["n_imputations"] = opts.n_imputations if missing else 0
    row.update(_beyond_horizon(runs, surv))
    synthetic = bool(runs[0].record.get("synthetic"))
    row["summary"] = plain_language(row, synthetic)
    followed = {h: supported_years(runs[0].reference, h) for h in ("os", "dfs")}
    return PatientPrediction(patient.patient_id, s_members, r_members, surv, rfs, pmf_hat,
                             rec_hat, row, headline(row, synthetic), followed)  # fmt: skip


def _beyond_horizon(runs: Sequence[RunModel], surv: np.ndarray) -> dict[str, Any]:
    """``os_beyond_class``: whether every model has the survival class beyond year 12
    (``models.heads``); ``os_beyond_12y``: the predicted probability of surviving past year 12,
    ``S(12)`` of the mean curve (0 by construction without that class)."""
    from crlm_lib.models.heads import head_forms

    forms = [head_forms(r.model).get("survival_classes") for r in runs]
    return {
        "os_beyond_class": all(f == "beyond_horizon" for f in forms),
        "os_beyond_12y": round(float(surv[0, -1]), DECIMALS),
    }


def yearly_table(preds: Sequence[PatientPrediction], reference: dict | None = None) -> pd.DataFrame:
    """Long table: one row per patient and year 1..12 with ``os``/``rfs``, their bands and, given
    the training reference, whether the training follow-up backs the year
    (``os_followed``/``rfs_followed``: :func:`supported_years`; empty when unknown)."""
    limits = {h: supported_years(reference or {}, h) for h in ("os", "dfs")}
    rows = []
    for p in preds:
        for k in range(N_YEARS):
            row = {"patient_id": p.patient_id, "year": k + 1}
            for name, curve in (("os", p.surv), ("rfs", p.rfs)):
                row.update(
                    {name: curve[0, k], f"{name}_lo": curve[1, k], f"{name}_hi": curve[2, k]}
                )
            for name, head in (("os", "os"), ("rfs", "dfs")):
                limit = limits[head]
                row[f"{name}_followed"] = None if limit is None else bool(k + 1 <= limit)
            rows.append(row)
    return pd.DataFrame(rows).round(DECIMALS)


def load_runs(run_dirs: Sequence[str | Path], console: Console | None = None) -> list[RunModel]:
    """Every model of ``run_dirs`` (a cross-validation folder stands for its fold runs:
    ``ensemble.expand_run_dirs``), refusing runs of different profiles."""
    console = console or Console(enabled=False)
    dirs = ensemble.expand_run_dirs(run_dirs)
    console.stage(f"loading {len(dirs)} model(s): {', '.join(str(d) for d in dirs)}")
    runs = [load_run_model(d) for d in dirs]
    profiles = {r.record["profile"] for r in runs}
    if len(profiles) > 1:
        raise PredictError(f"runs of different profiles {sorted(profiles)} cannot be ensembled")
    return runs


def _match_all(
    patients: Sequence[NewPatient], table: pd.DataFrame | None, console: Console
) -> dict[str, tuple[pd.DataFrame | None, str]]:
    """Each patient's clinical row and how it was matched (``clinical_input.match_rows``),
    said on the console; rows of the table that match no patient are named too."""
    rows = {}
    for p in patients:
        rows[p.patient_id] = CI.match_rows(table, p.patient_id, p.folder_name)
        how = rows[p.patient_id][1]
        said = f"'{p.folder_name}'" if how == "folder name" else how
        console.stage(f"clinical row matched by {said}" if how != "none" else "no clinical row",
                      p.patient_id)  # fmt: skip
    if table is not None:
        used = {p.patient_id for p in patients} | {p.folder_name for p in patients}
        unused = [str(i) for i in table.index if str(i) not in used]
        if unused:
            console.stage(f"clinical rows matching no patient: {', '.join(unused[:10])}")
    return rows


def _score(
    runs: Sequence[RunModel],
    patient: NewPatient,
    matched: tuple[pd.DataFrame | None, str],
    options: PredictOptions,
    out_dir: Path,
    console: Console,
) -> PatientPrediction:
    """One patient of :func:`predict_new`: its prediction, then its report and heatmaps."""
    row, how = matched
    pid = patient.patient_id
    console.stage(f"predicting with {len(runs)} model(s)", pid)
    prof = get_profile(runs[0].record["profile"])
    pred = predict_patient(runs, patient, row, options, prof)
    pred.row["clinical_row"] = how
    if options.report or options.heatmaps:
        clin = row if row is not None else pd.DataFrame(index=pd.Index([pid]))
        write_patient_outputs(runs, patient, pred, clin, out_dir, options, console)
    return pred


def predict_new(
    run_dirs: Sequence[str | Path],
    sources: Sequence[str | Path],
    out_dir: str | Path,
    clinical: str | Path | None = None,
    options: PredictOptions | None = None,
) -> pd.DataFrame:
    """Score new patients and write ``out_dir`` (the work of ``crlm predict --patient``).

    Writes ``predictions.csv`` (one row per patient: 1/3/5-year values with bands, risk
    groups, band method, how the clinical row was matched, missing predictors, summary line,
    training-set flag), ``predictions_yearly.csv`` (years 1..12 with bands and whether the
    training follow-up backs each year), ``excluded.csv`` when a patient could not be read, and
    per patient ``<patient>/report.html`` + ``report.pdf`` and
    ``<patient>/heatmaps/gradcam_recurrence.nii.gz`` + ``dicom/*.dcm`` Parametric Maps.

    Raises
    ------
    MissingPredictorError
        A patient lacks predictors and ``options.allow_missing`` is False (checked for every
        patient before any is scored).
    """
    opts = options or PredictOptions()
    if int(opts.n_tta) < 0:
        raise ArgumentError(f"n_tta (--tta) must be at least 0, got {opts.n_tta}")
    console = Console(enabled=opts.progress)
    runs = load_runs(run_dirs, console)
    prof = get_profile(runs[0].record["profile"])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = CI.read_patient_clinical(clinical) if clinical is not None else None
    # ZIPs are extracted under out_dir and kept until the heatmaps have read the CT files
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".unzip.") as work:
        patients, excluded = load_new_patients(sources, prof, work,
                                               on_patient=lambda p, s: console.stage(s, p))  # fmt: skip
        if not excluded.empty:
            atomic.write_csv(out_dir / "excluded.csv", excluded, index=False)
        if not patients:
            raise PredictError(
                f"no patient could be read: {'; '.join(excluded['reason'].astype(str))}"
            )
        rows = _match_all(patients, table, console)
        if not opts.allow_missing:
            CI.refuse_missing({pid: CI.missing_predictors(runs[0].encoder, row)
                               for pid, (row, _) in rows.items()}, clinical)  # fmt: skip
        preds = [_score(runs, p, rows[p.patient_id], opts, out_dir, console) for p in patients]
        summary = pd.DataFrame([p.row for p in preds])
        atomic.write_csv(out_dir / "predictions.csv", summary, index=False)
        yearly = yearly_table(preds, runs[0].reference)
        atomic.write_csv(out_dir / "predictions_yearly.csv", yearly, index=False)
        console.stage(f"done: {len(preds)} patient(s) written to {out_dir}")
        return summary
