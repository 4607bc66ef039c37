"""Figures of the data side: CT slices with the segmentation masks, learning curves.

Figures are for people: CT shown in a soft-tissue window with its unit, masks as coloured
contours with a legend, axes named with units.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from crlm_lib.config import MASK_NAMES

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
    """Training and validation loss per epoch, plus the learning rate (log scale).

    ``history`` is ``train.fit``'s ``history.csv`` (columns ``epoch``, ``train_loss``,
    ``val_loss``, ``lr``).
    """
    fig, (ax, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.4))
    ax.plot(history["epoch"], history["train_loss"], marker="o", label="training")
    ax.plot(history["epoch"], history["val_loss"], marker="s", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (weighted multi-task)")
    ax.legend()
    ax.set_title(title, fontsize=9)
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

    Runs live in ``<runs_dir>/<protocol>/seed<seed>/<key>/`` (``evaluate.run_paper_protocol``).
    """
    out = {}
    for key in keys:
        path = Path(runs_dir) / protocol / f"seed{seed}" / key / "history.csv"
        if path.is_file():
            out[key] = pd.read_csv(path)
    return out


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
            colour = f"C{i}"
            for split, style in (("train", "-o"), ("val", "--s")):
                name = f"{split}_{col}"
                if name in hist:
                    ax.plot(hist["epoch"], hist[name], style, color=colour,
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
