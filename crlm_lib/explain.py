"""Explanations: Grad-CAM per virtual year, SHAP on clinical inputs, figures and NIfTI export.

Every model of the registry follows one contract (``docs/interfaces.md``): ``forward(batch) ->
{"recurrence_logits" [B, 12], "survival_logits" [B, 12], "aux": {...}}`` and an attribute
``gradcam_layer`` (the last spatial or spatio-temporal layer). This module explains any of them:

- :func:`yearly_gradcam` — one 3D Grad-CAM map per year (Selvaraju et al., ICCV 2017; STAR
  section 4 shows Grad-CAM over the liver), computed with captum's ``LayerGradCam`` and
  upsampled to the CT grid;
- :func:`plot_yearly_montage`, :func:`plot_patient_curves`, :func:`attention_over_years` —
  figures for the paper;
- :func:`export_heatmaps_nifti` — the maps in the ORIGINAL CT's geometry, for 3D Slicer;
- :func:`clinical_shap`, :func:`shap_additivity_gap`, :func:`plot_shap_beeswarm`,
  :func:`plot_shap_bar` — SHAP values of the clinical inputs (STAR Figure 4) with each
  patient's own image held fixed;
- :func:`randomisation_check` — the model-parameter randomisation test of Adebayo et al.
  (NeurIPS 2018, "Sanity checks for saliency maps").

``shap`` is imported lazily (its import costs seconds: numba).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution, LayerGradCam
from torch import Tensor, nn

from . import atomic
from .config import MASK_NAMES, N_YEARS
from .train import to_device

__all__ = [
    "ExplainError",
    "GradCamLayerError",
    "attention_over_years",
    "clinical_shap",
    "export_heatmaps_nifti",
    "heatmap_affine_ras",
    "kernel_shap_check",
    "plot_patient_curves",
    "plot_shap_bar",
    "plot_shap_beeswarm",
    "plot_yearly_montage",
    "randomisation_check",
    "risk_output",
    "shap_additivity_gap",
    "yearly_gradcam",
]

#: Matrix that turns DICOM/ITK patient coordinates (LPS: +x left, +y posterior, +z superior)
#: into NIfTI world coordinates (RAS: +x right, +y anterior, +z superior).
LPS_TO_RAS: np.ndarray = np.diag([-1.0, -1.0, 1.0])


class ExplainError(RuntimeError):
    """An explanation cannot be computed for this patient / model / file."""


class GradCamLayerError(ExplainError):
    """The model has no usable ``gradcam_layer`` (``None``, or an output Grad-CAM cannot use)."""


# --------------------------------------------------------------------------------------------
# helpers: patients and batches
# --------------------------------------------------------------------------------------------


def _patient_id(batch: Mapping[str, Any]) -> str:
    pid = batch.get("patient_id", "<unknown patient>")
    if isinstance(pid, (list, tuple)):
        pid = pid[0] if len(pid) else "<unknown patient>"
    return str(pid)


def _as_batch_of_one(item: Mapping[str, Any]) -> dict[str, Any]:
    """A dataset item (``ct`` ``[1, D, H, W]``) -> a batch of one (``ct`` ``[1, 1, D, H, W]``)."""
    out: dict[str, Any] = {}
    for key, value in item.items():
        if isinstance(value, Tensor):
            out[key] = value.unsqueeze(0)
        elif isinstance(value, np.ndarray):
            out[key] = torch.from_numpy(value).unsqueeze(0)
        elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            out[key] = torch.tensor([value])
        else:
            out[key] = [value]
    return out


def _slice_batch(batch: Mapping[str, Any], i: int) -> dict[str, Any]:
    """Patient ``i`` of a collated batch, keeping a batch axis of length 1."""
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, (Tensor, np.ndarray)) and np.ndim(value) >= 1:
            v = value[i : i + 1]
            out[key] = torch.as_tensor(v) if isinstance(v, np.ndarray) else v
        elif isinstance(value, (list, tuple)):
            out[key] = [value[i]]
        else:
            out[key] = value
    return out


def _iter_patients(data: Any) -> Iterator[dict[str, Any]]:
    """Yield batches of ONE patient from a dataset, a batch dict, or an iterable of either.

    A mapping whose ``ct`` has 4 dims ``[1, D, H, W]`` is a dataset item; 5 dims
    ``[B, 1, D, H, W]`` is a collated batch (split into its patients).
    """
    items: Iterable[Any] = [data] if isinstance(data, Mapping) else data
    for item in items:
        ct = item["ct"]
        if ct.ndim == 4:
            yield _as_batch_of_one(item)
        elif ct.ndim == 5:
            for i in range(ct.shape[0]):
                yield _slice_batch(item, i)
        else:
            raise ExplainError(
                f"{_patient_id(item)}: 'ct' must be [1, D, H, W] (dataset item) or "
                f"[B, 1, D, H, W] (batch), got {tuple(ct.shape)}"
            )


def _model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _restriction_mask(
    batch: Mapping[str, Any], restrict_to: str | np.ndarray | Tensor | None, grid: tuple
) -> np.ndarray | None:
    """Boolean ``[D, H, W]`` mask where the heatmap is kept, or ``None`` (keep everything)."""
    if restrict_to is None:
        return None
    if isinstance(restrict_to, str):
        if restrict_to not in MASK_NAMES:
            raise ValueError(
                f"restrict_to must be one of {MASK_NAMES} or None, got {restrict_to!r}"
            )
        masks = batch.get("masks")
        if masks is None:
            raise ExplainError(
                f"{_patient_id(batch)}: restrict_to={restrict_to!r} needs 'masks' in the batch"
            )
        mask = masks[0, MASK_NAMES.index(restrict_to)]
    else:
        mask = restrict_to
    mask = np.asarray(mask.detach().cpu() if isinstance(mask, Tensor) else mask) > 0
    if mask.shape != tuple(grid):
        raise ExplainError(
            f"{_patient_id(batch)}: restriction mask {mask.shape} does not match the CT grid {grid}"
        )
    return mask


# --------------------------------------------------------------------------------------------
# Grad-CAM per year
# --------------------------------------------------------------------------------------------


class _CTForward(nn.Module):
    """Tensor-in, tensor-out view of a dict-batch model, as captum needs.

    ``forward(ct [B, 1, D, H, W]) -> logits [B, 12]`` of head ``target``; every other entry of
    the batch (masks, clinical, lesions) is held fixed at the patient's own values.
    """

    def __init__(self, model: nn.Module, batch: Mapping[str, Any], target: str) -> None:
        super().__init__()
        self.model = model
        self.fixed = {k: v for k, v in batch.items() if k != "ct"}
        self.key = f"{target}_logits"

    def forward(self, ct: Tensor) -> Tensor:
        return self.model({**self.fixed, "ct": ct})[self.key]


class _TimeFold(nn.Module):
    """Identity that exposes ``[B, C, T, ...]`` as ``[B, C*T, ...]`` to captum.

    captum's ``LayerGradCam`` averages gradients over every axis after the channel axis, so on
    a time-resolved output ``[B, C, T, D, H, W]`` it would pool the channel weights over T.
    Folding T into the channels gives one weight per (channel, timestep):
    ``alpha_{c,t} = mean_{d,h,w} dy/dA_{c,t,d,h,w}`` (Grad-CAM Eq. (1) per timestep).
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(x.shape[0], x.shape[1] * x.shape[2], *x.shape[3:])


