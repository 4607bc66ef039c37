"""Model card of a trained run (``crlm model-card``), in the Hugging Face / MONAI sections.

The card is generated, never typed: every number comes from the run folder (``run.json``,
``history.csv``, ``metrics.json``, ``metrics_ci.csv`` written by ``crlm evaluate``), the
ensemble coverage measured by ``benchmarks/prediction_honesty.py`` (``band_coverage.json`` in
the run folder or the cross-validation folder above it) or a results folder of the notebooks
(``cv_tidy.csv`` of notebook 06); nothing about another cohort is quoted. Sections follow the
Hugging Face model card (model details, uses, bias/risks/limitations, how to get started,
training details and hyperparameters, evaluation, technical specifications, citation) and the
MONAI bundle's fields (version, licence, inputs and outputs, intended use, ethical
considerations), with the TRIPOD+AI items on intended use (3a), data (5-6), outcome (6a),
performance with intervals (23) and limitations (27).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from crlm_lib import atomic
from crlm_lib.runfolder import METRICS_CI_FILE, METRICS_FILE, RunFolder

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
    folder = RunFolder(run_dir)
    ci_path, point_path = folder.file(METRICS_CI_FILE), folder.file(METRICS_FILE)
    rows = []
    tidy, m = folder.read_metrics_ci(), folder.read_metrics()
    if tidy is not None:
        for key, label in _METRICS:
            if key in tidy.index:
                r = tidy.loc[key]
                rows.append(f"| {label} | {_fmt(r['estimate'], r.get('low'), r.get('high'))} |")
        source = f"`{ci_path.name}` (`crlm evaluate`: 95% percentile bootstrap over test patients)"
    elif m is not None:
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
    """The risk-group cut points with their units, or what is missing instead of empty lists."""
    tert = (rec.get("training_reference") or {}).get("risk_tertiles") or {}
    os_cuts, dfs_cuts = tert.get("os") or [], tert.get("dfs") or []
    if not (os_cuts and dfs_cuts):
        return (
            "- Risk-group cut points: none stored (`run.json` has no training reference: they "
            "are computed from the training patients when training ends)."
        )
    score = ((rec.get("training_reference") or {}).get("risk_score") or {}).get("os", "")
    if "risk_from_survival" in str(score):
        os_text = (
            "predicted 12-year restricted mean survival time "
            + " and ".join(f"{-v:.2f} years" for v in os_cuts)
            + " (risk score = minus it: a shorter expected survival is a higher group)"
        )
    else:
        os_text = f"{[round(v, 3) for v in os_cuts]} of the score `{score}`"
    dfs_text = " and ".join(f"{v:.1%}" for v in dfs_cuts)
    return (
        "- Risk-group cut points (tertiles of the training patients' predicted risk): overall "
        f"survival, {os_text}; recurrence, predicted probability of recurrence by 3 years "
        f"{dfs_text}."
    )


def _follow_up(rec: dict) -> str:
    """Where the training cohort's follow-up runs out (numbers at risk of the training KM)."""
    from crlm_lib.config import MIN_AT_RISK

    km = (rec.get("training_reference") or {}).get("km") or {}
    parts = []
    for head, name in (("os", "overall survival"), ("dfs", "recurrence-free survival")):
        at_risk = (km.get(head) or {}).get("at_risk")
        if at_risk:
            last = max((t for t, n in enumerate(at_risk) if n >= MIN_AT_RISK), default=0)
            parts.append(f"{name} to year {last}")
    if not parts:
        return "- Follow-up: numbers at risk not recorded by this run."
    return (
        f"- Follow-up: at least {MIN_AT_RISK} training patients were still followed for "
        f"{', '.join(parts)}; `crlm predict` flags the later years as the model's "
        "extrapolation."
    )


def _calibration_line(run_dir: Path) -> str:
    """What the band of ``crlm predict`` is for this run: the conformal calibration of its
    cross-validation folder (``conformal.json``), else the models' spread."""
    from crlm_lib.conformal import CALIBRATION_FILE, ConformalBand

    path = run_dir.parent / CALIBRATION_FILE
    if not path.is_file():
        return (
            "- Band: the 5th-95th percentile of the ensemble's models (their disagreement, not "
            "calibrated: no cross-validation with known true curves, `conformal.json`, sits "
            "beside this run); a single run shows no band."
        )
    cal = ConformalBand.from_dict(json.loads(path.read_text()))
    widths = ", ".join(f"{y} y +/-{cal.half_width['os'][y - 1]:.2f}" for y in (1, 3, 5))
    return (
        f"- Band: split-conformal {cal.level:.0%} band for the true survival probability, "
        f"calibrated on the out-of-fold predictions of {cal.n} cross-validation patients against "
        f"their true curves ({cal.source}); half-widths of overall survival {widths} "
        f"(`{path}`)."
    )


