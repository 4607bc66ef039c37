"""The model registry: one record per prognostic network, the one place its facts live.

Each :class:`ModelRecord` says how the model is built (family module and builder), how tables
name it, what it reads (the CT, the SEG lesion features), the row of the papers' tables it
reproduces, which comparison of notebook 04 shows it, with which objectives it enters the
cross-validation by default, and whether it starts at the Cox anchor (and so has an unanchored,
as-published variant). Every list the library needs is derived here or from :data:`REGISTRY`:
``models.MODEL_NAMES`` and ``models.CT_MODELS``, ``evaluation.CT_OR_LESION_MODELS``,
``evaluation.LABELS`` and ``evaluation.VARIANTS``, ``evaluation.PUBLISHED_ROWS`` and
``evaluation.comparison_models``, the default ``config.EvalConfig.cv_models``.

The module imports nothing (no torch, no other ``crlm_lib`` module), so that ``config`` can
derive the default cross-validation list from it and ``crlm --help`` stays fast; the builders are
named by module and attribute and imported by ``models.build_model`` when one is built.

Examples
--------
>>> from crlm_lib.model_registry import CT_MODELS, record
>>> record("aminn").reads_ct, record("aminn").lesion_features
(False, True)
>>> "stg" in CT_MODELS
True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

#: The objective of the papers' cross-entropy (``ModelSpec.objective``); other objectives enter
#: the cross-validation list as ``"<name>:<objective>"``.
PAPER_OBJECTIVE = "paper"


@dataclass(frozen=True)
class ModelRecord:
    """The facts of one registered model.

    Attributes
    ----------
    name : str
        Registry name (``build_model(name, ...)``, run folders, ``--model``).
    label : str
        How tables and figures name the network (``evaluation.LABELS`` adds
        ``" + Cox anchor"`` when ``anchored``).
    module, builder : str
        Family module under ``crlm_lib.models`` and the attribute called as
        ``builder(n_clinical, cfg, **fixed, **options)``.
    fixed : mapping
        Keyword arguments the name implies (``variant="resnet18_3d"``, ``lite=True``).
    reads_ct : bool
        The forward pass reads ``batch["ct"]`` (the dataset then loads the CT volume).
    lesion_features : bool
        The model reads the SEG lesion set (``batch["lesion_features"]``,
        ``batch["lesion_mask"]``) and is built with ``n_lesion_features``.
    published : tuple of (table key, row name), optional
        The row of a published table (``resources/published.csv``) the model reproduces.
    comparison : str, optional
        The published table whose comparison (notebook 04) shows the model as a row.
    cv_objectives : tuple of str
        Objectives with which the model enters the default cross-validation list (empty: not
        in it).
    anchored : bool
        Starts at the Cox anchor by default (``ACFNet.anchor_clinical``); the registry then
        also offers the network as published, without the anchor (``<name>_noanchor``).
    """

    name: str
    label: str
    module: str
    builder: str
    fixed: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    reads_ct: bool = True
    lesion_features: bool = False
    published: tuple[str, str] | None = None
    comparison: str | None = None
    cv_objectives: tuple[str, ...] = (PAPER_OBJECTIVE,)
    anchored: bool = False

    @property
    def reads_image(self) -> bool:
        """Reads image data of any kind: the CT or the lesion features measured on it (every
        model but the clinical-only ones)."""
        return self.reads_ct or self.lesion_features


def _fixed(**kwargs: Any) -> MappingProxyType:
    return MappingProxyType(kwargs)


#: Every registered model, in the papers' order (the order of every derived list).
REGISTRY: tuple[ModelRecord, ...] = (
    ModelRecord(
        "acfnet", "4D-ACFNet", "acfnet", "build_acfnet",
        published=("acfnet_table1", "4D spatiotemporal attention"), comparison="acfnet_table1",
        cv_objectives=(PAPER_OBJECTIVE, "censored"), anchored=True,
    ),
    ModelRecord(
        "star", "STAR", "acfnet", "build_star",
        published=("star_table1", "STAR"), comparison="star_table1", anchored=True,
    ),
    ModelRecord(
        "cnn3d", "3D CNN", "baselines", "build_cnn3d",
        published=("acfnet_table1", "3D CNN only"), comparison="acfnet_table1", anchored=True,
    ),
    ModelRecord(
        "cnn3d_lstm", "3D CNN + LSTM", "baselines", "CNN3DLSTM",
        published=("acfnet_table1", "3D CNN + LSTM"), comparison="acfnet_table1",
    ),
    ModelRecord(
        "resnet18_3d", "3D ResNet-18", "baselines", "build_resnet3d",
        _fixed(variant="resnet18_3d"),
        published=("star_table1", "3D ResNet-18"), comparison="star_table1",
    ),
    ModelRecord(
        "resnet34_3d", "3D ResNet-34", "baselines", "build_resnet3d",
        _fixed(variant="resnet34_3d"),
        published=("star_table1", "3D ResNet-34"), comparison="star_table1",
    ),
    ModelRecord(
        "resnet50_3d", "3D ResNet-50", "baselines", "build_resnet3d",
        _fixed(variant="resnet50_3d"),
        published=("star_table1", "3D ResNet-50"), comparison="star_table1",
    ),
    ModelRecord(
        "aminn", "AMINN", "aminn", "build_aminn", reads_ct=False, lesion_features=True,
        published=("star_table1", "AMINN"), comparison="star_table1",
    ),
    ModelRecord(
        "stg", "STG", "stg", "STG", lesion_features=True,
        published=("stg", "STG"), comparison="star_table1",
    ),
    ModelRecord(
        "stg_lite", "STG-lite", "stg", "STG", _fixed(lite=True), lesion_features=True,
        comparison="star_table1",
    ),
    ModelRecord("clinical_mlp", "Clinical MLP", "baselines", "ClinicalMLP", reads_ct=False),
)  # fmt: skip

_BY_NAME: dict[str, ModelRecord] = {r.name: r for r in REGISTRY}

#: Every registered model name, in the papers' order.
MODEL_NAMES: tuple[str, ...] = tuple(_BY_NAME)
#: Models whose forward pass reads ``batch["ct"]`` (the others never load the CT).
CT_MODELS: tuple[str, ...] = tuple(r.name for r in REGISTRY if r.reads_ct)
#: Models built with ``n_lesion_features`` (they read the SEG lesion set).
LESION_MODELS: tuple[str, ...] = tuple(r.name for r in REGISTRY if r.lesion_features)
#: Models fed the CT or the lesion features measured on it: every model but the clinical-only
#: ones. The cross-validation gives them ``eval.cv_repeats_3d`` repeats of ``cv_epochs_3d``
#: epochs, and the controls permute their images.
CT_OR_LESION_MODELS: frozenset[str] = frozenset(r.name for r in REGISTRY if r.reads_image)
#: Models that start at the Cox anchor by default (each has a ``<name>_noanchor`` variant).
ANCHORED_MODELS: tuple[str, ...] = tuple(r.name for r in REGISTRY if r.anchored)
#: The default cross-validation list (``config.EvalConfig.cv_models``): every model with each
#: of its ``cv_objectives`` (``"acfnet:censored"`` for an objective other than the papers').
CV_MODELS: tuple[str, ...] = tuple(
    r.name if objective == PAPER_OBJECTIVE else f"{r.name}:{objective}"
    for r in REGISTRY
    for objective in r.cv_objectives
)


def record(name: str) -> ModelRecord:
    """The record of registry model ``name``.

    Raises
    ------
    KeyError
        For an unknown name (the message lists the known ones).
    """
    if name not in _BY_NAME:
        raise KeyError(f"unknown model {name!r}; choose one of {list(MODEL_NAMES)}")
    return _BY_NAME[name]


def published_rows() -> dict[str, dict[str, str]]:
    """Registry name -> published row name, per published table (``{"star_table1":
    {"star": "STAR", ...}, ...}``)."""
    out: dict[str, dict[str, str]] = {}
    for r in REGISTRY:
        if r.published is not None:
            table, row = r.published
            out.setdefault(table, {})[r.name] = row
    return out


__all__ = [
    "ANCHORED_MODELS",
    "CT_MODELS",
    "CT_OR_LESION_MODELS",
    "CV_MODELS",
    "LESION_MODELS",
    "MODEL_NAMES",
    "PAPER_OBJECTIVE",
    "REGISTRY",
    "ModelRecord",
    "published_rows",
    "record",
]
