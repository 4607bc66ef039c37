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
- ``clin``: 1 clinical node (MLP of the clinical vector);
- ``lesion``: one node per liver metastasis (the published model makes "each tumour a node";
  interpretation: up to ``L_MAX`` = 16 lesions, the largest kept, as ``data.dataset``). A
  lesion node is an MLP of that lesion's standardised radiomic features
  (``batch["lesion_features"]`` ``[B, L, F_les]``, ``data.lesions``: first-order HU and shape
  at the original resolution) -- the preprocessed cache keeps only the union tumour mask, so
  per-lesion image crops are not available to an image encoder; the ``tumour`` anatomical node
  still carries the image of all lesions together. Absent when ``n_lesion_features = 0`` or
  the batch has no lesion features (then 0 lesion nodes);
- ``time``: ``T`` = 12 temporal nodes, one per postoperative year, each a learned year
  embedding (the "temporal evolution" of the paper; interpretation: the same 12 virtual yearly
  timestamps as 4D-ACFNet/STAR, since the cohort has one preoperative CT per patient).

The encoders are MONAI 3D ResNets with Hara et al.'s stem (7x7x7, stride 1 along the slices and
2 in-plane, ``common.HARA_STEM_STRIDE``; ``stem_stride=1`` keeps MONAI's full-grid default).
Encoders end in multi-scale pooling: adaptive average pooling of the last stage to 1, 2 and 4
cells per axis, concatenated (``73 C``) and mapped linearly to the node width.

**Edges** (each type has its own SAGE weights; spatial and temporal edges are separate types,
our reading of "spatiotemporal decoupling"):

- spatial topology: ``ct -> anat`` (the whole CT contains each region), ``lesion <-> anat``
  (each lesion lies in the liver and is part of the tumour region; to/from the ``liver`` and
  ``tumour`` nodes), ``lesion <-> lesion`` (tumour distribution: the lesions of a patient as
  a complete graph -- the cache has no lesion positions, so no distance threshold is used);
- cross-modal: ``clin <-> anat``, ``clin <-> ct``, ``clin <-> lesion``;
- temporal: ``time -> time`` from year t to t+1 and from t+1 to t (two types), and the patient
  state flowing into every year: ``ct -> time``, ``clin -> time``, ``lesion -> time``.

**Message passing**: ``HeteroConv`` of one ``SAGEConv`` (mean aggregation) per edge type,
summed per destination type, GELU, 2 layers.

**Readout**: per graph, ``[mean(anat); ct; clin; mean(lesion)]`` (the last with lesion nodes
only) -> linear -> ``h`` ``[B, E]`` -> the 12-bin
heads of 4D-ACFNet and a scalar risk head. The temporal nodes add a per-year term: a linear map
of time node ``k`` gives ``(survival, recurrence)`` logit offsets of year ``k`` (shared over
years), so the year-wise outputs can differ by more than the heads' fixed per-year biases.

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

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.nets import resnet10, resnet18
from torch import Tensor, nn
from torch_geometric.data import Batch, HeteroData
from torch_geometric.nn import HeteroConv, SAGEConv, global_mean_pool

from ..config import MASK_NAMES, ModelConfig
from ..losses import EmbeddingMemory, info_nce
from .common import HARA_STEM_STRIDE, batchnorm_to_groupnorm
from .heads import RECURRENCE_FORMS, SURVIVAL_CLASSES, PrognosisHeads

EDGE_TYPES: tuple[tuple[str, str, str], ...] = (
    ("ct", "contains", "anat"),
    ("clin", "informs", "anat"),
    ("anat", "informs", "clin"),
    ("clin", "informs", "ct"),
    ("ct", "informs", "clin"),
    ("lesion", "lies_in", "anat"),
    ("anat", "contains", "lesion"),
    ("lesion", "near", "lesion"),
    ("clin", "informs", "lesion"),
    ("lesion", "informs", "clin"),
    ("time", "next", "time"),
    ("time", "prev", "time"),
    ("ct", "at", "time"),
    ("clin", "at", "time"),
    ("lesion", "at", "time"),
)
#: Anatomical nodes a lesion is connected to (indices in ``MASK_NAMES``).
LESION_ANAT: tuple[int, ...] = (MASK_NAMES.index("liver"), MASK_NAMES.index("tumour"))
SCALES: tuple[int, ...] = (1, 2, 4)


