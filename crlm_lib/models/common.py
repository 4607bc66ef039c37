"""Building blocks shared by the registry's models: CT stem, clinical encoder, fusion (the
prognosis heads are in :mod:`crlm_lib.models.heads`).

Normalisation is ``GroupNorm`` throughout (batch-size independent: the papers train with
B = 1, where BatchNorm statistics are degenerate, and GroupNorm keeps each sample's features
a function of that sample only, which the efficient 4D-ACFNet form relies on).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig

#: Stride of the 7x7x7 first convolution of every 3D ResNet here (``conv1_t_stride`` of MONAI's
#: ResNet): 1 along the slices, 2 in-plane, as in the 3D ResNets of Hara et al. (2018, Table 1:
#: "conv1 7x7x7, stride 1 (T), 2 (XY)"), which STAR cites for its ResNet-18/34/50 baselines.
#: MONAI's default (stride 1 on every axis) keeps the full grid after the stem, costs 3-4x more
#: per step (``benchmarks/train_step.py --resnets``) and is the ``stem_stride=1`` option.
HARA_STEM_STRIDE: tuple[int, int, int] = (1, 2, 2)


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 4 groups (as many as divide ``channels``)."""
    groups = next(g for g in (4, 2, 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvBlock3d(nn.Sequential):
    """3x3x3 conv (stride 1 or 2, zero padding 1) -> GroupNorm -> GELU.

    Input ``[N, C_in, D, H, W]`` -> ``[N, C_out, D/s, H/s, W/s]``. ``conv`` is the convolution
    class (``nn.Conv3d`` or :class:`Stride2Conv3d`; same parameters, same initialisation).
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int = 1, conv: type[nn.Conv3d] = nn.Conv3d
    ) -> None:
        super().__init__(
            conv(c_in, c_out, 3, stride=stride, padding=1),
            group_norm(c_out),
            nn.GELU(),
        )


# Input gradient of a 3x3x3, stride-2, padding-1 convolution, by output parity: along one
# axis, input voxel i = 2m receives go[m] through tap 1; i = 2m + 1 receives go[m] through
# tap 2 and go[m + 1] through tap 0. _PHASE_TAP[parity][shift] is that tap (None: none).
_PHASE_TAP = ((1, None), (2, 0))


def _phase_index() -> Tensor:
    """``[8, 8]`` flat 3x3x3 tap (27 = zero) for (parity pd,ph,pw) x (shift sd,sh,sw)."""
    idx = torch.full((8, 8), 27, dtype=torch.long)
    for p in range(8):
        par = (p >> 2 & 1, p >> 1 & 1, p & 1)
        for s in range(8):
            sh = (s >> 2 & 1, s >> 1 & 1, s & 1)
            taps = [_PHASE_TAP[a][b] for a, b in zip(par, sh)]
            if None not in taps:
                idx[p, s] = taps[0] * 9 + taps[1] * 3 + taps[2]
    return idx


_PHASE_INDEX = _phase_index()


def stride2_input_grad(grad_out: Tensor, weight: Tensor) -> Tensor:
    """Input gradient of ``conv3d(x, weight, stride=2, padding=1)`` as a stride-1 convolution.

    ``grad_out`` ``[N, O, d, h, w]``, ``weight`` ``[O, C, 3, 3, 3]`` -> ``[N, C, 2d, 2h, 2w]``.
    Each of the 8 output parities is a kernel-2 stride-1 correlation of ``grad_out`` (padded
    by one at the end of each axis) with a sub-kernel of ``weight``; the 8 are computed as one
    ``conv3d`` with ``8 C`` output channels and interleaved (depth-to-space). Exactly the
    transposed convolution (the same sums, other order: equal up to float rounding).
    """
    o, c = weight.shape[:2]
    n, _, d, h, w = grad_out.shape
    taps = torch.cat([weight.reshape(o, c, 27), weight.new_zeros(o, c, 1)], dim=2)
    k = taps[:, :, _PHASE_INDEX.to(weight.device)]  # [O, C, 8 parities, 8 shifts]
    k = k.permute(2, 1, 0, 3).reshape(8 * c, o, 2, 2, 2)
    g = F.conv3d(F.pad(grad_out, (0, 1, 0, 1, 0, 1)), k)  # [N, (pd, ph, pw, C), d, h, w]
    g = g.view(n, 2, 2, 2, c, d, h, w).permute(0, 4, 5, 1, 6, 2, 7, 3)
    return g.reshape(n, c, 2 * d, 2 * h, 2 * w)


class _Stride2Conv3dFn(torch.autograd.Function):
    """``conv3d(x, w, b, stride=2, padding=1)`` whose input gradient is :func:`stride2_input_grad`."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return F.conv3d(x, weight, bias, stride=2, padding=1)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = stride2_input_grad(grad_out, weight)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad_out,
                x,
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                [2, 2, 2],
                [1, 1, 1],
                [1, 1, 1],
                False,
                [0, 0, 0],
                1,
                [False, ctx.needs_input_grad[1], ctx.has_bias and ctx.needs_input_grad[2]],
            )
        return grad_x, grad_w, grad_b


class Stride2Conv3d(nn.Conv3d):
    """A 3x3x3, stride-2, padding-1 ``nn.Conv3d`` with a faster input gradient on CPU.

    Same parameters, initialisation and forward values as ``nn.Conv3d(c_in, c_out, 3,
    stride=2, padding=1)``. On CPU (no autocast, even D, H, W) the backward pass computes the
    input gradient with :func:`stride2_input_grad` (one stride-1 forward convolution) instead
    of oneDNN's backward-data kernel, which is slow for few input channels (for the
    1-channel ReconEncoder conv of 4D-ACFNet, forward + backward 1.8 ms against 3.1 ms with
    oneDNN's kernel at the cpu profile's size, one thread). Elsewhere it is the plain
    ``nn.Conv3d``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if (
            self.kernel_size != (3, 3, 3)
            or self.stride != (2, 2, 2)
            or self.padding != (1, 1, 1)
            or self.dilation != (1, 1, 1)
            or self.groups != 1
            or self.padding_mode != "zeros"
        ):
            raise ValueError("Stride2Conv3d is the 3x3x3, stride-2, padding-1 convolution only")

    def forward(self, x: Tensor) -> Tensor:
        if (
            x.device.type != "cpu"
            or torch.is_autocast_enabled("cpu")
            or any(s % 2 for s in x.shape[-3:])
        ):
            return super().forward(x)
        return _Stride2Conv3dFn.apply(x, self.weight, self.bias)


class CTStem(nn.Module):
    """The shared CT encoder: three stride-2 conv blocks, ``[B,C,D,H,W] -> [B,4w,D/8,H/8,W/8]``.

    Widths ``w, 2w, 4w`` with ``w = ModelConfig.width``. D, H, W must be divisible by 8.
    ``in_channels``: 1 (the CT) or more (the CT followed by mask channels).
    """

    def __init__(self, width: int, in_channels: int = 1) -> None:
        super().__init__()
        self.out_channels = 4 * width
        self.blocks = nn.Sequential(
            ConvBlock3d(in_channels, width, 2),
            ConvBlock3d(width, 2 * width, 2),
            ConvBlock3d(2 * width, 4 * width, 2),
        )

    def forward(self, ct: Tensor) -> Tensor:
        """``ct`` ``[N, C, D, H, W]`` in [-1, 1] -> features ``[N, 4w, D/8, H/8, W/8]``."""
        return self.forward_all(ct)[-1]

    def forward_all(self, ct: Tensor) -> list[Tensor]:
        """The three blocks' outputs (1/2, 1/4 and 1/8 resolution), the last one ``forward``'s."""
        if any(s % 8 for s in ct.shape[-3:]):
            raise ValueError(f"CT grid {tuple(ct.shape[-3:])} must be divisible by 8")
        outs = []
        for block in self.blocks:
            ct = block(ct)
            outs.append(ct)
        return outs


class LesionPool(nn.Module):
    """Mask-weighted average pooling of CT-stem features over the tumour and the liver.

    Global average pooling over a crop mixes a few tumour voxels with everything else, and the
    GroupNorm before it removes per-patient level differences; averaging the features *inside*
    the segmentation masks (the SEG every patient has) gives a descriptor of what the tumours
    and the liver look like, independent of where they lie in the crop and of their size
    (size is a separate quantity: the masks' voxel counts). Our addition, not in the papers
    (``ACFNet(lesion_pooling=...)``).

    ``feats``: feature maps ``[B, C_i, d_i, h_i, w_i]``; ``masks`` ``[B, K, D, H, W]``
    (``config.MASK_NAMES`` order) -> ``[B, embed_dim]``: for each map and each region the
    masks are average-pooled to the map's grid and used as weights; a region absent from
    the crop gives zeros.

    Between patients the pooled values differ by a few hundredths (a tumour 20 HU darker moves
    the windowed CT by 0.05), so a linear layer would need weights of ~10 to turn them into a
    risk, which a few hundred optimiser steps never reach. The descriptor is therefore
    standardised by ``shift`` and ``scale`` (buffers, saved in checkpoints), which
    :meth:`calibrate` sets to the mean and SD over the training patients before training (a
    data-dependent initialisation in the sense of Salimans & Kingma 2016); until then they are
    0 and 1.
    """

    def __init__(self, channels: tuple[int, ...], regions: tuple[int, ...], embed_dim: int):
        super().__init__()
        self.regions = tuple(regions)
        n_in = sum(channels) * len(self.regions)
        self.proj = nn.Linear(n_in, embed_dim)
        self.register_buffer("shift", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))

    def descriptor(self, feats: list[Tensor], masks: Tensor) -> Tensor:
        """The raw pooled values ``[B, sum(C_i) * R]`` before standardisation."""
        m = masks[:, list(self.regions)].float()
        pooled = []
        for f in feats:
            w = nn.functional.adaptive_avg_pool3d(m.to(f), f.shape[-3:])  # [B, R, d, h, w]
            num = torch.einsum("bcdhw,brdhw->brc", f, w)
            pooled.append(num / (w.sum(dim=(2, 3, 4)).unsqueeze(-1) + 1e-6))
        return torch.cat(pooled, dim=2).flatten(1)

    @torch.no_grad()
    def calibrate(self, descriptors: Tensor) -> None:
        """Set ``shift``/``scale`` to the mean/SD of ``descriptors`` ``[N, n_in]`` (N >= 2)."""
        self.shift.copy_(descriptors.mean(dim=0))
        self.scale.copy_(descriptors.std(dim=0).clamp(min=1e-4))

    def forward(self, feats: list[Tensor], masks: Tensor) -> Tensor:
        return self.proj((self.descriptor(feats, masks) - self.shift) / self.scale)


#: What :class:`LesionAnchor` summarises from the lesion set of a batch, in this order.
LESION_SUMMARY_NAMES: tuple[str, ...] = (
    "log_lesion_count",
    "largest_lesion_volume",
    "lesion_mean_hu",
    "lesion_sd_hu",
    "lesion_p10_hu",
)


def lesion_summary(lesion_features: Tensor, lesion_mask: Tensor) -> Tensor:
    """Per-patient summary of the lesion set ``[B, L, F]`` (``data.lesions.FEATURE_NAMES``,
    log-shifted and z-scored by the dataset) with its ``[B, L]`` mask -> ``[B, 5]``
    (:data:`LESION_SUMMARY_NAMES`): ``log(1 + n)`` lesions, the largest lesion's standardised
    log volume, and the lesions' mean of the standardised first-order HU features ``mean``,
    ``std`` and ``p10`` (measured inside each SEG tumour segment at the source resolution).
    A patient without a lesion gets 0 for the volume and HU entries (the training mean after
    :class:`LesionAnchor`'s standardisation is close to it)."""
    from ..data.lesions import FEATURE_NAMES

    m = lesion_mask.to(lesion_features.dtype)
    n = m.sum(dim=1)
    vol = lesion_features[..., FEATURE_NAMES.index("volume_mm3")]
    largest = torch.where(m > 0, vol, torch.full_like(vol, -1e4)).amax(dim=1)
    largest = torch.where(n > 0, largest, torch.zeros_like(largest))
    cols = [FEATURE_NAMES.index(k) for k in ("mean", "std", "p10")]
    hu = (lesion_features[..., cols] * m.unsqueeze(-1)).sum(dim=1) / n.clamp(min=1).unsqueeze(-1)
    return torch.cat([torch.log1p(n).unsqueeze(1), largest.unsqueeze(1), hu], dim=1)


class LesionAnchor(nn.Module):
    """Linear risk terms on the lesion set's summary (:func:`lesion_summary`), one for each
    head, started at a Cox model of the training rows.

    Our addition (``ACFNet(lesion_anchor=...)``): the SEG's tumour segments and the HU inside
    them at the source resolution are what a radiologist measures (count, size, attenuation);
    the network's 16x32x32 window at [-1, 1] after histogram equalisation loses most of the
    attenuation (a Cox model of the window's tumour statistics ranks OS worse than one of the
    lesions': cross-validated 0.656 vs 0.689 on the cpu profile's synthetic cohort).
    :meth:`ACFNet.anchor_clinical` fits one ridge Cox model on the clinical vector and this
    summary together, so the network starts as a clinical-radiological Cox model and training
    adds what the CT branch and the non-linear paths explain. ``shift``/``scale`` standardise
    the summary with the training patients (:meth:`calibrate`); the weights start at zero.
    """

    def __init__(self) -> None:
        super().__init__()
        k = len(LESION_SUMMARY_NAMES)
        self.os = nn.Linear(k, 1, bias=False)
        self.dfs = nn.Linear(k, 1, bias=False)
        for layer in (self.os, self.dfs):
            nn.init.zeros_(layer.weight)
        self.register_buffer("shift", torch.zeros(k))
        self.register_buffer("scale", torch.ones(k))

    def features(self, batch: dict) -> Tensor:
        """The standardised summary ``[B, 5]`` of ``batch["lesion_features"]``."""
        if "lesion_features" not in batch or "lesion_mask" not in batch:
            raise ValueError(
                "lesion_anchor=True reads the lesion set (batch['lesion_features'] and "
                "batch['lesion_mask']); build the model with lesion_anchor=False"
            )
        raw = lesion_summary(batch["lesion_features"].float(), batch["lesion_mask"])
        return (raw.to(self.shift) - self.shift) / self.scale

    @torch.no_grad()
    def calibrate(self, summaries: Tensor) -> None:
        """Set ``shift``/``scale`` to the mean/SD of raw summaries ``[N, 5]`` (N >= 2)."""
        self.shift.copy_(summaries.mean(dim=0))
        self.scale.copy_(summaries.std(dim=0).clamp(min=1e-4))

    def forward(self, batch: dict) -> tuple[Tensor, Tensor]:
        """``(r_os, r_dfs)``, each ``[B, 1]``."""
        z = self.features(batch)
        return self.os(z), self.dfs(z)


def image_input(batch: dict, mask_channels: tuple[int, ...]) -> Tensor:
    """The CT ``[B, 1, D, H, W]`` followed by the masks at ``mask_channels`` (indices into
    ``config.MASK_NAMES``) as extra channels, each mapped from {0, 1} to {-1, 1}."""
    ct = batch["ct"].float()
    if not mask_channels:
        return ct
    if "masks" not in batch:
        raise ValueError(
            f"this network reads the masks {list(mask_channels)} beside the CT, but the batch "
            "has no 'masks' (build it with mask_channels=() for the CT alone)"
        )
    masks = batch["masks"].to(ct)[:, list(mask_channels)]
    return torch.cat([ct, 2.0 * masks - 1.0], dim=1)


class ClinEncoder(nn.Module):
    """Clinical encoder (4D-ACFNet section 3.2): ``[B, F] -> h_clin [B, E]``.

    Linear -> GELU -> Linear. With ``n_clinical = 0`` it returns zeros (no parameters).
    """

    def __init__(self, n_clinical: int, embed_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        hidden = hidden or embed_dim
        self.net = (
            nn.Sequential(nn.Linear(n_clinical, hidden), nn.GELU(), nn.Linear(hidden, embed_dim))
            if n_clinical > 0
            else None
        )

    def forward(self, clinical: Tensor) -> Tensor:
        if self.net is None:
            return clinical.new_zeros(clinical.shape[0], self.embed_dim)
        return self.net(clinical.float())


class GatedFusion(nn.Module):
    """Gated fusion, 4D-ACFNet Eq. (2): ``sigma(g0) h_img + sigma(g1) h_recon + h_clin``.

    Gates are learnable scalars initialised at 0 (``sigma = 0.5``). ``use_recon=False`` drops
    the ``h_recon`` term (and ``g1``).
    """

    def __init__(self, use_recon: bool = True) -> None:
        super().__init__()
        self.g0 = nn.Parameter(torch.zeros(()))
        self.g1 = nn.Parameter(torch.zeros(())) if use_recon else None

    def forward(self, h_img: Tensor, h_clin: Tensor, h_recon: Tensor | None = None) -> Tensor:
        h = torch.sigmoid(self.g0) * h_img + h_clin
        if self.g1 is not None and h_recon is not None:
            h = h + torch.sigmoid(self.g1) * h_recon
        return h


class TimeEmbeddedConv(nn.Module):
    """First spatial conv of ``[X; E_t]`` for all 12 virtual timestamps (4D-ACFNet section 3.1).

    Computes ``Y_t = Conv3x3x3([X; broadcast(E_t)])`` for t = 1..T, ``X`` ``[B, C, D, H, W]``,
    ``E_t`` ``[E]``, output ``[B, T, C_out, D, H, W]``.

    Efficient form (``efficient=True``): the conv is linear in its input, so
    ``Conv([X; E_t]) = Conv_X(X) + Conv_E(E_t * 1)``. ``Conv_X(X)`` is computed once per patient
    (B, not B*T) and the time term once per forward (no B): the convolution, with zero padding,
    of the constant field ``E_t`` over the grid. It is constant inside and differs at the
    borders; computing it as ``conv3d(ones[1,1,D,H,W], K_t, padding=1)`` with the per-t kernel
    ``K_t[o] = sum_e W_E[o, e] E_t[e]`` is exact (including borders) and costs
    ``T * C_out * 27 * DHW`` multiply-adds.

    ``efficient=False`` concatenates the broadcast embeddings and convolves each of the T
    copies (the straightforward form); both give equal outputs with the same weights.
    """

    def __init__(self, c_in: int, c_time: int, c_out: int) -> None:
        super().__init__()
        self.c_in = c_in
        self.conv = nn.Conv3d(c_in + c_time, c_out, 3, padding=1)

    def forward(self, x: Tensor, e_t: Tensor, efficient: bool = True) -> Tensor:
        """``x`` ``[N, C, D, H, W]``, ``e_t`` ``[T, E]`` -> ``[N, T, C_out, D, H, W]``."""
        t = e_t.shape[0]
        if not efficient:
            return self.forward_copies(x.repeat_interleave(t, dim=0), e_t)
        w_x = self.conv.weight[:, : self.c_in]
        w_e = self.conv.weight[:, self.c_in :]  # [O, E, 3, 3, 3]
        y_x = F.conv3d(x, w_x, self.conv.bias, padding=1)  # [N, O, D, H, W]
        k_t = torch.einsum("oekjl,te->tokjl", w_e, e_t)  # [T, O, 3, 3, 3]
        o = k_t.shape[1]
        ones = x.new_ones(1, 1, *x.shape[-3:])
        bias_map = F.conv3d(ones, k_t.reshape(t * o, 1, 3, 3, 3), padding=1)
        bias_map = bias_map.view(1, t, o, *x.shape[-3:])
        return y_x.unsqueeze(1) + bias_map

    def forward_copies(self, x_rep: Tensor, e_t: Tensor) -> Tensor:
        """Straightforward form: ``x_rep`` ``[N*T, C, D, H, W]`` (copy t of patient n at row
        ``n*T + t``) -> ``[N, T, C_out, D, H, W]``."""
        t = e_t.shape[0]
        n = x_rep.shape[0] // t
        e = e_t.repeat(n, 1)[:, :, None, None, None].expand(-1, -1, *x_rep.shape[-3:])
        y = self.conv(torch.cat([x_rep, e], dim=1))
        return y.view(n, t, *y.shape[1:])


class TemporalConv(nn.Module):
    """Kernel-3 convolution over the T virtual timestamps (the "3x1x1" of section 3.1).

    ``[B, C, T, D, H, W] -> [B, C_out, T, D, H, W]``, zero padding 1 over t, shared over space.
    The parameters are those of a ``Conv3d`` with kernel (3, 1, 1) (``self.conv``); the
    forward pass runs them as a ``conv2d`` with kernel (3, 1) on the view ``[B, C, T, D*H*W]``
    (the same sums; forward + backward 2.1x faster on CPU than the 3D form, which
    falls back to PyTorch's unoptimised ``slow_conv3d`` for this kernel; :meth:`forward_3d`
    is that reference, equal up to float rounding, tested). Its output keeps T as an
    explicit axis, so captum's ``LayerGradCam`` on this module yields one map per virtual
    year ``[B, 1, T, D, H, W]``.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(c_in, c_out, (3, 1, 1), padding=(1, 0, 0))

    def forward(self, x: Tensor) -> Tensor:
        b, c, t, d, h, w = x.shape
        kernel = self.conv.weight.squeeze(-1)  # [O, C, 3, 1]
        y = F.conv2d(x.reshape(b, c, t, d * h * w), kernel, self.conv.bias, padding=(1, 0))
        return y.view(b, -1, t, d, h, w)

    def forward_3d(self, x: Tensor) -> Tensor:
        """Reference: the ``Conv3d`` on ``[B, C, T, D, H*W]``."""
        b, c, t, d, h, w = x.shape
        y = self.conv(x.reshape(b, c, t, d, h * w))
        return y.view(b, -1, t, d, h, w)


class PatchDecoder(nn.Sequential):
    """Transposed-conv reconstruction head of 4D-ACFNet (section 3.1, "transposed convolution"):
    ``ConvTranspose3d(c_in, c_hidden, 2, stride=2) -> GELU -> Conv3d(c_hidden, 1, 1) -> Tanh``,
    ``[N, c_in, d, h, w] -> [N, 1, 2d, 2h, 2w]``.

    A kernel-2 stride-2 transposed convolution does not overlap: each input voxel writes its
    own 2x2x2 output patch, ``patch = W^T x + b``, and the GELU and 1x1x1 conv that follow act
    per output voxel. :meth:`forward` therefore runs the whole head as two matrix products on
    the ``[N*d*h*w, c_in]`` voxel rows and rearranges the single output channel once
    (forward + backward 2.3x faster on CPU than the three oneDNN calls at the cpu profile's
    size, 1.5x at the paper size).
    The parameters are those of the ``nn.Sequential`` (same state-dict keys ``0.*``, ``2.*``);
    :meth:`forward_modules` is the layer-by-layer reference (equal up to float rounding,
    tested).
    """

    def __init__(self, c_in: int, c_hidden: int) -> None:
        super().__init__(
            nn.ConvTranspose3d(c_in, c_hidden, 2, stride=2),
            nn.GELU(),
            nn.Conv3d(c_hidden, 1, 1),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        up, _, proj, _ = self
        n, c, d, h, w = x.shape
        o = up.out_channels
        rows = x.permute(0, 2, 3, 4, 1).reshape(n * d * h * w, c)  # [M, C]
        w_up = up.weight.permute(0, 2, 3, 4, 1).reshape(c, 8 * o)  # [C, (i, j, k, O)]
        patch = torch.addmm(up.bias.repeat(8), rows, w_up).view(-1, o)  # [M*8, O]
        out = torch.addmm(proj.bias, nn.functional.gelu(patch), proj.weight.view(1, o).t())
        out = torch.tanh(out).view(n, d, h, w, 2, 2, 2).permute(0, 1, 4, 2, 5, 3, 6)
        return out.reshape(n, 1, 2 * d, 2 * h, 2 * w)  # [N, 1, (d, i), (h, j), (w, k)]

    def forward_modules(self, x: Tensor) -> Tensor:
        """Reference: the four layers called one after the other."""
        for layer in self:
            x = layer(x)
        return x


def separable_param_counts(c_in: int, c_out: int, c_time: int = 0) -> dict[str, int]:
    """Weights (no biases) of three ways to convolve a ``[C, T, D, H, W]`` field.

    - ``separable``: 3x3x3 spatial (``c_in + c_time -> c_out``) then kernel-3 temporal
      (``c_out -> c_out``), 4D-ACFNet section 3.1: ``27 (c_in + c_time) c_out + 3 c_out^2``;
    - ``full_4d``: one 3x3x3x3 kernel: ``81 (c_in + c_time) c_out``;
    - ``two_3d``: 3x3x3 followed by another 3x3x3: ``27 (c_in + c_time) c_out + 27 c_out^2``.

    Also ``reduction_vs_full_4d`` and ``reduction_vs_two_3d`` (fractions).

    Notes
    -----
    The paper's "41% fewer parameters than traditional 3D convolutions" matches the
    ``two_3d`` reference: with ``c_in = c_out = 64, c_time = 8`` the separable block has
    136,704 weights vs 235,008 (41.8% fewer); for ``c_in = c_out`` and no time channels the
    reduction is 1 - 30/54 = 44.4%. Against a full 4D kernel it is 1 - 30/81 = 63% (or more).
    The paper does not say which widths it counted.

    Examples
    --------
    >>> round(separable_param_counts(64, 64, 8)["reduction_vs_two_3d"], 3)
    0.418
    """
    cin = c_in + c_time
    sep = 27 * cin * c_out + 3 * c_out * c_out
    full = 81 * cin * c_out
    two = 27 * cin * c_out + 27 * c_out * c_out
    return {
        "separable": sep,
        "full_4d": full,
        "two_3d": two,
        "reduction_vs_full_4d": 1 - sep / full,
        "reduction_vs_two_3d": 1 - sep / two,
    }


def batchnorm_to_groupnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm{1,2,3}d`` in ``module`` (in place) by :func:`group_norm`.

    MONAI 1.6's ResNet blocks build BatchNorm whatever its ``norm`` argument says; this makes a
    ResNet batch-size independent (B = 1 with a 1x1x1 last stage trains).
    """
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, group_norm(child.num_features))
        else:
            batchnorm_to_groupnorm(child)
    return module


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def resolve_config(cfg) -> ModelConfig:
    """``ModelConfig`` from a ``ModelConfig``, a ``Profile`` (its ``.model``) or ``None``."""
    if cfg is None:
        return ModelConfig()
    if isinstance(cfg, ModelConfig):
        return cfg
    model = getattr(cfg, "model", None)
    if isinstance(model, ModelConfig):
        return model
    raise TypeError(f"expected ModelConfig or Profile, got {type(cfg).__name__}")