def _coverage_lines(run_dir: Path) -> list[str]:
    """The band's meaning and its measured coverage (``band_coverage.json`` of
    ``benchmarks/prediction_honesty.py``), in the run folder or the CV folder above it."""
    lines = [_calibration_line(run_dir)]
    for folder in (run_dir, run_dir.parent):
        path = folder / "band_coverage.json"
        if path.is_file():
            cov = json.loads(path.read_text())
            break
    else:
        return [*lines, "- Band coverage: not measured for this run (`python benchmarks/"
                "prediction_honesty.py` measures it on held-out synthetic patients)."]  # fmt: skip
    nominal, share = float(cov["nominal"]), float(cov["coverage"])
    verdict = (
        "within 5 points of nominal"
        if abs(share - nominal) <= 0.05
        else "FAR FROM NOMINAL: do not read the band as a confidence interval"
    )
    lines.append(
        f"- Band coverage: the band ({cov['method']}) held the true 1/3/5-year overall survival "
        f"in {share:.0%} of {cov['n_values']} values ({cov['n_patients']} held-out synthetic "
        f"patients, {cov['n_models']} models) against a nominal {nominal:.0%}: {verdict}; "
        f"recurrence-free survival {float(cov['coverage_dfs']):.0%}; mean width at 5 years "
        f"{float(cov['mean_band_width_os5']):.2f} (a calibrated band is as wide as the models' "
        f"errors) (`{path}`)."
    )
    spread = cov.get("ensemble_spread")
    if spread:
        lines.append(
            f"- For comparison, the models' 5th-95th percentile spread held {spread['coverage']:.0%}"
            f" (overall) and {spread['coverage_dfs']:.0%} (recurrence-free) of the same values."
        )
    outcome = cov.get("outcome_calibrated_half_width_os")
    if outcome:
        widths = ", ".join(
            f"{y} y +/-{v:.2f}" if v is not None else f"{y} y unbounded (never reached)"
            for y, v in outcome.items()
        )  # null: the weights never reach the level (strict JSON of an infinite width)
        lines.append(
            "- Without true curves (a real cohort) a band can be calibrated only on observed "
            f"outcomes, and it covers the outcome, not the probability: half-widths {widths} "
            "(IPCW, same patients), about the whole [0, 1] range."
        )
    return lines


def _hyperparameters(rec: dict) -> list[str]:
    """The training settings of the run's profile (part of its identity hash) and options."""
    from crlm_lib.config import PROFILES

    lines = [
        f"- Options `{json.dumps(rec.get('options', {}))}`, loss weights "
        f"`{json.dumps(rec.get('loss_weights') or {})}`, objective `{rec.get('objective')}`, "
        f"seed {rec.get('seed')}."
    ]
    prof = PROFILES.get(str(rec.get("profile")))
    if prof is not None:
        t, m, pre = prof.train, prof.model, prof.preprocess
        lines.append(
            f"- Profile `{prof.name}`: AdamW lr {t.lr:g}, weight decay {t.weight_decay:g}, batch "
            f"{t.batch_size}, up to {rec.get('epochs') or t.epochs} epochs, early stopping "
            f"after {t.early_stopping_patience} epochs without improvement, plateau factor "
            f"{t.plateau_factor:g} / patience {t.plateau_patience}, augmentation "
            f"{'on' if t.augment else 'off'}; network width {m.width}; input "
            f"{pre.depth}x{pre.size}x{pre.size} voxels."
        )
    return lines


def _software(rec: dict) -> str:
    from crlm_lib.provenance import run_identity_text, software_text

    trained = software_text(rec["software"]) if rec.get("software") else "not recorded"
    return (
        f"- Trained with {trained}; card written by {software_text()}. Run identity: "
        f"{run_identity_text(rec)}."
    )


def _usage(run_dir: Path) -> list[str]:
    return [
        "```bash",
        f"crlm predict --run {run_dir} --template clinical.csv --patient /path/NEW-PATIENT",
        "# fill in clinical.csv (one row per patient; units and codes in its first row), then",
        f"crlm predict --run {run_dir} --patient /path/NEW-PATIENT --clinical clinical.csv "
        "--out predictions/",
        "```",
        "",
        "Give the cross-validation folder (`runs/<tag>/cv/<model>/`) instead of one run for an "
        "ensemble with a band. A patient with missing predictors is refused unless "
        "`--allow-missing` (the prediction is then averaged over values drawn from the "
        "training cohort and the report says so).",
    ]


