"""Losses on hand-computed cases (crlm_lib/losses.py)."""

from __future__ import annotations

import math

import pytest
import torch

from crlm_lib.losses import (
    DEFAULT_WEIGHTS,
    EmbeddingMemory,
    alignment_loss,
    censored_recurrence_bce,
    censored_survival_nll,
    cross_correlation_loss,
    disentanglement_loss,
    info_nce,
    paper_recurrence_ce,
    paper_survival_ce,
    star_alignment_loss,
    survival_labels,
    total_loss,
)


def test_alignment_loss_known_vectors():
    h_img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    h_clin = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, -1.0]])  # cos 1, 0, -1
    assert float(alignment_loss(h_img, h_clin)) == pytest.approx(0.0, abs=1e-6)
    assert float(alignment_loss(h_img[:1], h_clin[:1])) == pytest.approx(-1.0)


def test_star_alignment_mapped_and_clamped():
    h_img = torch.tensor([[1.0, 0.0]])
    h_clin = torch.tensor([[1.0, 0.0]])  # cos 1 -> mapped 1
    h_recon = torch.tensor([[0.0, 1.0]])  # cos 0 -> mapped 0.5
    got = star_alignment_loss(h_img, h_clin, h_recon, eps=0.1)
    assert float(got) == pytest.approx(-1.0 / 0.6)
    # clamped: raw denominator 0 -> eps, sign kept positive
    got = star_alignment_loss(h_img, h_clin, h_recon, eps=0.1, mode="clamped")
    assert float(got) == pytest.approx(-10.0)
    anti = torch.tensor([[-1.0, 0.0]])  # denominator cos -1: mapped 0 -> bounded by 1/eps
    assert torch.isfinite(star_alignment_loss(h_img, h_clin, anti, eps=0.1))
    with pytest.raises(ValueError):
        star_alignment_loss(h_img, h_clin, h_recon, mode="raw")


def _agreement_after_training(mode: str, steps: int = 150) -> tuple[float, float]:
    """Optimise learnable h_img, h_recon against a fixed h_clin with the STAR term alone and
    return (cos(h_img, h_recon), cos(h_img, h_clin)) at the end."""
    g = torch.Generator().manual_seed(0)
    h_img = torch.randn(8, 16, generator=g).requires_grad_()
    h_recon = (h_img.detach() + 0.3 * torch.randn(8, 16, generator=g)).requires_grad_()
    h_clin = torch.randn(8, 16, generator=g)
    opt = torch.optim.Adam([h_img, h_recon], lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        star_alignment_loss(h_img, h_clin, h_recon, eps=0.1, mode=mode).backward()
        opt.step()
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        return float(cos(h_img, h_recon).mean()), float(cos(h_img, h_clin).mean())


def test_star_published_gradient_collapses_and_normalised_form_does_not():
    collapsed, _ = _agreement_after_training("mapped")
    assert collapsed < -0.9  # the failure mode guarded against: the agreement is driven to -1
    kept, aligned = _agreement_after_training("normalised")
    # h_img moves towards the (unrelated) h_clin, so the agreement drops somewhat, but it is
    # no longer a target: nothing drives it to -1 (h_recon gets no gradient at all)
    assert kept > -0.5 and kept > collapsed + 0.5
    assert aligned > 0.9  # and the term still does its job: h_img moves towards h_clin


def test_star_normalised_value_equals_mapped_and_stops_gradient():
    g = torch.Generator().manual_seed(1)
    h_img = torch.randn(4, 8, generator=g, requires_grad=True)
    h_clin = torch.randn(4, 8, generator=g)
    h_recon = torch.randn(4, 8, generator=g, requires_grad=True)
    a = star_alignment_loss(h_img, h_clin, h_recon, mode="normalised")
    b = star_alignment_loss(h_img, h_clin, h_recon, mode="mapped")
    assert float(a.detach()) == pytest.approx(float(b.detach()))
    a.backward()
    assert h_recon.grad is None or float(h_recon.grad.abs().sum()) == 0.0
    assert float(h_img.grad.abs().sum()) > 0.0


def test_cross_correlation_is_scale_free_and_acts_where_eq4_does_not():
    g = torch.Generator().manual_seed(2)
    shared = torch.randn(48, 8, generator=g)
    h_img = 1e-2 * (shared + 0.5 * torch.randn(48, 8, generator=g))  # small, like the net's
    h_clin = 1e-2 * (shared + 0.5 * torch.randn(48, 8, generator=g))
    x = cross_correlation_loss(h_img, h_clin)
    assert float(cross_correlation_loss(1e3 * h_img, h_clin)) == pytest.approx(float(x), rel=1e-3)
    indep = cross_correlation_loss(h_img, torch.randn(48, 8, generator=g))
    assert float(x) > 3 * float(indep)  # shared information costs more than none
    # gradient magnitude: Eq. (4) is vanishing at this scale, the cross-correlation is not
    hi = h_img.clone().requires_grad_()
    disentanglement_loss(hi, h_clin).backward()
    g_paper = float(hi.grad.norm())
    hi = h_img.clone().requires_grad_()
    cross_correlation_loss(hi, h_clin).backward()
    assert float(hi.grad.norm()) > 100 * g_paper
    one = torch.randn(1, 8, generator=g)
    assert float(cross_correlation_loss(one, one)) == 0.0  # B = 1, no memory: undefined -> 0


def test_disentanglement_known_covariances():
    h_img = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])  # Cov = [[2, 0], [0, 0]]
    h_clin = torch.tensor([[0.0, 1.0], [0.0, -1.0]])  # Cov = [[0, 0], [0, 2]]
    expected = math.sqrt(8.0) / 4  # ||diag(2, -2)||_F / d^2
    assert float(disentanglement_loss(h_img, h_clin)) == pytest.approx(expected, rel=1e-5)
    assert float(disentanglement_loss(h_img, h_img)) == pytest.approx(0.0, abs=1e-5)