def _probe_layer_shape(wrapper: _CTForward, layer: nn.Module, ct: Tensor) -> tuple[int, ...]:
    shapes: list[tuple[int, ...]] = []

    def hook(_m, _i, out):
        if isinstance(out, Tensor):
            shapes.append(tuple(out.shape))

    handle = layer.register_forward_hook(hook)
    try:
        with torch.no_grad():
            wrapper(ct)
    finally:
        handle.remove()
    if not shapes:
        raise GradCamLayerError("gradcam_layer was not called (or returned no tensor) in forward")
    if len(shapes) > 1:
        warnings.warn(
            f"gradcam_layer is called {len(shapes)} times per forward; captum uses the last call",
            stacklevel=3,
        )
    return shapes[-1]


def _normalise(maps: np.ndarray, mode: str) -> np.ndarray:
    if mode == "shared":
        peak = float(maps.max()) if maps.size else 0.0
        return maps / peak if peak > 0 else maps
    if mode == "per_year":
        peak = maps.reshape(maps.shape[0], -1).max(axis=1)
        scale = np.where(peak > 0, peak, 1.0)
        return maps / scale[:, None, None, None]
    if mode == "none":
        return maps
    raise ValueError(f"normalise must be 'shared', 'per_year' or 'none', got {mode!r}")


