"""Seeds, devices, precision and batches on a device: what the training engine, prediction and
the explanations share.

Nothing here knows about models, losses or run folders; :mod:`crlm_lib.train` (the engine),
:mod:`crlm_lib.explain` (Grad-CAM and SHAP move their batches with :func:`to_device`) and the
benchmarks import from here.
"""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from crlm_lib import distributed

__all__ = [
    "amp_dtype",
    "autocast",
    "channels_last_3d",
    "select_device",
    "set_seed",
    "to_device",
    "worker_init_fn",
]


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and CUDA).

    With ``deterministic``, ``torch.use_deterministic_algorithms(True, warn_only=True)`` and
    ``cudnn.benchmark = False``: runs on CPU are bit-for-bit reproducible; on CUDA the few
    kernels without a deterministic version warn instead of failing (``CUBLAS_WORKSPACE_CONFIG``
    is set to ``:4096:8`` if unset, as PyTorch requires for deterministic cuBLAS).
    """
    random.seed(seed)
    # the legacy global numpy RNG is seeded on purpose: third-party augmentations draw from it
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``cuda`` when available (``cuda:<local rank>`` under
    ``torchrun``), else ``cpu``."""
    if device is None or device == "":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", distributed.info().local_rank % torch.cuda.device_count())
    return torch.device(device)


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Autocast precision of the forward pass and loss, or ``None`` (float32).

    ``"auto"``: bf16 on a CUDA device that supports it (Ampere and later: same exponent range
    as float32, no loss scaling), fp16 with a gradient scaler on older GPUs, ``None`` on CPU
    (CPU autocast is slower than float32 for these 3-D convolutions). ``"bf16"`` and
    ``"fp16"`` force a precision on any device (``torch.autocast(device.type, dtype)``);
    ``"off"`` disables autocast.

    Raises
    ------
    ValueError
        For another value of ``amp``.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', not {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None = None) -> AbstractContextManager:
    """``torch.autocast`` with ``dtype`` on ``device``; a no-op context for ``None``."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def worker_init_fn(worker_id: int) -> None:
    """Seed ``numpy`` and ``random`` in a DataLoader worker from its torch seed (which the
    loader derives from its generator), so augmentations in workers are reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (legacy global RNG used by third-party code)
    random.seed(seed)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of ``batch`` (nested dicts too) to ``device``; other values unchanged.

    On CUDA, 5-D image tensors (``ct`` ``[B, 1, D, H, W]``, ``masks``) use
    ``torch.channels_last_3d``, the fast layout of cuDNN 3-D convolutions.
    """
    cuda = device.type == "cuda"
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=cuda)
            if cuda and value.ndim == 5 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last_3d)
        elif isinstance(value, Mapping):
            value = to_device(value, device)
        out[key] = value
    return out


def channels_last_3d(model: nn.Module) -> nn.Module:
    """Store every 5-D parameter (3-D convolution kernels) as ``torch.channels_last_3d``, in
    place. Unlike ``model.to(memory_format=...)``, which fails on 4-D weights, other tensors
    are left alone. Used on CUDA only."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 5:
                param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return model
