"""How much the explanations can say: Grad-CAM's resolution and the spread across patients.

A Grad-CAM map is computed on the feature grid of ``model.gradcam_layer`` and upsampled to the
input; its true resolution is that grid's cell, not the CT's voxel. Attention weights and
Grad-CAM maps are shown for one patient or as a mean over patients; how much they vary
between patients says whether they describe the patient or only the network.

- :func:`feature_grid` — the spatial shape ``[D', H', W']`` of the Grad-CAM layer's output;
- :func:`gradcam_resolution` — that grid and its cell size in millimetres for one patient's
  preprocessed volume;
- :func:`gradcam_by_patient` — per patient and year: the mean Grad-CAM inside the liver and
  whether the map is empty;
- :func:`explanation_spread_table` and :func:`explanation_values` — the table and the
  manuscript's numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from crlm_lib.config import MASK_NAMES, N_YEARS
from crlm_lib.explain._common import GradCamLayerError, _iter_patients, _model_device, _patient_id
from crlm_lib.explain.gradcam import yearly_gradcam
from crlm_lib.train import to_device

__all__ = [
    "explanation_spread_table",
    "explanation_values",
    "feature_grid",
    "gradcam_by_patient",
    "gradcam_resolution",
    "resolution_text",
]


def feature_grid(model: nn.Module, batch_one_patient: Mapping[str, Any]) -> tuple[int, int, int]:
    """Spatial shape ``(D', H', W')`` of ``model.gradcam_layer``'s output for one patient (the
    grid Grad-CAM is computed on, before upsampling; the last three axes of a
    ``[B, C, (T,) D', H', W']`` output)."""
    batch = next(_iter_patients(batch_one_patient))
    layer = getattr(model, "gradcam_layer", None)
    if layer is None:
        raise GradCamLayerError(
            f"{_patient_id(batch)}: {type(model).__name__} has no gradcam_layer"
        )
    shapes: list[tuple[int, ...]] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape)))
    try:
        model.eval()
        with torch.no_grad():
            model(to_device(batch, _model_device(model)))
    finally:
        handle.remove()
    if not shapes or len(shapes[-1]) < 5:
        raise GradCamLayerError(f"{_patient_id(batch)}: gradcam_layer gave no 5-D/6-D output")
    d, h, w = shapes[-1][-3:]
    return int(d), int(h), int(w)


def gradcam_resolution(
    model: nn.Module, item: Mapping[str, Any], meta: Mapping[str, Any]
) -> dict[str, tuple]:
    """Grad-CAM's feature grid and its cell size in millimetres for one patient.

    Parameters
    ----------
    model : a registry model with ``gradcam_layer``.
    item : the patient's dataset item (``ct`` ``[1, D, H, W]``).
    meta : the patient's preprocessing cache (``data.preprocess.load_processed``):
        ``source_spacing_mm`` (z, y, x) and ``source_shape``. One processed slice is one
        source slice; in-plane the source extent is resized to ``H x W``.

    Returns
    -------
    dict
        ``input`` (D, H, W) voxels, ``voxel_mm`` (z, y, x) of the processed grid, ``grid``
        (D', H', W') cells of the feature map, ``cell_mm`` (z, y, x) of one cell.
    """
    shape = tuple(int(v) for v in np.asarray(item["ct"]).shape[-3:])
    sz, sy, sx = (float(v) for v in np.asarray(meta["source_spacing_mm"]))
    _, ny, nx = (int(v) for v in np.asarray(meta["source_shape"]))
    voxel = (sz, ny * sy / shape[1], nx * sx / shape[2])
    grid = feature_grid(model, item)
    cell = tuple(v * n / g for v, n, g in zip(voxel, shape, grid, strict=True))
    return {"input": shape, "voxel_mm": voxel, "grid": grid, "cell_mm": cell}


