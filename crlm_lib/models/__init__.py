"""Model registry: every prognostic network of the three papers behind one contract.

``build_model(name, n_clinical, cfg, **options)`` returns an ``nn.Module`` whose
``forward(batch) -> dict`` gives ``recurrence_logits`` ``[B, 12]``, ``survival_logits``
``[B, 13]`` (``[B, 12]`` with ``survival_classes="published12"``; every model takes the
``survival_classes`` and ``recurrence_form`` options of :mod:`crlm_lib.models.heads`) and
``aux`` (``loss_terms`` and, where the model has them, ``h_img``, ``h_clin``,
``h_recon``, ``attention``, ``reconstruction``); attribute ``gradcam_layer``. See
``docs/interfaces.md``.

======================  ==========================================  =====================
name                    model                                       module
======================  ==========================================  =====================
``acfnet``              4D-ACFNet (switches A-D as options)         ``acfnet``
``star``                STAR (reconstruction-normalised alignment)  ``acfnet``
``cnn3d``               3D CNN only (no time)                       ``baselines``
``cnn3d_lstm``          3D CNN + LSTM over the 12 timesteps         ``baselines``
``resnet{18,34,50}_3d`` MONAI 3D ResNets                            ``baselines``
``aminn``               AMINN (per-lesion radiomics)                ``aminn``
``stg``, ``stg_lite``   STG heterogeneous graph + GraphSAGE         ``stg``
``clinical_mlp``        clinical-only network, same heads           ``baselines``
======================  ==========================================  =====================
"""

from __future__ import annotations

import importlib
from typing import Any

from torch import nn

from ..config import ModelConfig, Profile
from .common import count_parameters, resolve_config, separable_param_counts

# The registry names each model's module and builder instead of importing every family up front:
# the 3D ResNets import MONAI and STG imports torch_geometric (together ~7 s on the 2-core CPU),
# which ``crlm predict`` with a 4D-ACFNet run never needs. ``(module, attribute, kwargs)``.
_BUILDERS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "acfnet": ("acfnet", "build_acfnet", {}),
    "star": ("acfnet", "build_star", {}),
    "cnn3d": ("baselines", "build_cnn3d", {}),
    "cnn3d_lstm": ("baselines", "CNN3DLSTM", {}),
    "resnet18_3d": ("baselines", "ResNet3D", {"variant": "resnet18_3d"}),
    "resnet34_3d": ("baselines", "ResNet3D", {"variant": "resnet34_3d"}),
    "resnet50_3d": ("baselines", "ResNet3D", {"variant": "resnet50_3d"}),
    "aminn": ("aminn", "AMINN", {}),
    "stg": ("stg", "STG", {}),
    "stg_lite": ("stg", "STG", {"lite": True}),
    "clinical_mlp": ("baselines", "ClinicalMLP", {}),
}
#: Classes re-exported from their family modules on first access (PEP 562).
_LAZY_NAMES: dict[str, str] = {
    "ACFNet": "acfnet",
    "AMINN": "aminn",
    "CNN3DLSTM": "baselines",
    "ClinicalMLP": "baselines",
    "ResNet3D": "baselines",
    "STG": "stg",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _construct(name: str, n_clinical: int, cfg: ModelConfig, options: dict[str, Any]) -> nn.Module:
    """Call the registered builder of ``name`` with the signature its family expects."""
    module, attribute, fixed = _BUILDERS[name]
    builder = getattr(importlib.import_module(f"{__name__}.{module}"), attribute)
    if attribute == "ResNet3D":
        return builder(fixed["variant"], n_clinical, cfg, **options)
    if attribute == "AMINN":
        return builder(n_clinical, cfg=cfg, **options)
    return builder(n_clinical, cfg, **fixed, **options)


#: Every registered model name, in the papers' order.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

#: Models that read ``batch["ct"]`` (the others ignore it).
IMAGING_MODELS: tuple[str, ...] = tuple(
    n for n in MODEL_NAMES if n not in ("aminn", "clinical_mlp")
)


def build_model(
    name: str, n_clinical: int, cfg: ModelConfig | Profile | None = None, **options
) -> nn.Module:
    """Build a registered model.

    Parameters
    ----------
    name : str
        One of ``MODEL_NAMES``.
    n_clinical : int
        Width ``F`` of ``batch["clinical"]``.
    cfg : ModelConfig or Profile, optional
        Widths (a profile contributes its ``.model``); default ``ModelConfig()``.
    **options
        Passed to the model's constructor, e.g. ``attention4d=False`` (acfnet),
        ``n_lesion_features=...`` (aminn, required), ``weights_path=`` (resnets, stg).

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    """
    if name not in _BUILDERS:
        raise KeyError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    if name == "aminn" and "n_lesion_features" not in options:
        raise TypeError("build_model('aminn', ...) needs n_lesion_features=F_les")
    return _construct(name, n_clinical, resolve_config(cfg), options)


__all__ = [
    "ACFNet",
    "AMINN",
    "CNN3DLSTM",
    "ClinicalMLP",
    "IMAGING_MODELS",
    "MODEL_NAMES",
    "ResNet3D",
    "STG",
    "build_model",
    "count_parameters",
    "separable_param_counts",
]
