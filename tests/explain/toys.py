"""Toy models and patients that follow the model contract, shared by the explain tests."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crlm_lib.config import N_YEARS

torch.set_num_threads(1)

GRID = (8, 16, 16)
BRIGHT = (slice(2, 6), slice(2, 7), slice(2, 7))  # the region the toy model reads
DARK = (slice(2, 6), slice(9, 14), slice(9, 14))  # equally strong structure it ignores


class ToyCNN(nn.Module):
    """Output depends only on channel 0 ("bright" detector) of a stride-2 conv layer.

    Channel 1 detects dark structure with the same strength but feeds no output, so Grad-CAM
    must put its mass on the bright cube, not on the dark one. Year 12's weight is negative,
    so its ReLU'd map must be empty.
    """

    def __init__(self) -> None:
        super().__init__()
        conv = nn.Conv3d(1, 2, 3, stride=2, padding=1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[0] = 1.0 / 27
            conv.weight[1] = -1.0 / 27
            conv.bias.zero_()
        self.gradcam_layer = nn.Sequential(conv, nn.ReLU())
        w = torch.linspace(1.0, 2.0, N_YEARS)
        w[-1] = -1.0
        self.register_buffer("w", w)

    def forward(self, batch: dict) -> dict:
        feats = self.gradcam_layer(batch["ct"])  # [B, 2, 4, 8, 8]
        score = feats[:, 0].mean(dim=(1, 2, 3))  # [B]
        rec = score[:, None] * self.w[None] * 10
        return {"recurrence_logits": rec, "survival_logits": -rec, "aux": {}}


class TimeGate(nn.Module):
    """``[B, C, D, H, W] -> [B, C, T, D, H, W]``: timestep t sees only W-columns [2t, 2t+2)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        gates = torch.zeros(N_YEARS, 1, 1, width)
        for t in range(N_YEARS):
            gates[t, :, :, 2 * t : 2 * t + 2] = 1.0
        self.register_buffer("gates", gates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2) * self.gates[None, None]


class ToyTimeResolved(nn.Module):
    """Time-resolved layer like 4D-ACFNet's: year k's logit reads timestep k only."""

    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.conv = nn.Conv3d(1, 3, 3, padding=1)
        self.gradcam_layer = TimeGate(width)

    def forward(self, batch: dict) -> dict:
        feats = self.gradcam_layer(torch.relu(self.conv(batch["ct"])))  # [B, 3, T, D, H, W]
        rec = feats.sum(dim=1).mean(dim=(2, 3, 4)) * 10  # [B, T]
        return {"recurrence_logits": rec, "survival_logits": rec, "aux": {}}


class LinearFused(nn.Module):
    """Logits linear in the clinical vector plus an image term; ``gradcam_layer`` None."""

    gradcam_layer = None

    def __init__(self, n_features: int) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.register_buffer("w", torch.randn(n_features, N_YEARS, generator=g))
        self.register_buffer("v", torch.linspace(0.5, 1.5, N_YEARS))

    def forward(self, batch: dict) -> dict:
        img = batch["ct"].mean(dim=(1, 2, 3, 4))  # [B]
        rec = batch["clinical"] @ self.w + img[:, None] * self.v[None]
        return {"recurrence_logits": rec, "survival_logits": rec, "aux": {}}


def make_patient(pid: str = "CRLM-CT-9001", shift: float = 0.0) -> dict:
    ct = torch.zeros(1, 1, *GRID)
    ct[(0, 0, *BRIGHT)] = 1.0
    ct[(0, 0, *DARK)] = -1.0
    masks = torch.zeros(1, 5, *GRID)
    masks[0, 0, 1:, :, :15] = 1.0  # liver: everything but slice 0 and the last column
    masks[(0, 4, *BRIGHT)] = 1.0
    return {"patient_id": [pid], "ct": ct + shift, "masks": masks, "clinical": torch.zeros(1, 4)}


def make_meta() -> dict:
    return {
        "z_index": np.array([-1, 0, 1, 2, 3, 4, 5, 6]),
        "source_shape": np.array([10, 20, 24]),  # Z, Y, X
        "source_spacing_mm": np.array([5.0, 0.8, 0.7]),  # z, y, x
        "origin_mm": np.array([-100.0, 50.0, -300.0]),  # x, y, z (LPS)
        "direction": np.eye(3).ravel(),
    }
