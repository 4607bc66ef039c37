"""The labels people read instead of the keys the library uses (table headers, categorical
cells). Below the evaluation tables and the notebooks' display helpers
(:mod:`crlm_lib.reporting`), which both read them."""

from __future__ import annotations

__all__ = ["DISPLAY_LABELS"]

#: Headers and cell values shown to people instead of the keys the library uses (a key not
#: listed here is shown with its underscores as spaces, see ``reporting.display_label``).
DISPLAY_LABELS: dict[str, str] = {
    "patient_id": "patient",
    "centre_method": "window centred by",
    "portal_skeleton": "portal-vein skeleton",
    "os": "Harrell's C, OS",
    "dfs": "Harrell's C, DFS",
    "image_effect": "image effect (default)",
    "null": "null (no image term)",
    "n_missing": "score missing, n",
    "agreement_pct": "agreement (%)",
    "kappa": "Cohen's kappa",
    "kappa_quadratic": "Cohen's kappa, quadratic weights",
    "taa": "TAA",
    "mse": "MSE (years²)",
    "mae": "MAE (years)",
    "c_index_os": "C-index OS",
    "c_index_dfs": "C-index DFS",
    "ibs": "IBS OS",
    "auc_1y_os": "AUC OS 1 y",
    "within": "within range",
}
