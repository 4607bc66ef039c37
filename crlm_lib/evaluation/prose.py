"""The numbers the manuscript's prose quotes beyond the abstract's, as text, from one build.

:func:`prose_values` turns the evaluation notebook's tables into ``{name: text}`` for a
``values-*`` cell (``reporting.show_values``), which ``{{< value name >}}`` reads
(:mod:`crlm_lib.manuscript`). Every text is computed here from the build's own outputs, so no
sentence of the paper carries a number typed by hand.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from crlm_lib import metrics as M
from crlm_lib.evaluation.reference import KM_NULL_KEY
from crlm_lib.evaluation.specs import is_control, model_label
from crlm_lib.types import Predictions

__all__ = ["constant_prediction_text", "prose_values", "split_taa_values"]

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
