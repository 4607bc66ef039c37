"""Model card of a trained run (``crlm model-card``), after the MONAI bundle and TRIPOD+AI.

The card is generated, never typed: every number comes from the run folder (``run.json``,
``metrics.json``, ``metrics_ci.csv`` written by ``crlm evaluate``) or from a results folder of
the notebooks (``cv_tidy.csv`` of notebook 06). Sections follow the MONAI bundle's
``metadata.json`` / model-card fields (name, version, task, inputs and outputs, data, performance,
intended use, limitations) and the TRIPOD+AI items on intended use (3a), data (5-6), outcome
(6a), performance with intervals (23) and limitations (27).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from crlm_lib import atomic

__all__ = ["build_model_card", "write_model_card"]

_METRICS = (
    ("os_c_harrell", "C-index, overall survival (Harrell)"),
    ("os_c_uno", "C-index, overall survival (Uno)"),
    ("dfs_c_harrell", "C-index, disease-free survival (Harrell)"),
    ("os_ibs", "Integrated Brier score, overall survival"),
    ("os_auc_3y", "Time-dependent AUC at 3 years, overall survival"),
    ("os_taa", "TAA of the predicted year of death (papers' metric, censoring ignored)"),
    ("os_mae", "MAE of the predicted year of death, years (papers' metric)"),
)
_CV_MODELS = (("acfnet", "4D-ACFNet"), ("cox", "Cox PH (clinical)"), ("oracle", "Oracle"))


def _fmt(est: float, low: float | None = None, high: float | None = None) -> str:
    if pd.isna(est):
        return "–"
    text = f"{est:.3f}"
    if low is not None and high is not None and pd.notna(low) and pd.notna(high):
        text += f" (95% CI {low:.3f}–{high:.3f})"
    return text


def _split_metrics(run_dir: Path) -> list[str]:
    ci_path, point_path = run_dir / "metrics_ci.csv", run_dir / "metrics.json"
    rows = []
    if ci_path.is_file():
        tidy = pd.read_csv(ci_path).set_index("metric")
        for key, label in _METRICS:
            if key in tidy.index:
                r = tidy.loc[key]
                rows.append(f"| {label} | {_fmt(r['estimate'], r.get('low'), r.get('high'))} |")
        source = f"`{ci_path.name}` (`crlm evaluate`: 95% percentile bootstrap over test patients)"
    elif point_path.is_file():
        m = json.loads(point_path.read_text())
        for key, label in _METRICS:
            if key in m:
                rows.append(f"| {label} | {_fmt(m[key])} (no interval: run `crlm evaluate`) |")
        source = f"`{point_path.name}` (point estimates)"
    else:
        return ["No metrics in the run folder: run `crlm train` / `crlm evaluate` first."]
    return [f"Source: {source}.", "", "| metric | value |", "|---|---|", *rows]


def _cv_metrics(results_dir: Path | None) -> list[str]:
    if results_dir is None or not (Path(results_dir) / "cv_tidy.csv").is_file():
        return ["Not given (pass `--results results/<tag>` after notebook 06 has run)."]
    tidy = pd.read_csv(Path(results_dir) / "cv_tidy.csv")
    lines = [
        f"Source: `{Path(results_dir) / 'cv_tidy.csv'}` (notebook 06: repeated stratified "
        "cross-validation, mean over repeats, 95% bootstrap intervals over patients).",
        "",
        "| model | C-index OS (Harrell) | C-index DFS (Harrell) | IBS OS |",
        "|---|---|---|---|",
    ]
    for key, label in _CV_MODELS:
        sub = tidy[tidy["model"] == key].set_index("metric")
        if sub.empty:
            continue
        cells = []
        for metric in ("os_c_harrell", "dfs_c_harrell", "os_ibs"):
            r = sub.loc[metric] if metric in sub.index else None
            cells.append("–" if r is None else _fmt(r["estimate"], r.get("low"), r.get("high")))
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return lines


def _progress_lines(run_dir: Path, rec: dict) -> list[str]:
    """The card's note on a run that did not finish, or ``[]`` (numbers from
    :func:`crlm_lib.evaluation.run_progress`)."""
    from crlm_lib.evaluation import run_progress
    from crlm_lib.evaluation.runs import resume_command

    progress = run_progress(run_dir, rec)
    if progress.finished:
        return []
    return [
        f"**INCOMPLETE RUN: {progress.summary()}** (`history.csv`); training never ended "
        "(`run.json` holds no training reference, written when it ends), so this card "
        "describes a partly trained model: no test metrics and no risk-group cut points exist. "
        f"Resume it with `{resume_command(run_dir, rec)}` (same `--data`/`--clinical`).",
        "",
    ]


def _epochs_line(run_dir: Path, rec: dict) -> str:
    """``- Training: 6 of 6 planned epochs done...`` (anchors: fitted, no epochs)."""
    from crlm_lib.evaluation import ANCHOR_NAMES, run_progress

    if rec.get("model") in ANCHOR_NAMES:
        return "- Training: a clinical anchor, fitted in one step (no epochs)."
    p = run_progress(run_dir, rec)
    early = p.finished and p.epochs_planned is not None and p.epochs_done < p.epochs_planned
    state = "finished" + (" (early stopping)" if early else "") if p.finished else "NOT finished"
    return f"- Training: {p.summary()}, {state}."


def _cut_points(rec: dict) -> str:
    """The risk-group cut points, or what is missing instead of empty lists."""
    tert = (rec.get("training_reference") or {}).get("risk_tertiles") or {}
    os_cuts, dfs_cuts = tert.get("os") or [], tert.get("dfs") or []
    if not (os_cuts and dfs_cuts):
        return (
            "- Risk-group cut points: none stored (`run.json` has no training reference: they "
            "are computed from the training patients when training ends)."
        )
    return (
        "- Risk-group cut points (tertiles of the training patients' predicted risk): OS "
        f"{[round(v, 3) for v in os_cuts]}, DFS {[round(v, 3) for v in dfs_cuts]}."
    )


def build_model_card(run_dir: str | Path, results_dir: str | Path | None = None) -> str:
    """The Markdown model card of ``run_dir`` (numbers read from its files, see module doc).

    Long on purpose: the body is one Markdown template that reads top to bottom as the card
    does; its computed values are gathered in the first lines and its tables come from
    ``_split_metrics`` / ``_cv_metrics``.
    """
    from crlm_lib.evaluation import LABELS

    run_dir = Path(run_dir)
    rec_path = run_dir / "run.json"
    if not rec_path.is_file():
        raise FileNotFoundError(f"{rec_path} not found: not a run folder (crlm train writes it)")
    rec = json.loads(rec_path.read_text())
    name = LABELS.get(rec["model"], rec["model"])
    synthetic = bool(rec.get("synthetic"))
    data = (
        "SYNTHETIC cohort written in the TCIA collection's layout (`crlm synth`); its outcomes "
        "come from a documented generative model. Numbers below say nothing about real patients."
        if synthetic
        else "Real cohort (TCIA Colorectal-Liver-Metastases, MSKCC, Simpson et al. 2024)."
    )
    n = {k: len(rec.get(f"{k}_ids", [])) for k in ("train", "val", "test")}
    trained = datetime.fromtimestamp(rec_path.stat().st_mtime, tz=UTC).strftime("%Y-%m-%d")
    features = rec.get("clinical_feature_names", [])
    lines = [
        f"# Model card: {name} (run `{run_dir.name}`)",
        "",
        f"Generated by `crlm model-card` on {datetime.now(UTC):%Y-%m-%d} from `{run_dir}`; "
        "every number below is read from that run (and the results folder named).",
        "",
        *_progress_lines(run_dir, rec),
        "## Model details",
        "",
        f"- Architecture: `{rec['model']}` ({name}) of `crlm_lib.models`, options "
        f"`{json.dumps(rec.get('options', {}))}`, objective `{rec.get('objective', 'paper')}`.",
        f"- Profile `{rec.get('profile')}`, seed {rec.get('seed')}, run written {trained}.",
        _epochs_line(run_dir, rec),
        "- Task: year-by-year prognosis after hepatic resection of colorectal liver metastases: "
        "probability of recurrence by the end of each of 12 years (sigmoid per year) and of "
        "death in each year (softmax), from one preoperative portal-venous CT, its DICOM-SEG and "
        "clinical factors.",
        "",
        "## Inputs and outputs",
        "",
        "- CT: `[1, D, H, W]` float32 in [-1, 1] after the papers' preprocessing (CLAHE, "
        "in-plane resize, slices centred on the portal-vein bifurcation); masks `[5, D, H, W]` "
        "(liver, remnant, hepatic veins, portal veins, tumours).",
        f"- Clinical: {len(features)} encoded features (stored encoder in `run.json`: training "
        "means, SDs, missing indicators; missing predictors filled with training means).",
        "- Outputs: `recurrence_logits` `[B, 12]`, `survival_logits` `[B, 12]`; `crlm predict "
        "--patient` turns them into survival and recurrence-free curves with ensemble/TTA "
        "bands, 1/3/5-year values and risk groups.",
        "",
        "## Intended use",
        "",
        "- Research on reproducing 4D-ACFNet / STAR / STG and on prognostic modelling of CRLM.",
        "- NOT for clinical decisions: no prospective or external validation, no regulatory "
        "clearance. Risk groups are relative to this run's training patients only.",
        "",
        "## Data",
        "",
        f"- {data}",
        f"- Split (seeded 8:1:1): {n['train']} training, {n['val']} early-stopping, "
        f"{n['test']} test patients.",
        _cut_points(rec),
        "",
        "## Performance",
        "",
        "### The run's test split",
        "",
        *_split_metrics(run_dir),
        "",
        "### Cross-validation (whole cohort)",
        "",
        *_cv_metrics(None if results_dir is None else Path(results_dir)),
        "",
        "## Limitations",
        "",
        "- "
        + ("Trained and evaluated on synthetic data: " if synthetic else "")
        + "a single-centre cohort of 197 patients; a 20-patient test split gives intervals "
        "too wide to rank models (see the manuscript's tables).",
        "- Bands of `crlm predict` (runs x test-time augmentations) reflect model and "
        "acquisition variability, not calibrated confidence.",
        "- Grad-CAM maps show where the model's gradients point, not causes; see the "
        "randomisation sanity check in notebook 05.",
        "- Preprocessing depends on the SEG (portal veins for the slice window, liver for the "
        "heatmaps): a patient without a usable SEG cannot be scored.",
        "",
        "## References",
        "",
        "- Collins et al., TRIPOD+AI statement, BMJ 2024; MONAI bundle specification.",
        "- The manuscript of this repository (`make paper`) reports every number with intervals "
        "and the published numbers kept apart.",
    ]
    return "\n".join(lines) + "\n"


def write_model_card(
    run_dir: str | Path, out: str | Path, results_dir: str | Path | None = None
) -> Path:
    """Write :func:`build_model_card` to ``out`` atomically and return the path."""
    out = Path(out)
    atomic.write_text(out, build_model_card(run_dir, results_dir))
    return out