class MultiScaleResNetEncoder(nn.Module):
    """MONAI 3D ResNet trunk + multi-scale pooling: ``[N, 1, D, H, W] -> [N, node_dim]``."""

    def __init__(
        self,
        depth: int,
        widen_factor: float,
        node_dim: int,
        stem_stride: int | tuple[int, int, int] = HARA_STEM_STRIDE,
        survival_classes: str = SURVIVAL_CLASSES[0],
        recurrence_form: str = RECURRENCE_FORMS[0],
    ) -> None:
        super().__init__()
        factory = {10: resnet10, 18: resnet18}[depth]
        self.net = factory(
            spatial_dims=3,
            n_input_channels=1,
            feed_forward=False,
            widen_factor=widen_factor,
            conv1_t_stride=stem_stride,
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


@dataclass(frozen=True)
class STGOptions:
    """The settings of :class:`STG` (every keyword of its constructor).

    Attributes
    ----------
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
    n_lesion_features : int
        Width ``F_les`` of ``batch["lesion_features"]`` (0: no lesion nodes).
    stem_stride : int or tuple of 3 ints
        Stride of the encoders' first convolution (default ``HARA_STEM_STRIDE``; ``1``: MONAI's
        default, 3-4x slower per step).
    survival_classes, recurrence_form : str
        The heads' forms (:class:`~crlm_lib.models.heads.PrognosisHeads`); the time nodes'
        per-year terms enter before the hazard form's cumulative transform, and the class
        beyond year 12 has none.
    """

    lite: bool = False
    widen_factor: float | None = None
    n_layers: int | None = None
    temperature: float = 0.1
    memory_size: int = 32
    weights_path: str | None = None
    n_lesion_features: int = 0
    stem_stride: int | tuple[int, int, int] = HARA_STEM_STRIDE
    survival_classes: str = SURVIVAL_CLASSES[0]
    recurrence_form: str = RECURRENCE_FORMS[0]


class STG(nn.Module):
    """STG / STG-lite. See the module docstring.

    Parameters
    ----------
    n_clinical : int
    cfg : ModelConfig
        ``embed_dim`` is the node width and the fused width.
    options : STGOptions, optional
        Variant, encoder and graph settings (default ``STGOptions()``: STG without lesion
        nodes).
    **overrides
        Fields of :class:`STGOptions` replacing those of ``options``
        (``STG(6, cfg, lite=True, n_lesion_features=8)``).
    """

    def __init__(
        self,
        n_clinical: int,
        cfg: ModelConfig | None = None,
        options: STGOptions | None = None,
        **overrides: Any,
    ) -> None:
        super().__init__()
        cfg = cfg or ModelConfig()
        o = replace(options or STGOptions(), **overrides)
        lite, n_lesion_features, stem_stride = o.lite, o.n_lesion_features, o.stem_stride
        nd = cfg.embed_dim
        widen = o.widen_factor if o.widen_factor is not None else cfg.width / 16
        self.lite = lite
        self.temperature = o.temperature
        self.anat_encoder = MultiScaleResNetEncoder(10 if lite else 18, widen, nd, stem_stride)
        self.ct_encoder = None if lite else MultiScaleResNetEncoder(18, widen, nd, stem_stride)
        self.node_type = nn.Embedding(len(MASK_NAMES), nd)
        self.clin_encoder = nn.Sequential(
            nn.Linear(max(n_clinical, 1), nd), nn.GELU(), nn.Linear(nd, nd)
        )
        self.n_clinical = n_clinical
        self.n_lesion_features = n_lesion_features
        self.lesion_encoder = (
            nn.Sequential(nn.Linear(n_lesion_features, nd), nn.GELU(), nn.Linear(nd, nd))
            if n_lesion_features > 0
            else None
        )
        self.n_years = cfg.n_years
        self.time_embed = nn.Embedding(cfg.n_years, nd)
        self.time_head = nn.Linear(nd, 2)
        n_layers = o.n_layers if o.n_layers is not None else (1 if lite else 2)
        self.edge_types = tuple(
            et for et in EDGE_TYPES if n_lesion_features > 0 or "lesion" not in (et[0], et[2])
        )
        self.convs = nn.ModuleList(
            HeteroConv({et: SAGEConv((nd, nd), nd) for et in self.edge_types}, aggr="sum")
            for _ in range(n_layers)
        )
        self.readout = nn.Linear((4 if n_lesion_features > 0 else 3) * nd, nd)
        self.heads = PrognosisHeads(
            nd,
            n_years=cfg.n_years,
            survival_classes=o.survival_classes,
            recurrence_form=o.recurrence_form,
        )
        self.risk_head = nn.Linear(nd, 1)
        self.memory = EmbeddingMemory(nd, o.memory_size, n_streams=1)
        self.gradcam_layer: nn.Module | None = self.anat_encoder.net.layer4
        if o.weights_path:
            self.load_state_dict(torch.load(o.weights_path, map_location="cpu"))

    @staticmethod
    def _graph(anat: Tensor, ct: Tensor, clin: Tensor, lesion: Tensor, time: Tensor) -> HeteroData:
        """One patient's graph: ``anat`` ``[K, nd]``, ``ct`` / ``clin`` ``[1, nd]``, ``lesion``
        ``[L, nd]`` (L may be 0), ``time`` ``[T, nd]``."""
        g = HeteroData()
        g["anat"].x, g["ct"].x, g["clin"].x = anat, ct, clin
        g["lesion"].x, g["time"].x = lesion, time
        n, n_les, n_t = anat.shape[0], lesion.shape[0], time.shape[0]

        def one_to_all(k: int) -> Tensor:  # node 0 of a singleton type -> k nodes
            return torch.stack([torch.zeros(k, dtype=torch.long), torch.arange(k)])

        g["ct", "contains", "anat"].edge_index = one_to_all(n)
        g["clin", "informs", "anat"].edge_index = one_to_all(n)
        g["anat", "informs", "clin"].edge_index = one_to_all(n).flip(0)
        single = torch.zeros(2, 1, dtype=torch.long)
        g["clin", "informs", "ct"].edge_index = single
        g["ct", "informs", "clin"].edge_index = single.clone()
        # lesions: lie in the liver and the tumour region; complete graph among them
        lesion_ids = torch.arange(n_les).repeat_interleave(len(LESION_ANAT))
        anat_ids = torch.tensor(LESION_ANAT, dtype=torch.long).repeat(n_les)
        g["lesion", "lies_in", "anat"].edge_index = torch.stack([lesion_ids, anat_ids])
        g["anat", "contains", "lesion"].edge_index = torch.stack([anat_ids, lesion_ids])
        src, dst = torch.meshgrid(torch.arange(n_les), torch.arange(n_les), indexing="ij")
        off = src != dst
        g["lesion", "near", "lesion"].edge_index = torch.stack([src[off], dst[off]])
        g["clin", "informs", "lesion"].edge_index = one_to_all(n_les)
        g["lesion", "informs", "clin"].edge_index = one_to_all(n_les).flip(0)
        # temporal chain and the patient state at every year
        years = torch.arange(n_t - 1)
        g["time", "next", "time"].edge_index = torch.stack([years, years + 1])
        g["time", "prev", "time"].edge_index = torch.stack([years + 1, years])
        g["ct", "at", "time"].edge_index = one_to_all(n_t)
        g["clin", "at", "time"].edge_index = one_to_all(n_t)
        les_t, t_les = torch.meshgrid(torch.arange(n_les), torch.arange(n_t), indexing="ij")
        g["lesion", "at", "time"].edge_index = torch.stack([les_t.reshape(-1), t_les.reshape(-1)])
        return g

    def _lesion_nodes(self, batch: dict, ct: Tensor, clin_node: Tensor) -> list[Tensor]:
        """Each patient's lesion nodes ``[L_i, nd]``: the encoded lesion features of the lesions
        present (``batch["lesion_mask"]``, features cast to ``ct``'s type); none without lesion
        features."""
        b, nd = clin_node.shape
        if self.lesion_encoder is None or "lesion_features" not in batch:
            return [clin_node.new_zeros(0, nd) for _ in range(b)]
        feats = batch["lesion_features"].to(ct)  # [B, L, F_les]
        if "lesion_mask" in batch:
            present = batch["lesion_mask"].to(ct.device).bool()
        else:
            present = torch.ones(feats.shape[:2], dtype=torch.bool, device=ct.device)
        lesion_nodes = self.lesion_encoder(feats)  # [B, L, nd]
        return [lesion_nodes[i][present[i]] for i in range(b)]

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
        lesions = self._lesion_nodes(batch, ct, clin_node)
        time_nodes = self.time_embed.weight  # [T, nd]
        graphs = [
            self._graph(anat[i], ct_node[i : i + 1], clin_node[i : i + 1], lesions[i], time_nodes)
            for i in range(b)
        ]
        data = Batch.from_data_list(graphs).to(ct.device)
        x, edges = data.x_dict, data.edge_index_dict
        for i, conv in enumerate(self.convs):
            out = conv(x, edges)
            x = {key: F.gelu(v) + x[key] if i else F.gelu(v) for key, v in out.items()}
        anat_mean = global_mean_pool(x["anat"], data["anat"].batch, size=b)
        z_img = (anat_mean + x["ct"]) / 2
        z_clin = x["clin"]
        pooled = [anat_mean, x["ct"], z_clin]
        if self.lesion_encoder is not None:  # mean of the lesion nodes (0 without lesions)
            pooled.append(global_mean_pool(x["lesion"], data["lesion"].batch, size=b))
        h = self.readout(torch.cat(pooled, dim=1))
        per_year = self.time_head(x["time"]).view(b, self.n_years, 2)  # time nodes, graph order
        rec, surv = self.heads(h, per_year[..., 1], self.heads.pad_years(per_year[..., 0]))
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
