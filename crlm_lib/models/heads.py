"""The prognosis heads every registry model ends in, and the one place that turns their logits
into probabilities.

Two heads (4D-ACFNet section 3.3: two MLPs ``E -> 32 -> K`` with GELU), each in two forms:

**Survival** (``survival_classes``), a softmax over the year of death:

- ``"beyond_horizon"`` (default): 13 classes, death in year 1, ..., year 12 and *alive at the
  end of year 12*. ``S(12) = P(class 13)``, the mass a Kaplan-Meier curve keeps at 12 years;
  a patient followed event-free past 12 years is trained into class 13, not into year 12.
- ``"published12"``: the papers' 12-class softmax; every patient who outlives year 12 is
  trained into year 12 and every prediction has ``S(12) = 0``.

**Recurrence** (``recurrence_form``), the probability of recurrence by the end of year k:

- ``"hazard"`` (default): a discrete-time hazard head. The linear layer gives the logit of the
  conditional probability of recurrence in year j given none before, ``h_j``, and
  ``P(recurrence by year k) = 1 - prod_{j<=k} (1 - sigmoid(h_j))``, non-decreasing in k by
  construction (Tutz & Schmid 2016, *Modeling Discrete Time-to-Event Data*, ch. 3; the
  parameterisation of pycox's ``LogisticHazard``).
- ``"independent"``: the papers' 12 independent sigmoids, which need not be monotone.

Either way the model's ``recurrence_logits`` ``[B, 12]`` are the logits of the *cumulative*
probability (:func:`cumulative_recurrence_logits` for the hazard form), so
``sigmoid(recurrence_logits)`` keeps its meaning for every consumer and the per-year binary
cross-entropies of ``losses`` score the cumulative probability in both forms.

:func:`head_probabilities` is what training, prediction and explanation call to turn a model's
outputs into the Predictions contract: the death pmf of years 1..12 (rows sum to ``1 - S(12)``),
``S(12)`` and the cumulative recurrence probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import N_YEARS

#: Forms of the survival softmax (module docstring); the first is the default.
SURVIVAL_CLASSES: tuple[str, ...] = ("beyond_horizon", "published12")
#: Forms of the recurrence head (module docstring); the first is the default.
RECURRENCE_FORMS: tuple[str, ...] = ("hazard", "independent")
#: Smallest cumulative hazard ``-log S`` of :func:`cumulative_recurrence_logits` (a floor that
#: keeps ``log(expm1(.))`` finite; reached only for hazard logits below about -27).
_MIN_CUMULATIVE_HAZARD = 1e-12


def survival_class_count(n_years: int, survival_classes: str) -> int:
    """Width of the survival softmax: ``n_years + 1`` for ``"beyond_horizon"``, else
    ``n_years``."""
    if survival_classes not in SURVIVAL_CLASSES:
        raise ValueError(
            f"unknown survival_classes {survival_classes!r}; use one of {SURVIVAL_CLASSES}"
        )
    return n_years + 1 if survival_classes == "beyond_horizon" else n_years


def cumulative_recurrence_logits(hazard_logits: Tensor) -> Tensor:
    """Logits of ``P(recurrence by the end of year k) = 1 - prod_{j<=k} (1 - sigmoid(h_j))``.

    With ``A_k = -log S_k = sum_{j<=k} softplus(h_j)`` (``-log(1 - sigmoid(h)) = softplus(h)``)
    the cumulative probability is ``1 - exp(-A_k)`` and its logit is ``log(expm1(A_k))``, the
    inverse of softplus, computed as ``A + log(-expm1(-A))`` (stable for small and large ``A``).
    ``A_k`` is non-decreasing in k, so the output is too. Computed in float32.

    Parameters
    ----------
    hazard_logits : Tensor ``[B, T]``
        Logit of the conditional probability of recurrence in year j given none before.

    Returns
    -------
    Tensor ``[B, T]`` float32.

    Examples
    --------
    >>> h = torch.logit(torch.tensor([[0.5, 0.5]]))
    >>> torch.sigmoid(cumulative_recurrence_logits(h)).tolist()  # 0.5, then 1 - 0.5 * 0.5
    [[0.5, 0.75]]
    """
    cum_hazard = F.softplus(hazard_logits.float()).cumsum(dim=-1).clamp_min(_MIN_CUMULATIVE_HAZARD)
    return cum_hazard + torch.log(-torch.expm1(-cum_hazard))


class PrognosisHeads(nn.Module):
    """Multi-task heads (4D-ACFNet section 3.3): two MLPs ``E -> 32 -> K`` with GELU.

    Parameters
    ----------
    embed_dim : int
        Width ``E`` of the fused embedding.
    hidden : int
        Hidden width (32 in the papers).
    n_years : int
        Yearly horizon ``T`` (12).
    survival_classes : {"beyond_horizon", "published12"}
        13-class softmax with a class for survival past year ``T`` (default), or the papers'
        12 classes (module docstring).
    recurrence_form : {"hazard", "independent"}
        Discrete-time hazard head, monotone by construction (default), or the papers'
        independent sigmoids.

    Attributes
    ----------
    n_survival : int
        Width of ``survival_logits`` (``T + 1`` or ``T``).
    """

    def __init__(
        self,
        embed_dim: int,
        hidden: int = 32,
        n_years: int = N_YEARS,
        survival_classes: str = SURVIVAL_CLASSES[0],
        recurrence_form: str = RECURRENCE_FORMS[0],
    ) -> None:
        super().__init__()
        if recurrence_form not in RECURRENCE_FORMS:
            raise ValueError(
                f"unknown recurrence_form {recurrence_form!r}; use one of {RECURRENCE_FORMS}"
            )
        self.n_years = n_years
        self.n_survival = survival_class_count(n_years, survival_classes)
        self.survival_classes = survival_classes
        self.recurrence_form = recurrence_form
        self.recurrence = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, n_years)
        )
        self.survival = nn.Sequential(
            nn.Linear(embed_dim, hidden), nn.GELU(), nn.Linear(hidden, self.n_survival)
        )

    def forward(
        self,
        h: Tensor,
        recurrence_offset: Tensor | None = None,
        survival_offset: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``h`` ``[B, E]`` -> ``(recurrence_logits [B, T], survival_logits [B, K])``.

        ``recurrence_offset`` (broadcast to ``[B, T]``) is added to the per-year logits before
        the cumulative transform of the hazard form (to the hazard logits), ``survival_offset``
        (broadcast to ``[B, K]``) to the softmax logits: how a model adds its own per-patient
        or per-year terms (4D-ACFNet's clinical residual, STG's time nodes).
        """
        rec = self.recurrence(h)
        surv = self.survival(h)
        if recurrence_offset is not None:
            rec = rec + recurrence_offset
        if survival_offset is not None:
            surv = surv + survival_offset
        if self.recurrence_form == "hazard":
            rec = cumulative_recurrence_logits(rec)
        return rec, surv

    def pad_years(self, per_year: Tensor) -> Tensor:
        """A per-year survival term ``[B, T]`` widened to ``[B, K]`` with 0 for the class
        beyond the horizon (unchanged for 12 classes)."""
        return F.pad(per_year, (0, self.n_survival - per_year.shape[-1]))

    @torch.no_grad()
    def start_at_baseline(
        self,
        os_years: np.ndarray,
        os_event: np.ndarray,
        dfs_years: np.ndarray | None = None,
        dfs_event: np.ndarray | None = None,
    ) -> None:
        """Start both heads at the Kaplan-Meier curves of the given (training) patients: zero
        last-layer weights and, as biases, :func:`km_survival_bias` and, with DFS outcomes,
        :func:`km_recurrence_bias`, so that every patient's prediction is the KM baseline."""
        _set_constant(self.survival[-1], km_survival_bias(os_years, os_event, self.n_survival))
        if dfs_years is not None and dfs_event is not None:
            bias = km_recurrence_bias(dfs_years, dfs_event, self.n_years, self.recurrence_form)
            _set_constant(self.recurrence[-1], bias)


