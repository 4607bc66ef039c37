"""What every explanation shares: its errors (defined in :mod:`crlm_lib.errors`, where
:mod:`crlm_lib.plots` reads them too) and the patients-and-batches helpers."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crlm_lib.config import MASK_NAMES
from crlm_lib.errors import ExplainError, GradCamLayerError

#: The errors are re-exported (``explain.gradcam``, ``explain.shap`` and users import them here).
__all__ = ["ExplainError", "GradCamLayerError"]


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
