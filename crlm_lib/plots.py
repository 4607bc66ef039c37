"""Every figure of the project, in one module (matplotlib; seaborn theme for the report).

Figures are for people: CT shown in a soft-tissue window with its unit, masks as coloured
contours with a legend, axes named with units.

- data side: :func:`plot_masks_overlay` (CT with the five masks), :func:`plot_learning_curves`,
  :func:`plot_modality_agreement` (with :func:`read_histories`);
- explanations: :func:`plot_yearly_montage` (Grad-CAM per year), :func:`plot_patient_curves`,
  :func:`attention_over_years`, :func:`plot_shap_beeswarm`, :func:`plot_shap_bar`;
- the heatmap panel shared with the per-patient report's pages
  (:mod:`crlm_lib.report_figures`): :func:`draw_heat_panel`, :func:`outline_legend_handles`;
- evaluation (:mod:`crlm_lib.evaluation.calibration`, :mod:`crlm_lib.evaluation.decision`):
  :func:`plot_calibration`, :func:`plot_km_by_risk`, :func:`plot_decision_curve`.

``crlm_lib.figures`` and ``crlm_lib.explain`` re-export their former names from here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from torch import Tensor

from crlm_lib.config import MASK_NAMES, N_YEARS
from crlm_lib.errors import ExplainError

__all__ = [
    "MASK_STYLE",
    "HEAT_CMAP",
    "OUTLINE_STYLE",
    "attention_over_years",
    "draw_heat_panel",
    "heatmap_slice",
    "most_tumour_slice",
    "outline_legend_handles",
    "plot_calibration",
    "plot_decision_curve",
    "plot_km_by_risk",
    "plot_learning_curves",
    "plot_masks_overlay",
    "plot_modality_agreement",
    "plot_patient_curves",
    "plot_shap_bar",
    "plot_shap_beeswarm",
    "plot_yearly_montage",
    "read_histories",
]

#: Display names and colours of the five masks, in ``MASK_NAMES`` order.
MASK_STYLE: dict[str, tuple[str, str]] = {
    "liver": ("liver", "#f2c14e"),
    "remnant": ("future liver remnant", "#5fad56"),
    "hepatic": ("hepatic veins", "#4d9de0"),
    "portal": ("portal veins", "#e15554"),
    "tumour": ("tumours", "#b04fc1"),
}


def most_tumour_slice(masks: Sequence[np.ndarray] | np.ndarray) -> int:
    """Index along z of the slice with the most tumour voxels (the liver's centre if none).

    ``masks`` is ``[K, Z, Y, X]`` in ``MASK_NAMES`` order.
    """
    tumour = np.asarray(masks[MASK_NAMES.index("tumour")])
    per_slice = tumour.reshape(tumour.shape[0], -1).sum(1)
    if per_slice.max() > 0:
        return int(per_slice.argmax())
    liver = np.asarray(masks[MASK_NAMES.index("liver")])
    z = np.nonzero(liver.reshape(liver.shape[0], -1).any(1))[0]
    return int(z[len(z) // 2]) if len(z) else tumour.shape[0] // 2


def plot_masks_overlay(
    ct: np.ndarray,
    masks: Sequence[np.ndarray] | np.ndarray,
    *,
    slice_index: int | None = None,
    title: str = "",
    hu: bool = True,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """One axial CT slice with the five masks as contours.

    Parameters
    ----------
    ct : ndarray [Z, Y, X]
        HU (``hu=True``, shown in a soft-tissue window -160..240 HU) or preprocessed values in
        [-1, 1] (``hu=False``).
    masks : sequence of 5 arrays [Z, Y, X]
        In ``MASK_NAMES`` order (liver, remnant, hepatic, portal, tumour).
    slice_index : int, optional
        Axial slice; default the slice with the most tumour.
    """
    masks = [np.asarray(m) > 0 for m in masks]
    z = most_tumour_slice(masks) if slice_index is None else slice_index
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.2, 5.2))
    else:
        fig = ax.figure
    if hu:
        im = ax.imshow(ct[z], cmap="gray", vmin=-160, vmax=240)
        label = "HU"
    else:
        im = ax.imshow(ct[z], cmap="gray", vmin=-1, vmax=1)
        label = "preprocessed intensity"
    handles = []
    for name, m in zip(MASK_NAMES, masks, strict=True):
        text, colour = MASK_STYLE[name]
        if m[z].any():
            ax.contour(m[z].astype(float), levels=[0.5], colors=[colour], linewidths=1.2)
        handles.append(Line2D([], [], color=colour, label=text))
    ax.legend(handles=handles, loc="lower right", fontsize=7, framealpha=0.7)
    ax.set_title(f"{title}\naxial slice {z} of {ct.shape[0]}", fontsize=9)
    ax.set_xlabel("x (pixels)")
    ax.set_ylabel("y (pixels)")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    return fig


def plot_learning_curves(history: pd.DataFrame, title: str = "") -> plt.Figure:
    """Training and validation loss per epoch, the validation C-index, and the learning rate.

    ``history`` is ``train.fit``'s ``history.csv`` (columns ``epoch``, ``train_loss``,
    ``val_loss``, ``lr`` and, when recorded, ``val_c_os``: Harrell's C of the predicted 5-year
    death probability on the validation patients; its panel is left out when absent).
    """
    has_c = "val_c_os" in history and history["val_c_os"].notna().any()
    fig, axes = plt.subplots(1, 3 if has_c else 2, figsize=(13 if has_c else 9, 3.4))
    ax, ax_lr = axes[0], axes[-1]
    ax.plot(history["epoch"], history["train_loss"], marker="o", label="training")
    ax.plot(history["epoch"], history["val_loss"], marker="s", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (weighted multi-task)")
    ax.legend()
    ax.set_title(title, fontsize=9)
    if has_c:
        ax_c = axes[1]
        ax_c.plot(history["epoch"], history["val_c_os"], marker="s", color="tab:orange")
        ax_c.axhline(0.5, color="grey", lw=0.8, ls=":")
        ax_c.set_xlabel("epoch")
        ax_c.set_ylabel("validation Harrell C (OS, 5-year risk)")
    ax_lr.plot(history["epoch"], history["lr"], marker=".", color="grey")
    ax_lr.set_yscale("log")
    ax_lr.set_xlabel("epoch")
    ax_lr.set_ylabel("learning rate")
    fig.tight_layout()
    return fig


def read_histories(
    runs_dir: str | Path,
    keys: Sequence[str],
    seed: int = 0,
    protocol: str = "paper_split",
) -> dict[str, pd.DataFrame]:
    """``history.csv`` of the papers'-split runs ``keys`` (those that exist), by key.

    Runs live in ``<runs_dir>/<protocol>/seed<seed>/<key>/`` (``evaluation.run_paper_protocol``).
    """
    from crlm_lib.runfolder import RunFolder

    out = {}
    for key in keys:
        history = RunFolder(Path(runs_dir) / protocol / f"seed{seed}" / key).read_history()
        if history is not None:
            out[key] = history
    return out


_AGREEMENT_MARKERS = ("o", "^", "s", "D")


def plot_modality_agreement(histories: dict[str, pd.DataFrame], title: str = "") -> plt.Figure:
    """Cosine agreement of the embeddings per epoch, training and validation.

    Left: ``cos(h_img, h_recon)`` (image vs reconstruction branch; STAR's alignment divides by
    it); right: ``cos(h_img, h_clin)`` (what the alignment loss raises). Both are batch means
    of the raw cosines, logged by ``train.fit`` from the model's ``aux["monitor"]`` (columns
    ``train_cos_img_recon``, ``val_cos_img_recon``, ...). A value pinned at -1 is the collapse
    of the published STAR gradient (``losses.star_alignment_loss``).

    Parameters
    ----------
    histories : dict
        Run label -> ``history.csv`` frame (:func:`read_histories`).
    """
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), sharey=True)
    columns = (("cos_img_recon", "cos(h_img, h_recon)"), ("cos_img_clin", "cos(h_img, h_clin)"))
    for ax, (col, label) in zip(axes, columns, strict=True):
        for i, (key, hist) in enumerate(histories.items()):
            # runs that coincide stay visible: the first is drawn wide and filled, each later
            # one narrower, with its own marker shape, hollow, on top
            marker = _AGREEMENT_MARKERS[i % len(_AGREEMENT_MARKERS)]
            width = max(3.0 - 1.2 * i, 1.0)
            for split, line in (("train", "-"), ("val", "--")):
                name = f"{split}_{col}"
                if name in hist:
                    ax.plot(hist["epoch"], hist[name], line, marker=marker, color=f"C{i}",
                            lw=width, ms=4 + 3 * (i == 0), mfc="none" if i else f"C{i}",
                            zorder=2 + i,
                            label=f"{key} ({'training' if split == 'train' else 'validation'})")  # fmt: skip
        ax.axhline(0.0, color="grey", lw=0.6)
        ax.set_ylim(-1.05, 1.05)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{label} (batch mean)")
        if ax.lines[1:]:
            ax.legend(fontsize=7)
    axes[0].set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# explanations
# --------------------------------------------------------------------------------------------


def heatmap_slice(masks: np.ndarray | None, heatmaps: np.ndarray, empty: int) -> int:
    """Axial slice to show a heatmap on: the most tumour (``masks[4]``), else the most liver
    (``masks[0]``), else the most heat, else ``empty``. ``masks`` ``[5, D, H, W]``,
    ``heatmaps`` ``[Y, D, H, W]``."""
    if masks is not None and masks[4].any():
        return int(np.argmax(masks[4].reshape(masks.shape[1], -1).sum(1)))
    if masks is not None and masks[0].any():
        return int(np.argmax(masks[0].reshape(masks.shape[1], -1).sum(1)))
    if heatmaps.any():
        return int(np.argmax(heatmaps.sum(axis=(0, 2, 3))))
    return empty


#: Colour map of the Grad-CAM maps: 0 is dark violet, clearly not the grey of the CT nor the
#: yellow of the top of the scale.
HEAT_CMAP = "viridis"
#: Outline colours over the heatmaps (not in the viridis scale).
OUTLINE_STYLE: dict[str, tuple[str, str]] = {"liver": ("white", "liver outline"),
                                             "tumour": ("#ff3030", "tumour outline")}  # fmt: skip


def draw_heat_panel(
    ax: plt.Axes,
    ct_slice: np.ndarray,
    heat_slice: np.ndarray,
    masks_slice: np.ndarray | None,
    vmax: float,
    orientation: Sequence[str] | None = None,
):
    """One axial slice: CT in grey, the heatmap drawn opaque on the fixed scale ``[0, vmax]``
    wherever it is defined (inside the liver, zeros included, so an all-zero year shows the
    bottom colour of the scale, not the CT; and wherever it is positive), liver and tumour
    outlines (:data:`OUTLINE_STYLE`), and the patient's directions at the left, right, top and
    bottom edges when ``orientation`` is given. ``masks_slice`` ``[5, H, W]``. Returns the
    heatmap image (for a colour bar)."""
    ax.imshow(ct_slice, cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
    liver = masks_slice[0] > 0 if masks_slice is not None else np.zeros(heat_slice.shape, bool)
    region = liver | (heat_slice > 0)
    if masks_slice is None:
        region[:] = True
    shown = np.ma.masked_where(~region, heat_slice)
    image = ax.imshow(shown, cmap=HEAT_CMAP, vmin=0.0, vmax=vmax, interpolation="nearest")
    if masks_slice is not None:
        for k, name in ((0, "liver"), (4, "tumour")):
            if masks_slice[k].any():
                colour = OUTLINE_STYLE[name][0]
                ax.contour(masks_slice[k], levels=[0.5], colors=colour, linewidths=1.2)
    if orientation is not None:
        style = {"color": "yellow", "fontsize": 8, "fontweight": "bold"}
        for (x, y, ha, va), letter in zip(
            ((0.02, 0.5, "left", "center"), (0.98, 0.5, "right", "center"),
             (0.5, 0.98, "center", "top"), (0.5, 0.02, "center", "bottom")),
            orientation, strict=True,
        ):  # fmt: skip
            ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, **style)
    ax.set_xticks([])
    ax.set_yticks([])
    return image


def outline_legend_handles() -> list[Line2D]:
    """Legend entries of the outlines drawn by :func:`draw_heat_panel`."""
    return [Line2D([0], [0], color=c, lw=1.5, label=label) for c, label in OUTLINE_STYLE.values()]


def plot_yearly_montage(
    ct: np.ndarray,
    heatmaps: np.ndarray,
    masks: np.ndarray | None = None,
    slice_index: int | None = None,
    title: str = "Grad-CAM per postoperative year",
    vmax: float | None = None,
    slice_label: str | None = None,
):
    """Montage of the yearly maps over one axial CT slice: 3 x 4 panels (years 1-12).

    Parameters
    ----------
    ct : np.ndarray
        ``[D, H, W]`` (or ``[1, D, H, W]``) in [-1, 1] (the preprocessed grid), shown in grey.
    heatmaps : np.ndarray
        ``[Y, D, H, W]`` from :func:`yearly_gradcam` (``Y`` <= 12 years; year labels 1..Y).
    masks : np.ndarray, optional
        ``[5, D, H, W]`` in ``MASK_NAMES`` order. Selects the default slice (the one with the
        most tumour voxels, ``masks[4]``), draws the liver and tumour outlines and the region
        where zeros are drawn (:func:`draw_heat_panel`).
    slice_index : int, optional
        Axial slice shown; default: most tumour, else most liver, else most heat, else middle.
    vmax : float, optional
        Top of the one colour scale of every panel (default: the largest value over every
        year; 1 when every map is 0), so the colours compare across years.
    slice_label : str, optional
        Where the slice is (default ``"axial slice <index>"`` of the preprocessed grid).

    Returns
    -------
    matplotlib.figure.Figure
        Figure with ``Y`` image axes and one colour-bar axis ("Grad-CAM (normalised)").
    """
    ct = np.asarray(ct)
    ct = ct[0] if ct.ndim == 4 else ct
    heatmaps = np.asarray(heatmaps)
    n_years = heatmaps.shape[0]
    if slice_index is None:
        slice_index = heatmap_slice(masks, heatmaps, empty=ct.shape[0] // 2)
    top = float(vmax) if vmax is not None else float(heatmaps.max())
    top = top if top > 0 else 1.0
    n_cols = 4
    n_rows = int(np.ceil(n_years / n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows + 0.6), squeeze=False
    )
    image = None
    m = masks[:, slice_index] if masks is not None else None
    for i, ax in enumerate(axes.ravel()):
        if i >= n_years:
            fig.delaxes(ax)
            continue
        image = draw_heat_panel(ax, ct[slice_index], heatmaps[i, slice_index], m, top)
        ax.set_title(f"Year {i + 1}", fontsize=10)
    used = [ax for ax in axes.ravel()[:n_years]]
    cbar = fig.colorbar(image, ax=used, shrink=0.8, pad=0.02)
    cbar.set_label("Grad-CAM (normalised)")
    fig.suptitle(f"{title} ({slice_label or f'axial slice {slice_index}'})")
    return fig


def plot_patient_curves(
    pred_row: Mapping[str, Any],
    recurrence_outcome: str = "dfs",
    survival_outcome: str = "os",
    title: str | None = None,
):
    """Per-patient strip: predicted recurrence by year and predicted survival S(t).

    Left panel: ``rec_p{k}`` (model's sigmoid for "recurrence by the end of year k") at
    ``t = k`` years; these come from 12 independent sigmoids and are shown as predicted (not
    forced to be monotone). Right panel: ``S(t) = 1 - sum_{j <= t} surv_p{j}`` at
    ``t = 0..12`` years, from the softmax pmf over yearly death bins (``S(0) = 1``).
    Observed outcomes (``{dfs,os}_years``, ``{dfs,os}_event``) are marked: an event as a
    vertical line with a filled marker, censoring as a ``+`` (follow-up ended without event).

    Parameters
    ----------
    pred_row : mapping / pandas Series
        One row of ``train.predict`` (``rec_p1..12``, ``surv_p1..12``, outcomes, ``patient_id``).

    Returns
    -------
    matplotlib.figure.Figure
        Two axes, x-axis "Years after resection".
    """
    from crlm_lib.types import PATIENT_ID, REC_COLS, SURV_COLS

    rec = np.array([float(pred_row[c]) for c in REC_COLS])
    pmf = np.array([float(pred_row[c]) for c in SURV_COLS])
    surv = np.concatenate([[1.0], 1.0 - np.cumsum(pmf)]).clip(0.0, 1.0)
    years = np.arange(1, N_YEARS + 1)
    fig, (ax_r, ax_s) = plt.subplots(1, 2, figsize=(9, 3.4), sharex=True)
    ax_r.plot(years, rec, "o-", color="tab:red", label="predicted")
    ax_r.set_ylabel("Predicted probability of recurrence\nby end of year")
    ax_r.set_title("Recurrence")
    ax_s.step(np.arange(0, N_YEARS + 1), surv, where="post", color="tab:blue", label="predicted")
    ax_s.set_ylabel("Predicted survival S(t)")
    ax_s.set_title("Overall survival")
    for ax, prefix, curve_x, curve_y in (
        (ax_r, recurrence_outcome, years, rec),
        (ax_s, survival_outcome, np.arange(0, N_YEARS + 1), surv),
    ):
        t_obs = pred_row.get(f"{prefix}_years") if hasattr(pred_row, "get") else None
        event = pred_row.get(f"{prefix}_event") if hasattr(pred_row, "get") else None
        if t_obs is not None and np.isfinite(float(t_obs)):
            t_obs = float(t_obs)
            y_at = float(np.interp(t_obs, curve_x, curve_y))
            if event is not None and float(event) > 0:
                ax.axvline(t_obs, color="black", ls="--", lw=1)
                ax.plot([t_obs], [y_at], "kv", ms=8, label=f"event observed ({t_obs:.1f} y)")
            else:
                ax.plot([t_obs], [y_at], "k+", ms=12, mew=2, label=f"censored ({t_obs:.1f} y)")
        ax.set_xlabel("Years after resection")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(0, N_YEARS + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    pid = pred_row.get(PATIENT_ID) if hasattr(pred_row, "get") else None
    fig.suptitle(title or (f"Patient {pid}" if pid is not None else "Patient"))
    fig.tight_layout()
    return fig


def _attention_array(attention: Any, prefix: str) -> np.ndarray:
    """``[N, 12]`` attention weights from an array, a tensor or a predictions table."""
    if hasattr(attention, "columns"):
        cols = [f"{prefix}{k}" for k in range(1, N_YEARS + 1)]
        missing = [c for c in cols if c not in attention.columns]
        if missing:
            raise ExplainError(f"attention table lacks columns {missing}")
        return attention[cols].to_numpy(dtype=float)
    arr = np.asarray(attention.detach().cpu() if isinstance(attention, Tensor) else attention)
    return arr.astype(float).reshape(-1, arr.shape[-1])


def attention_over_years(
    attention: Any,
    prefix: str = "att_",
    ax=None,
    title: str = "Attention over virtual years",
):
    """Mean +/- SD of the temporal attention weight of each virtual year across patients, and
    the SD itself on a log scale (an SD far below the marker size stays readable).

    Parameters
    ----------
    attention : array ``[N, 12]`` or pandas DataFrame
        ``aux["attention"]`` stacked over patients, or a predictions table with columns
        ``{prefix}1 .. {prefix}12`` (default ``att_1..att_12``, as ``train.predict`` writes).
    ax : matplotlib axis, optional
        Draw the mean +/- SD only, on this axis.

    Returns
    -------
    matplotlib.figure.Figure
        Top: mean +/- SD, the dashed line the uniform weight 1/12; bottom (without ``ax``):
        the SD across the N patients per year (log scale; an SD of 0 is drawn at the axis
        floor and labelled).
    """
    arr = _attention_array(attention, prefix)
    mean, sd = arr.mean(axis=0), arr.std(axis=0, ddof=1 if arr.shape[0] > 1 else 0)
    x = np.arange(1, arr.shape[1] + 1)
    if ax is None:
        fig, (ax, ax_sd) = plt.subplots(
            2, 1, figsize=(6, 4.6), sharex=True, gridspec_kw={"height_ratios": [2, 1]}
        )
    else:
        fig, ax_sd = ax.figure, None
    ax.errorbar(x, mean, yerr=sd, fmt="o-", capsize=3, label=f"mean ± SD (N = {arr.shape[0]})")
    ax.axhline(1.0 / arr.shape[1], color="gray", ls="--", lw=1, label="uniform (1/12)")
    ax.set_xticks(x)
    ax.set_ylabel("Attention weight")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if ax_sd is not None:
        floor = 1e-12
        ax_sd.semilogy(x, np.maximum(sd, floor), "s-", color="C1")
        ax_sd.set_ylabel("SD across\npatients")
        ax_sd.text(
            0.01, 0.95, f"largest SD {sd.max():.1e}", transform=ax_sd.transAxes,
            va="top", fontsize=8,
        )  # fmt: skip
        ax_sd.grid(alpha=0.3, which="both")
    (ax_sd or ax).set_xlabel("Virtual year (timestamp)")
    fig.tight_layout()
    return fig


def _shap_figure(expl, max_display: int, title: str | None, xlabel: str, draw) -> plt.Figure:
    """One axis sized for ``max_display`` features, drawn by ``draw(ax)`` (a ``shap.plots``
    function), with ``xlabel`` and ``title``."""
    from crlm_lib.data.clinical import predictor_label

    if getattr(expl, "feature_names", None) is not None:
        expl = copy.copy(expl)
        expl.feature_names = [predictor_label(n) for n in expl.feature_names]
    fig, ax = plt.subplots(figsize=(7, 0.35 * min(max_display, expl.values.shape[1]) + 1.8))
    draw(ax)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_shap_beeswarm(expl, max_display: int = 15, title: str | None = None):
    """shap's beeswarm of the clinical SHAP values (one dot per patient and feature).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import shap

    def draw(ax):
        shap.plots.beeswarm(expl, max_display=max_display, show=False, ax=ax, plot_size=None)

    return _shap_figure(expl, max_display, title, "SHAP value (change in predicted risk)", draw)


def plot_shap_bar(expl, max_display: int = 15, title: str | None = None):
    """Mean |SHAP| per clinical feature (global importance, as STAR's Figure 4).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import shap

    def draw(ax):
        shap.plots.bar(expl, max_display=max_display, show=False, ax=ax)

    xlabel = "mean |SHAP value| (average impact on predicted risk)"
    return _shap_figure(expl, max_display, title, xlabel, draw)


# --------------------------------------------------------------------------------------------
# evaluation figures (evaluation.calibration)
# --------------------------------------------------------------------------------------------


def plot_calibration(table: pd.DataFrame, title: str = "", ax=None):
    """Calibration plot: predicted vs Kaplan–Meier observed risk per group, one panel per horizon.

    Returns the matplotlib Figure (axes in probability units, 0..1; the diagonal is perfect
    calibration).
    """
    horizons = sorted(table["horizon_years"].unique())
    if ax is None:
        fig, axes = plt.subplots(
            1, len(horizons), figsize=(3.6 * len(horizons), 3.6), squeeze=False
        )
        axes = axes[0]
    else:
        axes, fig = np.atleast_1d(ax), np.atleast_1d(ax)[0].figure
    for a, h in zip(axes, horizons, strict=False):
        t = table[table["horizon_years"] == h]
        yerr = np.vstack(
            [t["observed"] - t["observed_low"], t["observed_high"] - t["observed"]]
        ).clip(0)
        a.errorbar(t["predicted"], t["observed"], yerr=yerr, fmt="o", capsize=3)
        a.plot([0, 1], [0, 1], ls="--", color="grey", lw=1)
        a.set_xlim(0, 1)
        a.set_ylim(0, 1)
        span = f"{h:g} year" + ("" if h == 1 else "s")
        a.set_xlabel(f"predicted risk by {span}")
        a.set_ylabel(f"observed risk by {span} (Kaplan–Meier)")
        a.set_title(f"{h:g}-year horizon")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_km_by_risk(
    time: np.ndarray,
    event: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    head: str = "os",
    title: str = "",
):
    """Kaplan–Meier curves (lifelines, 95% bands) of the patients in each predicted-risk group
    ``names`` (``labels`` gives each patient's group). x: years after resection; y: OS or DFS
    probability. Returns the Figure."""
    from lifelines import KaplanMeierFitter

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name in names:
        m = labels == name
        KaplanMeierFitter(label=f"{name} predicted risk (n={m.sum()})").fit(
            time[m], event[m]
        ).plot_survival_function(ax=ax, ci_show=True)
    what = "overall survival" if head == "os" else "disease-free survival"
    ax.set_xlabel("years after hepatic resection")
    ax.set_ylabel(f"{what} probability")
    ax.set_ylim(0, 1.02)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_decision_curve(table: pd.DataFrame, title: str = "", ax=None):
    """Decision curve: net benefit against the threshold probability, one line per model of
    ``table`` (``evaluation.decision_curve``), treat-all dashed grey, treat-none at 0.

    x: threshold probability of the event by the horizon (%); y: net benefit (true positives
    per patient, minus false positives weighted by ``p_t / (1 - p_t)``). The y axis starts a
    little below 0 (a strategy below treat-none does harm). Returns the Figure.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4)) if ax is None else (ax.figure, ax)
    styles = {"all": {"color": "grey", "ls": "--"}, "none": {"color": "black", "lw": 1}}
    for model, rows in table.groupby("model", sort=False):
        ax.plot(
            100 * rows["threshold"], rows["net_benefit"], label=rows["label"].iloc[0],
            **styles.get(str(model), {"lw": 1.8}),
        )  # fmt: skip
    top = np.nanmax(table["net_benefit"].to_numpy(float))
    ax.set_ylim(-0.05, max(top, 0.05) * 1.1)
    horizon = table["horizon_years"].iloc[0]
    ax.set_xlabel(f"threshold probability of recurrence or death by {horizon:g} years (%)")
    ax.set_ylabel("net benefit (per patient)")
    ax.legend(frameon=False, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