def head_forms(model: nn.Module) -> dict[str, str]:
    """``{"survival_classes": ..., "recurrence_form": ...}`` of the first
    :class:`PrognosisHeads` in ``model`` (empty when it has none)."""
    for module in model.modules():
        if isinstance(module, PrognosisHeads):
            return {
                "survival_classes": module.survival_classes,
                "recurrence_form": module.recurrence_form,
            }
    return {}


def head_probabilities(outputs: dict) -> tuple[Tensor, Tensor, Tensor]:
    """A model's outputs as the Predictions contract, float32 (also after bf16 autocast).

    Returns
    -------
    death_pmf : Tensor ``[B, 12]``
        Probability of death in year k (softmax of ``survival_logits``, first 12 classes);
        rows sum to ``1 - S(12)``.
    beyond : Tensor ``[B]``
        ``S(12)``: the 13th class's probability; 0 for the papers' 12-class softmax.
    recurrence_cdf : Tensor ``[B, 12]``
        ``sigmoid(recurrence_logits)``: probability of recurrence by the end of year k.
    """
    probs = torch.softmax(outputs["survival_logits"].float(), dim=-1)
    death_pmf = probs[:, :N_YEARS]
    if probs.shape[1] > N_YEARS:
        beyond = probs[:, N_YEARS:].sum(dim=1)
    else:
        beyond = probs.new_zeros(probs.shape[0])
    return death_pmf, beyond, torch.sigmoid(outputs["recurrence_logits"].float())


