"""Per-model training settings: ``TrainConfig.for_model`` and the budget a run trains with."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from crlm_lib.config import TrainConfig, get_profile
from crlm_lib.evaluation.runs import _training_budget


def test_a_random_start_follows_the_validation_loss_and_an_anchored_one_the_c():
    tc = TrainConfig(monitor="val_c_os", random_start_monitor="val_loss")
    assert tc.for_model(anchored=True, reads_volume=True).monitor == "val_c_os"
    assert tc.for_model(anchored=False, reads_volume=True).monitor == "val_loss"
    plain = TrainConfig(monitor="val_c_os")  # no random_start_monitor: one monitor for all
    assert plain.for_model(anchored=False, reads_volume=True) is plain


def test_models_without_a_volume_take_their_own_epochs_and_patience():
    tc = TrainConfig(
        epochs=8, early_stopping_patience=4, epochs_no_volume=100, patience_no_volume=15
    )
    light = tc.for_model(anchored=False, reads_volume=False)
    heavy = tc.for_model(anchored=False, reads_volume=True)
    assert (light.epochs, light.early_stopping_patience) == (100, 15)
    assert (heavy.epochs, heavy.early_stopping_patience) == (8, 4)


@pytest.mark.parametrize(
    ("anchored", "reads_volume", "asked", "expected"),
    [
        (True, True, 8, (8, "val_c_os", 4)),  # the CV's cv_epochs_3d for an anchored 3D model
        (False, True, 8, (8, "val_loss", 4)),  # a random 3D start: same budget, the loss
        (False, False, 8, (100, "val_loss", 15)),  # AMINN in the CV: the protocol's 8 replaced
        (False, False, None, (100, "val_loss", 15)),  # the clinical MLP, the profile's epochs
    ],
)
def test_the_cpu_profile_budget_per_model(anchored, reads_volume, asked, expected):
    model = SimpleNamespace(anchored_start=anchored)
    prof, epochs = _training_budget(model, get_profile("cpu"), asked, reads_volume)
    planned = prof.train.epochs if epochs is None else epochs
    assert (planned, prof.train.monitor, prof.train.early_stopping_patience) == expected


def test_the_smoke_profile_keeps_one_budget_for_every_model():
    smoke = get_profile("smoke")
    model = SimpleNamespace(anchored_start=False)
    prof, epochs = _training_budget(model, smoke, None, reads_volume=False)
    assert prof.train == smoke.train and epochs is None
