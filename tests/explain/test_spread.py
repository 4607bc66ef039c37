"""crlm_lib.explain.spread: Grad-CAM's resolution and the spread of explanations across
patients, on the toy models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toys import GRID, ToyCNN, make_meta, make_patient

from crlm_lib import explain
from crlm_lib.config import N_YEARS


def _item(pid: str, shift: float = 0.0) -> dict:
    batch = make_patient(pid, shift)
    return {k: (v[0] if isinstance(v, (torch.Tensor, list)) else v) for k, v in batch.items()}


def test_resolution_is_the_feature_grid_cell_in_millimetres():
    res = explain.gradcam_resolution(ToyCNN(), _item("CRLM-CT-9001"), make_meta())
    assert res["input"] == GRID
    assert res["grid"] == (4, 8, 8)  # the toy's stride-2 convolution halves every axis
    # one processed slice per source slice (5 mm); in-plane 20 x 0.8 mm over 16, 24 x 0.7 over 16
    assert res["voxel_mm"] == pytest.approx((5.0, 1.0, 1.05))
    assert res["cell_mm"] == pytest.approx((10.0, 2.0, 2.1))


def test_spread_counts_empty_years_and_measures_patient_to_patient_variation():
    data = [_item("CRLM-CT-9001"), _item("CRLM-CT-9002", shift=0.5)]
    cam = explain.gradcam_by_patient(ToyCNN(), data)
    assert cam["patient_ids"] == ["CRLM-CT-9001", "CRLM-CT-9002"]
    # the toy's year-12 weight is negative: its map is empty for both patients, no other is
    assert cam["empty"][:, -1].all() and not cam["empty"][:, :-1].any()
    assert cam["liver_mean"].shape == (2, N_YEARS) and (cam["liver_mean"] >= 0).all()
    attention = np.full((2, N_YEARS), 1.0 / N_YEARS)
    attention[0, 0] += 1e-4
    attention[0, 1] -= 1e-4
    table = explain.explanation_spread_table(attention, cam)
    assert list(table.index) == list(range(1, N_YEARS + 1))
    sd = table["attention weight, SD across patients"]
    assert sd.iloc[0] == pytest.approx(np.std([1 / 12 + 1e-4, 1 / 12], ddof=1))
    assert sd.iloc[2:].eq(0).all()
    assert list(table["Grad-CAM: patients with a non-empty map"]) == [2] * 11 + [0]
    values = explain.explanation_values(
        explain.gradcam_resolution(ToyCNN(), data[0], make_meta()), attention, cam
    )
    assert values["gradcam-grid"] == "4×8×8 cells of 10×2×2 mm"
    assert (
        explain.resolution_text(explain.gradcam_resolution(ToyCNN(), data[1], make_meta()))
        == (values["gradcam-grid"])
    )
    assert values["gradcam-nonempty"] == "11 of 12 years for every one of the 2 test patients"
    assert values["attention-sd-max"] == f"{sd.max():.1e}"
    assert values["explain-patients"] == "2"