def test_disentanglement_batch_one_with_memory_has_gradient():
    torch.manual_seed(0)
    mem = EmbeddingMemory(4, size=8)
    h_img = torch.randn(1, 4, requires_grad=True)
    h_clin = torch.randn(1, 4, requires_grad=True)
    # empty memory, B = 1: defined as 0, finite
    empty = disentanglement_loss(h_img, h_clin, mem.get(0), mem.get(1))
    assert float(empty.detach()) == pytest.approx(0.0, abs=1e-5)
    for _ in range(3):
        mem.push(torch.randn(1, 4), torch.randn(1, 4))
    assert mem.get(0).shape == (3, 4)
    loss = disentanglement_loss(h_img, h_clin, mem.get(0), mem.get(1))
    assert torch.isfinite(loss) and loss > 0
    loss.backward()
    assert h_img.grad.abs().sum() > 0 and h_clin.grad.abs().sum() > 0
    for _ in range(10):  # FIFO keeps only `size` rows
        mem.push(torch.randn(1, 4), torch.randn(1, 4))
    assert mem.get(0).shape == (8, 4)


def test_censored_survival_nll_three_bins_by_hand():
    logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]])).repeat(3, 1)
    bins = torch.tensor([1, 0, 2])
    event = torch.tensor([1.0, 0.0, 0.0])
    # death in bin 1: -log .3; censored in bin 0: alive at its start, -log(.2 + .3 + .5) = 0;
    # censored in the last bin: -log .5 (death in that bin or later)
    expected = (-math.log(0.3) - 0.0 - math.log(0.5)) / 3
    assert float(censored_survival_nll(logits, bins, event)) == pytest.approx(expected, rel=1e-5)
    # the paper's CE ignores censoring: -log p_bin for all three
    ce = (-math.log(0.3) - math.log(0.2) - math.log(0.5)) / 3
    assert float(paper_survival_ce(logits, bins)) == pytest.approx(ce, rel=1e-5)


