"""Baselines of the papers' comparisons: 3D CNN, 3D CNN + LSTM, MONAI 3D ResNets, clinical MLP.

- ``cnn3d`` (4D-ACFNet Table 1 "3D CNN only", ablation row "3D-CNN"): the 4D-ACFNet class with
  every switch off -- the same CT stem, one more 3x3x3 block, global average pooling, linear to
  ``embed_dim``, the same ClinEncoder and gated fusion (``sigma(g0) h_img + h_clin``) and the
  same heads. Keeping the clinical path makes the ablation rows "3D-CNN" and "3D-CNN + B"
  (``align=True``) differ only by the switched module. Options of ``ACFNet`` pass through.
- ``cnn3d_lstm`` (Table 1 "3D CNN + LSTM"): the stem and the time-embedded 3x3x3 conv of
  4D-ACFNet (efficient form) give per-timestep features; their pooled descriptors ``[B,T,C]``
  run through an LSTM over the 12 timesteps; the last hidden state is ``h_img``.
- ``resnet18_3d`` / ``resnet34_3d`` / ``resnet50_3d`` (STAR Table 1): MONAI ``resnet18`` etc.
  (``spatial_dims=3, n_input_channels=1``, ``num_classes=embed_dim``, random init, never
  downloaded; first convolution 7x7x7 with stride 1 along the slices and 2 in-plane, Hara et
  al.'s 3D ResNet that STAR cites -- ``stem_stride=1`` gives MONAI's default, stride 1 on every
  axis) as image encoder, the same clinical fusion and heads. ``widen_factor`` defaults
  to ``width / 16`` (1.0 -- the standard ResNet -- for the paper profile, 0.5 at smoke size);
  ``norm`` defaults to MONAI's BatchNorm as in the standard ResNet (at B = 1 the last stage
  needs more than one voxel: true at 40x128x128).
- ``clinical_mlp``: ClinEncoder + heads, the clinical-only anchor of the evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from monai.networks.nets import resnet18, resnet34, resnet50
from torch import Tensor, nn

from ..config import ModelConfig
from ..losses import alignment_loss
from .acfnet import ACFNet
from .common import (
    HARA_STEM_STRIDE,
    ClinEncoder,
    CTStem,
    GatedFusion,
    TimeEmbeddedConv,
    batchnorm_to_groupnorm,
    group_norm,
)
from .heads import RECURRENCE_FORMS, SURVIVAL_CLASSES, PrognosisHeads


def build_cnn3d(n_clinical: int, cfg: ModelConfig, **options) -> ACFNet:
    """3D CNN only: ``ACFNet(attention4d=False, reconstruction=False, align=False,
    disentangle=False)``; pass e.g. ``align=True`` for the ablation row "3D-CNN + B"."""
    for key in ("attention4d", "reconstruction", "align", "disentangle"):
        options.setdefault(key, False)
    return ACFNet(n_clinical, cfg, **options)


class CNN3DLSTM(nn.Module):
    """3D CNN + LSTM over the 12 virtual timesteps (4D-ACFNet Table 1).

    ``[B,1,D,H,W]`` -> stem ``[B,C,d,h,w]`` -> time-embedded conv ``[B,T,C,d,h,w]`` -> GroupNorm
    + GELU -> global average pool ``[B,T,C]`` -> LSTM (hidden ``embed_dim``) -> last hidden
    state ``h_img`` -> fusion with ``h_clin`` -> heads. ``align=True`` adds Eq. (3).
    ``survival_classes`` and ``recurrence_form``: the heads' forms
    (:class:`~crlm_lib.models.heads.PrognosisHeads`).
    """

    def __init__(
        self,
        n_clinical: int,
        cfg: ModelConfig | None = None,
        align: bool = False,
        survival_classes: str = SURVIVAL_CLASSES[0],
        recurrence_form: str = RECURRENCE_FORMS[0],
    ):
        super().__init__()
        cfg = cfg or ModelConfig()
        self.n_years = cfg.n_years
        self.align = align
        self.stem = CTStem(cfg.width)
        c = self.stem.out_channels
        self.time_embed = nn.Embedding(cfg.n_years, cfg.time_embed_dim)
        self.st_spatial = TimeEmbeddedConv(c, cfg.time_embed_dim, c)
        self.norm = group_norm(c)
        self.lstm = nn.LSTM(c, cfg.embed_dim, batch_first=True)
        self.clin_encoder = ClinEncoder(n_clinical, cfg.embed_dim)
        self.fusion = GatedFusion(use_recon=False)
        self.heads = PrognosisHeads(
            cfg.embed_dim,
            n_years=cfg.n_years,
            survival_classes=survival_classes,
            recurrence_form=recurrence_form,
        )
        self.gradcam_layer: nn.Module | None = self.stem.blocks[-1][0]

    def forward(self, batch: dict) -> dict:
        ct = batch["ct"].float()
        b, t = ct.shape[0], self.n_years
        e_t = self.time_embed(torch.arange(t, device=ct.device))
        y = self.st_spatial(self.stem(ct), e_t).flatten(0, 1)  # [B*T, C, d, h, w]
        desc = nn.functional.gelu(self.norm(y)).mean(dim=(2, 3, 4)).view(b, t, -1)
        _, (h_n, _) = self.lstm(desc)
        h_img = h_n[-1]
        h_clin = self.clin_encoder(batch["clinical"].to(ct))
        terms = {"align": alignment_loss(h_img, h_clin)} if self.align else {}
        rec, surv = self.heads(self.fusion(h_img, h_clin))
        aux = {"h_img": h_img, "h_clin": h_clin, "loss_terms": terms}
        return {"recurrence_logits": rec, "survival_logits": surv, "aux": aux}


_RESNETS = {"resnet18_3d": resnet18, "resnet34_3d": resnet34, "resnet50_3d": resnet50}


@dataclass(frozen=True)
class ResNet3DOptions:
    """The settings of :class:`ResNet3D` (every keyword of its constructor).

    Attributes
    ----------
    widen_factor : float, optional
        Channel multiplier of MONAI's ResNet (default ``cfg.width / 16``).
    norm : {"batch", "group"}
        ``"batch"`` (default, the standard ResNet) or ``"group"`` (every BatchNorm replaced by
        GroupNorm: batch-size independent, for B = 1 at small grids).
    stem_stride : int or tuple of 3 ints
        Stride of the 7x7x7 first convolution (default ``HARA_STEM_STRIDE`` = (1, 2, 2), Hara et
        al.; ``1`` is MONAI's default, 3-4x slower per step with the full grid after the stem).
    weights_path : str, optional
        Local ``state_dict`` of the whole model to load (never downloaded).
    survival_classes, recurrence_form : str
        The heads' forms (:class:`~crlm_lib.models.heads.PrognosisHeads`).
    """

    widen_factor: float | None = None
    norm: str = "batch"
    stem_stride: int | tuple[int, int, int] = HARA_STEM_STRIDE
    weights_path: str | None = None
    survival_classes: str = SURVIVAL_CLASSES[0]
    recurrence_form: str = RECURRENCE_FORMS[0]

    def __post_init__(self) -> None:
        if self.norm not in ("batch", "group"):
            raise ValueError(f"norm must be 'batch' or 'group', got {self.norm!r}")


class ResNet3D(nn.Module):
    """MONAI 3D ResNet image encoder + clinical fusion + heads (STAR Table 1 baselines).

    Parameters
    ----------
    name : {"resnet18_3d", "resnet34_3d", "resnet50_3d"}
    n_clinical : int
    cfg : ModelConfig
    options : ResNet3DOptions, optional
        Encoder and head settings (default ``ResNet3DOptions()``).
    **overrides
        Fields of :class:`ResNet3DOptions` replacing those of ``options``
        (``ResNet3D("resnet18_3d", 6, cfg, norm="group")``).
    """

    def __init__(
        self,
        name: str,
        n_clinical: int,
        cfg: ModelConfig | None = None,
        options: ResNet3DOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        o = replace(options or ResNet3DOptions(), **overrides)
        self.encoder = _RESNETS[name](
            spatial_dims=3,
            n_input_channels=1,
            num_classes=cfg.embed_dim,
            widen_factor=o.widen_factor if o.widen_factor is not None else cfg.width / 16,
            conv1_t_stride=o.stem_stride,
            pretrained=False,
        )
        if o.norm == "group":
            batchnorm_to_groupnorm(self.encoder)
        self.clin_encoder = ClinEncoder(n_clinical, cfg.embed_dim)
        self.fusion = GatedFusion(use_recon=False)
        self.heads = PrognosisHeads(
            cfg.embed_dim,
            n_years=cfg.n_years,
            survival_classes=o.survival_classes,
            recurrence_form=o.recurrence_form,
        )
        self.gradcam_layer: nn.Module | None = self.encoder.layer4
        if o.weights_path:
            self.load_state_dict(torch.load(o.weights_path, map_location="cpu"))

    def forward(self, batch: dict) -> dict:
        ct = batch["ct"].float()
        h_img = self.encoder(ct)
        h_clin = self.clin_encoder(batch["clinical"].to(ct))
        rec, surv = self.heads(self.fusion(h_img, h_clin))
        aux = {"h_img": h_img, "h_clin": h_clin, "loss_terms": {}}
        return {"recurrence_logits": rec, "survival_logits": surv, "aux": aux}


def build_resnet3d(n_clinical: int, cfg: ModelConfig, variant: str, **options) -> ResNet3D:
    """A MONAI 3D ResNet baseline of the registry (``variant``: ``"resnet18_3d"``, ...)."""
    return ResNet3D(variant, n_clinical, cfg, **options)


class ClinicalMLP(nn.Module):
    """Clinical-only discrete-time network: ClinEncoder -> the 4D-ACFNet heads.

    Ignores ``ct``; ``gradcam_layer`` is ``None``. ``survival_classes`` and
    ``recurrence_form``: the heads' forms (:class:`~crlm_lib.models.heads.PrognosisHeads`).
    """

    def __init__(
        self,
        n_clinical: int,
        cfg: ModelConfig | None = None,
        dropout: float = 0.0,
        survival_classes: str = SURVIVAL_CLASSES[0],
        recurrence_form: str = RECURRENCE_FORMS[0],
    ):
        super().__init__()
        cfg = cfg or ModelConfig()
        if n_clinical < 1:
            raise ValueError("clinical_mlp needs at least one clinical column")
        self.clin_encoder = ClinEncoder(n_clinical, cfg.embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.heads = PrognosisHeads(
            cfg.embed_dim,
            n_years=cfg.n_years,
            survival_classes=survival_classes,
            recurrence_form=recurrence_form,
        )
        self.gradcam_layer: nn.Module | None = None

    def forward(self, batch: dict) -> dict:
        clinical: Tensor = batch["clinical"].float()
        h_clin = self.clin_encoder(clinical)
        rec, surv = self.heads(self.dropout(nn.functional.gelu(h_clin)))
        aux = {"h_clin": h_clin, "loss_terms": {}}
        return {"recurrence_logits": rec, "survival_logits": surv, "aux": aux}
