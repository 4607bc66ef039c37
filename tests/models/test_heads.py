"""The prognosis heads and their probabilities (crlm_lib/models/heads.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lifelines import KaplanMeierFitter
from torch import nn

from crlm_lib import metrics as M
from crlm_lib.models.heads import (
    PrognosisHeads,
    cumulative_recurrence_logits,
    head_forms,
    head_probabilities,
    km_recurrence_bias,
    km_survival_bias,
    survival_class_count,
)


def test_cumulative_recurrence_is_one_minus_the_product_of_survived_hazards():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(64, 12, generator=g) * 4
    h[0] = -60.0  # hazards ~0: the logit stays finite
    h[1] = 60.0  # hazards ~1
    q = torch.sigmoid(cumulative_recurrence_logits(h)).double()
    expected = 1 - torch.cumprod(1 - torch.sigmoid(h.double()), dim=1)
    np.testing.assert_allclose(q[2:].numpy(), expected[2:].numpy(), rtol=1e-5, atol=1e-6)
    assert torch.isfinite(cumulative_recurrence_logits(h)).all()
    assert (q.diff(dim=1) >= 0).all() and float(q[1, 0]) == pytest.approx(1.0)


def test_random_logits_give_monotone_curves_and_s12_is_the_13th_class():
    torch.manual_seed(1)
    heads = PrognosisHeads(8).eval()
    out = dict(zip(("recurrence_logits", "survival_logits"), heads(torch.randn(50, 8) * 5)))
    assert out["survival_logits"].shape == (50, 13)
    pmf, beyond, rec = (t.detach().numpy().astype(np.float64) for t in head_probabilities(out))
    p13 = torch.softmax(out["survival_logits"].detach().float(), dim=1)[:, 12].numpy()
    np.testing.assert_allclose(beyond, p13)
    surv, rfs = M.survival_curve(pmf), M.recurrence_free_curve(rec)
    np.testing.assert_allclose(surv[:, -1], p13, atol=1e-6)  # S(12) = P(class 13), not 0
    assert (surv[:, -1] > 0).all()
    assert (np.diff(surv, axis=1) <= 1e-7).all() and (np.diff(rfs, axis=1) <= 1e-7).all()
    np.testing.assert_array_equal(rec, np.maximum.accumulate(rec, axis=1))  # no running max


def test_published_forms_reproduce_the_papers_heads_exactly():
    """The papers' heads (two E -> 32 -> 12 MLPs, 12-way softmax, independent sigmoids), as the
    library built them before the forms existed, and ``published12`` / ``independent``: same
    parameters from the same seed, bit-identical outputs."""

    class PapersHeads(nn.Module):
        def __init__(self, e: int) -> None:
            super().__init__()
            self.recurrence = nn.Sequential(nn.Linear(e, 32), nn.GELU(), nn.Linear(32, 12))
            self.survival = nn.Sequential(nn.Linear(e, 32), nn.GELU(), nn.Linear(32, 12))

        def forward(self, h):
            return self.recurrence(h), self.survival(h)

    torch.manual_seed(7)
    old = PapersHeads(16)
    torch.manual_seed(7)
    new = PrognosisHeads(16, survival_classes="published12", recurrence_form="independent")
    h = torch.randn(5, 16)
    for a, b in zip(old(h), new(h), strict=True):
        assert torch.equal(a, b)
    offset = torch.randn(5, 1)
    assert torch.equal(old(h)[0] + offset, new(h, recurrence_offset=offset)[0])
    assert head_forms(nn.Sequential(new)) == {
        "survival_classes": "published12",
        "recurrence_form": "independent",
    }
    with pytest.raises(ValueError, match="survival_classes"):
        PrognosisHeads(4, survival_classes="thirteen")
    with pytest.raises(ValueError, match="recurrence_form"):
        PrognosisHeads(4, recurrence_form="cumulative")
    assert survival_class_count(12, "beyond_horizon") == 13


def _km(years, event, times):
    km = KaplanMeierFitter().fit(years, event)
    return km.survival_function_at_times(times).to_numpy()


def test_anchored_start_is_the_kaplan_meier_curve_on_both_heads():
    rng = np.random.default_rng(0)
    years = rng.exponential(6.0, 400)
    event = (rng.uniform(size=400) < 0.7).astype(float)  # some followed past 12 years
    dfs = rng.exponential(2.0, 400)
    heads = PrognosisHeads(8)
    heads.start_at_baseline(years, event, dfs, event)
    out = dict(zip(("recurrence_logits", "survival_logits"), heads(torch.randn(3, 8))))
    pmf, beyond, rec = (t.detach().numpy().astype(np.float64) for t in head_probabilities(out))
    s_km = _km(years, event, np.arange(1, 13))
    assert s_km[-1] > 0.05
    np.testing.assert_allclose(M.survival_curve(pmf), np.tile(s_km, (3, 1)), atol=2e-3)
    np.testing.assert_allclose(beyond, s_km[-1], atol=2e-3)
    np.testing.assert_allclose(1 - rec, np.tile(_km(dfs, event, np.arange(1, 13)), (3, 1)),
                               atol=5e-3)  # fmt: skip


def test_papers_form_anchors_keep_the_former_biases():
    """12 classes: the last year holds everything from year 11 on; independent sigmoids: the
    cumulative KM probability with its last year forced to 1 (clipped)."""
    rng = np.random.default_rng(2)
    years, event = rng.exponential(4.0, 200), (rng.uniform(size=200) < 0.8).astype(float)
    s = _km(years, event, np.arange(1, 12))
    mass = np.clip(np.diff(np.concatenate([1 - s, [1.0]]), prepend=0.0), 1e-4, None)
    mass = mass / mass.sum()
    np.testing.assert_allclose(km_survival_bias(years, event, 12), np.log(mass))
    cum = np.clip(np.cumsum(mass), 1e-3, 1 - 1e-3)
    np.testing.assert_allclose(
        km_recurrence_bias(years, event, 12, "independent"), np.log(cum / (1 - cum))
    )
    hazard = torch.sigmoid(torch.as_tensor(km_recurrence_bias(years, event, 12, "hazard")))
    assert ((hazard >= 1e-3 - 1e-9) & (hazard <= 1 - 1e-3 + 1e-9)).all()
    with pytest.raises(ValueError, match="recurrence_form"):
        km_recurrence_bias(years, event, 12, "sigmoid")
