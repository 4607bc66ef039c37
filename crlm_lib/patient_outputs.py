"""What ``crlm predict`` writes for one patient besides its table rows: the Grad-CAM and SHAP
explanations, the heatmaps as NIfTI and DICOM Parametric Maps, and the HTML/PDF report with its
provenance (software, git commit, run identities), the slice positions of the original CT and
the image orientation.

The model is read through the run objects of :mod:`crlm_lib.predict` (``RunModel``: ``model``,
``encoder``, ``lesion_stats``, ``record``, ``run_dir``) and the prediction through its
``PatientPrediction``; this module does not import :mod:`crlm_lib.predict`, which calls it.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crlm_lib import ensemble
from crlm_lib.console import Console
from crlm_lib.data.new_patients import NewPatient, patient_item, slice_label

if TYPE_CHECKING:
    from crlm_lib.predict import PatientPrediction, PredictOptions, RunModel

__all__ = ["explain_patient", "orientation_letters", "safe_name", "write_patient_outputs"]


def safe_name(patient_id: str) -> str:
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
    value of each clinical feature for one patient, of one model (``run``: the ensemble's first,
    named on the report's pages by :func:`explained_by`; explaining every member would multiply
    the per-patient time by their number).

    SHAP reference (choice): the average training patient (:meth:`ClinicalEncoder.baseline`),
    because the run does not keep the training rows; the values explain the difference between
    this patient's risk and the risk of the same CT with average clinical factors. A missing
    predictor enters the explanation at its training mean (its SHAP value is then ~0).
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


def provenance(runs: Sequence[RunModel], patient: NewPatient) -> dict[str, str]:
    """The report's provenance lines: model, runs with their identities, training data,
    software (this process and the one that trained), date, source."""
    from crlm_lib.provenance import ensemble_identity_text, software_text

    rec = runs[0].record
    trained = {software_text(r.record["software"]) for r in runs if r.record.get("software")}
    parents = {r.run_dir.parent for r in runs}
    folders = (
        f"{parents.pop()}: {', '.join(r.run_dir.name for r in runs)}"
        if len(parents) == 1 and len(runs) > 1
        else "; ".join(str(r.run_dir) for r in runs)
    )
    return {
        "model": f"{rec['model']}, {len(runs)} model(s)",
        "runs": folders,
        "run identity": ensemble_identity_text([r.record for r in runs]),
        "training data": "synthetic cohort" if rec.get("synthetic") else "real",
        "profile": str(rec["profile"]),
        "software": software_text(),
        "trained with": ", ".join(sorted(trained)) or "not recorded (run older than the record)",
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "source": str(patient.source),
    }


def explained_by(runs: Sequence[RunModel]) -> str:
    """Which member the explanations and the training Kaplan–Meier curve come from:
    ``"model 1 of 5 (r0_f0)"``, or ``"the model"`` for one."""
    if len(runs) == 1:
        return "the model"
    return f"model 1 of {len(runs)} ({runs[0].run_dir.name})"


def orientation_letters(arrays: dict[str, Any]) -> tuple[str, str, str, str]:
    """Patient directions at the (left, right, top, bottom) edges of an axial slice as shown
    (columns = the CT's row direction, rows = its column direction; LPS letters)."""
    direction = np.asarray(arrays["direction"], dtype=float).reshape(3, 3)

    def letter(v: np.ndarray) -> str:
        axis = int(np.argmax(np.abs(v)))
        return ("LR", "PA", "SI")[axis][0 if v[axis] > 0 else 1]

    row, col = direction[:, 0], direction[:, 1]
    return letter(-row), letter(row), letter(-col), letter(col)


def _write_report(
    runs: Sequence[RunModel],
    patient: NewPatient,
    pred: PatientPrediction,
    heat: np.ndarray,
    shap_values: dict[str, float],
    folder: Path,
) -> None:
    """The HTML + PDF report of one patient (``report.write_report``)."""
    from crlm_lib.report import PatientReport, write_report

    a = patient.arrays
    ref = runs[0].reference
    report = PatientReport(
        row=pred.row,
        surv=pred.surv,
        rfs=pred.rfs,
        reference=ref,
        ct=a["ct"],
        masks=a["masks"],
        heatmaps=heat,
        shap_values=shap_values,
        provenance=provenance(runs, patient),
        headline=pred.headline,
        band_method=str(pred.row["band"]),
        performance=_performance_lines(runs),
        slice_labels=[slice_label(patient, d) for d in range(a["ct"].shape[0])],
        orientation=orientation_letters(a),
        explained_by=explained_by(runs),
        followed_years=pred.followed_years,
    )
    write_report(report, folder)


def _performance_lines(runs: Sequence[RunModel]) -> list[str] | None:
    return _performance_of(tuple(str(r.run_dir) for r in runs))


@functools.lru_cache(maxsize=8)
def _performance_of(run_dirs: tuple[str, ...]) -> list[str] | None:
    """The ensemble's validation lines, computed once per set of runs (a bootstrap: ~0.7 s)
    rather than once per patient."""
    perf = ensemble.cv_performance([Path(r) for r in run_dirs])
    return None if perf is None else perf.lines()


def write_patient_outputs(
    runs: Sequence[RunModel],
    patient: NewPatient,
    pred: PatientPrediction,
    clinical_row: pd.DataFrame,
    out_dir: Path,
    options: PredictOptions,
    console: Console,
) -> None:
    """``<out_dir>/<patient>/``: Grad-CAM as NIfTI + DICOM Parametric Maps, report HTML + PDF."""
    pid = patient.patient_id
    console.stage(f"Grad-CAM (12 years) and SHAP ({options.shap_samples} samples)", pid)
    heat, shap_values = explain_patient(runs[0], patient, clinical_row, options.shap_samples,
                                        options.seed)  # fmt: skip
    folder = out_dir / safe_name(pid)
    if options.heatmaps:
        from crlm_lib.explain import export_heatmaps_nifti
        from crlm_lib.export import export_heatmaps_dicom
        from crlm_lib.provenance import software_text

        console.stage("heatmaps: NIfTI and DICOM Parametric Maps (one series per year)", pid)
        export_heatmaps_nifti(
            heat, patient.arrays, folder / "heatmaps" / "gradcam_recurrence.nii.gz"
        )
        trained = [
            software_text(r.record["software"]) for r in runs[:1] if r.record.get("software")
        ]
        export_heatmaps_dicom(heat, patient.arrays, patient.ct_files, folder / "heatmaps" / "dicom",
                              software_versions=[software_text(), *trained])  # fmt: skip
    if options.report:
        console.stage("report: HTML and PDF", pid)
        _write_report(runs, patient, pred, heat, shap_values, folder)
