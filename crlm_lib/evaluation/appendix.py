"""The methods' reference tables, read from the code so that the manuscript cannot drift from it.

* :func:`profile_table`: every setting of the three profiles (``config.PROFILES``) beside the
  papers' value and where the papers state it (:data:`PAPERS_SETTINGS`);
* :func:`generator_table`: the synthetic generator's parameters (``data.synthetic.OutcomeModel``);
* :func:`predictor_table`: each clinical predictor, its coding and its encoding
  (``data.clinical.PREDICTORS``, ``PREDICTOR_CODING``);
* :func:`hyperparameter_table`: the clinical anchors' settings and the risk score of each
  C-index (``models.clinical``, ``types.RISK_HORIZON_YEARS``);
* :func:`events_table`: patients and events in each set of the papers' split and of the
  cross-validation folds of a cohort.
"""

from __future__ import annotations

import inspect
from dataclasses import fields

import pandas as pd

from crlm_lib.config import PROFILES, Profile
from crlm_lib.data import clinical as C
from crlm_lib.data.synthetic import (
    HAZARD,
    TUMOUR_HU_MEAN,
    TUMOUR_HU_PER_SD,
    HazardConstants,
    OutcomeModel,
    outcome_model,
)
from crlm_lib.evaluation.cohort import cohort_profile
from crlm_lib.evaluation.protocols import cv_split_ids, paper_split_ids
from crlm_lib.evaluation.specs import LABELS, as_specs, model_label
from crlm_lib.models.clinical import CoxPH, RandomSurvivalForest
from crlm_lib.types import RISK_HORIZON_YEARS, Cohort

__all__ = [
    "generator_formula",
    "PAPERS_SETTINGS",
    "events_table",
    "generator_table",
    "hyperparameter_table",
    "predictor_table",
    "profile_table",
]

_ACF, _STAR = "4D-ACFNet", "STAR"
#: The papers' value of each setting of :func:`profile_table` and where it is stated
#: (4D-ACFNet, ACM MM 2025; STAR, ICLR 2026 submission; STG, arXiv 2505.03123 v1 summary).
PAPERS_SETTINGS: dict[str, str] = {
    "cohort": f"197 patients, MSKCC collection ({_ACF} §4.1, {_STAR} §4)",
    "grid": f"40 × 128 × 128 ({_ACF} §4.1, {_STAR} §4)",
    "batch": f"1 ({_ACF} §4.2, {_STAR} §4.1)",
    "optimiser": f"AdamW, 1e-4 ({_ACF} §4.2, {_STAR} §4.1)",
    "scheduler": f"ReduceLROnPlateau, factor 0.5, patience 5 ({_ACF} §4.2, {_STAR} §4.1)",
    "epochs": "not stated",
    "early": "not stated",
    "fires": "not stated",
    "elastic": f"applied, share not stated ({_ACF} §4.1, {_STAR} §4)",
    "widths": "not stated",
    "split": f"one 8:1:1 split, 157/20/20 ({_ACF} §4.1, {_STAR} §4); STG: not stated",
    "cv_clinical": "none",
    "cv_image": "none",
    "cv_models": "none",
    "bootstrap": "none (no intervals)",
    "shap": "not stated",
    "executor": "not stated",
}


#: What each ``TrainConfig.monitor`` value means in the profile table.
_MONITOR_TEXT: dict[str, str] = {
    "val_c_os": "validation C of the 5-year death risk",
    "val_loss": "validation loss",
}


