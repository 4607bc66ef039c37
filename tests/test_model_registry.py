"""The model registry (crlm_lib/model_registry.py) and the lists derived from it."""

from __future__ import annotations

import hashlib
import importlib

import pytest
import torch

from crlm_lib import model_registry as R
from crlm_lib.config import EvalConfig, get_profile
from crlm_lib.evaluation import specs, tables
from crlm_lib.models import build_model

N_CLIN, N_LES = 6, 5

# The lists as they were written out by hand before the registry existed; the registry must
# reproduce them exactly (order included where the code iterates them).
OLD_MODEL_NAMES = (
    "acfnet", "star", "cnn3d", "cnn3d_lstm", "resnet18_3d", "resnet34_3d", "resnet50_3d",
    "aminn", "stg", "stg_lite", "clinical_mlp",
)  # fmt: skip
OLD_IMAGING_MODELS = tuple(n for n in OLD_MODEL_NAMES if n not in ("aminn", "clinical_mlp"))
OLD_IMAGE_MODELS = frozenset(n for n in OLD_MODEL_NAMES if n != "clinical_mlp")
OLD_LESION_MODELS = ("aminn", "stg", "stg_lite")
OLD_CV_MODELS = (
    "acfnet", "acfnet:censored", "star", "cnn3d", "cnn3d_lstm", "resnet18_3d", "resnet34_3d",
    "resnet50_3d", "aminn", "stg", "stg_lite", "clinical_mlp",
)  # fmt: skip
OLD_LABELS = {
    "acfnet": "4D-ACFNet + Cox anchor",
    "star": "STAR + Cox anchor",
    "cnn3d": "3D CNN + Cox anchor",
    "cnn3d_lstm": "3D CNN + LSTM",
    "resnet18_3d": "3D ResNet-18",
    "resnet34_3d": "3D ResNet-34",
    "resnet50_3d": "3D ResNet-50",
    "aminn": "AMINN",
    "stg": "STG",
    "stg_lite": "STG-lite",
    "clinical_mlp": "Clinical MLP",
}
OLD_PUBLISHED_ROWS = {
    "acfnet_table1": {
        "cnn3d": "3D CNN only",
        "cnn3d_lstm": "3D CNN + LSTM",
        "acfnet": "4D spatiotemporal attention",
    },
    "star_table1": {
        "star": "STAR",
        "aminn": "AMINN",
        "resnet18_3d": "3D ResNet-18",
        "resnet34_3d": "3D ResNet-34",
        "resnet50_3d": "3D ResNet-50",
    },
    "stg": {"stg": "STG"},
}
# notebook 04's two comparisons, as its cells listed them
OLD_COMPARISONS = {
    "acfnet_table1": ["cnn3d", "cnn3d_lstm", "acfnet"],
    "star_table1": [
        "star",
        "aminn",
        "resnet18_3d",
        "resnet34_3d",
        "resnet50_3d",
        "stg",
        "stg_lite",
    ],
}
OLD_VARIANTS = ("acfnet_noanchor", "star_noanchor", "cnn3d_noanchor")

# sha256 (first 16 hex digits) of "key:shape" of every state_dict entry at the smoke widths
# (N_CLIN clinical, N_LES lesion features), taken before the constructors took option
# dataclasses: a checkpoint written then loads into the model built now.
STATE_DICT_DIGESTS = {
    "acfnet": "c7c296a1f6ede50f",
    "star": "c7c296a1f6ede50f",
    "cnn3d": "328280802eaa3988",
    "cnn3d_lstm": "b5ca99e1446a05d5",
    "resnet18_3d": "12ab941c8c1d9c92",
    "resnet34_3d": "8e9dad0a9bddb042",
    "resnet50_3d": "250bab5830357982",
    "aminn": "6dbaa428a83dfcf6",
    "stg": "284e4bd6511cd567",
    "stg_lite": "fff43fb466ce3ee2",
    "clinical_mlp": "37b490e57beb0ce8",
}


def _options(name: str) -> dict:
    return {"n_lesion_features": N_LES} if name in R.LESION_MODELS else {}


def _build(name: str, **extra) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(name, N_CLIN, get_profile("smoke"), **_options(name), **extra)


def _digest(model: torch.nn.Module) -> str:
    text = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def test_derived_lists_equal_the_lists_they_replace():
    assert R.MODEL_NAMES == OLD_MODEL_NAMES
    assert R.CT_MODELS == OLD_IMAGING_MODELS
    assert R.CT_OR_LESION_MODELS == OLD_IMAGE_MODELS
    assert R.LESION_MODELS == OLD_LESION_MODELS
    assert EvalConfig().cv_models == OLD_CV_MODELS
    assert {k: specs.LABELS[k] for k in OLD_LABELS} == OLD_LABELS
    registry_rows = {
        table: {k: v for k, v in rows.items() if not k.endswith("-noanchor")}
        for table, rows in tables.PUBLISHED_ROWS.items()
    }
    assert registry_rows == OLD_PUBLISHED_ROWS
    assert tuple(specs.VARIANTS) == OLD_VARIANTS
    for key, models in OLD_COMPARISONS.items():
        assert tables.comparison_models(key) == models


def test_the_published_network_sits_beside_its_anchored_form():
    rows = tables.PUBLISHED_ROWS["acfnet_table1"]
    assert rows["acfnet-noanchor"] == rows["acfnet"]
    assert tables.comparison_models("star_table1", as_published=["star"])[:2] == [
        "star",
        "star_noanchor",
    ]
    with pytest.raises(ValueError, match="no Cox anchor"):
        tables.comparison_models("star_table1", as_published=["aminn"])


def test_the_two_image_sets_differ_only_by_the_lesion_model_without_ct():
    assert set(R.CT_OR_LESION_MODELS) - set(R.CT_MODELS) == {"aminn"}
    assert R.record("aminn").reads_image and not R.record("aminn").reads_ct
    assert not R.record("clinical_mlp").reads_image


def test_unknown_names_are_refused_with_the_known_ones():
    with pytest.raises(KeyError, match="acfnet"):
        R.record("acfnet3")
    with pytest.raises(KeyError, match="star_table1"):
        tables.comparison_models("acfnet_table2")


def test_published_rows_name_rows_of_the_published_tables():
    for table, rows in tables.PUBLISHED_ROWS.items():
        printed = {r["model"] for r in tables.PUBLISHED[table]}
        assert set(rows.values()) <= printed, table


def test_anchored_models_have_the_published_variant_with_the_label_without_anchor():
    for name in R.ANCHORED_MODELS:
        spec = specs.VARIANTS[f"{name}_noanchor"]
        assert spec.options == specs.PUBLISHED_OPTIONS
        assert specs.model_label(spec.key).startswith(R.record(name).label + ", no Cox anchor")


@pytest.mark.parametrize("name", R.MODEL_NAMES)
def test_every_registered_model_builds_with_its_state_dict_unchanged(name):
    rec = R.record(name)
    model = _build(name)
    family = importlib.import_module(f"crlm_lib.models.{rec.module}")
    assert callable(getattr(family, rec.builder))
    assert _digest(model) == STATE_DICT_DIGESTS[name]
    assert hasattr(model, "gradcam_layer")


def test_build_model_refuses_an_unknown_option_and_aminn_without_lesion_width():
    with pytest.raises(TypeError, match="no_such_switch"):
        _build("acfnet", no_such_switch=True)
    with pytest.raises(TypeError, match="n_lesion_features"):
        build_model("aminn", N_CLIN, get_profile("smoke"))
    with pytest.raises(KeyError, match="unknown model"):
        build_model("nope", N_CLIN)