def yearly_gradcam(
    model: nn.Module,
    batch_one_patient: Mapping[str, Any],
    years: Iterable[int] = range(N_YEARS),
    restrict_to: str | np.ndarray | Tensor | None = "liver",
    target: str = "recurrence",
    normalise: str = "shared",
    time_mode: str = "matched",
    interpolate_mode: str = "trilinear",
) -> np.ndarray:
    """Grad-CAM of each year's logit on ``model.gradcam_layer``, on the CT grid.

    For year ``k`` (0-based: year ``k + 1`` after resection) and layer activations ``A``
    (channels ``c``), Grad-CAM (Selvaraju et al. 2017, Eqs. (1)-(2)) is

    ``alpha_c^k = mean_{voxels} d y_k / d A_c``,  ``L^k = ReLU(sum_c alpha_c^k A_c)``,

    computed with captum's ``LayerGradCam`` (one backward pass per year), upsampled to the CT
    grid with ``LayerAttribution.interpolate`` (trilinear), set to zero outside the
    ``restrict_to`` mask and normalised.

    Time-resolved layers (4D-ACFNet's last spatio-temporal layer outputs
    ``[B, C, T=12, D', H', W']``): the weights are computed per (channel, timestep),
    ``alpha_{c,t}^k = mean_{d,h,w} dy_k/dA_{c,t}``, by folding T into the channel axis, and

    - ``time_mode="matched"`` (default): year ``k`` shows timestep ``t = k`` only,
      ``L^k = ReLU(sum_c alpha_{c,k}^k A_{c,k})`` — virtual timestamp k is the model's
      representation of year k (4D-ACFNet section 3.1), so this is the map "of that year";
    - ``time_mode="sum"``: ``L^k = ReLU(sum_{c,t} alpha_{c,t}^k A_{c,t})`` — everything in the
      layer that year k's logit used, whichever timestep carried it.

    A layer that folds the timesteps into the batch (output ``[T, C, D', H', W']`` for a
    single patient) is treated the same way (per-timestep weights are then captum's own).

    Parameters
    ----------
    model : nn.Module
        A model of the registry (dict batch in, ``{target}_logits`` ``[B, 12]`` out) with
        ``gradcam_layer`` set. Put in ``eval()`` mode here.
    batch_one_patient : mapping
        One patient: a batch of one (``ct`` ``[1, 1, D, H, W]``) or a dataset item
        (``ct`` ``[1, D, H, W]``); ``masks`` ``[1, 5, D, H, W]`` needed for ``restrict_to``.
    years : iterable of int
        0-based year indices to explain (default all 12).
    restrict_to : str, array or None
        Name in ``MASK_NAMES`` (default ``"liver"``), a boolean ``[D, H, W]`` array, or
        ``None``; voxels outside are set to zero.
    target : {"recurrence", "survival"}
        Head whose year-k logit is explained.
    normalise : {"shared", "per_year", "none"}
        ``"shared"`` (default) divides all years by one maximum (the largest value over years
        and voxels) so that years are comparable in magnitude; ``"per_year"`` divides each
        year by its own maximum (shape only, each year peaks at 1); ``"none"`` keeps captum's
        raw units (logit per activation unit). All-zero maps stay zero.
    time_mode : {"matched", "sum"}
        For time-resolved layers only (see above).
    interpolate_mode : str
        ``torch.nn.functional.interpolate`` mode for upsampling (``"trilinear"``, ``"nearest"``).

    Returns
    -------
    np.ndarray
        float32 ``[len(years), D, H, W]``, non-negative.

    Raises
    ------
    GradCamLayerError
        When ``model.gradcam_layer`` is missing/``None`` or its output is not 5-D/6-D.

    Examples
    --------
    >>> maps = yearly_gradcam(model, dataset[0])  # doctest: +SKIP
    >>> maps.shape  # doctest: +SKIP
    (12, 16, 32, 32)
    """
    if target not in ("recurrence", "survival"):
        raise ValueError(f"target must be 'recurrence' or 'survival', got {target!r}")
    if time_mode not in ("matched", "sum"):
        raise ValueError(f"time_mode must be 'matched' or 'sum', got {time_mode!r}")
    batch = next(_iter_patients(batch_one_patient), None)
    if batch is None:
        raise ExplainError("yearly_gradcam needs one patient")
    pid = _patient_id(batch)
    layer = getattr(model, "gradcam_layer", None)
    if layer is None:
        raise GradCamLayerError(
            f"{pid}: {type(model).__name__} has gradcam_layer=None (no spatial layer to explain; "
            "e.g. a clinical-only or graph model) — Grad-CAM is not defined for it"
        )
    model.eval()
    device = _model_device(model)
    batch = to_device(batch, device)
    ct = batch["ct"].float()
    grid = tuple(ct.shape[-3:])
    keep = _restriction_mask(batch, restrict_to, grid)
    wrapper = _CTForward(model, batch, target).eval()
    shape = _probe_layer_shape(wrapper, layer, ct)
    years = list(years)

    fold: _TimeFold | None = None
    handle = None
    if len(shape) == 6:
        mode = "time_channels"
        n_t = shape[2]
        fold = _TimeFold()

        def refold(_m, _i, out):
            return fold(out).reshape(out.shape)

        handle = layer.register_forward_hook(refold)
        cam = LayerGradCam(wrapper, fold)
    elif len(shape) == 5 and shape[0] == ct.shape[0] * N_YEARS and ct.shape[0] == 1:
        mode = "time_batch"
        n_t = shape[0]
        cam = LayerGradCam(wrapper, layer)
    elif len(shape) == 5:
        mode = "spatial"
        n_t = 1
        cam = LayerGradCam(wrapper, layer)
    else:
        raise GradCamLayerError(
            f"{pid}: gradcam_layer output {shape} is not [B, C, D, H, W] or [B, C, T, D, H, W]"
        )

    maps = np.zeros((len(years), *grid), dtype=np.float32)
    try:
        for i, k in enumerate(years):
            if mode == "time_channels":
                raw = cam.attribute(ct, target=int(k), attr_dim_summation=False)
                raw = raw.reshape(1, shape[1], n_t, *shape[3:]).sum(dim=1)  # [1, T, d, h, w]
                sel = raw[:, k % n_t] if time_mode == "matched" else raw.sum(dim=1)
                lowres = F.relu(sel).unsqueeze(1)  # [1, 1, d, h, w]
            elif mode == "time_batch":
                raw = cam.attribute(ct, target=int(k))  # [T, 1, d, h, w]
                sel = raw[k % n_t : k % n_t + 1] if time_mode == "matched" else raw.sum(0, True)
                lowres = F.relu(sel)
            else:
                lowres = cam.attribute(ct, target=int(k), relu_attributions=True)
            up = LayerAttribution.interpolate(lowres.detach(), grid, interpolate_mode)
            maps[i] = up[0, 0].clamp_min(0).cpu().numpy()
    finally:
        if handle is not None:
            handle.remove()
    if keep is not None:
        maps[:, ~keep] = 0.0
    return _normalise(maps, normalise).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_yearly_montage(
    ct: np.ndarray,
    heatmaps: np.ndarray,
    masks: np.ndarray | None = None,
    slice_index: int | None = None,
    title: str = "Grad-CAM per postoperative year",
    alpha: float = 0.5,
    cmap: str = "inferno",
    vmax: float | None = None,
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
        most tumour voxels, ``masks[4]``) and draws the liver outline.
    slice_index : int, optional
        Axial slice shown; default: most tumour, else most liver, else most heat, else middle.
    vmax : float, optional
        Top of the colour scale (default: the largest value of ``heatmaps``, 1 after shared
        normalisation). One scale for every panel, so the colours compare across years.

    Returns
    -------
    matplotlib.figure.Figure
        Figure with ``Y`` image axes and one colour-bar axis ("Grad-CAM (normalised)").
    """
    import matplotlib.pyplot as plt

    ct = np.asarray(ct)
    ct = ct[0] if ct.ndim == 4 else ct
    heatmaps = np.asarray(heatmaps)
    n_years = heatmaps.shape[0]
    if slice_index is None:
        if masks is not None and masks[4].any():
            slice_index = int(np.argmax(masks[4].reshape(masks.shape[1], -1).sum(1)))
        elif masks is not None and masks[0].any():
            slice_index = int(np.argmax(masks[0].reshape(masks.shape[1], -1).sum(1)))
        elif heatmaps.any():
            slice_index = int(np.argmax(heatmaps.sum(axis=(0, 2, 3))))
        else:
            slice_index = ct.shape[0] // 2
    top = float(vmax) if vmax is not None else max(float(heatmaps.max()), 1e-12)
    n_cols = 4
    n_rows = int(np.ceil(n_years / n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(2.6 * n_cols, 2.6 * n_rows + 0.6), squeeze=False
    )
    image = None
    for i, ax in enumerate(axes.ravel()):
        if i >= n_years:
            fig.delaxes(ax)
            continue
        ax.imshow(ct[slice_index], cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
        heat = np.ma.masked_less_equal(heatmaps[i, slice_index], 0.0)
        image = ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=top, alpha=alpha)
        if masks is not None and masks[0, slice_index].any():
            ax.contour(masks[0, slice_index], levels=[0.5], colors="cyan", linewidths=0.6)
        ax.set_title(f"Year {i + 1}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    used = [ax for ax in axes.ravel()[:n_years]]
    cbar = fig.colorbar(image, ax=used, shrink=0.8, pad=0.02)
    cbar.set_label("Grad-CAM (normalised)")
    fig.suptitle(f"{title} (axial slice {slice_index})")
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
    import matplotlib.pyplot as plt

    rec = np.array([float(pred_row[f"rec_p{k}"]) for k in range(1, N_YEARS + 1)])
    pmf = np.array([float(pred_row[f"surv_p{k}"]) for k in range(1, N_YEARS + 1)])
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
    pid = pred_row.get("patient_id") if hasattr(pred_row, "get") else None
    fig.suptitle(title or (f"Patient {pid}" if pid is not None else "Patient"))
    fig.tight_layout()
    return fig


def attention_over_years(
    attention: Any,
    prefix: str = "att_",
    ax=None,
    title: str = "Attention over virtual years",
):
    """Mean +/- SD of the temporal attention weight of each virtual year across patients.

    Parameters
    ----------
    attention : array ``[N, 12]`` or pandas DataFrame
        ``aux["attention"]`` stacked over patients, or a predictions table with columns
        ``{prefix}1 .. {prefix}12`` (default ``att_1..att_12``, as ``train.predict`` writes).

    Returns
    -------
    matplotlib.figure.Figure
        One axis; the dashed line is the uniform weight 1/12.
    """
    import matplotlib.pyplot as plt

    if hasattr(attention, "columns"):
        cols = [f"{prefix}{k}" for k in range(1, N_YEARS + 1)]
        missing = [c for c in cols if c not in attention.columns]
        if missing:
            raise ExplainError(f"attention table lacks columns {missing}")
        arr = attention[cols].to_numpy(dtype=float)
    else:
        arr = np.asarray(attention.detach().cpu() if isinstance(attention, Tensor) else attention)
        arr = arr.astype(float).reshape(-1, arr.shape[-1])
    mean, sd = arr.mean(axis=0), arr.std(axis=0, ddof=1 if arr.shape[0] > 1 else 0)
    x = np.arange(1, arr.shape[1] + 1)
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.4))
    else:
        fig = ax.figure
    ax.errorbar(x, mean, yerr=sd, fmt="o-", capsize=3, label=f"mean ± SD (N = {arr.shape[0]})")
    ax.axhline(1.0 / arr.shape[1], color="gray", ls="--", lw=1, label="uniform (1/12)")
    ax.set_xticks(x)
    ax.set_xlabel("Virtual year (timestamp)")
    ax.set_ylabel("Attention weight")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# NIfTI export in the original CT geometry
# --------------------------------------------------------------------------------------------


def _meta_get(meta: Any, key: str) -> np.ndarray:
    try:
        return np.asarray(meta[key])
    except (KeyError, IndexError) as exc:
        raise ExplainError(f"{_meta_name(meta)}: preprocessing metadata lacks {key!r}") from exc


def _meta_name(meta: Any) -> str:
    for attr in ("fid", "zip"):
        f = getattr(meta, attr, None)
        name = getattr(f, "name", None) or getattr(f, "filename", None)
        if name:
            return str(name)
    try:
        return str(np.asarray(meta["patient_id"]))
    except (KeyError, IndexError, TypeError):
        return "<metadata>"


def heatmap_affine_ras(meta: Any) -> np.ndarray:
    """NIfTI (RAS) affine of the original CT grid, from the preprocessing metadata.

    DICOM/ITK geometry: voxel ``(i, j, k)`` = (column x, row y, slice z) is at
    ``p_LPS = origin + Dir @ diag(sx, sy, sz) @ [i, j, k]`` (``Dir`` = ITK direction, 3x3
    row-major, column ``n`` = direction of index axis ``n``; ``origin_mm`` = position of
    voxel (0, 0, 0) = first slice's ImagePositionPatient, LPS). NIfTI world coordinates
    are RAS, so ``A = diag(-1, -1, 1, 1) @ [[Dir @ diag(s), origin], [0, 1]]`` and the data
    array is stored ``[x, y, z]`` (the ``[Z, Y, X]`` volume transposed). 3D Slicer, ITK and
    SimpleITK apply the inverse flip on reading, so the map lands on the DICOM series.

    Parameters
    ----------
    meta : mapping
        ``source_spacing_mm`` (z, y, x), ``origin_mm`` (x, y, z), ``direction`` (9 floats).

    Returns
    -------
    np.ndarray
        float64 ``[4, 4]``.
    """
    spacing_zyx = _meta_get(meta, "source_spacing_mm").astype(float).ravel()
    origin = _meta_get(meta, "origin_mm").astype(float).ravel()
    direction = _meta_get(meta, "direction").astype(float).reshape(3, 3)
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing_zyx[::-1])
    lps[:3, 3] = origin
    flip = np.eye(4)
    flip[:3, :3] = LPS_TO_RAS
    return flip @ lps


def _invert(volume: np.ndarray, meta: Any) -> np.ndarray:
    """Processed ``[D, H, W]`` -> source ``[Z, Y, X]`` float32 (``preprocess.invert_to_source``)."""
    from .data.preprocess import invert_to_source

    return np.asarray(invert_to_source(volume, meta), dtype=np.float32)


def _atomic_save_nifti(img, out_path: Path) -> None:
    import nibabel as nib

    with atomic.atomic_path(out_path, keep_extension=True) as tmp:
        nib.save(img, tmp)


def export_heatmaps_nifti(
    heatmaps: np.ndarray,
    meta: Any,
    out_path: str | Path,
    per_year: bool = False,
    invert: Callable[[np.ndarray, Any], np.ndarray] | None = None,
) -> list[Path]:
    """Write the yearly maps as NIfTI in the ORIGINAL CT's geometry (for 3D Slicer).

    Each ``[D, H, W]`` map is mapped back to the source grid ``[Z, Y, X]`` with
    ``crlm_lib.data.preprocess.invert_to_source`` when that exists (else a documented
    fallback: slice ``d`` -> source slice ``z_index[d]``, bilinear in-plane), then stored as
    ``[X, Y, Z, years]`` with the RAS affine of :func:`heatmap_affine_ras` (sform and qform,
    code 1 "scanner"). Load the DICOM series and this file in 3D Slicer and they overlap.

    Parameters
    ----------
    heatmaps : np.ndarray
        ``[Y, D, H, W]`` (years first), e.g. from :func:`yearly_gradcam`.
    meta : mapping
        The patient's ``.npz`` (``np.load``) or a dict with ``z_index``, ``source_shape``,
        ``source_spacing_mm``, ``origin_mm``, ``direction``.
    out_path : path
        ``.nii.gz`` / ``.nii`` file (4D). With ``per_year=True`` it is the stem for one 3D
        file per year: ``<stem>_year01.nii.gz`` ... ``<stem>_year12.nii.gz``.
    invert : callable, optional
        Override of the processed -> source mapping (``(volume, meta) -> [Z, Y, X]``).

    Returns
    -------
    list[Path]
        Files written (atomically).
    """
    import nibabel as nib

    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    if heatmaps.ndim != 4:
        raise ExplainError(f"{_meta_name(meta)}: heatmaps must be [years, D, H, W]")
    invert = invert or _invert
    source = np.stack([invert(h, meta) for h in heatmaps])  # [Y, Z, Y, X]
    expected = tuple(int(s) for s in _meta_get(meta, "source_shape").ravel()[:3])
    if source.shape[1:] != expected:
        raise ExplainError(
            f"{_meta_name(meta)}: inverted map {source.shape[1:]} != source_shape {expected}"
        )
    affine = heatmap_affine_ras(meta)
    xyz = np.transpose(source, (3, 2, 1, 0))  # [X, Y, Z, years]

    def make(data: np.ndarray):
        img = nib.Nifti1Image(np.ascontiguousarray(data), affine)
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        img.header.set_xyzt_units(xyz="mm", t="unknown")
        if data.ndim == 4:
            zooms = img.header.get_zooms()
            img.header.set_zooms((*zooms[:3], 1.0))  # one volume per year
        return img

    out_path = Path(out_path)
    written: list[Path] = []
    if not per_year:
        _atomic_save_nifti(make(xyz), out_path)
        written.append(out_path)
    else:
        name = out_path.name
        stem, ext = (name[:-7], ".nii.gz") if name.endswith(".nii.gz") else (out_path.stem, ".nii")
        for k in range(xyz.shape[3]):
            path = out_path.with_name(f"{stem}_year{k + 1:02d}{ext}")
            _atomic_save_nifti(make(xyz[..., k]), path)
            written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# SHAP on the clinical inputs
# --------------------------------------------------------------------------------------------


def risk_output(outputs: Mapping[str, Tensor], output: str = "risk", year: int = 5) -> Tensor:
    """The scalar per patient that SHAP explains, from the model's outputs.

    - ``"risk"`` (default): mean predicted probability of recurrence over the 12 years,
      ``(1/12) sum_k sigmoid(r_k)`` — the area under the predicted cumulative-recurrence curve
      divided by 12 years; in [0, 1], higher = worse.
    - ``"recurrence_logit"``: ``(1/12) sum_k r_k`` (linear in the logits; additivity checks).
    - ``"recurrence_year"``: ``sigmoid(r_{year-1})``, recurrence by the end of ``year``.
    - ``"mortality_year"``: ``1 - S(year) = sum_{j < year} softmax(s)_j``, death by ``year``.
    - ``"expected_survival_years"``: ``sum_j (j + 0.5) softmax(s)_j`` (bin midpoints, years;
      higher = better, i.e. the opposite sign of a risk).

    Returns
    -------
    Tensor
        ``[B]``.
    """
    rec, surv = outputs["recurrence_logits"], outputs["survival_logits"]
    if output == "risk":
        return torch.sigmoid(rec).mean(dim=1)
    if output == "recurrence_logit":
        return rec.mean(dim=1)
    if not 1 <= year <= rec.shape[1]:
        raise ValueError(f"year must be in 1..{rec.shape[1]}, got {year}")
    if output == "recurrence_year":
        return torch.sigmoid(rec[:, year - 1])
    if output == "mortality_year":
        return torch.softmax(surv, dim=1)[:, :year].sum(dim=1)
    if output == "expected_survival_years":
        mid = torch.arange(surv.shape[1], device=surv.device, dtype=surv.dtype) + 0.5
        return (torch.softmax(surv, dim=1) * mid).sum(dim=1)
    raise ValueError(
        "output must be 'risk', 'recurrence_logit', 'recurrence_year', 'mortality_year' or "
        f"'expected_survival_years', got {output!r}"
    )


class _ClinicalRisk(nn.Module):
    """``clinical [N, F] -> risk [N, 1]`` with one patient's image inputs held fixed.

    Every tensor of the patient's batch of one (ct, masks, lesions) is broadcast to N rows;
    the model runs in chunks of ``chunk`` rows to bound memory.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: Mapping[str, Any],
        output: str | Callable[[Mapping[str, Tensor]], Tensor],
        year: int,
        chunk: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.fixed = {k: v for k, v in batch.items() if k != "clinical"}
        self.output = output
        self.year = year
        self.chunk = chunk

    def _rows(self, n: int) -> dict[str, Any]:
        rows = {}
        for k, v in self.fixed.items():
            if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == 1:
                rows[k] = v.expand(n, *v.shape[1:])
            elif isinstance(v, list) and len(v) == 1:
                rows[k] = v * n
            else:
                rows[k] = v
        return rows

    def forward(self, clinical: Tensor) -> Tensor:
        parts = []
        for start in range(0, clinical.shape[0], self.chunk):
            x = clinical[start : start + self.chunk]
            out = self.model({**self._rows(x.shape[0]), "clinical": x})
            if callable(self.output):
                y = self.output(out)
            else:
                y = risk_output(out, self.output, self.year)
            parts.append(y.reshape(-1, 1))
        return torch.cat(parts, dim=0)


def clinical_shap(
    model: nn.Module,
    dataset_or_batches: Any,
    background: np.ndarray | Tensor,
    feature_names: Sequence[str],
    output: str | Callable[[Mapping[str, Tensor]], Tensor] = "risk",
    year: int = 5,
    nsamples: int = 200,
    max_background: int | None = 200,
    seed: int = 0,
    chunk: int = 64,
    progress: bool = True,
):
    """SHAP values of the clinical inputs, each patient explained with its OWN image fixed.

    For patient ``i`` with image inputs ``I_i`` the explained function is
    ``f_i(c) = risk(model(I_i, c))`` (see :func:`risk_output` for ``output``), and SHAP
    attributes ``f_i(c_i) - E_{c ~ background}[f_i(c)]`` to the clinical features with
    ``shap.GradientExplainer`` (expected gradients: Erion et al. 2021, an approximation of
    SHAP values that converges with ``nsamples``). Holding the image at the patient's own value
    (rather than averaging images over the background) answers "given this patient's CT, what
    do the clinical factors add?" and keeps the fused model on realistic inputs; the cost is
    one explainer (``nsamples`` forward+backward passes) per patient.

    shap 0.51 returns ONE array ``(n, F, outputs)`` (not a list per output); the single
    output axis is dropped here.

    Parameters
    ----------
    model : nn.Module
        Registry model with a clinical input (``batch["clinical"]`` ``[B, F]``).
    dataset_or_batches : Dataset, batch dict or iterable of either
        Patients to explain (``ct``, ``masks``, ``clinical``, ...).
    background : array ``[M, F]``
        Training patients' encoded clinical vectors (never the explained patients' own).
    feature_names : sequence of str
        ``F`` names (from ``clinical.encode_predictors``).
    output : str or callable
        Scalar explained (default ``"risk"``: mean predicted recurrence probability).
    nsamples : int
        Expected-gradients samples per patient.
    max_background : int or None
        Random subset of the background (seeded) to bound cost; ``None`` keeps all.
    seed : int
        Seed for the background subset and the explainer's sampling (``rseed``).

    Returns
    -------
    shap.Explanation
        ``values`` ``(n, F)``, ``base_values`` ``(n,)`` = ``E[f_i(background)]``, ``data``
        ``(n, F)``, ``feature_names``, ``instance_names`` (patient IDs).
    """
    import shap

    model.eval()
    device = _model_device(model)
    bg = torch.as_tensor(np.asarray(background), dtype=torch.float32)
    if bg.ndim != 2 or bg.shape[1] != len(feature_names):
        raise ExplainError(f"background must be [M, F={len(feature_names)}], got {tuple(bg.shape)}")
    rng = np.random.default_rng(seed)
    if max_background is not None and bg.shape[0] > max_background:
        bg = bg[np.sort(rng.choice(bg.shape[0], max_background, replace=False))]
    bg = bg.to(device)

    patients = list(_iter_patients(dataset_or_batches))
    values, base, data, names = [], [], [], []
    iterator: Iterable[dict[str, Any]] = patients
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(patients, desc="clinical SHAP", unit="patient")
    for batch in iterator:
        pid = _patient_id(batch)
        if "clinical" not in batch:
            raise ExplainError(f"{pid}: batch has no 'clinical' input to explain")
        batch = to_device(batch, device)
        x = batch["clinical"].float()
        if x.shape[1] != bg.shape[1]:
            raise ExplainError(
                f"{pid}: clinical has {x.shape[1]} features, background {bg.shape[1]}"
            )
        f = _ClinicalRisk(model, batch, output, year, chunk).eval()
        explainer = shap.GradientExplainer(f, bg, batch_size=min(chunk, nsamples))
        sv = explainer.shap_values(x, nsamples=nsamples, rseed=seed)
        sv = np.asarray(sv[0] if isinstance(sv, list) else sv)  # older shap: list per output
        values.append(sv.reshape(x.shape[0], x.shape[1], -1)[..., 0])
        with torch.no_grad():
            base.append(float(f(bg).mean()))
        data.append(x.detach().cpu().numpy())
        names.append(pid)
    return shap.Explanation(
        values=np.concatenate(values).astype(float),
        base_values=np.asarray(base, dtype=float),
        data=np.concatenate(data).astype(float),
        feature_names=list(feature_names),
        instance_names=names,
    )


def shap_additivity_gap(
    expl,
    model: nn.Module,
    dataset_or_batches: Any,
    output: str | Callable[[Mapping[str, Tensor]], Tensor] = "risk",
    year: int = 5,
) -> dict[str, float]:
    """Local accuracy check: ``sum_j phi_ij`` vs ``f_i(x_i) - E[f_i(background)]``.

    SHAP values satisfy ``f(x) = E[f(background)] + sum_j phi_j`` exactly; expected gradients
    (``GradientExplainer``) only approximately (Monte Carlo over background rows and path
    positions), so the gap is a measure of its error and is reported, not hidden.

    Returns
    -------
    dict
        ``max_abs_gap`` and ``mean_abs_gap`` (units of ``output``), and ``relative_max_gap`` =
        ``max_abs_gap / mean_i |f_i(x_i) - base_i|`` (NaN where the denominator is 0).
    """
    model.eval()
    device = _model_device(model)
    fx = []
    with torch.no_grad():
        for batch in _iter_patients(dataset_or_batches):
            batch = to_device(batch, device)
            f = _ClinicalRisk(model, batch, output, year, chunk=1)
            fx.append(float(f(batch["clinical"].float())[0, 0]))
    fx = np.asarray(fx)
    if fx.shape[0] != expl.values.shape[0]:
        raise ExplainError(f"{fx.shape[0]} patients given, explanation has {expl.values.shape[0]}")
    gap = np.abs(expl.values.sum(axis=1) + np.asarray(expl.base_values) - fx)
    spread = float(np.mean(np.abs(fx - np.asarray(expl.base_values))))
    return {
        "max_abs_gap": float(gap.max()),
        "mean_abs_gap": float(gap.mean()),
        "relative_max_gap": float(gap.max() / spread) if spread > 0 else float("nan"),
    }


def kernel_shap_check(
    expl,
    model: nn.Module,
    dataset_or_batches: Any,
    background: np.ndarray | Tensor,
    output: str | Callable[[Mapping[str, Tensor]], Tensor] = "risk",
    year: int = 5,
    max_background: int = 50,
    nsamples: int | str = "auto",
    seed: int = 0,
) -> dict[str, float]:
    """Compare the GradientExplainer values with model-agnostic Kernel SHAP, patient by patient.

    ``shap.KernelExplainer`` (Lundberg & Lee 2017, Eq. (9)) on the same per-patient function
    ``f_i(c)`` (own image fixed) and the same background; with ``nsamples >= 2**F`` it
    enumerates every coalition and is exact for the interventional SHAP values, so for a small
    number of clinical features it is the reference the approximate expected gradients are
    checked against. Costs ``nsamples * |background|`` forward passes per patient.

    Returns
    -------
    dict
        ``max_abs_diff`` and ``mean_abs_diff`` between the two sets of values, and
        ``kernel_max_abs_gap`` (Kernel SHAP's own additivity gap, ~0 by construction).
    """
    import shap

    model.eval()
    device = _model_device(model)
    bg = np.asarray(background, dtype=np.float32)
    rng = np.random.default_rng(seed)
    if bg.shape[0] > max_background:
        bg = bg[np.sort(rng.choice(bg.shape[0], max_background, replace=False))]
    kernel_values, gaps = [], []
    for batch in _iter_patients(dataset_or_batches):
        batch = to_device(batch, device)
        f = _ClinicalRisk(model, batch, output, year, chunk=256).eval()

        def fn(c: np.ndarray, f=f) -> np.ndarray:
            with torch.no_grad():
                return f(torch.as_tensor(c, dtype=torch.float32, device=device))[:, 0].cpu().numpy()

        x = batch["clinical"].float().cpu().numpy()
        kx = shap.KernelExplainer(fn, bg)
        np.random.seed(seed)  # noqa: NPY002 (KernelExplainer draws from the global RNG)
        sv = np.asarray(kx.shap_values(x, nsamples=nsamples, silent=True)).reshape(x.shape)
        kernel_values.append(sv)
        gaps.append(abs(sv.sum() + float(np.asarray(kx.expected_value).ravel()[0]) - fn(x)[0]))
    kernel = np.concatenate(kernel_values)
    diff = np.abs(kernel - np.asarray(expl.values))
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "kernel_max_abs_gap": float(max(gaps)),
    }


