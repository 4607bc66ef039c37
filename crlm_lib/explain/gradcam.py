"""Grad-CAM per virtual year (captum's ``LayerGradCam`` formula, one forward pass) and its sanity
check.

- :func:`yearly_gradcam` — one 3D Grad-CAM map per year (Selvaraju et al., ICCV 2017; STAR
  section 4 shows Grad-CAM over the liver), upsampled to the CT grid;
- :func:`randomisation_check` — the model-parameter randomisation test of Adebayo et al.
  (NeurIPS 2018, "Sanity checks for saliency maps").
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from captum.attr import LayerAttribution
from torch import Tensor, nn

from crlm_lib.config import N_YEARS
from crlm_lib.devices import to_device
from crlm_lib.explain._common import (
    ExplainError,
    GradCamLayerError,
    _iter_patients,
    _model_device,
    _patient_id,
    _restriction_mask,
)

__all__ = ["randomisation_check", "yearly_gradcam"]


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


def _layer_mode(shape: tuple[int, ...], ct: Tensor, pid: str) -> tuple[str, int]:
    """How the layer's output ``shape`` holds time: ``(mode, n_t)``.

    ``"time_channels"`` (``[B, C, T, D', H', W']``), ``"time_batch"`` (``[T, C, D', H', W']``
    for one patient) or ``"spatial"`` (``[B, C, D', H', W']``, ``n_t = 1``).
    """
    if len(shape) == 6:
        return "time_channels", shape[2]
    if len(shape) == 5 and shape[0] == ct.shape[0] * N_YEARS and ct.shape[0] == 1:
        return "time_batch", shape[0]
    if len(shape) == 5:
        return "spatial", 1
    raise GradCamLayerError(
        f"{pid}: gradcam_layer output {shape} is not [B, C, D, H, W] or [B, C, T, D, H, W]"
    )


def _weighted_activations(
    wrapper: _CTForward, layer: nn.Module, ct: Tensor, years: list[int]
) -> tuple[list[Tensor], tuple[int, ...]]:
    """Per year ``k``, ``sum_c alpha_c^k A_c`` (before the ReLU) from ONE forward pass and one
    backward pass per year (the graph is kept between them), where ``alpha_c^k`` is the mean
    over the spatial axes of ``d y_k / d A_c``: captum's ``LayerGradCam`` without its forward
    pass per year (tested equal to it). A 6-D output ``[B, C, T, D', H', W']`` keeps T (one
    weight per channel and timestep): ``[B, T, D', H', W']``; a 5-D one gives
    ``[B, 1, D', H', W']``. The layer's last call in the forward pass is the one explained;
    its output shape is returned with the maps."""
    captured: list[Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.enable_grad():
            logits = wrapper(ct.detach().clone().requires_grad_(True))
    finally:
        handle.remove()
    captured = [c for c in captured if isinstance(c, Tensor)]
    if not captured:
        raise GradCamLayerError("gradcam_layer was not called (or returned no tensor) in forward")
    if len(captured) > 1:
        warnings.warn(
            f"gradcam_layer is called {len(captured)} times per forward; the last call is used",
            stacklevel=3,
        )
    acts = captured[-1]
    out = []
    for i, k in enumerate(years):
        (grads,) = torch.autograd.grad(
            logits[:, int(k)].sum(), acts, retain_graph=i < len(years) - 1
        )
        alpha = grads.mean(dim=(-3, -2, -1), keepdim=True)
        out.append((alpha * acts).sum(dim=1, keepdim=acts.dim() == 5).detach())
    return out, tuple(acts.shape)


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

    computed as captum's ``LayerGradCam`` does (tested equal) but from one forward pass and one
    backward pass per year (:func:`_weighted_activations`), upsampled to the CT grid with
    ``LayerAttribution.interpolate`` (trilinear), set to zero outside the ``restrict_to`` mask
    and normalised.

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
    years = list(years)
    raws, shape = _weighted_activations(wrapper, layer, ct, years)
    mode, n_t = _layer_mode(shape, ct, pid)
    maps = np.zeros((len(years), *grid), dtype=np.float32)
    for i, (k, raw) in enumerate(zip(years, raws, strict=True)):
        if mode == "time_channels":  # raw [1, T, d, h, w]
            sel = raw[:, k % n_t] if time_mode == "matched" else raw.sum(dim=1)
            lowres = F.relu(sel).unsqueeze(1)  # [1, 1, d, h, w]
        elif mode == "time_batch":  # raw [T, 1, d, h, w]
            sel = raw[k % n_t : k % n_t + 1] if time_mode == "matched" else raw.sum(0, True)
            lowres = F.relu(sel)
        else:
            lowres = F.relu(raw)
        up = LayerAttribution.interpolate(lowres, grid, interpolate_mode)
        maps[i] = up[0, 0].clamp_min(0).cpu().numpy()
    if keep is not None:
        maps[:, ~keep] = 0.0
    return _normalise(maps, normalise).astype(np.float32)


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
