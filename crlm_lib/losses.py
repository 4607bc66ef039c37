"""Losses of the three papers and a censoring-aware alternative (functional core, pycox-style).

Every loss is a plain function of tensors; the only module is :class:`EmbeddingMemory`, the
detached memory bank that makes the batch statistics of ``L_dis`` (and the negatives of
``info_nce``) defined at the papers' batch size of 1.

Targets (see ``docs/interfaces.md``, ``data.dataset``):

- the survival class (:func:`survival_labels`): for the papers' 12-class softmax
  ``survival_bin`` int64 ``[B]`` = ``min(floor(os_years), 11)``, the year of death (or of
  censoring) as a 0-based bin of 12 yearly bins; for the default 13-class softmax
  (``models.heads``) ``min(floor(os_years), 12)`` from ``os_years``, class 12 (the 13th) being
  "alive at the end of year 12";
- ``os_event`` float ``[B]`` (1 = death observed);
- ``recurrence_target`` float ``[B, 12]`` (year k: recurrence observed by the end of year k+1),
  ``recurrence_known`` float ``[B, 12]`` (0 where censoring leaves year k unknown).

``total_loss`` combines the heads' losses with the unweighted ``aux["loss_terms"]`` of a model
using the weights of 4D-ACFNet Eq. (6) (``DEFAULT_WEIGHTS``).

Choice of the objective (``OBJECTIVES``): ``"paper"`` is the papers' cross-entropy, which trains
a patient censored in year ``c`` as a death (survival head) and as recurrence-free for every
year (recurrence head); ``"censored"`` is the discrete-time likelihood of the survival head
under independent censoring (:func:`censored_survival_nll`; about half of the cohort is
censored) with the recurrence head's binary cross-entropy restricted to the years whose status
is known (:func:`censored_recurrence_bce`). The objective is *not* chosen on
the test folds, and not on inner folds either: an inner-fold choice trains both objectives again
on inner folds of every outer fold (3 inner folds x 2 objectives x 5 outer folds = 30 more
fits, ~4-8 min on 2 idle cores), beyond the ~2 min that notebook 06 may grow within the cpu
profile's budget (``config`` has the per-fold timings). So the choice is made a priori, for the reason
above: the censoring-aware likelihood is the recommended objective, and ``"paper"`` is kept as
the option that reproduces the published networks. Both are trained and reported side by side
in every cross-validated table (``"acfnet"`` and ``"acfnet:censored"``); the engine's default
(``objective="paper"`` in ``total_loss`` and ``train.fit``) stays the papers' so that the
papers' rows mean what the papers mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crlm_lib.config import N_YEARS

#: Loss weights. ``surv``, ``recur``, ``align``, ``dis``: 4D-ACFNet Eq. (6), 0.5, 0.3, 0.1, 0.1.
#: STAR's Eq. (2) weights the same four terms by lambda_1..4 without giving values; we use
#: 4D-ACFNet's for STAR too (``ACFNet(lambdas=...)`` sets others). ``burden`` and ``intensity``:
#: our auxiliary targets (``models.acfnet``). ``recon`` 1.0: AMINN weights its autoencoder
#: reconstruction 1:1 with the outcome loss. ``contrastive`` and ``risk`` (STG) are not given
#: in the STG summary; 0.1 each, the weight of the papers' other auxiliary terms.
DEFAULT_WEIGHTS: dict[str, float] = {
    "surv": 0.5,
    "recur": 0.3,
    "align": 0.1,
    "dis": 0.1,
    "recon": 1.0,
    "contrastive": 0.1,
    "risk": 0.1,
    "burden": 0.5,
    "intensity": 0.5,
}

OBJECTIVES = ("paper", "censored")


def survival_labels(batch: dict, n_classes: int) -> Tensor:
    """The survival class of each patient ``[B]`` int64 for a softmax of ``n_classes``.

    ``n_classes = 12`` (the papers' form): ``batch["survival_bin"]`` = ``min(floor(os_years),
    11)``, every patient followed past year 12 in year 12. ``n_classes = 13`` (a class beyond
    the horizon, ``models.heads``): ``min(floor(os_years), 12)`` from ``batch["os_years"]``, so
    a patient event-free at 12 years (dead or censored later) is class 12, the 13th.
    """
    if n_classes == N_YEARS:
        return batch["survival_bin"].long()
    if n_classes == N_YEARS + 1:
        if "os_years" not in batch:
            raise KeyError(
                "a 13-class survival head needs batch['os_years'] (years) to label patients "
                "followed past year 12; the batch has only " + ", ".join(sorted(batch))
            )
        years = batch["os_years"].float().view(-1)
        return torch.floor(years).clamp(0, N_YEARS).long()
    raise ValueError(f"survival heads have {N_YEARS} or {N_YEARS + 1} classes, got {n_classes}")


# --------------------------------------------------------------------------- head losses
def paper_survival_ce(survival_logits: Tensor, survival_bin: Tensor) -> Tensor:
    """The papers' survival loss: plain cross-entropy over the yearly classes.

    Parameters
    ----------
    survival_logits : Tensor ``[B, K]``
        Softmax logits over the year of death (``K = 12``, or 13 with the class beyond year 12).
    survival_bin : Tensor int64 ``[B]``
        :func:`survival_labels`: ``min(floor(os_years), K - 1)``.

    Notes
    -----
    4D-ACFNet section 4.2 / STAR section 4.1: "both recurrence and survival losses are computed
    using cross-entropy". Censoring is ignored: a patient alive at last follow-up in year k is
    trained as if death occurred in year k. :func:`censored_survival_nll` is the principled
    alternative.
    """
    return F.cross_entropy(survival_logits, survival_bin.long())


def paper_recurrence_ce(recurrence_logits: Tensor, recurrence_target: Tensor) -> Tensor:
    """The papers' recurrence loss: binary cross-entropy of the 12 sigmoid outputs.

    Parameters
    ----------
    recurrence_logits : Tensor ``[B, 12]``
    recurrence_target : Tensor ``[B, 12]`` in {0, 1}
        Year k: recurrence observed by the end of year k+1. Censored years are 0 (censoring
        ignored, as in the papers); see :func:`censored_recurrence_bce`.
    """
    return F.binary_cross_entropy_with_logits(recurrence_logits, recurrence_target.float())


def censored_survival_nll(
    survival_logits: Tensor, survival_bin: Tensor, event: Tensor, eps: float = 1e-12
) -> Tensor:
    """Discrete-time survival likelihood of the yearly classes (pycox's ``nll_pmf`` with its
    discretisation of censoring times).

    With ``p = softmax(survival_logits)`` ``[B, K]`` the probability of death in each yearly
    class (class ``k`` = the interval ``[k, k + 1)`` years; with ``K = 13`` the last class is
    "alive at 12 years", ``S(12)``), the likelihood of one patient is

    - death observed in class ``c``: ``p_c``;
    - censored in class ``c`` (last seen alive at a time in ``[c, c + 1)``):
      ``P(T >= c) = sum_{k>=c} p_k``, survival through the *start* of the censoring year: the
      censoring year itself counts, since death later in that year is still possible.

    This is the standard discrete-time convention of pycox (``LabTransDiscreteTime`` moves a
    censoring time to the left end of its interval, an event to the right end; ``nll_pmf``
    then credits survival past the censoring cut) and the reading of the recurrence head's
    ``recurrence_known`` mask (``data.dataset``: event-free only for the years that ended
    before censoring). The exact interval likelihood ``P(T > 2.3)`` of a patient last seen at
    2.3 years lies between ``sum_{k>=2} p_k`` and ``sum_{k>2} p_k``; the latter would credit
    the whole censoring year as survived. With the class beyond year 12, a patient censored
    after 12 years contributes ``p_12 = S(12)`` exactly; in the papers' 12-class softmax one
    censored after 11 years contributes ``p_11`` (death in year 12 or later).

    Parameters
    ----------
    survival_logits : Tensor ``[B, K]``
    survival_bin : Tensor int64 ``[B]``
        :func:`survival_labels`.
    event : Tensor ``[B]`` (1 = death observed, 0 = censored)

    Returns
    -------
    Tensor
        Minus the mean log-likelihood over the batch (a scalar).

    Examples
    --------
    >>> logits = torch.log(torch.tensor([[0.2, 0.3, 0.5]]))
    >>> float(censored_survival_nll(logits, torch.tensor([1]), torch.tensor([0.0])))  # -log .8
    0.2231...
    """
    logp = torch.log_softmax(survival_logits, dim=1)
    idx = survival_bin.long().view(-1, 1)
    event = event.float().view(-1)
    ll_event = logp.gather(1, idx).squeeze(1)
    k = torch.arange(logp.shape[1], device=logp.device).view(1, -1)
    at_or_after = k >= idx  # the censoring class and every later one
    ll_cens = torch.logsumexp(logp.masked_fill(~at_or_after, float("-inf")), dim=1)
    ll = event * ll_event + (1.0 - event) * ll_cens
    return -ll.mean()


def censored_recurrence_bce(
    recurrence_logits: Tensor, recurrence_target: Tensor, recurrence_known: Tensor
) -> Tensor:
    """Binary cross-entropy over the years whose recurrence status is known.

    Each year's term scores the cumulative probability ``sigmoid(recurrence_logits)_k`` of
    recurrence by the end of year ``k + 1`` against what is known of it: a proper scoring rule
    per horizon, whichever form the head has (the hazard head of ``models.heads`` outputs the
    logits of its cumulative probabilities, so the same loss applies).

    Parameters
    ----------
    recurrence_logits, recurrence_target, recurrence_known : Tensor ``[B, 12]``
        ``recurrence_known`` is 0 for years after censoring (status unknown).

    Returns
    -------
    Tensor
        Sum of the known years' BCE divided by their count (0 when none is known).
    """
    known = recurrence_known.float()
    bce = F.binary_cross_entropy_with_logits(
        recurrence_logits, recurrence_target.float(), reduction="none"
    )
    return (bce * known).sum() / known.sum().clamp_min(1.0)


# --------------------------------------------------------------------------- fusion losses
def alignment_loss(h_img: Tensor, h_clin: Tensor) -> Tensor:
    """Modality alignment loss, 4D-ACFNet Eq. (3): ``-1/B sum_i cos(h_img_i, h_clin_i)``.

    Parameters
    ----------
    h_img, h_clin : Tensor ``[B, E]``

    Returns
    -------
    Tensor
        Scalar in ``[-1, 1]``; -1 when every pair is parallel.
    """
    return -F.cosine_similarity(h_img, h_clin, dim=1, eps=1e-8).mean()


STAR_MODES = ("normalised", "mapped", "clamped")


def star_alignment_loss(
    h_img: Tensor,
    h_clin: Tensor,
    h_recon: Tensor,
    eps: float = 0.1,
    mode: str = "normalised",
) -> Tensor:
    """STAR's reconstruction-normalised alignment (STAR Algorithm 1, line 9), made safe.

    Published form: ``L = -mean cos(h_img, h_clin) / mean cos(h_img, h_recon)``.

    Why the published form collapses: the denominator is itself a function of the weights, so
    gradient descent lowers ``L`` just as well by shrinking the image-reconstruction agreement
    as by raising the image-clinical agreement. With the agreement mapped to ``[0, 1]`` the
    ratio is unbounded as the denominator approaches 0, so that direction wins: measured on the
    cpu profile, ``cos(h_img, h_recon)`` reached -0.999 within ~60 steps, ``L`` sat at its bound
    ``-1/eps`` and made up ~45% of the total loss (it drove early stopping and the scheduler).
    The sign, the epsilon and the normalisation are not the cause; the gradient path through
    the denominator is.

    Modes
    -----
    ``"normalised"`` (default)
        The denominator is a *normaliser*, not an objective: it is detached (stop-gradient), so
        the loss only ever pulls ``h_img`` towards ``h_clin``, with a strength inversely
        proportional to the current image-reconstruction agreement. Both cosines mapped to
        ``(1 + cos) / 2``; ``L = -mean(a) / (sg(mean(b)) + eps)`` in ``[-1/eps, 0]``.
    ``"mapped"``
        The same formula without the stop-gradient (the published gradient; it collapses as
        described above; kept to reproduce the failure).
    ``"clamped"``
        Raw cosines, the denominator's magnitude clamped to at least ``eps`` with its sign
        kept (also without stop-gradient).

    Parameters
    ----------
    h_img, h_clin, h_recon : Tensor ``[B, E]``
    eps : float
        Denominator guard (dimensionless).
    mode : {"normalised", "mapped", "clamped"}

    Examples
    --------
    >>> h = torch.randn(4, 8, requires_grad=True)
    >>> r = torch.randn(4, 8, requires_grad=True)
    >>> star_alignment_loss(h, torch.randn(4, 8), r).backward()
    >>> bool(r.grad.abs().sum() == 0)  # no gradient reaches the reconstruction agreement
    True
    """
    a = F.cosine_similarity(h_img, h_clin, dim=1, eps=1e-8).mean()
    b = F.cosine_similarity(h_img, h_recon, dim=1, eps=1e-8).mean()
    if mode == "normalised":
        return -((1 + a) / 2) / ((1 + b.detach()) / 2 + eps)
    if mode == "mapped":
        return -((1 + a) / 2) / ((1 + b) / 2 + eps)
    if mode == "clamped":
        sign = torch.where(b >= 0, torch.ones_like(b), -torch.ones_like(b))
        return -a / (sign * b.abs().clamp_min(eps))
    raise ValueError(f"unknown STAR alignment mode {mode!r}; use one of {STAR_MODES}")


def covariance(rows: Tensor) -> Tensor:
    """Unbiased covariance of ``rows`` ``[N, d]`` (``d x d``); divisor ``max(N - 1, 1)``.

    For ``N = 1`` the centred row is 0 and so is the covariance (finite, zero gradient).
    """
    centred = rows - rows.mean(dim=0, keepdim=True)
    return centred.T @ centred / max(rows.shape[0] - 1, 1)


def disentanglement_loss(
    h_img: Tensor,
    h_clin: Tensor,
    memory_img: Tensor | None = None,
    memory_clin: Tensor | None = None,
) -> Tensor:
    """Modality disentanglement loss, 4D-ACFNet Eq. (4): ``||Cov(H_img) - Cov(H_clin)||_F / d^2``.

    Parameters
    ----------
    h_img, h_clin : Tensor ``[B, d]``
        Current embeddings (the gradient flows through these rows).
    memory_img, memory_clin : Tensor ``[M, d]``, optional
        Detached embeddings of recent batches (see :class:`EmbeddingMemory`).

    Notes
    -----
    Batch-size-1 choice: the papers train with B = 1, where a batch covariance is undefined.
    ``H`` here is the current rows stacked under the memory rows, ``[M + B, d]``; the memory is
    detached, so the gradient reaches only the current rows, as in a MoCo-style queue. With an
    empty memory and B = 1 the loss is 0 (no covariance can be estimated from one row).
    """
    if memory_img is not None and memory_img.numel():
        h_img = torch.cat([memory_img.detach().to(h_img), h_img], dim=0)
    if memory_clin is not None and memory_clin.numel():
        h_clin = torch.cat([memory_clin.detach().to(h_clin), h_clin], dim=0)
    d = h_img.shape[1]
    diff = covariance(h_img) - covariance(h_clin)
    # Frobenius norm with a tiny floor inside the sqrt: finite gradient at diff = 0.
    return torch.sqrt((diff**2).sum() + 1e-12) / d**2


DIS_MODES = ("paper", "xcorr")


def cross_correlation_loss(
    h_img: Tensor,
    h_clin: Tensor,
    memory_img: Tensor | None = None,
    memory_clin: Tensor | None = None,
    eps: float = 1e-12,
) -> Tensor:
    """Scale-correct disentanglement: squared cross-correlation of the two modalities.

    ``L = ||Corr(H_img, H_clin)||_F^2 / d`` with ``Corr = Z_img^T Z_clin / (N - 1)`` ``[d, d]``
    and ``Z`` the column-standardised rows (mean 0, standard deviation 1 over the ``N`` rows of
    the current batch stacked under the detached memory, as in
    :func:`disentanglement_loss`).

    Why: Eq. (4) of 4D-ACFNet, ``||Cov(H_img) - Cov(H_clin)||_F / d^2``, depends on the raw
    scale of the embeddings and divides by ``d^2``; at the cpu profile's widths it is ~3e-4
    with a gradient norm ~1e-5 against ~1 for the survival loss, so ablation C changes
    nothing. This form is dimensionless (each entry a correlation in ``[-1, 1]``; ``L`` is
    about ``d / N`` for independent embeddings, ``d`` at most) and penalises what the papers'
    text says the term is for: information shared by the image and clinical embeddings
    ("preserving modality-specific information", STAR section 3.3). Choice: cross-correlation
    (decorrelation of the modalities) rather than a correlation-matrix version of Eq. (4).

    Parameters
    ----------
    h_img, h_clin : Tensor ``[B, d]``
    memory_img, memory_clin : Tensor ``[M, d]``, optional
        Detached rows of recent batches (:class:`EmbeddingMemory`).
    eps : float
        Variance floor of the standardisation (tiny: the form must not depend on the scale).

    Returns
    -------
    Tensor
        Scalar >= 0; 0 when fewer than 2 rows are available.

    Examples
    --------
    >>> x = torch.randn(64, 4)
    >>> float(cross_correlation_loss(x, x)) > float(cross_correlation_loss(x, torch.randn(64, 4)))
    True
    """
    if memory_img is not None and memory_img.numel():
        h_img = torch.cat([memory_img.detach().to(h_img), h_img], dim=0)
    if memory_clin is not None and memory_clin.numel():
        h_clin = torch.cat([memory_clin.detach().to(h_clin), h_clin], dim=0)
    n, d = h_img.shape
    if n < 2:
        return h_img.sum() * 0.0

    def standardise(x: Tensor) -> Tensor:
        x = x - x.mean(dim=0, keepdim=True)
        return x / torch.sqrt(x.pow(2).sum(dim=0, keepdim=True) / (n - 1) + eps)

    corr = standardise(h_img).T @ standardise(h_clin) / (n - 1)
    return corr.pow(2).sum() / d


class EmbeddingMemory(nn.Module):
    """A FIFO of detached embeddings (two streams), the batch of ``L_dis`` at B = 1.

    Parameters
    ----------
    dim : int
        Embedding width ``d``.
    size : int
        Rows kept per stream (default 32).
    n_streams : int
        Number of parallel streams (2: image and clinical).

    The buffers are part of the ``state_dict`` (so a checkpoint resumes the memory). They are
    updated only in training mode, after the loss is computed, and only with the rows of the
    current batch (detached).
    """

    def __init__(self, dim: int, size: int = 32, n_streams: int = 2) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("bank", torch.zeros(n_streams, size, dim))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    def get(self, stream: int) -> Tensor:
        """The valid rows ``[min(count, size), d]`` of one stream, oldest first."""
        n = int(self.count.clamp(max=self.size))
        return self.bank[stream, self.size - n :]

    @torch.no_grad()
    def push(self, *rows: Tensor) -> None:
        """Append one ``[B, d]`` tensor per stream (rolls out the oldest rows)."""
        for s, r in enumerate(rows):
            r = r.detach().to(self.bank)[-self.size :]
            b = r.shape[0]
            self.bank[s] = torch.cat([self.bank[s, b:], r], dim=0)
        self.count += rows[0].shape[0]


def info_nce(
    z_a: Tensor, z_b: Tensor, negatives: Tensor | None = None, temperature: float = 0.1
) -> Tensor:
    """InfoNCE between two views: row ``i`` of ``z_a`` should match row ``i`` of ``z_b``.

    ``L = CE(cos(z_a, [z_b; negatives]) / temperature, arange(B))``, averaged over ``z_a`` rows.

    Parameters
    ----------
    z_a, z_b : Tensor ``[B, d]``
    negatives : Tensor ``[M, d]``, optional
        Extra (detached) negatives, e.g. a memory of past ``z_b``.
    temperature : float

    Notes
    -----
    With B = 1 and no negatives the only logit is the positive one and the loss is exactly 0
    (no contrast exists); STG at batch size 1 therefore relies on ``negatives``.
    """
    a = F.normalize(z_a, dim=1)
    b = F.normalize(z_b, dim=1)
    if negatives is not None and negatives.numel():
        b = torch.cat([b, F.normalize(negatives.detach().to(b), dim=1)], dim=0)
    logits = a @ b.T / temperature
    return F.cross_entropy(logits, torch.arange(a.shape[0], device=a.device))


# --------------------------------------------------------------------------- total
def total_loss(
    outputs: dict,
    batch: dict,
    weights: dict[str, float] | None = None,
    objective: str = "paper",
) -> tuple[Tensor, dict[str, float]]:
    """Weighted multi-task loss, 4D-ACFNet Eq. (6) / STAR Eq. (2) plus model-specific terms.

    ``L = w_surv L_surv + w_recur L_recur + sum_k w_k loss_terms[k]``.

    Parameters
    ----------
    outputs : dict
        A model's output (``survival_logits``, ``recurrence_logits``, ``aux["loss_terms"]``;
        ``aux["loss_weights"]`` where the model carries its own lambdas, e.g. STAR).
    batch : dict
        Needs ``survival_bin`` (12 survival classes) or ``os_years`` (13 classes:
        :func:`survival_labels`), ``recurrence_target``; ``os_event`` and ``recurrence_known``
        for ``objective="censored"``.
    weights : dict, optional
        Overrides, merged over ``DEFAULT_WEIGHTS`` and the model's ``aux["loss_weights"]``
        (precedence: argument > model > defaults). A term with no weight gets weight 1.
    objective : {"paper", "censored"}
        ``"paper"``: plain cross-entropies (censoring ignored, as published);
        ``"censored"``: :func:`censored_survival_nll` + :func:`censored_recurrence_bce`.

    Returns
    -------
    loss : Tensor
        Scalar with gradient.
    parts : dict[str, float]
        Unweighted value of every term (``surv``, ``recur`` and each loss term), ``total``, and
        the model's diagnostics ``aux["monitor"]`` (e.g. ``cos_img_recon``), which are logged
        in the training history but never enter ``loss``.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; use one of {OBJECTIVES}")
    aux = outputs.get("aux", {})
    w = dict(DEFAULT_WEIGHTS)
    w.update(aux.get("loss_weights", {}) or {})
    w.update(weights or {})
    surv_logits = outputs["survival_logits"]
    rec_logits = outputs["recurrence_logits"]
    labels = survival_labels(batch, surv_logits.shape[1]).to(surv_logits.device)
    if objective == "paper":
        l_surv = paper_survival_ce(surv_logits, labels)
        l_rec = paper_recurrence_ce(rec_logits, batch["recurrence_target"].to(rec_logits))
    else:
        l_surv = censored_survival_nll(surv_logits, labels, batch["os_event"].to(surv_logits))
        l_rec = censored_recurrence_bce(
            rec_logits,
            batch["recurrence_target"].to(rec_logits),
            batch["recurrence_known"].to(rec_logits),
        )
    terms = {"surv": l_surv, "recur": l_rec, **aux.get("loss_terms", {})}
    loss = sum(w.get(k, 1.0) * v for k, v in terms.items())
    parts = {k: float(v.detach()) for k, v in terms.items()}
    parts["total"] = float(loss.detach())
    for k, v in (aux.get("monitor") or {}).items():  # diagnostics: logged, never optimised
        parts[k] = float(v.detach()) if isinstance(v, Tensor) else float(v)
    return loss, parts