def _profile_column(p: Profile) -> dict[str, str]:
    t, e, m = p.train, p.eval, p.model
    fires = t.early_stopping_patience > t.plateau_patience and t.epochs > t.plateau_patience + 1
    models = ", ".join(model_label(s.key) for s in as_specs(e.cv_models))
    return {
        "cohort": f"{p.synth.n_patients} synthetic patients",
        "grid": f"{p.preprocess.depth} × {p.preprocess.size} × {p.preprocess.size}",
        "batch": f"{t.batch_size}",
        "optimiser": f"AdamW, {t.lr:g} (weight decay {t.weight_decay:g})",
        "scheduler": f"ReduceLROnPlateau, factor {t.plateau_factor:g}, "
        f"patience {t.plateau_patience}",
        "epochs": f"{t.epochs}"
        + (
            f"; {t.epochs_no_volume} for the models without a CT volume (clinical MLP, AMINN)"
            if t.epochs_no_volume is not None
            else ""
        ),
        "early": f"patience {t.early_stopping_patience} epochs"
        + (f", {t.patience_no_volume} without a CT volume" if t.patience_no_volume else "")
        + f"; follows the {_MONITOR_TEXT[t.monitor]}"
        + (" (an anchored model's untrained start is a candidate)" if t.score_start else "")
        + (
            f"; a randomly initialised model follows the {_MONITOR_TEXT[t.random_start_monitor]}"
            if t.random_start_monitor not in (None, t.monitor)
            else ""
        ),
        "fires": "yes" if fires else "no",
        "elastic": f"{t.elastic_probability:.0%} of training samples",
        "widths": f"{m.width}, {m.embed_dim}, {m.time_embed_dim}",
        "split": "the 8:1:1 split and repeated stratified k-fold CV",
        "cv_clinical": f"{e.cv_repeats} × {e.cv_folds}",
        "cv_image": f"{e.cv_repeats_3d} × {e.cv_folds}, up to {e.cv_epochs_3d} epochs",
        "cv_models": models,
        "bootstrap": f"{e.bootstrap}",
        "shap": f"{e.shap_samples}",
        "executor": _executor_text(p.executor),
    }


def _executor_text(executor: str) -> str:
    """The profile's executor in words (``crlm_lib.executors``)."""
    from crlm_lib.executors import parse_executor

    spec = parse_executor(executor)
    threads = f", {spec.threads} torch thread(s) each" if spec.threads else ""
    if spec.kind == "local":
        return f"one after another in the notebook's process{threads}"
    if spec.kind == "dask":
        return f"{spec.workers or 'one per GPU, else 2'} at once (Dask worker processes){threads}"
    return f"{spec.kind} jobs{threads}"


#: Row labels of :func:`profile_table`.
_SETTING_NAMES: dict[str, str] = {
    "cohort": "Cohort",
    "grid": "CT grid (slices × rows × columns)",
    "batch": "Batch size",
    "optimiser": "Optimiser, base learning rate",
    "scheduler": "Learning-rate scheduler (validation loss)",
    "epochs": "Maximum epochs",
    "early": "Early stopping",
    "fires": "Scheduler can act before early stopping",
    "elastic": "Elastic deformation",
    "widths": "Network widths (stem channels, embedding, time embedding)",
    "split": "Evaluation",
    "cv_clinical": "CV of clinical models (repeats × folds)",
    "cv_image": "CV of image models (repeats × folds, epochs)",
    "cv_models": "Deep models in the CV",
    "bootstrap": "Bootstrap replicates",
    "shap": "KernelSHAP samples",
    "executor": "Torch fits (the notebooks' default executor)",
}


def profile_table() -> pd.DataFrame:
    """Every setting of the ``paper``, ``cpu`` and ``smoke`` profiles beside the papers'.

    Returns
    -------
    DataFrame
        Index: the setting; columns ``papers (where stated)``, then one per profile of
        ``config.PROFILES``, largest first (``paper``, ``cpu``, ``smoke``). "Scheduler can act before early stopping" is derived: the
        plateau scheduler lowers the rate only after ``plateau_patience`` epochs without
        improvement, so it never acts when early stopping (or the epoch budget) ends
        training first.
    """
    columns = {"papers (where stated)": PAPERS_SETTINGS}
    order = [n for n in ("paper", "cpu", "smoke") if n in PROFILES]
    order += [n for n in PROFILES if n not in order]
    columns.update({f"{name} profile": _profile_column(PROFILES[name]) for name in order})
    table = pd.DataFrame(columns).rename(index=_SETTING_NAMES)
    table.index.name = "setting"
    return table


