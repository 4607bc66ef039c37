"""AMINN: autoencoder-based multiple-instance network (Chen et al., MICCAI 2021).

One patient is one bag of lesions, each described by its radiomic feature vector
(``batch["lesion_features"]`` ``[B, L, F_les]``, valid rows in ``batch["lesion_mask"]``
``[B, L]``). Following the published model:

- an autoencoder ``F_les -> 64 -> 32 -> 16 -> 8`` and mirrored ``8 -> 16 -> 32 -> 64 -> F_les``
  (ReLU, linear output); its masked mean-squared reconstruction error is
  ``loss_terms["recon"]``, weighted 1:1 with the outcome loss by ``losses.DEFAULT_WEIGHTS``;
- three ``Dense(32)`` layers (ReLU) on the 8-d code of each lesion;
- multiple-instance pooling over the valid lesions: ``"mean"`` (default, the published
  choice), ``"max"`` or ``"attention"`` (Ilse et al. 2018 gated-free attention);
- the 12-bin recurrence and survival heads of 4D-ACFNet replace AMINN's binary output so the
  model shares the evaluation of the other models.

``use_clinical=True`` concatenates ``h_clin`` (ClinEncoder, width 32) to the bag embedding
(off by default: AMINN is imaging-only). A patient without lesions gets a zero bag embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from .common import ClinEncoder
from .heads import RECURRENCE_FORMS, SURVIVAL_CLASSES, PrognosisHeads


def _mlp(sizes: list[int], last_act: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or last_act:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AMINN(nn.Module):
    """AMINN with 12-bin heads. See the module docstring.

    Parameters
    ----------
    n_clinical : int
    n_lesion_features : int
        ``F_les``.
    cfg : ModelConfig
        Only ``n_years`` is used (AMINN's widths are the published ones).
    pooling : {"mean", "max", "attention"}
    use_clinical : bool
    survival_classes, recurrence_form : str
        The heads' forms (:class:`~crlm_lib.models.heads.PrognosisHeads`).
    """

    def __init__(
        self,
        n_clinical: int,
        n_lesion_features: int,
        cfg: ModelConfig | None = None,
        pooling: str = "mean",
        use_clinical: bool = False,
        survival_classes: str = SURVIVAL_CLASSES[0],
        recurrence_form: str = RECURRENCE_FORMS[0],
    ) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        if pooling not in ("mean", "max", "attention"):
            raise ValueError(f"unknown AMINN pooling {pooling!r}")
        self.pooling = pooling
        self.encoder = _mlp([n_lesion_features, 64, 32, 16, 8], last_act=True)
        self.decoder = _mlp([8, 16, 32, 64, n_lesion_features], last_act=False)
        self.instance = _mlp([8, 32, 32, 32], last_act=True)
        self.attn = (
            nn.Sequential(nn.Linear(32, 16), nn.Tanh(), nn.Linear(16, 1))
            if pooling == "attention"
            else None
        )
        self.clin_encoder = ClinEncoder(n_clinical, 32) if use_clinical else None
        self.heads = PrognosisHeads(
            64 if use_clinical else 32,
            n_years=cfg.n_years,
            survival_classes=survival_classes,
            recurrence_form=recurrence_form,
        )
        self.gradcam_layer: nn.Module | None = None

    def forward(self, batch: dict) -> dict:
        x = batch["lesion_features"].float()  # [B, L, F]
        mask = batch["lesion_mask"].to(x.device).bool()  # [B, L]
        code = self.encoder(x)
        recon = self.decoder(code)
        m = mask.unsqueeze(-1).to(x)
        n_valid = (m.sum() * x.shape[-1]).clamp_min(1.0)
        terms = {"recon": (((recon - x) ** 2) * m).sum() / n_valid}
        inst = self.instance(code)  # [B, L, 32]
        if self.pooling == "mean":
            bag = (inst * m).sum(1) / m.sum(1).clamp_min(1.0)
            weights = m.squeeze(-1) / m.squeeze(-1).sum(1, keepdim=True).clamp_min(1.0)
        elif self.pooling == "max":
            bag = inst.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)
            bag = torch.where(mask.any(1, keepdim=True), bag, torch.zeros_like(bag))
            weights = None
        else:
            score = self.attn(inst).squeeze(-1).masked_fill(~mask, float("-inf"))
            weights = torch.softmax(score, dim=1).nan_to_num(0.0)
            bag = torch.einsum("bl,ble->be", weights, inst)
        aux: dict = {"h_img": bag, "loss_terms": terms}
        if weights is not None:
            aux["lesion_weights"] = weights
        if self.clin_encoder is not None:
            h_clin = self.clin_encoder(batch["clinical"].to(x))
            aux["h_clin"] = h_clin
            bag = torch.cat([bag, h_clin], dim=1)
        rec, surv = self.heads(bag)
        return {"recurrence_logits": rec, "survival_logits": surv, "aux": aux}


def build_aminn(
    n_clinical: int, cfg: ModelConfig, n_lesion_features: int | None = None, **options
) -> AMINN:
    """AMINN of the registry: ``AMINN(n_clinical, n_lesion_features, cfg, **options)``.

    Raises
    ------
    TypeError
        Without ``n_lesion_features`` (the width of the lesion features is the data's).
    """
    if n_lesion_features is None:
        raise TypeError("build_model('aminn', ...) needs n_lesion_features=F_les")
    return AMINN(n_clinical, n_lesion_features, cfg=cfg, **options)
