"""Every prognostic network of the three papers behind one contract.

``build_model(name, n_clinical, cfg, **options)`` returns an ``nn.Module`` whose
``forward(batch) -> dict`` gives ``recurrence_logits`` ``[B, 12]``, ``survival_logits``
``[B, 13]`` (``[B, 12]`` with ``survival_classes="published12"``; every model takes the
``survival_classes`` and ``recurrence_form`` options of :mod:`crlm_lib.models.heads`) and
``aux`` (``loss_terms`` and, where the model has them, ``h_img``, ``h_clin``,
``h_recon``, ``attention``, ``reconstruction``); attribute ``gradcam_layer``. See
``docs/interfaces.md``. Each model's facts (builder, label, what it reads, published row,
cross-validation membership) are its record in :mod:`crlm_lib.model_registry`;
``MODEL_NAMES``, ``CT_MODELS`` (the models that read ``batch["ct"]``) and ``LESION_MODELS``
(built with ``n_lesion_features``) are re-exported from there.

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
from ..model_registry import CT_MODELS, LESION_MODELS, MODEL_NAMES, record
from .common import count_parameters, resolve_config, separable_param_counts

#: Classes re-exported from their family modules on first access (PEP 562): the registry
#: imports a family's module only when one of its models is built, since the 3D ResNets import
#: MONAI and STG imports torch_geometric (together ~7 s on the 2-core CPU), which
#: ``crlm predict`` with a 4D-ACFNet run never needs.
_LAZY_NAMES: dict[str, str] = {
    "ACFNet": "acfnet",
    "ACFNetOptions": "acfnet",
    "AMINN": "aminn",
    "CNN3DLSTM": "baselines",
    "ClinicalMLP": "baselines",
    "ResNet3D": "baselines",
    "ResNet3DOptions": "baselines",
    "STG": "stg",
    "STGOptions": "stg",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        ``n_lesion_features=...`` (the models of ``LESION_MODELS``; required by aminn),
        ``weights_path=`` (resnets, stg).

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    TypeError
        For an option the model does not take, or AMINN without ``n_lesion_features``.
    """
    rec = record(name)
    builder = getattr(importlib.import_module(f"{__name__}.{rec.module}"), rec.builder)
    return builder(n_clinical, resolve_config(cfg), **rec.fixed, **options)


__all__ = [
    "ACFNet",
    "ACFNetOptions",
    "AMINN",
    "CNN3DLSTM",
    "CT_MODELS",
    "ClinicalMLP",
    "LESION_MODELS",
    "MODEL_NAMES",
    "ResNet3D",
    "ResNet3DOptions",
    "STG",
    "STGOptions",
    "build_model",
    "count_parameters",
    "separable_param_counts",
]
