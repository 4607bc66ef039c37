"""Small synthetic batches for the model tests (smoke size 16x32x32)."""

from __future__ import annotations

import pytest
import torch

from crlm_lib.config import get_profile
from crlm_lib.data.lesions import FEATURE_NAMES
from crlm_lib.model_registry import LESION_MODELS

N_CLIN = 6
N_LES = len(
    FEATURE_NAMES
)  # the dataset's lesion features (4D-ACFNet's lesion anchor reads them by name)


def make_batch(b: int = 2, shape: tuple[int, int, int] = (16, 32, 32), seed: int = 0) -> dict:
    """A batch in the dataset's format (docs/interfaces.md) with random inputs and targets."""
    g = torch.Generator().manual_seed(seed)
    n_les = torch.randint(1, 6, (b, 1), generator=g)
    surv_bin = torch.randint(0, 12, (b,), generator=g)
    rec_bin = torch.randint(0, 12, (b,), generator=g)
    years = torch.arange(12).view(1, -1)
    return {
        "ct": torch.rand(b, 1, *shape, generator=g) * 2 - 1,
        "clinical": torch.randn(b, N_CLIN, generator=g),
        "masks": (torch.rand(b, 5, *shape, generator=g) > 0.5).float(),
        "lesion_features": torch.randn(b, 16, N_LES, generator=g),
        "lesion_mask": torch.arange(16).view(1, -1) < n_les,
        "survival_bin": surv_bin,
        "os_event": torch.ones(b),
        "os_years": surv_bin.float() + 0.5,
        "recurrence_target": (years >= rec_bin.view(-1, 1)).float(),
        "recurrence_known": torch.ones(b, 12),
        "dfs_years": rec_bin.float() + 0.5,
        "dfs_event": torch.ones(b),
    }


def options(name: str) -> dict:
    """Constructor options a test needs for ``name`` (AMINN's lesion feature width)."""
    return {"n_lesion_features": N_LES} if name in LESION_MODELS else {}


@pytest.fixture(name="make_batch")
def make_batch_fixture():
    """The :func:`make_batch` factory."""
    return make_batch


@pytest.fixture(name="model_options")
def model_options_fixture():
    """The :func:`options` helper."""
    return options


@pytest.fixture
def smoke_cfg():
    return get_profile("smoke").model


@pytest.fixture
def batch():
    return make_batch()