#: Symbol and meaning of each :class:`~crlm_lib.data.synthetic.OutcomeModel` parameter.
GENERATOR_PARAMETERS: dict[str, tuple[str, str]] = {
    "setting": ("", "generator setting (image_effect: image-only quantities act; null: none)"),
    "theta": ("θ", "scale of the recurrence cumulative hazard"),
    "c0": ("c₀", "offset of the recurrence linear predictor η_R"),
    "beta0": ("β₀", "Weibull scale of the recurrence hazard (years) at η_img = 0"),
    "k_r": ("k_R", "Weibull shape of the recurrence hazard"),
    "beta_d": ("β_D", "Weibull scale of cancer death after recurrence (years)"),
    "k_d": ("k_D", "Weibull shape of cancer death after recurrence"),
    "h_op": ("h_op", "postoperative (90-day) death hazard (per year)"),
    "lambda_bg": ("λ_bg", "background (Gompertz) death hazard at age 60 (per year)"),
    "fong_effect": ("g_0..g_5", "recurrence log-hazard offset of recorded Fong score 0..5"),
    "eta_d_weight": ("w_D", "weight of η_R in the post-recurrence death predictor η_D"),
    "image_weight": ("w_img", "weight of the image-only term (1 image_effect, 0 null)"),
    "img_volume": ("a_V", "coefficient of ln(V / 20 mL), true tumour volume V"),
    "img_count": ("a_n", "coefficient of ln n, true tumour count n"),
    "img_bilobar": ("a_Bi", "coefficient of true bilobar disease"),
    "img_remnant": ("a_f", "coefficient of max(0, 0.40 − f), remnant fraction f"),
    "img_attenuation": ("a_z", "coefficient (negative sign) of the attenuation phenotype z"),
    "img_centre": ("c̄", "population mean of the image term (centring)"),
    "p_salvage": ("p_s", "probability that a recurrence is salvaged (no cancer death)"),
    "admin_years": ("[2, A]", "administrative censoring uniform between these years"),
    "loss_rate": ("ρ", "loss to follow-up rate (per year)"),
}


