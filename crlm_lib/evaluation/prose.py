"""The numbers the manuscript's prose quotes beyond the abstract's, as text, from one build.

:func:`prose_values` turns the evaluation notebook's tables into ``{name: text}`` for a
``values-*`` cell (``reporting.show_values``), which ``{{< value name >}}`` reads
(:mod:`crlm_lib.manuscript`). Every text is computed here from the build's own outputs, so no
sentence of the paper carries a number typed by hand. Where a sentence depends on a number
(a model above or below the Kaplan–Meier null, a calibration curve above or below the
diagonal), the words are chosen here too, so that the sentence stays true on every profile:
:func:`cv_design_values` (which models the cross-validation holds, repeats and epochs),
:func:`cv_result_values` (the unfavourable results of the cross-validation table),
:func:`calibration_figure_values`, :func:`objective_values` (the two training objectives on
the papers' split), :func:`split_extreme_values` (best and worst rows of a split table) and
:func:`calibration_target_values` (the synthetic cohort against its published targets),
:func:`point_metric_values` (models against the constant prediction), :func:`tie_values` and
:func:`decision_values` (where a decision curve lies above both references).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from crlm_lib import metrics as M
from crlm_lib.evaluation.reference import KM_NULL_KEY
from crlm_lib.evaluation.specs import IMAGE_ORACLE, is_control, model_label
from crlm_lib.model_registry import CT_OR_LESION_MODELS, MODEL_NAMES
from crlm_lib.types import Predictions

__all__ = [
    "calibration_figure_values",
    "calibration_target_values",
    "constant_prediction_text",
    "cv_design_values",
    "cv_result_values",
    "decision_values",
    "objective_values",
    "point_metric_values",
    "prose_values",
    "split_extreme_values",
    "split_taa_values",
    "tie_values",
]

NA = "not applicable"


def _ci(tidy: pd.DataFrame, model: str, metric: str, digits: int = 3) -> str:
    rows = tidy[(tidy["model"] == model) & (tidy["metric"] == metric)]
    if rows.empty or not np.isfinite(rows["estimate"].iloc[0]):
        return NA
    r = rows.iloc[0]
    text = f"{r['estimate']:.{digits}f}"
    if np.isfinite(r.get("low", np.nan)) and np.isfinite(r.get("high", np.nan)):
        text += f" (95% interval {r['low']:.{digits}f} to {r['high']:.{digits}f})"
    return text


def _diff(differences: pd.DataFrame, model: str, baseline: str, metric: str) -> str:
    if differences is None or differences.empty:
        return NA
    rows = differences[
        (differences["model"] == model)
        & (differences["baseline"] == baseline)
        & (differences["metric"] == metric)
    ]
    if rows.empty or not np.isfinite(rows["estimate"].iloc[0]):
        return NA
    r = rows.iloc[0]
    return f"{r['estimate']:+.3f} (95% interval {r['low']:+.3f} to {r['high']:+.3f})"


def split_taa_values(split_tidy: pd.DataFrame) -> dict[str, str]:
    """The oracle's TAA on the papers' test split and the best fitted model's:
    ``oracle-taa-split``, ``best-taa-split`` (``"0.350 (Cox PH (clinical))"``) and
    ``oracle-taa-rank`` (``"highest"``, ``"tied highest"`` or ``"below the best fitted
    model"``)."""
    taa = split_tidy[split_tidy["metric"] == "os_taa"].set_index("model")["estimate"]
    if "oracle" not in taa.index or len(taa) < 2:
        return {"oracle-taa-split": NA, "best-taa-split": NA, "oracle-taa-rank": NA}
    fitted = taa.drop("oracle")
    best = fitted.idxmax()
    oracle = float(taa["oracle"])
    rank = (
        "tied highest"
        if np.isclose(oracle, fitted.max())
        else ("highest" if oracle > fitted.max() else "below the best fitted model")
    )
    return {
        "oracle-taa-split": f"{oracle:.3f}",
        "best-taa-split": f"{fitted.max():.3f} ({model_label(best)})",
        "oracle-taa-rank": rank,
    }


def constant_prediction_text(predictions: Mapping[str, pd.DataFrame]) -> str:
    """Models whose most likely year of death (the papers' point prediction) is the same
    for every test patient, as ``"Cox PH (clinical): year 2 for 20/20"``; ``"none"``."""
    parts = []
    for key, frame in predictions.items():
        if is_control(key):
            continue
        frames = [frame] if isinstance(frame, pd.DataFrame) else list(frame)
        years = M.predicted_years(Predictions.from_frame(frames[0]).survival_pmf, "argmax")
        values, counts = np.unique(years, return_counts=True)
        if len(values) == 1:
            parts.append(
                f"{model_label(key)}: year {int(values[0]) + 1} for {counts[0]}/{len(years)}"
            )
    return "; ".join(parts) if parts else "none"


def _calibration(calibration: pd.DataFrame, model: str, column: str) -> str:
    if model not in calibration.index or not np.isfinite(calibration.loc[model, column]):
        return NA
    return f"{calibration.loc[model, column]:.2f}"


def prose_values(
    cv_tidy: pd.DataFrame,
    differences: pd.DataFrame,
    calibration: pd.DataFrame,
    holm: pd.DataFrame,
    label: str,
) -> dict[str, str]:
    """The values the Results, Discussion and Conclusion quote, from the cross-validation.

    Parameters
    ----------
    cv_tidy : ``CVResult.tidy`` with the Kaplan–Meier null rows (``reference.with_reference``).
    differences : ``CVResult.differences``.
    calibration : :func:`~crlm_lib.evaluation.calibration.calibration_metric_table`.
    holm : :func:`~crlm_lib.evaluation.reference.holm_table` (comparisons with Cox).
    label : the cohort's label (``"synthetic"`` or ``"real"``).

    Returns
    -------
    dict
        ``<model>-ibs-os`` (``acfnet``, ``acfnet-noanchor``, ``cox``, ``oracle``, ``km-null``);
        ``<model>-ici-os``, ``<model>-slope-os``, ``<model>-ici-dfs``;
        ``acfnet-minus-cox-os``, ``acfnet-noanchor-minus-cox-os`` (paired differences in
        Harrell's C); ``holm-rejected`` (``"1 of 8"``); ``cohort-title``.
    """
    models = {"acfnet": "acfnet", "acfnet-noanchor": "acfnet-noanchor", "cox": "cox",
              "oracle": "oracle", "km-null": KM_NULL_KEY}  # fmt: skip
    values = {f"{p}-ibs-os": _ci(cv_tidy, m, "os_ibs") for p, m in models.items()}
    for prefix, model in models.items():
        if prefix == "km-null":
            continue
        values[f"{prefix}-ici-os"] = _calibration(calibration, model, "os_ici")
        values[f"{prefix}-slope-os"] = _calibration(calibration, model, "os_cal_slope")
        values[f"{prefix}-ici-dfs"] = _calibration(calibration, model, "dfs_ici")
    for prefix in ("acfnet", "acfnet-noanchor"):
        values[f"{prefix}-minus-cox-os"] = _diff(differences, prefix, "cox", "os_c_harrell")
    rejected = int((holm["rejected at 0.05 (Holm)"] == "yes").sum()) if len(holm) else 0
    values["holm-rejected"] = f"{rejected} of {len(holm)}"
    values["cohort-title"] = (
        "a synthetic stand-in cohort" if label == "synthetic" else "the MSKCC cohort"
    )
    return values


def _join(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``; ``"none"`` when empty."""
    if not items:
        return "none"
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _model_rows(tidy: pd.DataFrame) -> pd.DataFrame:
    """One row per model of a tidy table (controls left out), in the table's order:
    ``repeats``, ``epochs`` and ``folds`` where the table has them."""
    keep = [m for m in dict.fromkeys(tidy["model"]) if not is_control(m)]
    cols = [c for c in ("repeats", "epochs", "folds") if c in tidy.columns]
    return tidy.drop_duplicates("model").set_index("model").loc[keep, cols]


def _estimates(tidy: pd.DataFrame) -> pd.DataFrame:
    """model x metric table of the point estimates (controls left out, table order kept)."""
    sub = tidy[~tidy["model"].map(is_control)]
    wide = sub.pivot_table(index="model", columns="metric", values="estimate", aggfunc="first")
    return wide.reindex(index=list(dict.fromkeys(sub["model"])))


def cv_design_values(cv_tidy: pd.DataFrame) -> dict[str, str]:
    """What the cross-validation of this build holds, read from its tidy table.

    Returns ``cv-design`` (``"5-fold cross-validation, repeated 5 times for the clinical
    models and once for the image models (at most 8 training epochs each)"``),
    ``cv-image-models`` and ``cv-clinical-models`` (labels of the models in each group; the
    oracle and the true-image Cox model are references, in neither),
    ``cv-split-only-models`` (the registry's image models that are compared on the papers'
    split only) and ``cv-image-repeats`` (``"once"``, ``"5 times"``).
    """
    rows = _model_rows(cv_tidy).drop(index=[KM_NULL_KEY], errors="ignore")
    image = rows[rows["epochs"].notna()] if "epochs" in rows else rows.iloc[:0]
    other = rows.drop(index=image.index)
    clinical = other.drop(index=["oracle", IMAGE_ORACLE], errors="ignore")
    folds = int(rows["folds"].max()) if "folds" in rows and len(rows) else 0
    clin_rep = int(other["repeats"].max()) if len(other) else 0
    img_rep = int(image["repeats"].max()) if len(image) else 0
    design = f"{folds}-fold cross-validation, repeated {_times(clin_rep)} for the clinical models"
    if len(image):
        epochs = int(image["epochs"].max())
        unit = "epoch" if epochs == 1 else "epochs"
        design += f" and {_times(img_rep)} for the image models (at most {epochs} training {unit})"
    in_cv = {key.partition("-")[0] for key in rows.index}
    split_only = [
        model_label(m) for m in MODEL_NAMES if m in CT_OR_LESION_MODELS and m not in in_cv
    ]
    return {
        "cv-design": design,
        "cv-image-models": _join([model_label(k) for k in image.index]),
        "cv-clinical-models": _join([model_label(k) for k in clinical.index]),
        "cv-split-only-models": _join(split_only),
        "cv-image-repeats": _times(img_rep) if len(image) else NA,
    }


def _below_half(est: pd.DataFrame, metrics: dict[str, str]) -> str:
    """Models with any of ``metrics`` below 0.5 (chance), as ``"Fong score (AUC 1 y 0.47)"``."""
    parts = []
    for model, row in est.iterrows():
        low = [f"{name} {row[m]:.3f}" for m, name in metrics.items() if row.get(m, 1.0) < 0.5]
        if low and model != KM_NULL_KEY:
            parts.append(f"{model_label(model)} ({', '.join(low)})")
    return _join(parts)


def cv_result_values(cv_ref: pd.DataFrame) -> dict[str, str]:
    """The results of the cross-validation table the prose must report, favourable or not.

    ``cv_ref``: ``CVResult.tidy`` with the Kaplan–Meier null rows. Returns
    ``acfnet-auc5-os`` and ``acfnet-noanchor-auc5-os`` (5-year AUC with interval),
    ``ibs-worst`` (the model with the highest IBS, ``"4D-ACFNet + Cox anchor (0.251)"``),
    ``ibs-not-below-null`` (models whose IBS is not below the null model's, or ``"none"``),
    ``auc-below-half`` (models with a time-dependent AUC below 0.5) and ``c-below-half``
    (models with Harrell's C below 0.5 for either head).
    """
    est = _estimates(cv_ref)
    values = {
        f"{p}-auc5-os": _ci(cv_ref, m, "os_auc_5y")
        for p, m in (("acfnet", "acfnet"), ("acfnet-noanchor", "acfnet-noanchor"))
    }
    ibs = est["os_ibs"].dropna() if "os_ibs" in est else pd.Series(dtype=float)
    fitted = ibs.drop(index=[KM_NULL_KEY, "oracle"], errors="ignore")
    values["ibs-worst"] = (
        f"{model_label(fitted.idxmax())} ({fitted.max():.3f})" if len(fitted) else NA
    )
    if KM_NULL_KEY in ibs.index:
        worse = fitted[fitted >= ibs[KM_NULL_KEY]]
        values["ibs-not-below-null"] = (
            f"{len(worse)} of {len(fitted)}: {_join([model_label(k) for k in worse.index])}"
            if len(worse)
            else f"none of {len(fitted)}"
        )
    else:
        values["ibs-not-below-null"] = NA
    aucs = {f"os_auc_{h}y": f"AUC {h} y" for h in (1, 3, 5)}
    values["auc-below-half"] = _below_half(est, aucs)
    values["c-below-half"] = _below_half(est, {"os_c_harrell": "OS C", "dfs_c_harrell": "DFS C"})
    return values


def calibration_figure_values(calibration: pd.DataFrame) -> dict[str, str]:
    """What the calibration figure shows at its last horizon, in words and numbers.

    ``calibration``: :func:`~crlm_lib.evaluation.calibration.calibration_table` (one row per
    horizon and risk group: ``n``, ``predicted``, ``observed``). Returns ``calib-horizon``
    (``"5"``), ``calib-gap`` (``"over-predicted the observed risk by 25 percentage points"``:
    the patient-weighted mean of predicted minus observed risk over the groups) and
    ``calib-order`` (whether the observed risk rises with the predicted risk from group to
    group).
    """
    if calibration.empty:
        return {"calib-horizon": NA, "calib-gap": NA, "calib-order": NA}
    horizon = float(calibration["horizon_years"].max())
    last = calibration[calibration["horizon_years"] == horizon].sort_values("predicted")
    gap = float(np.average(last["predicted"] - last["observed"], weights=last["n"]))
    side = "over-predicted" if gap > 0 else "under-predicted"
    rises = bool(np.all(np.diff(last["observed"].to_numpy(float)) >= 0))
    return {
        "calib-horizon": f"{horizon:g}",
        "calib-gap": f"{side} the observed risk by {100 * abs(gap):.0f} percentage points",
        "calib-order": (
            "rose with the predicted risk from group to group"
            if rises
            else "did not rise with the predicted risk from group to group"
        ),
    }


def _estimate(tidy: pd.DataFrame, model: str, metric: str) -> float:
    rows = tidy[(tidy["model"] == model) & (tidy["metric"] == metric)]
    return float(rows["estimate"].iloc[0]) if len(rows) else float("nan")


def objective_values(
    split_tidy: pd.DataFrame, split_predictions: Mapping[str, pd.DataFrame]
) -> dict[str, str]:
    """4D-ACFNet's two training objectives on the papers' test split.

    Returns ``objective-taa`` and ``objective-mae`` (``"0.608 with the papers' cross-entropy
    and 0.265 with the censoring-aware likelihood"``) and ``objective-modal-year`` (the most
    common predicted year of death under the censoring-aware likelihood, ``"year 12 for 16
    of 20 test patients"``); ``"not applicable"`` when either run is missing.
    """
    keys = ("acfnet", "acfnet-censored")
    if not all(k in split_predictions for k in keys):
        return {k: NA for k in ("objective-taa", "objective-mae", "objective-modal-year")}
    out = {}
    for metric, name in (("os_taa", "objective-taa"), ("os_mae", "objective-mae")):
        a, b = (_estimate(split_tidy, k, metric) for k in keys)
        out[name] = (
            f"{a:.3f} with the papers' cross-entropy and {b:.3f} with the censoring-aware "
            "likelihood"
        )
    frame = split_predictions["acfnet-censored"]
    frame = frame if isinstance(frame, pd.DataFrame) else list(frame)[0]
    years = M.predicted_years(Predictions.from_frame(frame).survival_pmf, "argmax")
    values, counts = np.unique(years, return_counts=True)
    top = int(np.argmax(counts))
    out["objective-modal-year"] = (
        f"year {int(values[top]) + 1} for {counts[top]} of {len(years)} test patients"
    )
    return out


def split_extreme_values(tidy: pd.DataFrame, prefix: str = "comparison") -> dict[str, str]:
    """Best and worst fitted rows of a papers'-split table (the oracle left out), and the
    oracle's C.

    Returns ``<prefix>-worst-taa`` / ``-best-taa`` (``"STG (0.350)"``), ``-worst-c`` /
    ``-best-c`` (Harrell's C of overall survival) and ``-oracle-c``.
    """
    est = _estimates(tidy)
    fitted = est.drop(index="oracle", errors="ignore")
    out = {}
    for metric, name in (("os_taa", "taa"), ("os_c_harrell", "c")):
        col = fitted[metric].dropna() if metric in fitted else pd.Series(dtype=float)
        for which, pick in (("worst", col.idxmin), ("best", col.idxmax)):
            out[f"{prefix}-{which}-{name}"] = (
                f"{model_label(pick())} ({col[pick()]:.3f})" if len(col) else NA
            )
    oracle = est.loc["oracle", "os_c_harrell"] if "oracle" in est.index else float("nan")
    out[f"{prefix}-oracle-c"] = f"{oracle:.3f}" if np.isfinite(oracle) else NA
    return out


def calibration_target_values(table: pd.DataFrame, prefix: str = "synthetic") -> dict[str, str]:
    """How many of the synthetic cohort's calibration figures fall outside their acceptance
    range: ``<prefix>-targets-missed`` (``"4 of 10"``: rows with a range whose ``within`` is
    false, among the rows with a range) from ``data.synthetic``'s calibration tables."""
    ranged = table[table["low"].notna() & table["high"].notna()]
    missed = int((~ranged["within"].astype(bool)).sum())
    return {f"{prefix}-targets-missed": f"{missed} of {len(ranged)}"}


def point_metric_values(point: pd.DataFrame) -> dict[str, str]:
    """What the point-metric table (``evaluation.point_metric_table``: models x metrics, a
    ``constant`` row) shows against the constant prediction.

    Returns ``constant-taa`` (the constant's papers' TAA) and ``taa-not-above-constant``
    (the fitted models whose papers' TAA is not above the constant's: ``"2 of 9: Fong score
    and Cox PH (clinical)"`` or ``"none of 9"``).
    """
    if "constant" not in point.index or "os_taa" not in point.columns:
        return {"constant-taa": NA, "taa-not-above-constant": NA}
    const = float(point.loc["constant", "os_taa"])
    fitted = point["os_taa"].drop(index=["constant", "oracle"], errors="ignore").dropna()
    fitted = fitted[[k for k in fitted.index if not is_control(k)]]
    worse = fitted[fitted <= const]
    text = (
        f"{len(worse)} of {len(fitted)}: {_join([model_label(k) for k in worse.index])}"
        if len(worse)
        else f"none of {len(fitted)}"
    )
    return {"constant-taa": f"{const:.3f}", "taa-not-above-constant": text}


def tie_values(ties: pd.DataFrame) -> dict[str, str]:
    """``ties-max-shift``: the largest absolute difference in Uno's C between the two tie
    conventions, G(T) and G(T-), at month resolution, over the models and heads of
    ``evaluation.tie_sensitivity_table``."""
    shifts = [
        (ties[f"{h}_c_uno_months_g_t"] - ties[f"{h}_c_uno_months_g_t_minus"]).abs()
        for h in ("os", "dfs")
        if f"{h}_c_uno_months_g_t" in ties.columns
    ]
    if not shifts:
        return {"ties-max-shift": NA}
    return {"ties-max-shift": f"{float(pd.concat(shifts).max()):.4f}"}


def decision_values(dca: pd.DataFrame) -> dict[str, str]:
    """``dca-useful``: for each model of the decision curve (``evaluation.decision_curve``),
    the thresholds where its net benefit exceeds both treat-all and treat-none, as
    ``"Cox PH (clinical) 10–24%; Fong score at no threshold"``."""
    refs = dca[dca["model"].isin(["all", "none"])].pivot_table(
        index="threshold", columns="model", values="net_benefit"
    )
    floor = refs.max(axis=1)
    parts = []
    for model, rows in dca[~dca["model"].isin(["all", "none"])].groupby("model", sort=False):
        nb = rows.set_index("threshold")["net_benefit"]
        above = nb.index[(nb > floor.reindex(nb.index)).to_numpy()]
        span = (
            f"{100 * above.min():.0f}–{100 * above.max():.0f}% ({len(above)} of {len(nb)} thresholds)"
            if len(above)
            else "at no threshold"
        )
        parts.append(f"{model_label(model)} {span}")
    return {"dca-useful": "; ".join(parts) if parts else NA}