def gradcam_by_patient(model: nn.Module, dataset: Sequence[Mapping[str, Any]]) -> dict:
    """Every patient's yearly Grad-CAM (recurrence head, restricted to the liver, one shared
    scale per patient as :func:`~crlm_lib.explain.gradcam.yearly_gradcam` draws it).

    Returns
    -------
    dict
        ``liver_mean`` ``[N, 12]``: the map's mean inside the liver mask (0 to 1);
        ``empty`` ``[N, 12]`` bool: the map is zero everywhere; ``patient_ids`` ``[N]``.
    """
    liver = MASK_NAMES.index("liver")
    means, empty, ids = [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        maps = yearly_gradcam(model, item)  # [12, D, H, W]
        inside = np.asarray(item["masks"][liver]) > 0
        means.append(maps[:, inside].mean(axis=1) if inside.any() else np.zeros(len(maps)))
        empty.append(~(maps.reshape(len(maps), -1) > 0).any(axis=1))
        ids.append(str(item["patient_id"]))
    return {"liver_mean": np.array(means), "empty": np.array(empty), "patient_ids": ids}


def explanation_spread_table(attention: np.ndarray, gradcam: Mapping[str, Any]) -> pd.DataFrame:
    """Per virtual year: the attention weight's mean and SD across patients, and Grad-CAM's
    patients with a non-empty map and its mean and SD across patients inside the liver.

    ``attention``: ``[N, 12]`` weights (``att_1..att_12`` of the predictions); ``gradcam``:
    :func:`gradcam_by_patient` on the same patients. Index ``year`` 1..12.
    """
    att = np.asarray(attention, float)
    cam = np.asarray(gradcam["liver_mean"], float)
    ddof = 1 if att.shape[0] > 1 else 0
    table = pd.DataFrame(
        {
            "attention weight, mean": att.mean(axis=0),
            "attention weight, SD across patients": att.std(axis=0, ddof=ddof),
            "Grad-CAM: patients with a non-empty map": (~np.asarray(gradcam["empty"])).sum(0),
            "Grad-CAM in the liver, mean": cam.mean(axis=0),
            "Grad-CAM in the liver, SD across patients": cam.std(axis=0, ddof=ddof),
        },
        index=pd.RangeIndex(1, N_YEARS + 1, name="year"),
    )
    return table


def _dims(values: tuple, digits: int = 0) -> str:
    return "×".join(f"{v:.{digits}f}" for v in values)


def resolution_text(resolution: Mapping[str, tuple]) -> str:
    """``"2×4×4 cells of 40×40×40 mm"``: the feature grid of :func:`gradcam_resolution` (cells
    along z, y, x and the millimetres of one cell)."""
    return f"{_dims(resolution['grid'])} cells of {_dims(resolution['cell_mm'])} mm"


def explanation_values(
    resolution: Mapping[str, tuple], attention: np.ndarray, gradcam: Mapping[str, Any]
) -> dict[str, str]:
    """The manuscript's numbers on the explanations' resolution and spread.

    Returns ``gradcam-grid`` (``"2×4×4 cells of 40×40×40 mm"``), ``gradcam-input``
    (``"16×32×32 voxels of 2.5×5.0×5.0 mm"``), ``gradcam-nonempty`` (years with a non-empty
    map per patient: ``"1 of 12 years for every one of the 20 test patients"`` or a range),
    ``attention-sd-max`` (largest SD across patients of one year's weight, ``"1.2e-04"``),
    ``attention-range`` (lowest and highest mean weight) and ``explain-patients``.
    """
    att = np.asarray(attention, float)
    sd = att.std(axis=0, ddof=1 if att.shape[0] > 1 else 0)
    mean = att.mean(axis=0)
    nonempty = (~np.asarray(gradcam["empty"])).sum(axis=1)
    n = len(nonempty)
    lo, hi = int(nonempty.min()), int(nonempty.max())
    years = f"{lo} of {N_YEARS} years" if lo == hi else f"{lo} to {hi} of {N_YEARS} years"
    every = f"for every one of the {n} test patients" if lo == hi else f"over the {n} test patients"
    return {
        "gradcam-grid": resolution_text(resolution),
        "gradcam-input": (
            f"{_dims(resolution['input'])} voxels of {_dims(resolution['voxel_mm'], 1)} mm"
        ),
        "gradcam-nonempty": f"{years} {every}",
        "attention-sd-max": f"{sd.max():.1e}",
        "attention-range": f"{mean.min():.4f} to {mean.max():.4f}",
        "explain-patients": str(n),
    }
