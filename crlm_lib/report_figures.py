"""The figure pages of the per-patient report (:mod:`crlm_lib.report`): each one A4 matplotlib
figure holding a title, the plot and its caption, so that the PDF page and the HTML section
(the plot area cropped to PNG, title and caption as text) show the same thing.

* :func:`plot_curves_page`: the patient's overall and recurrence-free survival with the
  ensemble band (or none, said so), the training cohort's Kaplan–Meier curve and its 95% CI as
  separate, labelled legend entries, and the years the training follow-up does not back greyed
  and labelled instead of read as data;
* :func:`plot_gradcam_page`: the 12 yearly maps on one fixed scale with one colour bar, zero
  drawn (``plots.draw_heat_panel``), the slice named by its place in the original CT, the
  patient's directions at the image edges and a legend of the outlines;
* :func:`plot_shap_page`: the clinical factors' SHAP values.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import Bbox

from crlm_lib import conformal
from crlm_lib.config import N_YEARS
from crlm_lib.plots import draw_heat_panel, heatmap_slice, outline_legend_handles

if TYPE_CHECKING:
    from crlm_lib.report import PatientReport

__all__ = ["A4_INCHES", "FigurePage", "plot_curves_page", "plot_gradcam_page", "plot_shap_page"]

#: A4 portrait, inches.
A4_INCHES: tuple[float, float] = (8.27, 11.69)
_LEFT = 0.07


@dataclass
class FigurePage:
    """One report page: ``figure`` is the whole A4 page (title, plot, caption) as the PDF
    shows it; ``plot_box`` (inches) the plot area the HTML embeds; ``title`` and ``caption``
    (paragraphs) the text both show."""

    title: str
    caption: list[str]
    figure: Any
    plot_box: Bbox


def _page(title: str, caption: Sequence[str], plot_bottom: float, plot_top: float):
    """A new A4 figure with ``title`` above and ``caption`` below the plot band
    ``[plot_bottom, plot_top]`` (figure fractions); returns ``(figure, plot_box)``."""
    fig = plt.figure(figsize=A4_INCHES)
    fig.text(_LEFT, 0.965, title, fontsize=13, weight="bold", va="top")
    y = plot_bottom - 0.015
    for paragraph in caption:
        for line in textwrap.wrap(paragraph, 100):
            fig.text(_LEFT, y, line, fontsize=9, va="top")
            y -= 0.0175
        y -= 0.008
    width, height = A4_INCHES
    box = Bbox.from_extents(0.0, plot_bottom * height, width, plot_top * height)
    return fig, box


def _followed_note(report: PatientReport) -> str:
    years = report.followed_years or {}
    if not years or all(v is None for v in years.values()):
        return (
            "The run does not record how many training patients were followed each year, so "
            "the years its follow-up backs are unknown."
        )
    parts = [
        f"{name} to year {years[head]}"
        for head, name in (("os", "overall survival"), ("dfs", "recurrence-free survival"))
        if years.get(head) is not None
    ]
    return (
        f"Grey: the training cohort's follow-up is too short to say (fewer than {report.min_at_risk} "
        f"training patients still followed); it backs {', '.join(parts)}. The model's values "
        "there (predictions_yearly.csv) are extrapolation, not evidence, and are not drawn."
    )


def _tail_note(report: PatientReport) -> list[str]:
    """What the curve's value at 12 years means: the model's own class for survival past year
    12 (with its value, and whether the training follow-up backs it), or 0 by construction."""
    s12 = float(np.asarray(report.surv)[0, -1])
    if report.row.get("os_beyond_class"):
        followed = (report.followed_years or {}).get("os")
        backed = (
            "drawn: the training follow-up reaches year 12"
            if followed is not None and followed >= N_YEARS
            else "not drawn: the training follow-up does not reach year 12"
        )
        return [
            f"Overall survival past year 12 is the model's own class, the mass a Kaplan-Meier "
            f"curve keeps at 12 years: {100 * s12:.0f}% for this patient ({backed})."
        ]
    if s12 < 0.005:
        return [
            "The network spreads all deaths over years 1-12 (it has no class beyond year 12), "
            "so its overall survival reaches 0 at year 12 by construction, not from data."
        ]
    return []


def _draw_curve(ax: plt.Axes, curve: np.ndarray, followed: int | None) -> None:
    """The patient's curve and band up to the last year the training follow-up backs; after
    it a grey area that says so, and no curve (not a fall to 0 nobody observed)."""
    years = np.arange(0, N_YEARS + 1)
    full = np.concatenate([np.ones((3, 1)), np.asarray(curve, dtype=float)], axis=1)
    end = N_YEARS if followed is None else max(int(followed), 0)
    shown = slice(0, end + 1)
    ax.step(years[shown], full[0, shown], where="post", color="tab:red", lw=2)
    if np.isfinite(full[1]).all() and end > 0:
        ax.fill_between(years[shown], full[1, shown], full[2, shown], step="post",
                        color="tab:red", alpha=0.25)  # fmt: skip
    if end < N_YEARS:
        ax.axvspan(end, N_YEARS, color="0.85", zorder=0)
        ax.text((end + N_YEARS) / 2, 0.5, "training follow-up\ntoo short to say", ha="center",
                va="center", fontsize=8, color="0.35")  # fmt: skip


def _ensemble_note(report: PatientReport) -> str:
    """``"; the prediction is the mean of the 5 models"`` for an ensemble, else ``""``."""
    n_models = int(report.row.get("n_models", 1))
    return f"; the prediction is the mean of the {n_models} models" if n_models > 1 else ""


def _legend_handles(report: PatientReport) -> list[Any]:
    n = report.reference.get("n", "?")
    n_models = int(report.row.get("n_models", 1))
    label = (
        f"band: {conformal.LEVEL:.0%} conformal, for the true probability"
        if report.band_method.startswith("split-conformal")
        else f"band: 5-95% of the {n_models} models (their disagreement)"
    )
    band = (
        Patch(color="tab:red", alpha=0.25, label=label)
        if np.isfinite(np.asarray(report.surv[1], dtype=float)).all()
        else Patch(color="white", label="no band: one model")
    )
    return [
        Line2D([0], [0], color="tab:red", lw=2, label="this patient (mean of the models)"),
        band,
        Line2D(
            [0],
            [0],
            color="0.3",
            ls="--",
            label=f"training patients of {report.explained_by}, Kaplan-Meier (n={n})",
        ),
        Patch(color="0.5", alpha=0.2, hatch="///", label="its 95% CI (cohort, not this patient)"),
        Patch(color="0.85", label="follow-up too short to say"),
    ]


def plot_curves_page(report: PatientReport) -> FigurePage:
    """The survival-curve page (see module doc)."""
    title = "Predicted survival beside the training cohort"
    caption = [f"Band: {report.band_method}.", _followed_note(report), *_tail_note(report)]
    fig, box = _page(title, caption, 0.42, 0.93)
    for i, (curve, head, name) in enumerate(
        ((report.surv, "os", "Overall survival"), (report.rfs, "dfs", "Recurrence-free survival"))
    ):
        ax = fig.add_axes((0.09 + 0.46 * i, 0.58, 0.40, 0.32))
        _draw_curve(ax, curve, (report.followed_years or {}).get(head))
        km = (report.reference.get("km") or {}).get(head)
        if km:
            ax.step(km["years"], km["estimate"], where="post", color="0.3", ls="--")
            lower, upper = (np.asarray(km[k], dtype=float) for k in ("lower", "upper"))  # null: NaN
            ax.fill_between(km["years"], lower, upper, step="post", color="0.5",
                            alpha=0.2, hatch="///", linewidth=0)  # fmt: skip
        ax.set_title(name, fontsize=11)
        ax.set_xlabel("Years after liver resection")
        ax.set_xlim(0, N_YEARS)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if i == 0:
            ax.set_ylabel("Probability")
    fig.legend(handles=_legend_handles(report), loc="upper center", ncol=2, fontsize=8.5,
               bbox_to_anchor=(0.5, 0.53), frameon=False)  # fmt: skip
    return FigurePage(title, caption, fig, box)


def plot_gradcam_page(report: PatientReport) -> FigurePage:
    """The Grad-CAM page (see module doc)."""
    heat = np.asarray(report.heatmaps, dtype=float)
    ct = np.asarray(report.ct)
    masks = None if report.masks is None else np.asarray(report.masks)
    z = heatmap_slice(masks, heat, empty=ct.shape[0] // 2)
    where = report.slice_labels[z] if report.slice_labels else f"preprocessed slice {z}"
    top = float(heat.max()) if float(heat.max()) > 0 else 1.0
    title = "Where the model looked, year by year (Grad-CAM)"
    caption = [
        f"Axial slice shown: {where} (the slice with the most tumour), seen from the feet as "
        "in a radiology viewer; letters give the patient's directions (R/L, A/P). Maps of the "
        f"recurrence risk of {report.explained_by}{_ensemble_note(report)}.",
        "One colour scale for all twelve years: 0 (dark violet) is drawn wherever the map is "
        "defined (inside the liver), 1 (yellow) is the largest value over the twelve years. A "
        "year whose panel is uniformly violet had no contribution on this slice. Grad-CAM "
        "shows where the gradients point, not causes.",
    ]
    fig, box = _page(title, caption, 0.235, 0.935)
    image = None
    m = masks[:, z] if masks is not None else None
    size, gap = 0.205, 0.013
    for k in range(min(heat.shape[0], 12)):
        r, c = divmod(k, 4)
        ax = fig.add_axes((_LEFT + c * (size + gap), 0.73 - r * 0.175, size, 0.145))
        image = draw_heat_panel(ax, ct[z], heat[k, z], m, top, report.orientation)
        peak = float(heat[k, z].max())
        ax.set_title(f"Year {k + 1} (max {peak / top:.2f})", fontsize=9)
    cax = fig.add_axes((_LEFT, 0.305, 0.5, 0.012))
    bar = fig.colorbar(image, cax=cax, orientation="horizontal")
    bar.set_label("Grad-CAM, normalised to the largest value over the 12 years", fontsize=8)
    fig.legend(handles=outline_legend_handles(), loc="center left", fontsize=8.5,
               bbox_to_anchor=(0.64, 0.305), facecolor="0.25", labelcolor="white",
               framealpha=1.0)  # fmt: skip
    return FigurePage(title, caption, fig, box)


def plot_shap_page(report: PatientReport, max_display: int = 12) -> FigurePage:
    """The SHAP page: the patient's SHAP values, largest magnitude first."""
    items = sorted((report.shap_values or {}).items(), key=lambda kv: -abs(kv[1]))[:max_display]
    title = "Contributions of the clinical factors (SHAP)"
    caption = [
        f"SHAP value: change of the {report.shap_output} from the average training patient's "
        f"clinical factors to this patient's, with this CT ({report.explained_by}"
        f"{_ensemble_note(report)}). Red "
        "raises, blue lowers the predicted risk. A missing predictor enters at its training "
        "mean, so its value is about 0.",
    ]
    fig, box = _page(title, caption, 0.45, 0.935)
    ax = fig.add_axes((0.38, 0.52, 0.55, 0.38))
    names = [k for k, _ in items][::-1]
    vals = np.array([v for _, v in items][::-1], dtype=float)
    ax.barh(names, vals, color=["tab:red" if v > 0 else "tab:blue" for v in vals])
    ax.axvline(0, color="0.2", lw=0.8)
    ax.set_xlabel("SHAP value")
    ax.tick_params(axis="y", labelsize=8)
    ax.grid(axis="x", alpha=0.3)
    return FigurePage(title, caption, fig, box)