def _fmt(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(_fmt(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def generator_table(setting: str | OutcomeModel = "image_effect") -> pd.DataFrame:
    """The synthetic generator's parameters (``data.synthetic.OutcomeModel`` of ``setting``):
    index ``parameter`` (the field name), columns ``symbol``, ``value``, ``meaning``."""
    model = outcome_model(setting)
    rows = {
        f.name: {
            "symbol": GENERATOR_PARAMETERS.get(f.name, ("", ""))[0],
            "value": _fmt(getattr(model, f.name)),
            "meaning": GENERATOR_PARAMETERS.get(f.name, ("", f.name))[1],
        }
        for f in fields(model)
    }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "parameter"
    return table


def _n(value: float) -> str:
    """A coefficient as the code holds it (``0.1``, ``2.7``, ``60``)."""
    return f"{value:g}"


def generator_formula(constants: HazardConstants = HAZARD) -> str:
    """The synthetic generator's hazard as Markdown with display maths, every fixed number read
    from ``data.synthetic`` (:class:`~crlm_lib.data.synthetic.HazardConstants`, the tumour
    attenuation constants); the fitted and setting-dependent parameters stay symbols, whose
    values :func:`generator_table` lists. Shown by notebook 06 and embedded in the
    manuscript's supplement, so the formula and the code cannot disagree."""
    h, n = constants, _n
    eta_r = (
        rf"\eta_R = g_F + {n(h.cea)}(\ln(1 + \mathrm{{CEA}}) - {n(h.cea_centre)}) "
        rf"+ {n(h.extrahep)}E + {n(h.comorbidity)}M + {n(h.steatosis)}St + {n(h.nash_ge4)}N4 "
        rf"- {n(h.chemo_response)}\,Ch\,resp + \eta_{{img}} - c_0"
    )
    eta_img = (
        rf"\eta_{{img}} = w_{{img}}\,[a_V \ln(V/{n(h.volume_ref_ml)}) + a_n \ln n + a_{{Bi}} Bi "
        rf"+ a_f \max(0, {n(h.remnant_threshold)} - f) - a_z z - \bar c]"
    )
    lo, hi = h.beta_r_range
    other = (
        rf"h_O(t) = h_{{op}}\mathbb{{1}}[t < {n(h.op_window_years)}]\,"
        rf"e^{{{n(h.op_comorbidity)}M + {n(h.op_nash)}N4 + {n(h.op_remnant)} w_{{img}}"
        rf"\max(0, {n(h.op_remnant_threshold)} - f)}} + \lambda_{{bg}}"
        rf"e^{{{n(h.bg_age)}(a - {n(h.age_centre)}) + {n(h.bg_comorbidity)}M}}"
        rf"e^{{{n(h.bg_gompertz)}t}}"
    )
    eta_d = (
        rf"\eta_D = w_D\,\eta_R + {n(h.death_extrahep)}E + {n(h.death_age)}(a - {n(h.age_centre)})"
    )
    return "\n\n".join(
        [
            "The tumours' attenuation phenotype $z \\sim N(0, 1)$ sets their portal-venous "
            f"attenuation to ${n(TUMOUR_HU_MEAN)} + {n(TUMOUR_HU_PER_SD)}z$ HU and appears in no "
            "column and no mask. The recurrence predictor is",
            f"$${eta_r},$$",
            f"$${eta_img}.$$",
            "Recurrence follows a promotion-time cure model with cumulative hazard "
            "$H_R(t) = \\theta e^{\\eta_R}(1 - \\exp(-(t/\\beta_R)^{k_R}))$, "
            f"$\\beta_R = \\beta_0 e^{{-{n(h.beta_r_image)}\\,\\eta_{{img}}}}$ clipped to "
            f"{n(lo)}–{n(hi)} years (so tumour burden brings recurrences earlier and its hazard "
            "ratio is not constant over time). Death from other causes has hazard",
            f"$${other}.$$",
            "After a recurrence at time $s$, the recurrence is salvaged with probability $p_s$; "
            "otherwise cancer death follows a Weibull hazard with "
            "$H_D(u) = e^{\\eta_D}(u/\\beta_D)^{k_D}$, $u = t - s$, and",
            f"$${eta_d}.$$",
        ]
    )


def _encoding(column: str) -> str:
    if column == "sex":
        return "sex_female = 1 when sex = 2"
    if column in C.BINARY_COLUMNS:
        return "0/1 as recorded"
    if column in C.LOG_PREDICTORS:
        return "log(1 + x), then standardised"
    return "standardised"


def predictor_table() -> pd.DataFrame:
    """Each clinical predictor of ``data.clinical.PREDICTORS``: when it is known
    (preoperative, or pathology of the resected specimen), its unit and coding in the
    table, its encoding (standardisation with the training rows' mean and SD) and whether
    the table's first release (v1) has it. A missing value is replaced by the training mean
    and flagged by a ``<name>_missing`` indicator (``data.clinical.encode_predictors``)."""
    rows = {}
    for col in C.PREDICTORS:
        unit, coding = C.PREDICTOR_CODING.get(col, ("", ""))
        rows[col] = {
            "known": "pathology" if col in C.PATHOLOGY_PREDICTORS else "preoperative",
            "unit": unit,
            "coding in the table": coding,
            "encoding": _encoding(col),
            "in v1 table": "no" if col in C.V2_ONLY_COLUMNS else "yes",
        }
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "predictor"
    return table


def _default(func, name: str):
    return inspect.signature(func).parameters[name].default


def hyperparameter_table() -> pd.DataFrame:
    """The settings of the clinical anchors and of 4D-ACFNet's Cox anchor, and the risk
    score that every C-index ranks patients by (``types.RISK_HORIZON_YEARS``), read from the
    code's defaults. Index ``(model, setting)``, column ``value``."""
    from crlm_lib.models.acfnet import ACFNet, ACFNetOptions  # torch: when the table is made

    cox, rsf = CoxPH(), RandomSurvivalForest()
    rows = [
        ("Cox PH (clinical)", "penalty (lifelines penalizer)", _fmt(cox.penalizer)),
        ("Cox PH (clinical)", "L1 share of the penalty", _fmt(cox.l1_ratio)),
        ("Random survival forest", "trees", str(rsf.n_estimators)),
        ("Random survival forest", "minimum patients per leaf", str(rsf.min_samples_leaf)),
        ("Random survival forest", "random state", str(rsf.random_state)),
        (
            LABELS["acfnet"],
            "ridge penalty of the anchoring Cox models",
            _fmt(_default(ACFNet.anchor_clinical, "penalizer")),
        ),
        (
            LABELS["acfnet"],
            "learning-rate multiple of the prognosis heads",
            _fmt(ACFNetOptions.head_lr_scale),
        ),
    ]
    for head, what in (("os", "death"), ("dfs", "recurrence or death")):
        years = RISK_HORIZON_YEARS[head]
        rows.append(
            ("every model", f"risk score of the {head.upper()} C-index",
             f"predicted probability of {what} by {years} years")
        )  # fmt: skip
    table = pd.DataFrame(rows, columns=["model", "setting", "value"])
    return table.set_index(["model", "setting"])


def _counts(cohort: Cohort, ids) -> dict[str, int]:
    out = cohort.outcomes.loc[[str(i) for i in ids]]
    return {
        "patients": len(out),
        "deaths": int(out["os_event"].sum()),
        "DFS events": int(out["dfs_event"].sum()),
    }


def events_table(
    cohort: Cohort, profile: str | Profile | None = None, seed: int = 0
) -> pd.DataFrame:
    """Patients, deaths and DFS events (recurrence or death) of each set: the papers' 8:1:1
    split, each test fold of the first cross-validation repeat, and the range over every
    test and training fold of all repeats (the splits of the protocols: same seed, same
    stratification by the death indicator).

    Returns
    -------
    DataFrame
        Index ``set``; columns ``patients``, ``deaths``, ``DFS events`` (text ranges
        ``"min–max"`` in the two range rows).

    The profile (folds and repeats) is the cohort's; ``profile`` only for a cohort that carries
    none (``evaluation.cohort_profile``).
    """
    prof = cohort_profile(cohort, profile)
    events = cohort.outcomes.loc[cohort.ids, "os_event"].to_numpy()
    rows = {}
    for name, ids in zip(
        ("8:1:1 training", "8:1:1 validation", "8:1:1 test"),
        paper_split_ids(cohort.ids, events, seed),
        strict=True,
    ):
        rows[name] = _counts(cohort, ids)
    repeats = max(prof.eval.cv_repeats, prof.eval.cv_repeats_3d)
    splits = cv_split_ids(cohort.ids, events, prof.eval.cv_folds, repeats, seed)
    for rep, fold, _, test in splits:
        if rep == 0:
            rows[f"CV repeat 1, test fold {fold + 1}"] = _counts(cohort, test)
    for what, pos in (("test", 3), ("training", 2)):
        counts = pd.DataFrame([_counts(cohort, s[pos]) for s in splits])
        rows[f"CV, every {what} fold ({len(splits)})"] = {
            k: f"{counts[k].min()}–{counts[k].max()}" for k in counts
        }
    table = pd.DataFrame.from_dict(rows, orient="index").astype(str)
    table.index.name = "set"
    return table
