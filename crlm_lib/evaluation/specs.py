"""Model specifications: what one row of a comparison is (:class:`ModelSpec`), the anchors,
the display labels and the ablation rows of the papers' Table 2."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from crlm_lib.model_registry import ANCHORED_MODELS, REGISTRY

#: Clinical anchors, in the order of every table (before the oracle, after the deep models).
#: ``cox_vol`` / ``cox_clinvol``: the clinical-radiological anchors, Cox on the SEG-derived
#: volumetrics (``data.preprocess.volumetrics``) without / with the clinical table: a model a
#: clinic could fit on the real cohort tomorrow, the control every image model must beat.
#: ``cox_clinrad`` adds first-order tumour radiomics (``data.preprocess.tumour_first_order``:
#: mean, SD and 10th percentile of the tumours' HU) to ``cox_clinvol``: what a radiomics model
#: reads of the tumours' appearance, which the masks alone do not carry.
ANCHOR_NAMES: tuple[str, ...] = ("fong", "cox", "rsf", "cox_vol", "cox_clinvol", "cox_clinrad")
#: Anchors that read the preprocessing cache (left out for cohorts built in memory).
VOLUMETRIC_ANCHORS: frozenset[str] = frozenset({"cox_vol", "cox_clinvol", "cox_clinrad"})
#: Synthetic-only reference beside the oracle: Cox on the clinical table plus the generator's
#: TRUE image quantities (``data.synthetic.IMAGE_COVARIATES`` from ``oracle.csv``) -- what a
#: network that read the image perfectly could reach with a linear model at this sample size.
IMAGE_ORACLE: str = "cox_trueimg"
#: Suffix of the label of a model that starts at the Cox anchor (``model_registry``'s
#: ``anchored``); its ``*_noanchor`` variant's label drops it.
ANCHOR_LABEL_SUFFIX = " + Cox anchor"
#: Row labels of every model, anchor, reference and control row (the registry models' from
#: their records).
LABELS: dict[str, str] = {
    **{r.name: r.label + (ANCHOR_LABEL_SUFFIX if r.anchored else "") for r in REGISTRY},
    "fong": "Fong score",
    "cox": "Cox PH (clinical)",
    "rsf": "Random survival forest (clinical)",
    "cox_vol": "Cox PH (SEG volumetrics)",
    "cox_clinvol": "Cox PH (clinical + SEG volumetrics)",
    "cox_clinrad": "Cox PH (clinical + SEG volumetrics + tumour HU)",
    "cox_trueimg": "Cox PH (clinical + true image quantities, synthetic)",
    "oracle": "Oracle (true curves, synthetic)",
    "constant": "Constant year (best k on the training patients)",
    "km_null": "Kaplan–Meier (null model, no predictor)",
    "ct-permuted": "same model, images permuted among test patients",
    "step-0": "same model, untrained anchored start (step 0)",
}


class Split(NamedTuple):
    """The patients of one fit: ``train`` (fitted on), ``val`` (early stopping; empty for
    anchors) and ``test`` (predicted), each a tuple of patient IDs as strings.

    A plain ``(train, val, test)`` triple unpacks the same way; :meth:`of` normalises one.
    """

    train: tuple[str, ...]
    val: tuple[str, ...]
    test: tuple[str, ...]

    @classmethod
    def of(cls, train: Sequence, val: Sequence = (), test: Sequence = ()) -> Split:
        """A split of any three ID sequences, the IDs as strings (their order kept)."""
        return cls(*(tuple(map(str, ids)) for ids in (train, val, test)))


@dataclass(frozen=True)
class ModelSpec:
    """One row of a comparison: a registry model or an anchor, with its options.

    Attributes
    ----------
    name : str
        Registry name (``acfnet``, ``star``, ..., ``clinical_mlp``) or anchor (``fong``,
        ``cox``, ``rsf``, ``oracle``).
    label : str
        Row label and cache folder name (default: ``name``, plus ``-censored`` for the
        censoring-aware objective).
    objective : str
        ``"paper"`` (the papers' cross-entropy) or ``"censored"`` (discrete-time likelihood).
    options : dict
        Passed to ``build_model(name, n_clinical, cfg, **options)``.
    loss_weights : dict, optional
        Passed to ``train.fit``.
    """

    name: str
    label: str = ""
    objective: str = "paper"
    options: dict = field(default_factory=dict)
    loss_weights: dict | None = None

    @property
    def key(self) -> str:
        if self.label:
            return self.label
        return self.name if self.objective == "paper" else f"{self.name}-{self.objective}"

    @property
    def is_anchor(self) -> bool:
        return self.name in ANCHOR_NAMES or self.name in ("oracle", IMAGE_ORACLE)


#: Suffix of the key of a model without the Cox anchor (``acfnet-noanchor``).
NOANCHOR = "noanchor"
#: The papers' network: no Cox-anchored residual, the CT alone as input, no auxiliary target,
#: the 12-class survival softmax (no class beyond year 12) and 12 independent recurrence
#: sigmoids (``models.heads``).
PUBLISHED_OPTIONS: dict = {
    "clinical_residual": False,
    "mask_channels": (),
    "burden_target": False,
    "lesion_pooling": False,
    "intensity_target": False,
    "head_lr_scale": 1.0,
    "lesion_anchor": False,
    "survival_classes": "published12",
    "recurrence_form": "independent",
}
#: Named variants usable wherever a model name is (``profile.eval.cv_models``,
#: ``crlm evaluate --models``): the 4D-ACFNet class and the 3D CNN built on it start from the
#: Cox anchor (``ACFNet.anchor_clinical``, ``clinical_residual=True``), read the liver and
#: tumour masks beside the CT and learn the SEG tumour burden as an auxiliary target by
#: default, none of which the papers' networks have; ``*_noanchor`` is the network as
#: published (:data:`PUBLISHED_OPTIONS`).
VARIANTS: dict[str, ModelSpec] = {
    f"{name}_{NOANCHOR}": ModelSpec(name, f"{name}-{NOANCHOR}", options=dict(PUBLISHED_OPTIONS))
    for name in ANCHORED_MODELS
}


def as_specs(
    models: Iterable[str | ModelSpec],
    objective: str = "paper",
    options_by_name: dict[str, dict] | None = None,
) -> list[ModelSpec]:
    """Normalise model names to :class:`ModelSpec` (``"acfnet:censored"`` picks the objective;
    a name of :data:`VARIANTS` gives that variant)."""
    out = []
    for m in models:
        if isinstance(m, ModelSpec):
            out.append(m)
            continue
        name, _, obj = str(m).partition(":")
        if name in VARIANTS:
            spec = VARIANTS[name]
            if obj and obj != "paper":
                spec = replace(spec, objective=obj, label=f"{spec.label}-{obj}")
            out.append(spec)
            continue
        out.append(
            ModelSpec(
                name=name,
                objective=obj or objective,
                options=dict((options_by_name or {}).get(name, {})),
            )
        )
    return out


#: Suffix of the image-permutation control's key (``acfnet@ct-permuted``: 4D-ACFNet's
#: predictions with the images permuted among the test patients).
PERMUTED_SUFFIX = "@ct-permuted"
#: Suffix of the untrained-start control's key (``acfnet@step0``: an anchored model's test
#: predictions before the first optimiser step, i.e. its Cox anchor on the same inputs).
STEP0_SUFFIX = "@step0"
#: Every control suffix: rows that are not models of their own.
CONTROL_SUFFIXES: tuple[str, ...] = (PERMUTED_SUFFIX, STEP0_SUFFIX)


def is_control(key: str) -> bool:
    """True for a control row's key (``acfnet@ct-permuted``, ``acfnet@step0``)."""
    return key.endswith(CONTROL_SUFFIXES)


def model_label(key: str) -> str:
    """``"acfnet-censored"`` -> ``"4D-ACFNet (censoring-aware objective)"``;
    ``"acfnet@ct-permuted"`` -> ``"4D-ACFNet, CT permuted (control)"``."""
    if key.endswith(PERMUTED_SUFFIX):
        return f"{model_label(key[: -len(PERMUTED_SUFFIX)])}, CT permuted (control)"
    if key.endswith(STEP0_SUFFIX):
        return f"{model_label(key[: -len(STEP0_SUFFIX)])}, untrained anchored start (control)"
    name, _, rest = key.partition("-")
    if rest.startswith(NOANCHOR):
        base = LABELS.get(name, name).removesuffix(ANCHOR_LABEL_SUFFIX)
        more = model_label(f"{name}-{rest[len(NOANCHOR) + 1 :]}") if rest != NOANCHOR else ""
        tail = more[more.index("(") :] if "(" in more else ""
        return f"{base}, no Cox anchor (as published){' ' + tail if tail else ''}"
    base = LABELS.get(name, key if name not in LABELS else name)
    if rest == "censored":
        return f"{base} (censoring-aware objective)"
    return base if not rest else key


_A_OFF = {"attention4d": False, "reconstruction": False}

#: Ablation rows of 4D-ACFNet Table 2 and STAR Table 2 (key, display name, spec, published rows).
#: A = 4D attention, B = alignment, C = disentanglement, D = STAR's reconstruction branch with the
#: reconstruction-normalised alignment (our reading). 4D-ACFNet always has the reconstruction
#: branch when A is on; STAR's "A + B" row is read as A + B without D. The base "3D-CNN" row is
#: image-only (``clinical=False``): the papers' baseline has "no multimodal fusion" (STAR
#: section 4.4), so B is the row that brings in the clinical path with the alignment. Row
#: "A + B + C (L_dis cross-correlation)" reports the scale-correct disentanglement
#: (``losses.cross_correlation_loss``) beside Eq. (4), which barely acts at these widths. Every
#: row from B on carries our Cox anchor; the two "as published" rows are the full networks
#: without it (:data:`PUBLISHED_OPTIONS`), beside the same published rows.
ABLATION_ROWS: tuple[tuple[str, str, ModelSpec, dict[str, str]], ...] = (
    (
        "abl-3dcnn-image",
        "3D-CNN",
        ModelSpec(
            "acfnet",
            "abl-3dcnn-image",
            options={**_A_OFF, "clinical": False, "align": False, "disentangle": False},
        ),
        {"acfnet_table2": "3D-CNN", "star_table2": "3D-CNN"},
    ),
    (
        "abl-3dcnn-b",
        "3D-CNN + B",
        ModelSpec("acfnet", "abl-3dcnn-b", options={**_A_OFF, "align": True, "disentangle": False}),
        {"acfnet_table2": "3D-CNN + Alignment", "star_table2": "3D-CNN + B"},
    ),
    (
        "abl-ab-acfnet",
        "A + B (4D-ACFNet: with reconstruction)",
        ModelSpec("acfnet", "abl-ab-acfnet", options={"disentangle": False}),
        {"acfnet_table2": "4D attention + Alignment"},
    ),
    (
        "abl-ab-star",
        "A + B (STAR: without D)",
        ModelSpec("acfnet", "abl-ab-star", options={"disentangle": False, "reconstruction": False}),
        {"star_table2": "A + B"},
    ),
    (
        "abl-3dcnn-bc",
        "3D-CNN + B + C",
        ModelSpec("acfnet", "abl-3dcnn-bc", options={**_A_OFF, "align": True, "disentangle": True}),
        {
            "acfnet_table2": "3D-CNN + Alignment + Disentanglement",
            "star_table2": "3D-CNN + B + C",
        },
    ),
    (
        "acfnet",
        "A + B + C (full 4D-ACFNet)",
        ModelSpec("acfnet"),
        {"acfnet_table2": "4D attention + Alignment + Disentanglement (full)"},
    ),
    (
        "acfnet-noanchor",
        "A + B + C, as published (no Cox anchor)",
        VARIANTS["acfnet_noanchor"],
        {"acfnet_table2": "4D attention + Alignment + Disentanglement (full)"},
    ),
    (
        "abl-acfnet-xcorr",
        "A + B + C (L_dis cross-correlation)",
        ModelSpec("acfnet", "abl-acfnet-xcorr", options={"dis_mode": "xcorr"}),
        {},
    ),
    (
        "star",
        "A + B + C + D (full STAR)",
        ModelSpec("star"),
        {"star_table2": "A + B + C + D (full STAR)"},
    ),
    (
        "star-noanchor",
        "A + B + C + D, as published (no Cox anchor)",
        VARIANTS["star_noanchor"],
        {"star_table2": "A + B + C + D (full STAR)"},
    ),
)


def ablation_specs() -> list[ModelSpec]:
    """The :data:`ABLATION_ROWS` as specs for :func:`run_paper_protocol` (cache keys reuse the
    full 4D-ACFNet and STAR runs of notebooks 02 and 04)."""
    return [spec for _, _, spec, _ in ABLATION_ROWS]
