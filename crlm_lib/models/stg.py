"""STG: heterogeneous spatiotemporal graph network (Zhu et al., arXiv 2505.03123 v1).

Only the paper's summary is available; what it states (heterogeneous graph of CT-derived and
clinical nodes, spatial-topology and cross-modal edges, GraphSAGE, supervised + contrastive
losses, recurrence-risk regression with survival analysis, a lightweight variant with 78.55%
fewer parameters) is implemented as follows, every detail below being our choice:

**Graph per patient** (``torch_geometric.data.HeteroData``, batched with ``Batch``):

- ``anat``: 5 anatomical nodes (liver, remnant, hepatic, portal, tumour; ``MASK_NAMES`` order),
  each the masked CT ``ct * mask_k`` encoded by one MONAI 3D ResNet-18 shared across the five
  (shared weights: the five regions are the same kind of image content; a per-type encoder
  would multiply the encoder parameters by 5), plus a learned node-type embedding;
- ``ct``: 1 whole-CT node from a second 3D ResNet-18;
- ``clin``: 1 clinical node (MLP of the clinical vector).

Encoders end in multi-scale pooling: adaptive average pooling of the last stage to 1, 2 and 4
cells per axis, concatenated (``73 C``) and mapped linearly to the node width.

**Edges**: ``ct -> anat`` (spatial topology: the whole CT contains each region) and the
cross-modal edges ``clin <-> anat`` and ``clin <-> ct`` in both directions.

**Message passing**: ``HeteroConv`` of one ``SAGEConv`` (mean aggregation) per edge type,
summed per destination type, GELU, 2 layers.

**Readout**: per graph, ``[mean(anat); ct; clin]`` -> linear -> ``h`` ``[B, E]`` -> the 12-bin
heads of 4D-ACFNet and a scalar risk head.

**Loss terms**:

- ``risk``: ``sigmoid(risk_head(h))`` regressed (MSE) on ``1 - min(dfs_years, 12) / 12`` over
  patients with an observed recurrence (``dfs_event = 1``; censored patients carry no target);
  absent when the batch has no ``dfs_years`` (inference);
- ``contrastive``: InfoNCE between the imaging view ``(mean(anat) + ct) / 2`` and the clinical
  view ``clin`` of the same patient, other patients in the batch and a detached memory of
  recent clinical views as negatives (``losses.info_nce``); 0 at B = 1 with an empty memory.

**stg_lite** (``lite=True``): one ResNet-10 shared by all six imaging nodes (the whole-CT
encoder is removed), one SAGE layer. With equal widths its parameter count is ~22% of
``stg`` (~78% fewer; the paper reports 78.55%), measured in ``tests/models/test_stg.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import resnet10, resnet18
from torch import Tensor, nn
from torch_geometric.data import Batch, HeteroData
from torch_geometric.nn import HeteroConv, SAGEConv, global_mean_pool

from ..config import MASK_NAMES, ModelConfig
from ..losses import EmbeddingMemory, info_nce
from .common import PrognosisHeads, batchnorm_to_groupnorm

EDGE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("ct", "contains", "anat"),
    ("clin", "informs", "anat"),
    ("anat", "informs", "clin"),
    ("clin", "informs", "ct"),
    ("ct", "informs", "clin"),
)
SCALES: tuple[int, ...] = (1, 2, 4)


class MultiScaleResNetEncoder(nn.Module):
    """MONAI 3D ResNet trunk + multi-scale pooling: ``[N, 1, D, H, W] -> [N, node_dim]``."""

    def __init__(self, depth: int, widen_factor: float, node_dim: int) -> None:
        super().__init__()
        factory = {10: resnet10, 18: resnet18}[depth]
        self.net = factory(
            spatial_dims=3,
            n_input_channels=1,
            feed_forward=False,
            widen_factor=widen_factor,
            pretrained=False,
        )
        batchnorm_to_groupnorm(self.net)  # batch-size independent (B = 1, 1x1x1 last stage)
        c = self.net.layer4[-1].conv2.out_channels
        self.proj = nn.Linear(c * sum(s**3 for s in SCALES), node_dim)

    def feature_map(self, x: Tensor) -> Tensor:
        """Last-stage features ``[N, C, d, h, w]``."""
        r = self.net
        x = r.act(r.bn1(r.conv1(x)))
        if not r.no_max_pool:
            x = r.maxpool(x)
        return r.layer4(r.layer3(r.layer2(r.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:
        fm = self.feature_map(x)
        pooled = [F.adaptive_avg_pool3d(fm, s).flatten(1) for s in SCALES]
        return self.proj(torch.cat(pooled, dim=1))


class STG(nn.Module):
    """STG / STG-lite. See the module docstring.

    Parameters
    ----------
    n_clinical : int
    cfg : ModelConfig
        ``embed_dim`` is the node width and the fused width.
    lite : bool
        The lightweight variant.
    widen_factor : float, optional
        Encoder channel multiplier (default ``cfg.width / 16``: standard ResNet at the paper
        profile).
    n_layers : int, optional
        SAGE layers (default 2, lite 1).
    temperature : float
        InfoNCE temperature.
    memory_size : int
        Negatives kept for the contrastive term.
    weights_path : str, optional
        Local ``state_dict`` to load (never downloaded).
    """

    def __init__(
        self,
        n_clinical: int,
        cfg: ModelConfig | None = None,
        lite: bool = False,
        widen_factor: float | None = None,
        n_layers: int | None = None,
        temperature: float = 0.1,
        memory_size: int = 32,
        weights_path: str | None = None,
    ) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        nd = cfg.embed_dim
        widen = widen_factor if widen_factor is not None else cfg.width / 16
        self.lite = lite
        self.temperature = temperature
        self.anat_encoder = MultiScaleResNetEncoder(10 if lite else 18, widen, nd)
        self.ct_encoder = None if lite else MultiScaleResNetEncoder(18, widen, nd)
        self.node_type = nn.Embedding(len(MASK_NAMES), nd)
        self.clin_encoder = nn.Sequential(
            nn.Linear(max(n_clinical, 1), nd), nn.GELU(), nn.Linear(nd, nd)
        )
        self.n_clinical = n_clinical
        n_layers = n_layers if n_layers is not None else (1 if lite else 2)
        self.convs = nn.ModuleList(
            HeteroConv({et: SAGEConv((nd, nd), nd) for et in EDGE_TYPES}, aggr="sum")
            for _ in range(n_layers)
        )
        self.readout = nn.Linear(3 * nd, nd)
        self.heads = PrognosisHeads(nd, n_years=cfg.n_years)
        self.risk_head = nn.Linear(nd, 1)
        self.memory = EmbeddingMemory(nd, memory_size, n_streams=1)
        self.gradcam_layer: nn.Module | None = self.anat_encoder.net.layer4
        if weights_path:
            self.load_state_dict(torch.load(weights_path, map_location="cpu"))

    @staticmethod
    def _graph(anat: Tensor, ct: Tensor, clin: Tensor) -> HeteroData:
        g = HeteroData()
        g["anat"].x, g["ct"].x, g["clin"].x = anat, ct, clin
        n = anat.shape[0]
        to_anat = torch.stack([torch.zeros(n, dtype=torch.long), torch.arange(n)])
        from_anat = to_anat.flip(0)
        single = torch.zeros(2, 1, dtype=torch.long)
        g["ct", "contains", "anat"].edge_index = to_anat
        g["clin", "informs", "anat"].edge_index = to_anat.clone()
        g["anat", "informs", "clin"].edge_index = from_anat
        g["clin", "informs", "ct"].edge_index = single
        g["ct", "informs", "clin"].edge_index = single.clone()
        return g

    def forward(self, batch: dict) -> dict:
        ct = batch["ct"].float()
        if "masks" not in batch:
            raise KeyError("STG needs batch['masks'] [B, 5, D, H, W] (MASK_NAMES order)")
        masks = batch["masks"].to(ct)
        b, k = masks.shape[:2]
        anat = self.anat_encoder((ct * masks).reshape(b * k, 1, *ct.shape[-3:]))
        anat = anat.view(b, k, -1) + self.node_type.weight[:k].unsqueeze(0)
        ct_node = (self.ct_encoder or self.anat_encoder)(ct)  # [B, nd]
        clinical = batch["clinical"].to(ct)
        if self.n_clinical == 0:
            clinical = clinical.new_zeros(b, 1)
        clin_node = self.clin_encoder(clinical)
        graphs = [self._graph(anat[i], ct_node[i : i + 1], clin_node[i : i + 1]) for i in range(b)]
        data = Batch.from_data_list(graphs).to(ct.device)
        x, edges = data.x_dict, data.edge_index_dict
        for i, conv in enumerate(self.convs):
            out = conv(x, edges)
            x = {key: F.gelu(v) + x[key] if i else F.gelu(v) for key, v in out.items()}
        anat_mean = global_mean_pool(x["anat"], data["anat"].batch, size=b)
        z_img = (anat_mean + x["ct"]) / 2
        z_clin = x["clin"]
        h = self.readout(torch.cat([anat_mean, x["ct"], z_clin], dim=1))
        rec, surv = self.heads(h)
        terms: dict[str, Tensor] = {
            "contrastive": info_nce(z_img, z_clin, self.memory.get(0), self.temperature)
        }
        if self.training:
            self.memory.push(z_clin)
        risk = torch.sigmoid(self.risk_head(h)).squeeze(1)
        if "dfs_years" in batch and "dfs_event" in batch:
            years = batch["dfs_years"].to(ct).view(-1)
            event = batch["dfs_event"].to(ct).view(-1)
            target = 1.0 - years.clamp(0, 12) / 12
            terms["risk"] = ((risk - target) ** 2 * event).sum() / event.sum().clamp_min(1.0)
        aux = {
            "h_img": z_img,
            "h_clin": z_clin,
            "h_fused": h,
            "risk": risk,
            "loss_terms": terms,
        }
        return {"recurrence_logits": rec, "survival_logits": surv, "aux": aux}
