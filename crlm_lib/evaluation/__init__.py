"""Evaluation: protocols, run folders, the bootstrap, calibration and the notebooks' tables.

One package, one module per seam (``import crlm_lib.evaluation as ev`` gives every public
name below):

- :mod:`~crlm_lib.evaluation.specs` — what a row is: :class:`ModelSpec`, :func:`as_specs`,
  the anchors, display labels (:func:`model_label`) and the ablation rows of the papers'
  Table 2;
- :mod:`~crlm_lib.evaluation.cohort` — :class:`Cohort` (``crlm_lib.types.Cohort``, the same
  type as ``pipeline.Study``), :func:`as_cohort` (``pipeline.build_cohort`` for a
  ``config.Paths``), :func:`cohort_profile` and :func:`load_oracle`;
- :mod:`~crlm_lib.evaluation.runs` — one model on one split and its run folder: fitting
  (:func:`fit_predict_anchor`, :func:`fit_predict_torch`), run identity and stale-run checks,
  cached predictions, reloading (:func:`load_run`, :func:`stored_encoder`);
- :mod:`~crlm_lib.evaluation.protocols` — the papers' split (:func:`run_paper_protocol`) and
  repeated stratified CV (:func:`run_cv_protocol`, :class:`CVResult`), their settings
  (:class:`ProtocolOptions`, :class:`CVOptions`);
- :mod:`~crlm_lib.evaluation.bootstrap` — the library's one bootstrap engine: every metric of
  a protocol (:func:`bootstrap_scores`, :func:`paired_difference`) and one metric of arrays
  (:func:`bootstrap_ci`, :func:`paired_bootstrap_diff`);
- :mod:`~crlm_lib.evaluation.intervals` — the refit-aware interval of cross-validated
  metrics and paired differences, the corrected repeated-CV t (:func:`cv_intervals`,
  :func:`corrected_t_interval`);
- :mod:`~crlm_lib.evaluation.calibration` — calibration tables and plots, calibration slope,
  intercept and ICI (:func:`calibration_metric_table`), Kaplan–Meier by predicted risk;
- :mod:`~crlm_lib.evaluation.point` — the papers' point metrics beside their censoring-aware
  versions, D-calibration and the best constant (:func:`point_metric_table`);
- :mod:`~crlm_lib.evaluation.ties` — Uno's C at month resolution under both tie conventions
  of its censoring weights (:func:`tie_sensitivity_table`);
- :mod:`~crlm_lib.evaluation.decision` — decision-curve analysis with ``dcurves``
  (:func:`decision_curve`, :func:`plot_decision_curve`);
- :mod:`~crlm_lib.evaluation.reference` — the Kaplan–Meier null model's rows
  (:func:`km_null_tidy`) and Holm-adjusted paired comparisons (:func:`holm_table`);
- :mod:`~crlm_lib.evaluation.prose` — the numbers the manuscript's prose quotes
  (:func:`prose_values`);
- :mod:`~crlm_lib.evaluation.appendix` — the methods' reference tables read from the code:
  profiles beside the papers (:func:`profile_table`), the generator's parameters, the
  predictors' encoding, the anchors' settings, events per split and fold;
- :mod:`~crlm_lib.evaluation.tables` — wide, ablation, comparison, parameter, paired,
  published, environment and TRIPOD+AI tables.

The ``crlm train / evaluate / predict`` hooks live in :mod:`crlm_lib.cli`.
"""

