"""The contents of the engine's checkpoints: model weights, the RNG states of an exact resume,
and loading weights back into a model.

Where the files live and who writes them is :class:`crlm_lib.runfolder.RunFolder`'s business
(``best.pt``: ``{"model", "epoch", "val_loss"}``; ``last.pt``: everything
:class:`crlm_lib.handlers.Resume` needs); this module knows what is inside them.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = [
    "TrainingError",
    "load_checkpoint",
    "load_weights",
    "rng_state",
    "set_rng_state",
    "unwrap",
]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable checkpoint); names epoch and patients."""


def rng_state() -> dict[str, Any]:
    """The states of Python's, numpy's legacy global, torch's and (when present) CUDA's RNGs."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (CUDA's only where this process has CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under a ``DistributedDataParallel`` and/or ``torch.compile`` wrapper
    (whose ``state_dict`` keys carry no wrapper prefix)."""
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def load_checkpoint(
    model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load the weights of ``best.pt`` or ``last.pt`` into ``model`` (strict).

    Returns
    -------
    dict
        The checkpoint (``epoch``, ``val_loss`` ... alongside ``model``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TrainingError
        If the file is not a checkpoint of this engine or does not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    load_weights(model, ckpt, path)
    return ckpt


def load_weights(model: nn.Module, ckpt: Any, path: Path) -> None:
    """Load ``ckpt["model"]`` (read from ``path``, named in errors) into ``model`` (strict).

    Raises
    ------
    TrainingError
        If ``ckpt`` has no ``model`` entry or its tensors do not fit ``model``.
    """
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise TrainingError(f"{path}: not a crlm_lib checkpoint (no 'model' entry)")
    try:
        unwrap(model).load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise TrainingError(f"{path}: weights do not fit {type(model).__name__}: {exc}") from exc