def plot_shap_beeswarm(expl, max_display: int = 15, title: str | None = None):
    """shap's beeswarm of the clinical SHAP values (one dot per patient and feature).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import shap

    fig, ax = plt.subplots(figsize=(7, 0.35 * min(max_display, expl.values.shape[1]) + 1.8))
    shap.plots.beeswarm(expl, max_display=max_display, show=False, ax=ax, plot_size=None)
    ax.set_xlabel("SHAP value (change in predicted risk)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def plot_shap_bar(expl, max_display: int = 15, title: str | None = None):
    """Mean |SHAP| per clinical feature (global importance, as STAR's Figure 4).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import shap

    fig, ax = plt.subplots(figsize=(7, 0.35 * min(max_display, expl.values.shape[1]) + 1.8))
    shap.plots.bar(expl, max_display=max_display, show=False, ax=ax)
    ax.set_xlabel("mean |SHAP value| (average impact on predicted risk)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------
# Sanity check: model-parameter randomisation (Adebayo et al. 2018)
# --------------------------------------------------------------------------------------------


def _reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Deep copy with every parameter re-drawn (``reset_parameters`` where a module has it;
    other parameters ~ N(0, sd of the trained values))."""
    clone = copy.deepcopy(model)
    torch.manual_seed(seed)
    covered: set[int] = set()
    for module in clone.modules():
        if hasattr(module, "reset_parameters") and callable(module.reset_parameters):
            module.reset_parameters()
            covered.update(id(p) for p in module.parameters(recurse=False))
    with torch.no_grad():
        for p in clone.parameters():
            if id(p) not in covered:
                sd = float(p.std()) if p.numel() > 1 else 0.02
                p.normal_(0.0, sd if sd > 0 else 0.02)
    return clone


def randomisation_check(
    model: nn.Module,
    batch: Mapping[str, Any],
    seed: int = 0,
    restrict_to: str | np.ndarray | Tensor | None = "liver",
    **gradcam_kwargs: Any,
) -> float:
    """Spearman rank correlation between trained-model and randomised-model Grad-CAM maps.

    Adebayo et al. (2018) "model parameter randomisation test": a saliency method that
    explains the model must change when the learned weights are destroyed. The model is deep
    copied, every weight re-initialised (seeded), and :func:`yearly_gradcam` (unnormalised) is
    run on both; the correlation is over all years and all voxels inside ``restrict_to``
    (full re-initialisation, not the cascading variant). Low values (near 0) are what a
    weight-dependent explanation gives; values near 1 mean the maps mostly reflect the input
    or the architecture.

    Returns
    -------
    float
        Spearman's rho in [-1, 1]; NaN (with a warning) if either map is constant.
    """
    from scipy.stats import spearmanr

    kwargs = {**gradcam_kwargs, "normalise": "none", "restrict_to": restrict_to}
    trained = yearly_gradcam(model, batch, **kwargs)
    randomised = yearly_gradcam(_reinitialise(model, seed), batch, **kwargs)
    one = next(_iter_patients(batch))
    keep = _restriction_mask(one, restrict_to, trained.shape[1:])
    a = trained[:, keep] if keep is not None else trained
    b = randomised[:, keep] if keep is not None else randomised
    a, b = a.ravel(), b.ravel()
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        warnings.warn(
            f"{_patient_id(one)}: a Grad-CAM map is constant; Spearman undefined", stacklevel=2
        )
        return float("nan")
    return float(spearmanr(a, b).statistic)
