"""Figures of the data side: CT slices with the segmentation masks, learning curves.

Figures are for people: CT shown in a soft-tissue window with its unit, masks as coloured
contours with a legend, axes named with units.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

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
