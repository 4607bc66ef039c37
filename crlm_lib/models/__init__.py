"""Model registry: every prognostic network of the three papers behind one contract.

``build_model(name, n_clinical, cfg, **options)`` returns an ``nn.Module`` whose
``forward(batch) -> dict`` gives ``recurrence_logits`` ``[B, 12]``, ``survival_logits``
``[B, 12]`` and ``aux`` (``loss_terms`` and, where the model has them, ``h_img``, ``h_clin``,
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

from collections.abc import Callable

from torch import nn

from ..config import ModelConfig, Profile
from .acfnet import ACFNet, build_acfnet, build_star
from .aminn import AMINN
from .baselines import CNN3DLSTM, ClinicalMLP, ResNet3D, build_cnn3d
from .common import count_parameters, resolve_config, separable_param_counts
from .stg import STG

_BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "acfnet": build_acfnet,
    "star": build_star,
    "cnn3d": build_cnn3d,
    "cnn3d_lstm": lambda n, cfg, **o: CNN3DLSTM(n, cfg, **o),
    "resnet18_3d": lambda n, cfg, **o: ResNet3D("resnet18_3d", n, cfg, **o),
    "resnet34_3d": lambda n, cfg, **o: ResNet3D("resnet34_3d", n, cfg, **o),
    "resnet50_3d": lambda n, cfg, **o: ResNet3D("resnet50_3d", n, cfg, **o),
    "aminn": lambda n, cfg, **o: AMINN(n, cfg=cfg, **o),
    "stg": lambda n, cfg, **o: STG(n, cfg, **o),
    "stg_lite": lambda n, cfg, **o: STG(n, cfg, lite=True, **o),
    "clinical_mlp": lambda n, cfg, **o: ClinicalMLP(n, cfg, **o),
}

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
    return _BUILDERS[name](n_clinical, resolve_config(cfg), **options)


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
