"""4D-ACFNet (ACM MM 2025) and its STAR variant (ICLR 2026 submission), one class.

Architecture (4D-ACFNet sections 3.1-3.3; STAR sections 3.1-3.3 repeat it):

1. **CT stem** (``CTStem``): three stride-2 3x3x3 conv blocks, ``[B,1,D,H,W] -> [B,C,D/8,H/8,W/8]``
   with ``C = 4 * width``. It sees the CT once per patient.
2. **Virtual timestamps**: ``t = 1..12`` embedded by ``nn.Embedding`` (``E_t``, width
   ``time_embed_dim``), broadcast over the grid and concatenated with the stem features,
   ``X~_t = [X_ct; E_t]`` ``[B, C+E_t, T, d, h, w]``.
3. **Spatiotemporal separable convolution**: 3x3x3 spatial conv (shared over t) -> GroupNorm ->
   GELU -> kernel-3 conv over t (the "3x1x1") -> GroupNorm -> GELU. See
   ``common.separable_param_counts`` for the parameter comparison behind the paper's "41%".
   *Efficient form*: because the 12 copies are the same CT, the first spatial conv is computed
   as ``Conv_X(X)`` once plus an exact, border-aware per-t bias map (``common.TimeEmbeddedConv``);
   ``efficient=False`` runs the stem and the conv on 12 copies (identical outputs, tested).
   Everything per-t runs at 1/8 resolution, so the per-t part is cheap.
4. **Attention across timesteps** (Eq. 1): tokens are the 12 timesteps; each token is the
   global-average-pooled spatiotemporal descriptor ``[C]`` concatenated with ``E_t``; Q, K, V are
   linear maps to ``embed_dim``; ``A = softmax(QK^T / sqrt(d_k))`` ``[B, T, T]``. Per-timestep
   weights ``a_t = mean_q A[q, t]`` (``aux["attention"]`` ``[B, 12]``) aggregate the values,
   ``h_img = W_o sum_t a_t V_t`` (equal to the query-mean of ``A V``). Choice: pooled
   descriptors rather than per-location tokens -- 12 tokens, the paper's "features of each
   timestep", and cheap at any grid.
5. **Reconstruction** (transposed convolution): per timestep, a stride-2 ``ConvTranspose3d``
   from the 1/8 features to 1/4 resolution then a 1x1x1 conv and tanh give a reconstructed map
   ``aux["reconstruction"]`` ``[B, T, 1, D/4, H/4, W/4]`` (reduced resolution by choice: the
   maps feed only the ReconEncoder; a full-resolution decoder would cost more than the whole
   trunk). A shared-weight **ReconEncoder** (two stride-2 conv blocks + pooling + linear) per
   timestep and an ``nn.TransformerEncoder`` over t (mean over tokens) give ``h_recon``.
6. **ClinEncoder** (MLP) -> ``h_clin``; **gated fusion** (Eq. 2); **heads** (section 3.3).

Loss terms (unweighted, ``aux["loss_terms"]``): ``align`` (Eq. 3; STAR: Algorithm 1 line 9,
``losses.star_alignment_loss``, by default with the stop-gradient denominator that keeps the
image-reconstruction agreement from collapsing), ``dis`` (``dis_mode="paper"``: Eq. 4 with a
detached memory bank for B = 1, ``losses.disentanglement_loss``; ``dis_mode="xcorr"``: the
scale-correct cross-correlation form, ``losses.cross_correlation_loss``), optional ``recon``
(``recon_loss=True``: MSE between the mean reconstruction and the CT average-pooled to 1/4; the
papers give no reconstruction loss, so it is off by default).

Diagnostics (``aux["monitor"]``, logged per epoch in ``history.csv`` by ``train.fit``, never
optimised): ``cos_img_clin`` and, with the reconstruction branch, ``cos_img_recon`` (batch
means of the raw cosines).

**Clinical residuals** (``clinical_residual=True``, default; our addition, not in the papers):
a linear risk score ``r = w^T x_clin`` enters the survival logits as
``logit_k += r * s_k`` with ``s_k = 1 - 2k / (K - 1)`` over the ``K`` survival classes (``+1``
in year 1 to ``-1`` in the last class: the class beyond year 12 by default, year 12 in the
papers' 12-class softmax), so a higher ``r`` moves the predicted year of death earlier,
monotonically, like a Cox linear predictor; a second score ``r_rec = v^T x_clin`` is added to
every year's recurrence logit before the heads' cumulative transform (to the discrete hazard
logits by default; higher ``r_rec``: higher probability of recurrence by every year).
:meth:`ACFNet.anchor_clinical` initialises ``w`` and ``v`` with penalised Cox models of OS and
DFS fitted on the training rows only (``train.fit`` is not involved;
``evaluation.fit_predict_torch`` calls it before training)
and, with ``anchored_start=True`` (default), starts both heads at that anchor: zero last-layer
weights and the training rows' Kaplan-Meier baseline as biases
(``heads.PrognosisHeads.start_at_baseline``), so that before the first step
the network *is* the Cox model (KM baseline shifted by the linear predictor) on both heads. The
network then learns what the image and the non-linear clinical path add to that anchor.
Reason: at the cpu profile's budget (~50 optimiser steps per fold) the multi-task network does
not reach even the linear clinical model from a random start (measured: 0.571 vs Cox 0.609, OS
Harrell C); with the OS residual alone the randomly initialised heads still added noise of the
size of the clinical signal (OS 0.553 vs Cox 0.557), and the recurrence head, without a
residual, ranked DFS at 0.494 against Cox's 0.651 (``benchmarks/acfnet_vs_cox.py`` has the
numbers after the change). ``clinical_residual=False`` is the papers' network (no residual, no
anchored start).

Ablation switches (4D-ACFNet Table 2 / STAR ablation "A+B+C+D"):

- ``attention4d`` (A): False -> plain 3D CNN trunk (stem + one 3x3x3 block + pooling), no time;
- ``clinical``: False -> image only (no clinical encoder, no clinical residual): the papers'
  "3D-CNN" base row, which has no multimodal fusion (4D-ACFNet section 4.4); B and C need it;
- ``align`` (B): alignment loss; ``disentangle`` (C): disentanglement loss;
- ``reconstruction`` (D): our reading of STAR's D is the reconstruction branch -- transposed
  convolutions, ReconEncoder + Transformer, ``h_recon`` in the fusion -- together with the STAR
  normalisation of the alignment that only exists with ``h_recon``. With D off, ``star`` falls
  back to Eq. (3).

A switch that is off removes its loss term from ``loss_terms`` (and its parameters).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import MASK_NAMES, ModelConfig
from ..losses import (
    DEFAULT_WEIGHTS,
    DIS_MODES,
    EmbeddingMemory,
    alignment_loss,
    cross_correlation_loss,
    disentanglement_loss,
    star_alignment_loss,
)
from .common import (
    ClinEncoder,
    ConvBlock3d,
    CTStem,
    GatedFusion,
    LesionAnchor,
    LesionPool,
    PatchDecoder,
    Stride2Conv3d,
    TemporalConv,
    TimeEmbeddedConv,
    group_norm,
    image_input,
    lesion_summary,
)
from .heads import RECURRENCE_FORMS, SURVIVAL_CLASSES, PrognosisHeads, survival_class_count


def window_burden(masks: Tensor) -> Tensor:
    """SEG tumour burden of the input window, ``log((T + 1) / (L + 1))`` with ``T`` tumour and
    ``L`` liver voxels of ``masks`` ``[B, K, D, H, W]`` (``config.MASK_NAMES`` order) -> ``[B]``."""
    m = masks.float()
    tumour = m[:, MASK_NAMES.index("tumour")].sum(dim=(1, 2, 3))
    liver = m[:, MASK_NAMES.index("liver")].sum(dim=(1, 2, 3))
    return torch.log((tumour + 1.0) / (liver + 1.0))


#: Scale of :func:`window_intensity`: the CT input spans the preprocessing window on [-1, 1], so
#: one unit is half the window's width (200 HU for the default 400 HU window); times 10 gives
#: units of 20 HU, about one standard deviation of the tumours' mean between patients.
INTENSITY_SCALE = 10.0


def window_intensity(ct: Tensor, masks: Tensor) -> tuple[Tensor, Tensor]:
    """First-order statistics of the CT inside the SEG tumour mask of the input window.

    ``ct`` ``[B, 1, D, H, W]`` (the model's CT input), ``masks`` ``[B, K, D, H, W]`` ->
    (``[B, 2]`` mean and standard deviation of the tumour voxels times
    :data:`INTENSITY_SCALE`, ``[B]`` 1 where the window holds at least two tumour voxels, else
    0: those rows carry no target)."""
    m = masks[:, MASK_NAMES.index("tumour")].float()
    x = ct[:, 0].float()
    n = m.sum(dim=(1, 2, 3))
    mean = (x * m).sum(dim=(1, 2, 3)) / n.clamp(min=1.0)
    var = ((x - mean.view(-1, 1, 1, 1)) ** 2 * m).sum(dim=(1, 2, 3)) / n.clamp(min=1.0)
    stats = torch.stack([mean, var.clamp(min=0).sqrt()], dim=1) * INTENSITY_SCALE
    return stats, (n >= 2).to(stats)


class TimestepAttention(nn.Module):
    """Scaled dot-product attention over the T timestep tokens (4D-ACFNet Eq. 1).

    ``desc`` ``[B, T, C]`` and ``e_t`` ``[T, E_t]`` -> ``h_img`` ``[B, E]``, weights ``[B, T]``.
    """

    def __init__(self, c_in: int, c_time: int, embed_dim: int) -> None:
        super().__init__()
        self.q = nn.Linear(c_in + c_time, embed_dim)
        self.k = nn.Linear(c_in + c_time, embed_dim)
        self.v = nn.Linear(c_in + c_time, embed_dim)
        self.out = nn.Linear(embed_dim, embed_dim)
        self.scale = 1.0 / math.sqrt(embed_dim)

    def forward(self, desc: Tensor, e_t: Tensor) -> tuple[Tensor, Tensor]:
        tokens = torch.cat([desc, e_t.unsqueeze(0).expand(desc.shape[0], -1, -1)], dim=2)
        q, k, v = self.q(tokens), self.k(tokens), self.v(tokens)
        attn = torch.softmax(q @ k.transpose(1, 2) * self.scale, dim=-1)  # [B, Tq, Tk]
        weights = attn.mean(dim=1)  # [B, T]: mean over queries
        h = self.out(torch.einsum("bt,bte->be", weights, v))
        return h, weights


class ReconEncoder(nn.Module):
    """Per-timestep encoder of a reconstructed map: ``[N, 1, d, h, w] -> [N, E]``.

    The timesteps are folded into the batch (``N = B * T``). The first, 1-channel stride-2
    conv is a :class:`~crlm_lib.models.common.Stride2Conv3d`: its input (the reconstruction)
    needs a gradient, and oneDNN's backward-data kernel for one channel would dominate the
    branch on CPU; same parameters and values as ``nn.Conv3d``.
    """

    def __init__(self, width: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            ConvBlock3d(1, width, 2, conv=Stride2Conv3d),
            ConvBlock3d(width, 2 * width, 2),
            nn.AdaptiveAvgPool3d(1),
            nn.Flatten(),
            nn.Linear(2 * width, embed_dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@dataclass(frozen=True)
class ACFNetOptions:
    """The switches and settings of :class:`ACFNet` (every keyword of its constructor).

    ``ACFNet(n_clinical, cfg, attention4d=False)`` and
    ``ACFNet(n_clinical, cfg, ACFNetOptions(attention4d=False))`` build the same network;
    ``build_model`` passes a spec's option dict as keywords. Validated on construction
    (unknown mask channel or ``dis_mode``, alignment or disentanglement without the clinical
    input: ``ValueError``).

    Attributes
    ----------
    efficient : bool
        Shared-CT form of the time-embedded conv (default) vs the 12-copy form.
    attention4d, align, disentangle, reconstruction : bool
        Ablation switches A, B, C, D.
    clinical : bool
        Use the clinical input (ClinEncoder, fusion, residual). False: image-only base row.
    star : bool
        Use STAR's reconstruction-normalised alignment (needs ``reconstruction``).
    star_eps, star_mode : float, str
        See ``losses.star_alignment_loss`` (default ``"normalised"``: stop-gradient denominator).
    dis_mode : {"paper", "xcorr"}
        ``L_dis`` form: Eq. (4) or the scale-correct cross-correlation.
    clinical_residual : bool
        Linear clinical risk terms in the survival and recurrence logits (module docstring).
    anchored_start : bool
        With the residual: :meth:`anchor_clinical` also starts the heads at the anchor (zero
        last-layer weights, Kaplan-Meier baseline biases). No effect without the residual.
    lambdas : tuple of 4 floats, optional
        STAR Eq. (2) ``lambda_1..4`` (surv, recur, align, dis), reported in
        ``aux["loss_weights"]`` for ``losses.total_loss``; default Eq. (6) weights.
    recon_loss : bool
        Add ``loss_terms["recon"]`` (see module docstring).
    memory_size : int
        Rows of the ``L_dis`` memory bank.
    transformer_layers, transformer_heads : int
        Depth and heads of the ``h_recon`` Transformer.
    burden_target : bool
        Auxiliary target (our addition; on by default, ``False`` in the papers' network): a
        linear map of ``h_img`` predicts the
        window's SEG tumour burden ``log((T + 1) / (L + 1))`` (``T`` tumour and ``L`` liver
        voxels of the input crop, from ``batch["masks"]``), loss term ``burden`` (Huber). A
        training signal for the image branch from the segmentation every patient has; at test
        time nothing but the CT (and the mask channels, if any) is read.
    mask_channels : tuple of str
        Segmentation masks (names of ``config.MASK_NAMES``) fed to the stem as extra input
        channels beside the CT; default ``("liver", "tumour")``. The papers refine the
        segmentation labels in preprocessing without saying whether the network reads them;
        ``()`` reads the CT alone (the ``*_noanchor`` variants of ``evaluation.specs``).
    lesion_pooling : bool
        Our addition (default on; off in the papers' network): a
        :class:`~crlm_lib.models.common.LesionPool` descriptor -- the CT and its square (the
        first two intensity moments) and the first two stem blocks' features, averaged inside
        the SEG tumour and liver masks and projected to ``E`` -- is added
        to ``h_img``. Needs the masks in the batch (``batch["masks"]``), not as input channels.
    intensity_target : bool
        Auxiliary target (our addition, default on; off in the papers' network): a linear map
        of ``h_img`` predicts the mean and standard deviation of the CT inside the SEG tumour
        mask of the input window (:func:`window_intensity`), loss term ``intensity`` (Huber;
        rows whose window holds no tumour are left out). Like the burden target it is computed
        from the inputs every patient has; it asks the image embedding to carry the tumours'
        attenuation, the first-order radiomics a radiologist reads, which the masks do not.
    survival_classes, recurrence_form : str
        The heads' forms (:class:`~crlm_lib.models.heads.PrognosisHeads`): by default a 13th
        survival class beyond year 12 and a discrete-hazard recurrence head (monotone);
        ``"published12"`` and ``"independent"`` are the papers' forms.
    head_lr_scale : float
        Learning-rate multiplier of the prognosis heads (:meth:`param_groups`; our addition,
        default 10, 1 in the papers' network). The anchored heads start with zero last-layer
        weights; turning the image embedding into a risk needs weights of order one, which
        AdamW at the base rate (a step of about ``lr`` per parameter) does not reach in the
        cpu profile's ~150 steps.
    lesion_anchor : bool
        Our addition (default on; off in the papers' network; needs the clinical residual):
        linear risk terms on the lesion set's summary (count, largest volume, the tumours'
        first-order HU at the source resolution: :class:`~crlm_lib.models.common.LesionAnchor`)
        added to the clinical residuals of both heads and fitted with them in one ridge Cox
        model by :meth:`anchor_clinical` (``image=`` the rows from :meth:`calibrate_image`). The
        network then starts as a clinical-radiological Cox model; the untrained (step 0) row of
        the controls shows what the anchor alone ranks, the trained row what training adds.

    Why the defaults read the masks and carry the burden target: with the CT alone, the
    anchored heads and the GroupNorm before the global pooling, the trained network's
    predictions did not move when the CT was permuted among test patients (cross-validated OS
    C 0.586 both ways, 12 epochs, cpu profile of the synthetic cohort); with both, the
    permutation costs 0.036 OS C (95% interval 0.011 to 0.066), i.e. the network uses the
    image (``benchmarks/acfnet_vs_cox.py``; notebook 06's control table).
    """

    efficient: bool = True
    attention4d: bool = True
    align: bool = True
    disentangle: bool = True
    reconstruction: bool = True
    clinical: bool = True
    star: bool = False
    star_eps: float = 0.1
    star_mode: str = "normalised"
    dis_mode: str = "paper"
    clinical_residual: bool = True
    anchored_start: bool = True
    lambdas: tuple[float, float, float, float] | None = None
    recon_loss: bool = False
    memory_size: int = 32
    transformer_layers: int = 1
    transformer_heads: int = 2
    mask_channels: tuple[str, ...] = ("liver", "tumour")
    burden_target: bool = True
    lesion_pooling: bool = True
    intensity_target: bool = True
    head_lr_scale: float = 10.0
    lesion_anchor: bool = True
    survival_classes: str = SURVIVAL_CLASSES[0]
    recurrence_form: str = RECURRENCE_FORMS[0]

    def __post_init__(self) -> None:
        object.__setattr__(self, "mask_channels", tuple(self.mask_channels))
        unknown = [m for m in self.mask_channels if m not in MASK_NAMES]
        if unknown:
            raise ValueError(f"unknown mask channels {unknown}; choose from {MASK_NAMES}")
        if not self.clinical and (self.align or self.disentangle):
            raise ValueError(
                "ACFNet(clinical=False) is the image-only base row: the alignment (B) and "
                "disentanglement (C) losses need the clinical embedding; set align=False and "
                "disentangle=False"
            )
        if self.dis_mode not in DIS_MODES:
            raise ValueError(f"unknown dis_mode {self.dis_mode!r}; use one of {DIS_MODES}")


class ACFNet(nn.Module):
    """4D-ACFNet / STAR. See the module docstring for the architecture and every choice.

    Parameters
    ----------
    n_clinical : int
        Width ``F`` of ``batch["clinical"]``.
    cfg : ModelConfig
        ``width`` (stem ``w``), ``embed_dim`` (E), ``time_embed_dim`` (E_t), ``n_years`` (T).
    options : ACFNetOptions, optional
        The switches and settings (default ``ACFNetOptions()``: full 4D-ACFNet with the Cox
        anchor, the mask channels and the auxiliary targets).
    **overrides
        Fields of :class:`ACFNetOptions` replacing those of ``options``
        (``ACFNet(6, cfg, attention4d=False)``).
    """

    def __init__(
        self,
        n_clinical: int,
        cfg: ModelConfig | None = None,
        options: ACFNetOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        o = replace(options or ACFNetOptions(), **overrides)
        self.options = o
        self.mask_channels = tuple(MASK_NAMES.index(m) for m in o.mask_channels)
        w, e, et, t = cfg.width, cfg.embed_dim, cfg.time_embed_dim, cfg.n_years
        self.n_years = t
        self.efficient = o.efficient
        self.attention4d = o.attention4d
        self.align = o.align
        self.disentangle = o.disentangle
        self.reconstruction = o.reconstruction
        self.star = o.star
        self.star_eps = o.star_eps
        self.star_mode = o.star_mode
        self.use_clinical = o.clinical
        self.dis_mode = o.dis_mode
        self.recon_loss = o.recon_loss and o.reconstruction
        self.anchored_start = o.anchored_start and o.clinical and o.clinical_residual
        self.anchor_betas: dict[str, np.ndarray] = {}
        lam = o.lambdas or tuple(DEFAULT_WEIGHTS[k] for k in ("surv", "recur", "align", "dis"))
        self.loss_weights = dict(zip(("surv", "recur", "align", "dis"), map(float, lam)))

        # Submodules in a fixed order (their initialisation draws from the RNG in this order).
        self.stem = CTStem(w, in_channels=1 + len(self.mask_channels))
        self._build_image_branch(self.stem.out_channels, e, et, t)
        if o.reconstruction:
            c = self.stem.out_channels
            self._build_reconstruction(c, w, e, et, o.transformer_heads, o.transformer_layers)
        n_surv = survival_class_count(t, o.survival_classes)
        self._build_clinical(n_clinical, e, n_surv, o.clinical and o.clinical_residual)
        self.fusion = GatedFusion(use_recon=o.reconstruction)
        self.heads = PrognosisHeads(
            e, n_years=t, survival_classes=o.survival_classes, recurrence_form=o.recurrence_form
        )
        self.memory = EmbeddingMemory(e, o.memory_size) if o.disentangle else None
        self.burden_head = nn.Linear(e, 1) if o.burden_target else None
        self.intensity_head = nn.Linear(e, 2) if o.intensity_target else None
        self.head_lr_scale = float(o.head_lr_scale)
        regions = (MASK_NAMES.index("tumour"), MASK_NAMES.index("liver"))
        self.lesion_pool = LesionPool((2, w, 2 * w), regions, e) if o.lesion_pooling else None
        anchor = o.lesion_anchor and self.clin_residual is not None
        self.lesion_anchor = LesionAnchor() if anchor else None

    def _build_image_branch(self, c: int, e: int, et: int, t: int) -> None:
        """Switch A: the 4D spatio-temporal block with timestep attention, or one 3D conv."""
        if self.attention4d:
            self.time_embed = nn.Embedding(t, et)
            self.st_spatial = TimeEmbeddedConv(c, et, c)
            self.st_norm1 = group_norm(c)
            self.temporal = TemporalConv(c, c)
            self.st_norm2 = group_norm(c)
            self.attention = TimestepAttention(c, et, e)
            self.gradcam_layer: nn.Module | None = self.temporal
        else:
            self.spatial = ConvBlock3d(c, c, 1)
            self.img_proj = nn.Linear(c, e)
            self.gradcam_layer = self.spatial[0]

    def _build_reconstruction(
        self, c: int, w: int, e: int, et: int, heads: int, layers: int
    ) -> None:
        """Switch D / the reconstruction branch: decoder, ReconEncoder and its transformer."""
        self.decoder = PatchDecoder(c, w)  # ConvT(2, s2) -> GELU -> 1x1x1 -> tanh
        self.recon_encoder = ReconEncoder(w, e)
        self.recon_pos = nn.Linear(et, e) if self.attention4d else None
        layer = nn.TransformerEncoderLayer(
            e, heads, dim_feedforward=2 * e, dropout=0.0, activation="gelu", batch_first=True
        )
        self.recon_transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def _build_clinical(self, n_clinical: int, e: int, n_surv: int, residual: bool) -> None:
        """Switch B's clinical encoder and the Cox-anchored clinical residuals of both heads
        (``n_surv``: the survival classes the residual's profile spans)."""
        self.clin_encoder = ClinEncoder(n_clinical if self.use_clinical else 0, e)
        # Linear clinical risk r = w^T x and its year profile s_k (+1 .. -1); zero-initialised,
        # so without anchor_clinical the network starts as the papers' one. The recurrence
        # head's r_rec = v^T x shifts every year's recurrence logit the same way.
        make = residual and n_clinical > 0
        self.clin_residual = nn.Linear(n_clinical, 1, bias=False) if make else None
        self.clin_residual_rec = nn.Linear(n_clinical, 1, bias=False) if make else None
        for res in (self.clin_residual, self.clin_residual_rec):
            if res is not None:
                nn.init.zeros_(res.weight)
        profile = torch.linspace(1.0, -1.0, n_surv)
        self.register_buffer("residual_profile", profile, persistent=False)

    # ------------------------------------------------------------------ trunk
    def _spatiotemporal(self, ct: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``ct`` -> per-timestep features ``[B*T, C, d, h, w]``, ``E_t`` ``[T, E_t]`` and the
        stem's first two block outputs (one copy per patient, for the lesion pooling)."""
        b, t = ct.shape[0], self.n_years
        e_t = self.time_embed(torch.arange(t, device=ct.device))
        if self.efficient:
            feats = self.stem.forward_all(ct)
            y = self.st_spatial(feats[-1], e_t)  # [B, T, C, d, h, w]
        else:
            feats = self.stem.forward_all(ct.repeat_interleave(t, dim=0))
            y = self.st_spatial.forward_copies(feats[-1], e_t)
            feats = [f[::t] for f in feats]
        y = nn.functional.gelu(self.st_norm1(y.flatten(0, 1)))  # [B*T, C, d, h, w]
        y = y.view(b, t, *y.shape[1:]).transpose(1, 2)  # [B, C, T, d, h, w]
        y = self.temporal(y)
        y = y.transpose(1, 2).flatten(0, 1)  # [B*T, C, d, h, w]
        return nn.functional.gelu(self.st_norm2(y)), e_t, feats[:2]

    def forward(self, batch: dict) -> dict:
        """See ``docs/interfaces.md``: ``ct`` ``[B,1,D,H,W]``, ``clinical`` ``[B,F]`` -> logits."""
        ct = image_input(batch, self.mask_channels)
        aux: dict = {}
        h_img, per_t, e_t = self._image_embedding(ct, batch, aux)
        clinical = batch["clinical"].to(ct)
        h_clin = self.clin_encoder(clinical)
        terms: dict[str, Tensor] = {}
        monitor: dict[str, Tensor] = {}
        h_recon = None
        if self.reconstruction:
            h_recon = self._reconstruct(per_t, e_t, ct, h_img, aux, terms, monitor)
        self._fusion_terms(batch, ct, (h_img, h_clin, h_recon), terms, monitor)
        h = self.fusion(h_img, h_clin, h_recon)
        surv_offset, rec_offset = self._residual_offsets(batch, clinical, aux)
        rec_logits, surv_logits = self.heads(h, rec_offset, surv_offset)
        aux.update(
            h_img=h_img,
            h_clin=h_clin,
            h_fused=h,
            loss_terms=terms,
            loss_weights=dict(self.loss_weights),
            monitor=monitor,
        )
        return {"recurrence_logits": rec_logits, "survival_logits": surv_logits, "aux": aux}

    def _image_embedding(
        self, ct: Tensor, batch: dict, aux: dict
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``h_img`` ``[B, E]`` (switch A's attention over the timesteps, or the plain 3D
        trunk; plus the lesion-pooling descriptor), the per-timestep features ``[B*T, C, d, h,
        w]`` (``T = 1`` without A) and ``E_t`` (``None`` without A); the attention weights go
        to ``aux["attention"]``."""
        b = ct.shape[0]
        if self.attention4d:
            per_t, e_t, feats = self._spatiotemporal(ct)
            desc = per_t.mean(dim=(2, 3, 4)).view(b, self.n_years, -1)
            h_img, weights = self.attention(desc, e_t)
            aux["attention"] = weights
        else:
            feats = self.stem.forward_all(ct)
            per_t = self.spatial(feats[-1])  # [B, C, d, h, w], T = 1
            e_t = None
            h_img = self.img_proj(per_t.mean(dim=(2, 3, 4)))
        if self.lesion_pool is not None:
            if "masks" not in batch:
                raise ValueError(
                    "lesion_pooling=True averages the stem features inside the SEG masks, but "
                    "the batch has no 'masks' (build the model with lesion_pooling=False)"
                )
            h_img = h_img + self.lesion_pool(_pool_inputs(ct, feats), batch["masks"].to(ct))
        return h_img, per_t, e_t

    def _reconstruct(
        self, per_t: Tensor, e_t: Tensor | None, ct: Tensor, h_img: Tensor, aux: dict,
        terms: dict, monitor: dict,
    ) -> Tensor:  # fmt: skip
        """Switch D: per-timestep reconstructions, ``h_recon`` ``[B, E]`` (returned), the
        image-reconstruction agreement (``monitor``) and the optional ``recon`` loss term."""
        b, t = ct.shape[0], (self.n_years if e_t is not None else 1)
        rec = self.decoder(per_t)  # [B*T, 1, D/4, H/4, W/4]
        tokens = self.recon_encoder(rec).view(b, t, -1)
        if self.recon_pos is not None:
            tokens = tokens + self.recon_pos(e_t).unsqueeze(0)
        h_recon = self.recon_transformer(tokens).mean(dim=1)
        rec = rec.view(b, t, *rec.shape[1:])
        aux["reconstruction"] = rec
        aux["h_recon"] = h_recon
        monitor["cos_img_recon"] = (
            nn.functional.cosine_similarity(h_img, h_recon, dim=1).mean().detach()
        )
        if self.recon_loss:
            target = nn.functional.avg_pool3d(ct[:, :1], 4)
            terms["recon"] = ((rec.mean(dim=1) - target) ** 2).mean()
        return h_recon

    def _fusion_terms(
        self, batch: dict, ct: Tensor, embeddings: tuple, terms: dict, monitor: dict
    ) -> None:
        """The loss terms on the embeddings ``(h_img, h_clin, h_recon)``: alignment (B),
        disentanglement (C; the memory bank is updated in training), the auxiliary burden and
        intensity targets; the image-clinical agreement goes to ``monitor``."""
        h_img, h_clin, h_recon = embeddings
        if self.use_clinical:
            monitor["cos_img_clin"] = (
                nn.functional.cosine_similarity(h_img, h_clin, dim=1).mean().detach()
            )
        if self.align:
            if self.star and h_recon is not None:
                terms["align"] = star_alignment_loss(
                    h_img, h_clin, h_recon, eps=self.star_eps, mode=self.star_mode
                )
            else:
                terms["align"] = alignment_loss(h_img, h_clin)
        if self.memory is not None:
            dis_fn = cross_correlation_loss if self.dis_mode == "xcorr" else disentanglement_loss
            terms["dis"] = dis_fn(h_img, h_clin, self.memory.get(0), self.memory.get(1))
            if self.training:
                self.memory.push(h_img, h_clin)
        if self.burden_head is not None and "masks" in batch:
            terms["burden"] = nn.functional.huber_loss(
                self.burden_head(h_img).squeeze(1), window_burden(batch["masks"])
            )
        if self.intensity_head is not None and "masks" in batch:
            stats, has = window_intensity(batch["ct"], batch["masks"].to(ct))
            err = nn.functional.huber_loss(self.intensity_head(h_img), stats, reduction="none")
            terms["intensity"] = (err.mean(dim=1) * has).sum() / has.sum().clamp(min=1.0)

    def _residual_offsets(
        self, batch: dict, clinical: Tensor, aux: dict
    ) -> tuple[Tensor | None, Tensor | None]:
        """The Cox-anchored linear risk terms of the survival and recurrence logits (clinical
        residuals plus the lesion anchor; ``None`` without them), reported in ``aux``."""
        lesion_os = lesion_dfs = 0.0
        if self.lesion_anchor is not None:
            lesion_os, lesion_dfs = self.lesion_anchor(batch)
            aux["lesion_risk"] = lesion_os.squeeze(1)
        surv_offset = rec_offset = None
        if self.clin_residual is not None:
            risk = self.clin_residual(clinical) + lesion_os  # [B, 1]
            surv_offset = risk * self.residual_profile
            aux["clinical_risk"] = risk.squeeze(1)
        if self.clin_residual_rec is not None:
            rec_offset = self.clin_residual_rec(clinical) + lesion_dfs  # [B, 1]
            aux["clinical_recurrence_risk"] = rec_offset.squeeze(1)
        return surv_offset, rec_offset

    def param_groups(self, lr: float) -> list[dict]:
        """AdamW parameter groups: the prognosis heads at ``lr * head_lr_scale``, the rest at
        ``lr`` (one group when the scale is 1)."""
        heads = list(self.heads.parameters())
        if self.head_lr_scale == 1.0:
            return [{"params": list(self.parameters()), "lr": lr}]
        ids = {id(p) for p in heads}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [{"params": rest, "lr": lr}, {"params": heads, "lr": lr * self.head_lr_scale}]

    @torch.no_grad()
    def calibrate_image(self, batches) -> np.ndarray | None:
        """Standardise the lesion-pooling descriptor and the lesion anchor's summary with the
        patients of ``batches`` (the *training* rows, in order; an iterable of batch dicts with
        ``ct``, ``masks`` and the lesion set), see
        :class:`~crlm_lib.models.common.LesionPool` and
        :class:`~crlm_lib.models.common.LesionAnchor`.

        Returns the standardised lesion summaries ``[N, 5]`` of those patients, the ``image``
        argument of :meth:`anchor_clinical`; ``None`` without a lesion anchor. Nothing is done
        for a model with neither (or fewer than two patients)."""
        if self.lesion_pool is None and self.lesion_anchor is None:
            return None
        was_training = self.training
        self.eval()
        pooled, summaries = [], []
        for batch in batches:
            if self.lesion_pool is not None:
                ct = image_input(batch, self.mask_channels)
                feats = self.stem.forward_all(ct)
                pooled.append(self.lesion_pool.descriptor(_pool_inputs(ct, feats), batch["masks"]))
            if self.lesion_anchor is not None:
                summaries.append(
                    lesion_summary(batch["lesion_features"].float(), batch["lesion_mask"])
                )
        self.train(was_training)
        if pooled and sum(len(p) for p in pooled) >= 2:
            self.lesion_pool.calibrate(torch.cat(pooled))
        if not summaries:
            return None
        raw = torch.cat(summaries)
        if len(raw) >= 2:
            self.lesion_anchor.calibrate(raw)
        return ((raw - self.lesion_anchor.shift) / self.lesion_anchor.scale).numpy()

    @torch.no_grad()
    def anchor_clinical(
        self,
        clinical: np.ndarray,
        os_years: np.ndarray,
        os_event: np.ndarray,
        penalizer: float = 0.1,
        dfs_years: np.ndarray | None = None,
        dfs_event: np.ndarray | None = None,
        image: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Initialise the clinical residuals with penalised Cox models of the training rows.

        Parameters
        ----------
        clinical : array ``[N, F]``
            Encoded clinical features of the *training* patients (the rows the network is fit
            on; never validation or test rows).
        os_years : array ``[N]``
            Overall survival (years).
        os_event : array ``[N]``
            1 = death observed.
        penalizer : float
            Ridge penalty of lifelines ``CoxPHFitter`` (as ``models.clinical.CoxPH``).
        dfs_years, dfs_event : array ``[N]``, optional
            Disease-free survival (years) and its event (1 = recurrence or death). When given,
            a second ridge Cox model of DFS initialises the recurrence residual
            ``clin_residual_rec``; without them that residual stays at zero.
        image : array ``[N, 5]``, optional
            The training rows' standardised lesion summaries (:meth:`calibrate_image`). With a
            lesion anchor, each Cox model is fitted on ``[clinical, image]`` and its image
            coefficients start :class:`~crlm_lib.models.common.LesionAnchor`'s weights.

        Returns
        -------
        array ``[F]`` or None
            The OS coefficients of the clinical columns written into ``clin_residual`` (zero
            for constant columns);
            ``None`` when the model has no residual or the fit is impossible (no event).
            The DFS coefficients are kept in ``self.anchor_betas["dfs"]``.

        Notes
        -----
        The Cox log hazard ratio ``beta^T x`` is used as ``r`` directly: the year profile
        ``s_k`` then shifts ``r`` logits between year 1 and year 12 per unit of ``r``, which
        ranks patients as the Cox model does (C-index) and leaves the scale to training.
        For recurrence, ``v^T x`` (the DFS log hazard ratio) is added to every year's logit
        (the discrete hazard logit of the default head, the cumulative logit of the papers'
        sigmoids): a Cox model is exactly a common shift of ``log(-log(1 - F_k))``; on either
        logit scale the common shift keeps the Cox model's ranking at every year (the DFS risk
        of ``metrics.risk_from_recurrence`` is ``Q`` at year 3).

        With ``anchored_start=True`` (the default of a residual model) the network also *starts*
        as the anchor: the last layer of each head gets zero weights and, as biases, the
        training rows' Kaplan-Meier baseline (log mass of each survival class, ``S(12)`` for
        the class beyond year 12; logit of the KM yearly DFS hazard for the hazard recurrence
        head, of the cumulative DFS event probability for the papers' independent sigmoids:
        ``heads.km_survival_bias``, ``heads.km_recurrence_bias``). At the first step the
        prediction is then exactly "KM baseline shifted by the Cox linear predictor"; training
        adds what the image and the non-linear clinical path explain. Without it the randomly initialised heads add a patient-specific
        noise of the size of the Cox signal that ~50 optimiser steps do not remove (see
        ``benchmarks/acfnet_vs_cox.py``).
        """
        if self.clin_residual is None:
            return None
        x = np.asarray(clinical, dtype=float)
        if x.ndim != 2 or x.shape[1] != self.clin_residual.in_features:
            return None
        n_clin = x.shape[1]
        with_image = self.lesion_anchor is not None and image is not None
        if with_image:
            x = np.hstack([x, np.asarray(image, dtype=float).reshape(len(x), -1)])
        beta = _ridge_cox(x, os_years, os_event, penalizer)
        if beta is None:
            return None
        self.anchor_betas = {"os": beta}
        _write_weight(self.clin_residual, beta[:n_clin])
        if with_image:
            _write_weight(self.lesion_anchor.os, beta[n_clin:])
        have_dfs = dfs_years is not None and dfs_event is not None
        beta_dfs = _ridge_cox(x, dfs_years, dfs_event, penalizer) if have_dfs else None
        if beta_dfs is not None and self.clin_residual_rec is not None:
            self.anchor_betas["dfs"] = beta_dfs
            _write_weight(self.clin_residual_rec, beta_dfs[:n_clin])
            if with_image:
                _write_weight(self.lesion_anchor.dfs, beta_dfs[n_clin:])
        if self.anchored_start:
            dfs = (dfs_years, dfs_event) if have_dfs else (None, None)
            self.heads.start_at_baseline(os_years, os_event, *dfs)
        return beta[:n_clin]


def _pool_inputs(ct: Tensor, feats: list[Tensor]) -> list[Tensor]:
    """What :class:`LesionPool` averages: the CT and its square (the first two intensity
    moments inside each mask) and the first two stem blocks' outputs."""
    x = ct[:, :1]
    return [torch.cat([x, x * x], dim=1), *feats[:2]]


def _ridge_cox(x: np.ndarray, years, event, penalizer: float) -> np.ndarray | None:
    """Coefficients ``[F]`` of a lifelines ridge ``CoxPHFitter`` (0 for constant columns);
    ``None`` without an event."""
    import pandas as pd
    from lifelines import CoxPHFitter

    events = np.asarray(event, dtype=float)
    if events.sum() < 1:
        return None
    keep = x.std(axis=0) > 1e-8
    frame = pd.DataFrame(x[:, keep], columns=[f"x{j}" for j in np.flatnonzero(keep)])
    frame["T"] = np.maximum(np.asarray(years, dtype=float), 1e-6)
    frame["E"] = events
    cph = CoxPHFitter(penalizer=penalizer).fit(frame, duration_col="T", event_col="E")
    beta = np.zeros(x.shape[1])
    beta[keep] = cph.params_.to_numpy()
    return beta


def _write_weight(layer: nn.Linear, beta: np.ndarray) -> None:
    layer.weight.copy_(torch.as_tensor(beta, dtype=layer.weight.dtype).view(1, -1))


def build_acfnet(n_clinical: int, cfg: ModelConfig, **options) -> ACFNet:
    """4D-ACFNet: all four switches on, Eq. (3) alignment."""
    return ACFNet(n_clinical, cfg, **options)


def build_star(n_clinical: int, cfg: ModelConfig, **options) -> ACFNet:
    """STAR: the 4D-ACFNet trunk with the reconstruction-normalised alignment (Alg. 1 l. 9)."""
    options.setdefault("star", True)
    return ACFNet(n_clinical, cfg, **options)
