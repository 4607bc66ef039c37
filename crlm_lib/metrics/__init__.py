"""Metrics: the papers' TAA / MAE / MSE and the survival-analysis metrics the papers omit.

One package, one module per seam; ``from crlm_lib import metrics as M`` gives every name:

- :mod:`~crlm_lib.metrics.outputs` — the 12-year outputs of every model turned into one
  predicted time per patient (:func:`predicted_years`, :func:`recurrence_years`: the **single
  rule used for every model**), risk scores (:func:`risk_from_survival`,
  :func:`risk_from_recurrence`) and curves (:func:`survival_curve`,
  :func:`recurrence_free_curve`, :func:`curve_at_times`); :func:`softmax`, :func:`sigmoid`,
  :func:`year_bin`;
- :mod:`~crlm_lib.metrics.paper` — the papers' metrics on that time (:func:`paper_metrics`:
  TAA, Eq. (5) of 4D-ACFNet / Eq. (3) of STAR, MAE, MSE);
- :mod:`~crlm_lib.metrics.censoring` — the censoring distribution of the IPCW metrics
  (:class:`CensoringKM`, :func:`censoring_km`), fitted once per training fold and head
  (:class:`TrainingOutcomes`);
- :mod:`~crlm_lib.metrics.survival` — the censoring-aware metrics of the field computed by
  scikit-survival (:func:`survival_metrics`: Harrell's and Uno's C-index, integrated Brier
  score, cumulative/dynamic AUC; settings :class:`SurvivalMetricOptions`), through the fast paths of
  :mod:`~crlm_lib.metrics.sksurv_fast` (the same formulas on validated arrays);
- :mod:`~crlm_lib.metrics.frame` — :func:`all_metrics`, everything at once for one
  ``Predictions`` table written by :func:`crlm_lib.train.predict`.

Uncertainty (the patient-level percentile bootstrap of one metric or of every metric of a
protocol) lives in :mod:`crlm_lib.evaluation.bootstrap`, the library's one bootstrap engine.

Functions take **probabilities** (numpy); :func:`softmax` and :func:`sigmoid` convert logits.
All times are in **years** (the papers convert months to years, 4D-ACFNet section 4.1).
"""

from __future__ import annotations

from crlm_lib.curves import (
    beyond_horizon_mass,
    recurrence_free_curve,
    risk_from_recurrence,
    risk_from_survival,
    survival_curve,
    year_bin,
)
from crlm_lib.metrics._common import MetricWarning, _warn_nan
from crlm_lib.metrics.censoring import CensoringKM, TrainingOutcomes, censoring_km
from crlm_lib.metrics.frame import all_metrics
from crlm_lib.metrics.outputs import (
    RULES,
    Rule,
    _curve_at,
    curve_at_times,
    predicted_years,
    recurrence_years,
    sigmoid,
    softmax,
    target_years,
)
from crlm_lib.metrics.paper import paper_metrics, paper_metrics_observed
from crlm_lib.metrics.sksurv_fast import _concordance
from crlm_lib.metrics.survival import (
    HORIZON_YEARS,
    SurvivalMetricOptions,
    _harrell,
    survival_metrics,
)
from crlm_lib.types import prob_columns

# ``_concordance``, ``_curve_at``, ``_harrell`` and ``_warn_nan`` are re-exported for
# ``concordance`` and ``evaluation.bootstrap``, which compute their variants with them.
__all__ = [
    "HORIZON_YEARS",
    "SurvivalMetricOptions",
    "RULES",
    "MetricWarning",
    "Rule",
    "_concordance",
    "_curve_at",
    "_harrell",
    "_warn_nan",
    "softmax",
    "sigmoid",
    "year_bin",
    "target_years",
    "beyond_horizon_mass",
    "predicted_years",
    "recurrence_years",
    "paper_metrics",
    "paper_metrics_observed",
    "risk_from_survival",
    "risk_from_recurrence",
    "survival_curve",
    "recurrence_free_curve",
    "curve_at_times",
    "survival_metrics",
    "censoring_km",
    "CensoringKM",
    "TrainingOutcomes",
    "prob_columns",
    "all_metrics",
]