def _data_lines(rec: dict) -> list[str]:
    n = {k: len(rec.get(f"{k}_ids", [])) for k in ("train", "val", "test")}
    data = (
        "SYNTHETIC cohort written in the TCIA collection's layout (`crlm synth`); its outcomes "
        "come from a documented generative model. Numbers below say nothing about real patients."
        if rec.get("synthetic")
        else "Real cohort (TCIA Colorectal-Liver-Metastases, MSKCC, Simpson et al. 2024)."
    )
    features = rec.get("clinical_feature_names", [])
    return [
        f"- {data}",
        f"- Split (seeded): {n['train']} training, {n['val']} early-stopping, {n['test']} test "
        "patients.",
        f"- Clinical inputs: {len(features)} encoded features (stored encoder in `run.json`: "
        "training means, SDs, missing indicators, and the training distribution of each "
        "predictor that `--allow-missing` draws from).",
        _follow_up(rec),
        _cut_points(rec),
    ]


def _limitations(rec: dict, run_dir: Path) -> list[str]:
    n_train, n_test = len(rec.get("train_ids", [])), len(rec.get("test_ids", []))
    return [
        "- "
        + ("Trained and evaluated on synthetic data: " if rec.get("synthetic") else "")
        + f"{n_train} training patients from one cohort; a {n_test}-patient test split gives "
        "intervals too wide to rank models.",
        *_coverage_lines(run_dir),
        "- Grad-CAM maps show where the model's gradients point, not causes; see the "
        "randomisation sanity check in notebook 05.",
        "- Preprocessing depends on the SEG (portal veins for the slice window, liver for the "
        "heatmaps): a patient without a usable SEG cannot be scored.",
        *_tail_line(run_dir),
    ]


def _tail_line(run_dir: Path) -> list[str]:
    """Whether the network's survival is forced to 0 at year 12 (no mass beyond the horizon
    in its ``predictions.csv``), said as a limitation."""
    from crlm_lib.types import BEYOND_COL

    path = run_dir / "predictions.csv"
    if path.is_file() and BEYOND_COL in pd.read_csv(path, nrows=1).columns:
        return [
            "- Survival past year 12 is the network's own class (the mass a Kaplan-Meier curve "
            "keeps at 12 years), so its survival at 12 years is not 0 by construction; years "
            "beyond the training follow-up are the model's extrapolation."
        ]
    return [
        "- The network spreads every death over years 1-12: its survival reaches 0 at year 12 "
        "by construction, and the years beyond the training follow-up are extrapolation."
    ]


def _ethics(rec: dict) -> list[str]:
    population = (
        "- Trained on synthetic patients: the model describes a generator, no real population."
        if rec.get("synthetic")
        else "- Trained on resected patients of one centre: it says nothing about patients who "
        "were not operated on, and its calibration elsewhere is unknown."
    )
    return [
        "- Not a medical device and not validated for clinical decisions; a prediction must "
        "not replace the multidisciplinary team's judgement (automation bias).",
        population,
        "- Demographic subgroups (sex, age) were not evaluated separately.",
        "- `run.json` stores patient IDs: real data must be de-identified before it enters a run "
        "folder (the synthetic cohort's headers carry obviously fake identifiers).",
    ]


def _licence_and_citation() -> list[str]:
    return [
        "## Licence",
        "",
        "Code: MIT (`LICENSE`). No weights ship with the repository; a run's weights fall under "
        "the terms of the data they were trained on (the TCIA collection's data-use terms for "
        "the real cohort).",
        "",
        "## Citation",
        "",
        "Cite the repository (`CITATION.cff`), the reimplemented papers (4D-ACFNet, ACM MM "
        "2025; STAR, ICLR 2026 submission; STG, arXiv 2505.03123) and the data (Simpson et al., "
        "TCIA Colorectal-Liver-Metastases, doi:10.7937/QXK2-QG03; Sci Data 11:172, 2024).",
    ]


def _head_text(rec: dict) -> str:
    """The run's two heads in words, from its options (``models.heads``; absent = default)."""
    options = rec.get("options") or {}
    recurrence = (
        "12 independent sigmoids, as published"
        if options.get("recurrence_form") == "independent"
        else "from yearly discrete hazards, non-decreasing by construction"
    )
    survival = (
        "softmax over 12 years, as published: no survival past year 12"
        if options.get("survival_classes") == "published12"
        else "softmax over years 1-12 and a 13th class, alive at 12 years"
    )
    return f"{recurrence}) and of death in each year ({survival}"


