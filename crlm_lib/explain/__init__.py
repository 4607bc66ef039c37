"""Explanations of any model of the registry: Grad-CAM per virtual year, SHAP on the clinical
inputs, NIfTI export of the maps.

Every model follows one contract (``docs/interfaces.md``): ``forward(batch) ->
{"recurrence_logits" [B, 12], "survival_logits" [B, 12], "aux": {...}}`` and an attribute
``gradcam_layer`` (the last spatial or spatio-temporal layer). The package:

- :mod:`~crlm_lib.explain.gradcam` — :func:`yearly_gradcam` (captum ``LayerGradCam``, one 3D
  map per year) and :func:`randomisation_check` (Adebayo et al., NeurIPS 2018);
- :mod:`~crlm_lib.explain.shap` — :func:`clinical_shap`, :func:`shap_additivity_gap`,
  :func:`kernel_shap_check` (their settings: :class:`ShapOptions`,
  :class:`KernelShapOptions`), :func:`risk_output` (STAR Figure 4, each patient's own image
  held fixed);
- :mod:`~crlm_lib.explain.spread` — :func:`gradcam_resolution` (the feature grid and its cell
  in mm), :func:`gradcam_by_patient`, :func:`explanation_spread_table` and
  :func:`explanation_values` (attention and Grad-CAM across patients);
- :mod:`~crlm_lib.explain.nifti` — :func:`export_heatmaps_nifti` in the ORIGINAL CT's
  geometry, :func:`heatmap_affine_ras`, :func:`heatmaps_on_source_grid` (shared with
  :mod:`crlm_lib.export`).

The figures live in :mod:`crlm_lib.plots`; :func:`plot_yearly_montage`,
:func:`plot_patient_curves`, :func:`attention_over_years`, :func:`plot_shap_beeswarm` and
:func:`plot_shap_bar` are re-exported here because notebook 05 calls them as
``explain.<name>`` (with ``yearly_gradcam``, ``randomisation_check``, ``clinical_shap``,
``shap_additivity_gap`` and ``export_heatmaps_nifti``).
"""

from crlm_lib.explain._common import ExplainError, GradCamLayerError
from crlm_lib.explain.gradcam import randomisation_check, yearly_gradcam
from crlm_lib.explain.nifti import (
    LPS_TO_RAS,
    export_heatmaps_nifti,
    heatmap_affine_ras,
    heatmaps_on_source_grid,
)
from crlm_lib.explain.shap import (
    KernelShapOptions,
    ShapOptions,
    clinical_shap,
    kernel_shap_check,
    risk_output,
    shap_additivity_gap,
)
from crlm_lib.explain.spread import (
    explanation_spread_table,
    explanation_values,
    feature_grid,
    gradcam_by_patient,
    gradcam_resolution,
    resolution_text,
)
from crlm_lib.plots import (
    attention_over_years,
    plot_patient_curves,
    plot_shap_bar,
    plot_shap_beeswarm,
    plot_yearly_montage,
)

__all__ = [
    "LPS_TO_RAS",
    "ExplainError",
    "GradCamLayerError",
    "KernelShapOptions",
    "ShapOptions",
    "attention_over_years",
    "clinical_shap",
    "explanation_spread_table",
    "explanation_values",
    "feature_grid",
    "gradcam_by_patient",
    "gradcam_resolution",
    "export_heatmaps_nifti",
    "heatmap_affine_ras",
    "heatmaps_on_source_grid",
    "kernel_shap_check",
    "plot_patient_curves",
    "plot_shap_bar",
    "plot_shap_beeswarm",
    "plot_yearly_montage",
    "randomisation_check",
    "resolution_text",
    "risk_output",
    "shap_additivity_gap",
    "yearly_gradcam",
]