def test_censored_recurrence_bce_ignores_unknown_years():
    logits = torch.tensor([[0.0, 10.0, -10.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    known = torch.tensor([[1.0, 0.0, 1.0]])  # year 2 unknown (its huge error is ignored)
    expected = (math.log(2.0) + math.log1p(math.exp(-10.0))) / 2
    got = censored_recurrence_bce(logits, target, known)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    assert float(paper_recurrence_ce(logits, target)) > float(got)


def test_info_nce():
    z = torch.eye(3)
    assert float(info_nce(z[:1], z[:1])) == pytest.approx(0.0)  # B = 1, no negatives
    aligned = float(info_nce(z, z, temperature=0.1))
    shuffled = float(info_nce(z, z[[1, 2, 0]], temperature=0.1))
    assert aligned < 1e-3 < shuffled
    assert float(info_nce(z[:1], z[:1], negatives=z[1:])) > 0


def test_total_loss_weights_and_objectives():
    out = {
        "survival_logits": torch.zeros(2, 12, requires_grad=True),
        "recurrence_logits": torch.zeros(2, 12),
        "aux": {"loss_terms": {"align": torch.tensor(-0.5), "dis": torch.tensor(0.2)}},
    }
    batch = {
        "survival_bin": torch.tensor([0, 11]),
        "os_event": torch.tensor([1.0, 0.0]),
        "recurrence_target": torch.zeros(2, 12),
        "recurrence_known": torch.ones(2, 12),
    }
    loss, parts = total_loss(out, batch)
    w = DEFAULT_WEIGHTS
    expected = w["surv"] * math.log(12) + w["recur"] * math.log(2) + w["align"] * -0.5
    expected += w["dis"] * 0.2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    assert parts["align"] == pytest.approx(-0.5)
    loss.backward()
    _, cparts = total_loss(out, batch, objective="censored")
    # death in bin 0: -log(1/12); censored in bin 11: -log p_11 = -log(1/12)
    assert cparts["surv"] == pytest.approx(math.log(12), rel=1e-5)
    loss2, _ = total_loss(out, batch, weights={"align": 0.0, "dis": 0.0})
    assert float(loss2.detach()) == pytest.approx(float(loss.detach()) - (0.1 * -0.5 + 0.1 * 0.2))
    with pytest.raises(ValueError, match="objective"):
        total_loss(out, batch, objective="cox")


def _pmf13() -> torch.Tensor:
    """A 13-class pmf: death in years 1..12 (0.05 each) and alive at 12 years (0.4)."""
    return torch.tensor([[0.05] * 12 + [0.4]])


def test_survival_labels_put_patients_followed_past_year_12_in_the_13th_class():
    batch = {
        "survival_bin": torch.tensor([2, 11, 11, 11]),
        "os_years": torch.tensor([2.4, 11.9, 12.0, 30.0]),
    }
    assert survival_labels(batch, 12).tolist() == [2, 11, 11, 11]
    assert survival_labels(batch, 13).tolist() == [2, 11, 12, 12]
    with pytest.raises(KeyError, match="os_years"):
        survival_labels({"survival_bin": torch.tensor([1])}, 13)
    with pytest.raises(ValueError, match="12 or 13"):
        survival_labels(batch, 14)


def test_censored_likelihood_counts_the_censoring_year_thirteen_classes():
    logits = torch.log(_pmf13()).repeat(3, 1)
    labels = survival_labels({"os_years": torch.tensor([2.4, 12.7, 12.7])}, 13)
    event = torch.tensor([0.0, 0.0, 1.0])
    # censored in year 3 (at 2.4 y): P(T >= 2) = deaths in years 3..12 + alive at 12 = 0.9;
    # censored after 12 y: P(alive at 12) = 0.4; died after 12 y: also the 13th class, 0.4
    each = torch.stack(
        [
            censored_survival_nll(logits[i : i + 1], labels[i : i + 1], event[i : i + 1])
            for i in range(3)
        ]
    )
    expected = [-math.log(10 * 0.05 + 0.4), -math.log(0.4), -math.log(0.4)]
    assert each.tolist() == pytest.approx(expected, rel=1e-5)
    # the censoring year itself counts: more than P(T >= 3) = 0.85 is credited
    assert float(each[0]) < -math.log(0.85)


def test_total_loss_with_the_13th_class_reads_os_years():
    out = {
        "survival_logits": torch.log(_pmf13()).repeat(2, 1),
        "recurrence_logits": torch.zeros(2, 12),
    }
    batch = {
        "survival_bin": torch.tensor([11, 3]),
        "os_years": torch.tensor([14.0, 3.5]),
        "os_event": torch.tensor([0.0, 1.0]),
        "recurrence_target": torch.zeros(2, 12),
        "recurrence_known": torch.ones(2, 12),
    }
    _, parts = total_loss(out, batch)
    assert parts["surv"] == pytest.approx((-math.log(0.4) - math.log(0.05)) / 2, rel=1e-5)
    _, cparts = total_loss(out, batch, objective="censored")
    assert cparts["surv"] == pytest.approx(parts["surv"], rel=1e-5)  # here the same classes