def _details(rec: dict, run_dir: Path, name: str, trained: str) -> list[str]:
    """The "Model details" and "Uses" sections."""
    return [
        "## Model details",
        "",
        f"- Architecture: `{rec['model']}` ({name}) of `crlm_lib.models`; run written {trained}.",
        _epochs_line(run_dir, rec),
        "- Task: year-by-year prognosis after hepatic resection of colorectal liver metastases: "
        f"probability of recurrence by the end of each of 12 years ({_head_text(rec)}), from "
        "one preoperative portal-venous CT, its DICOM-SEG and clinical factors.",
        _software(rec),
        "",
        "## Uses",
        "",
        "- Intended: research on reproducing 4D-ACFNet / STAR / STG and on prognostic modelling "
        "of CRLM. Risk groups are relative to this run's training patients only.",
        "- Out of scope: clinical decisions (no prospective or external validation, no "
        "regulatory clearance); patients without a resection; CT without a DICOM-SEG.",
        "",
    ]


def build_model_card(run_dir: str | Path, results_dir: str | Path | None = None) -> str:
    """The Markdown model card of ``run_dir`` (numbers read from its files, see module doc)."""
    from crlm_lib.evaluation import LABELS

    run_dir = Path(run_dir)
    folder = RunFolder(run_dir)
    rec_path = folder.record_path
    if not folder.has_record():
        raise FileNotFoundError(f"{rec_path} not found: not a run folder (crlm train writes it)")
    rec = folder.read_record()
    name = LABELS.get(rec["model"], rec["model"])
    trained = datetime.fromtimestamp(rec_path.stat().st_mtime, tz=UTC).strftime("%Y-%m-%d")
    lines = [
        f"# Model card: {name} (run `{run_dir.name}`)",
        "",
        f"Generated by `crlm model-card` on {datetime.now(UTC):%Y-%m-%d} from `{run_dir}`; "
        "every number below is read from that run (and the files named).",
        "",
        *_progress_lines(run_dir, rec),
        *_details(rec, run_dir, name, trained),
        *_use_sections(run_dir),
        *_training_sections(rec),
        *_evaluation_sections(run_dir, results_dir),
        "## Bias, risks and limitations",
        "",
        *_limitations(rec, run_dir),
        "",
        "## Ethical considerations",
        "",
        *_ethics(rec),
        "",
        *_licence_and_citation(),
    ]
    return "\n".join(lines) + "\n"


def _use_sections(run_dir: Path) -> list[str]:
    """The card's "How to use" and "Inputs and outputs" sections."""
    return [
        "## How to use",
        "",
        *_usage(run_dir),
        "",
        "## Inputs and outputs",
        "",
        "- CT: `[1, D, H, W]` float32 in [-1, 1] after the papers' preprocessing (soft-tissue "
        "window, CLAHE, in-plane resize, slices centred on the portal-vein bifurcation); masks "
        "`[5, D, H, W]` (liver, remnant, hepatic veins, portal veins, tumours).",
        "- Outputs: `recurrence_logits` `[B, 12]` (logits of the cumulative probability), "
        "`survival_logits` `[B, 13]` (`[B, 12]` for `survival_classes=published12`); "
        "`crlm predict` turns them "
        "into curves with an ensemble band, risk groups, a report and DICOM Parametric Maps.",
        "",
    ]


def _training_sections(rec: dict) -> list[str]:
    """The card's "Training data" and "Training procedure and hyperparameters" sections, from
    the run record ``rec``."""
    return [
        "## Training data",
        "",
        *_data_lines(rec),
        "",
        "## Training procedure and hyperparameters",
        "",
        *_hyperparameters(rec),
        "",
    ]


def _evaluation_sections(run_dir: Path, results_dir: str | Path | None) -> list[str]:
    """The card's "Evaluation" section: the run's test split and, from ``results_dir`` when
    given, the cross-validation of the whole cohort."""
    return [
        "## Evaluation",
        "",
        "### The run's test split",
        "",
        *_split_metrics(run_dir),
        "",
        "### Cross-validation (whole cohort)",
        "",
        *_cv_metrics(None if results_dir is None else Path(results_dir)),
        "",
    ]


def write_model_card(
    run_dir: str | Path, out: str | Path, results_dir: str | Path | None = None
) -> Path:
    """Write :func:`build_model_card` to ``out`` atomically and return the path."""
    out = Path(out)
    atomic.write_text(out, build_model_card(run_dir, results_dir))
    return out