from crlm_lib.evaluation._common import EvaluationError
from crlm_lib.evaluation.appendix import (
    PAPERS_SETTINGS,
    events_table,
    generator_formula,
    generator_table,
    hyperparameter_table,
    predictor_table,
    profile_table,
)
from crlm_lib.evaluation.bench import image_increment
from crlm_lib.evaluation.bootstrap import (
    BootstrapOptions,
    BootstrapResult,
    bootstrap_ci,
    bootstrap_scores,
    draws,
    head_metrics,
    paired_bootstrap_diff,
    paired_difference,
    percentile_interval,
)
from crlm_lib.evaluation.calibration import (
    CALIBRATION_LABELS,
    CALIBRATION_METRICS,
    KMByRisk,
    calibration_metric_table,
    calibration_metrics,
    calibration_table,
    default_n_groups,
    horizon_calibration,
    km_by_predicted_risk,
    plot_calibration,
)
from crlm_lib.evaluation.cohort import (
    Cohort,
    ProfileMismatchError,
    as_cohort,
    cohort_profile,
    load_oracle,
)
from crlm_lib.evaluation.decision import (
    DCA_MODELS,
    DCA_THRESHOLDS,
    decision_curve,
    plot_decision_curve,
)
from crlm_lib.evaluation.intervals import (
    CONDITIONAL_BOOTSTRAP,
    CORRECTED_T,
    INTERVAL_METHODS,
    CorrectedT,
    corrected_t_interval,
    cv_intervals,
    split_scores,
)
from crlm_lib.evaluation.point import CONSTANT_KEY, POINT_TABLE_METRICS, point_metric_table
from crlm_lib.evaluation.prose import (
    calibration_figure_values,
    calibration_target_values,
    constant_prediction_text,
    cv_design_values,
    cv_result_values,
    decision_values,
    objective_values,
    point_metric_values,
    prose_values,
    split_extreme_values,
    split_taa_values,
    tie_values,
)
from crlm_lib.evaluation.protocols import (
    CVOptions,
    CVResult,
    ProtocolOptions,
    cv_split_ids,
    paper_split_ids,
    pooled_predictions,
    run_cv_protocol,
    run_paper_protocol,
    split_controls,
)
from crlm_lib.evaluation.reference import (
    KM_NULL_KEY,
    holm_table,
    km_null_predictions,
    km_null_tidy,
    with_reference,
)
from crlm_lib.evaluation.runs import (
    RUN_FILES,
    LoadedRun,
    RunProgress,
    check_run_dir,
    fit_predict_anchor,
    fit_predict_torch,
    load_run,
    permuted_predictions,
    require_finished,
    run_identity,
    run_progress,
    stored_encoder,
)
from crlm_lib.evaluation.seeds import (
    read_seed_bench,
    seed_bench_caption_note,
    seed_table,
    seed_values,
)
from crlm_lib.evaluation.specs import (
    ABLATION_ROWS,
    ANCHOR_NAMES,
    LABELS,
    PERMUTED_SUFFIX,
    VOLUMETRIC_ANCHORS,
    ModelSpec,
    Split,
    ablation_specs,
    as_specs,
    model_label,
)
from crlm_lib.evaluation.tables import (
    HEADLINE_METRICS,
    LOWER_IS_BETTER,
    METRIC_LABELS,
    POINT_LABELS,
    PUBLISHED,
    TRIPOD_AI,
    ablation_table,
    comparison_models,
    comparison_table,
    control_table,
    environment_table,
    paired_table,
    parameter_table,
    pretty,
    published_all,
    published_table,
    published_text,
    published_wide,
    tripod_checklist,
    wide_table,
)
from crlm_lib.evaluation.ties import TIE_COLUMNS, tie_sensitivity_table
from crlm_lib.model_registry import CT_OR_LESION_MODELS

__all__ = [
    "read_seed_bench",
    "seed_bench_caption_note",
    "seed_table",
    "seed_values",
    "ABLATION_ROWS",
    "ANCHOR_NAMES",
    "CONDITIONAL_BOOTSTRAP",
    "CONSTANT_KEY",
    "CORRECTED_T",
    "CorrectedT",
    "INTERVAL_METHODS",
    "DCA_MODELS",
    "DCA_THRESHOLDS",
    "POINT_TABLE_METRICS",
    "TIE_COLUMNS",
    "HEADLINE_METRICS",
    "CT_OR_LESION_MODELS",
    "LABELS",
    "LOWER_IS_BETTER",
    "METRIC_LABELS",
    "PERMUTED_SUFFIX",
    "POINT_LABELS",
    "VOLUMETRIC_ANCHORS",
    "PUBLISHED",
    "RUN_FILES",
    "TRIPOD_AI",
    "CVOptions",
    "CVResult",
    "ProtocolOptions",
    "Cohort",
    "EvaluationError",
    "KMByRisk",
    "LoadedRun",
    "ModelSpec",
    "Split",
    "RunProgress",
    "ablation_specs",
    "BootstrapOptions",
    "BootstrapResult",
    "ablation_table",
    "as_cohort",
    "cohort_profile",
    "ProfileMismatchError",
    "load_oracle",
    "as_specs",
    "bootstrap_ci",
    "bootstrap_scores",
    "calibration_table",
    "check_run_dir",
    "comparison_models",
    "comparison_table",
    "control_table",
    "corrected_t_interval",
    "cv_intervals",
    "cv_split_ids",
    "decision_curve",
    "default_n_groups",
    "draws",
    "environment_table",
    "fit_predict_anchor",
    "fit_predict_torch",
    "head_metrics",
    "image_increment",
    "km_by_predicted_risk",
    "load_run",
    "model_label",
    "paired_bootstrap_diff",
    "paired_difference",
    "paired_table",
    "permuted_predictions",
    "paper_split_ids",
    "parameter_table",
    "percentile_interval",
    "plot_calibration",
    "plot_decision_curve",
    "point_metric_table",
    "pooled_predictions",
    "pretty",
    "published_all",
    "published_table",
    "published_text",
    "published_wide",
    "run_cv_protocol",
    "run_paper_protocol",
    "split_controls",
    "require_finished",
    "run_identity",
    "run_progress",
    "split_scores",
    "stored_encoder",
    "tie_sensitivity_table",
    "tripod_checklist",
    "wide_table",
    # methods' reference tables, calibration metrics, reference rows, multiplicity
    "CALIBRATION_LABELS",
    "CALIBRATION_METRICS",
    "KM_NULL_KEY",
    "PAPERS_SETTINGS",
    "calibration_metric_table",
    "calibration_metrics",
    "events_table",
    "generator_formula",
    "generator_table",
    "holm_table",
    "horizon_calibration",
    "hyperparameter_table",
    "km_null_predictions",
    "km_null_tidy",
    "predictor_table",
    "profile_table",
    "with_reference",
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