def _km_at_year_ends(years, event, n_years: int) -> np.ndarray:
    """Kaplan-Meier ``S(1..n_years)`` (lifelines; flat after the last follow-up)."""
    from lifelines import KaplanMeierFitter

    km = KaplanMeierFitter().fit(np.asarray(years, dtype=float), np.asarray(event, dtype=float))
    return km.survival_function_at_times(np.arange(1, n_years + 1)).to_numpy(dtype=float)


def km_survival_bias(years, event, n_classes: int, floor: float = 1e-4) -> np.ndarray:
    """Log Kaplan-Meier mass of each survival class ``[n_classes]``: the bias that makes the
    softmax equal the KM curve.

    ``n_classes = 13`` (beyond the horizon): the mass of years 1..12, ``S(k - 1) - S(k)``, and
    ``S(12)`` for the 13th class. ``n_classes = 12`` (the papers' softmax): the last year holds
    everything from year 11 on. Each mass floored at ``floor`` and renormalised to 1.
    """
    n_years = min(n_classes, N_YEARS)
    surv = _km_at_year_ends(years, event, n_years)
    cdf = 1.0 - surv
    if n_classes == n_years:
        cdf[-1] = 1.0
    mass = np.diff(cdf, prepend=0.0)
    if n_classes > n_years:
        mass = np.append(mass, surv[-1])
    mass = np.clip(mass, floor, None)
    return np.log(mass / mass.sum())


def km_recurrence_bias(years, event, n_years: int, form: str, clip: float = 1e-3) -> np.ndarray:
    """Recurrence-head bias ``[n_years]`` that makes the head equal the DFS Kaplan-Meier curve.

    ``"hazard"``: logit of the KM conditional probability of an event in year j given none
    before, ``1 - S(j) / S(j - 1)``, clipped to ``[clip, 1 - clip]`` (so years after the last
    follow-up, where KM is flat, carry a small hazard). ``"independent"``: logit of the KM
    cumulative probability ``1 - S(k)``, the last year holding everything from year 11 on, as
    the papers' form was anchored.
    """
    surv = _km_at_year_ends(years, event, n_years)
    if form == "hazard":
        before = np.concatenate([[1.0], surv[:-1]])
        hazard = np.where(before > 0, 1.0 - surv / np.where(before > 0, before, 1.0), 1.0)
        p = np.clip(hazard, clip, 1.0 - clip)
    elif form == "independent":
        cdf = np.concatenate([1.0 - surv[:-1], [1.0]])
        mass = np.clip(np.diff(cdf, prepend=0.0), 1e-4, None)
        p = np.clip(np.cumsum(mass / mass.sum()), clip, 1.0 - clip)
    else:
        raise ValueError(f"unknown recurrence_form {form!r}; use one of {RECURRENCE_FORMS}")
    return np.log(p / (1.0 - p))


def _set_constant(layer: nn.Linear, bias: np.ndarray) -> None:
    """Zero weights and the given bias: the layer outputs ``bias`` for every input."""
    layer.weight.zero_()
    layer.bias.copy_(torch.as_tensor(bias, dtype=layer.bias.dtype))
