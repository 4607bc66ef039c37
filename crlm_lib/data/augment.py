"""The papers' training augmentations as TorchIO transforms (4D-ACFNet section 4.1).

"1) Elastic deformation based on B-spline interpolation (control point grid: 7 x 7 x 7, maximum
displacement: 5 mm) ...; 2) Gaussian noise (sigma in [0, 0.1]) and motion blur (sigma in
[0, 0.5]) were added."

The CT and its masks travel together in one :class:`torchio.Subject` (CT as ``ScalarImage``,
the ``K`` masks as one multi-channel ``LabelMap``), so the elastic deformation moves the masks
with the image (masks resampled with nearest neighbour); noise and blur touch only the CT.

Choices (the paper is silent or ambiguous)
-----------------------------------------
* **Units.** ``max_displacement`` is in mm (TorchIO's unit, as in the paper). The processed
  grid's physical spacing is passed to TorchIO through the affine, so 5 mm means 5 mm.
* **Folding constraint.** TorchIO warns when the displacement exceeds half the control-point
  grid spacing (``extent / (n_control_points - 2)``). On small smoke volumes (e.g. 16 slices
  of 2.5 mm) that bound can be below 5 mm: the displacement is then clamped per axis to 0.45 x
  the grid spacing and the clamp is logged (only smoke sizes are affected; the paper grid of
  40 x 128 x 128 is not).
* **Blur sigma in voxels.** TorchIO's ``RandomBlur`` std is in mm; at 3-12 mm pixels a 0.5 mm
  blur is a no-op, so the paper's sigma in [0, 0.5] is read as voxels of the processed grid and
  converted to mm per axis (``blur_units="mm"`` keeps the literal reading).
* **Noise** sigma is in the [-1, 1] intensity units of the preprocessed CT; the result is
  clipped back to [-1, 1] (the model contract).
* Order: elastic -> blur -> noise. Training only; reproducible under a seed (TorchIO draws from
  torch's RNG, which :func:`augment_sample` forks and seeds).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import numpy as np
import torch
import torchio as tio

from crlm_lib.config import Profile

log = logging.getLogger(__name__)

NUM_CONTROL_POINTS = 7
MAX_DISPLACEMENT_MM = 5.0
NOISE_STD = (0.0, 0.1)
BLUR_STD = (0.0, 0.5)


def _affine(spacing_mm) -> np.ndarray:
    return np.diag([*map(float, spacing_mm), 1.0])


def elastic_displacement(
    shape: tuple[int, int, int],
    spacing_mm: tuple[float, float, float],
    max_displacement_mm: float = MAX_DISPLACEMENT_MM,
    num_control_points: int = NUM_CONTROL_POINTS,
) -> tuple[float, float, float]:
    """Per-axis maximum displacement (mm) that respects TorchIO's no-folding bound.

    The bound is half the control-grid spacing, ``extent_mm / (num_control_points - 2) / 2``;
    the displacement is clamped to 0.45 x the grid spacing where 5 mm would exceed it.
    """
    out = []
    for n, sp in zip(shape, spacing_mm):
        grid = n * float(sp) / (num_control_points - 2)
        limit = 0.45 * grid
        if max_displacement_mm > grid / 2:
            log.info("elastic displacement clamped to %.2f mm on an axis of %d voxels", limit, n)
            out.append(limit)
        else:
            out.append(float(max_displacement_mm))
    return tuple(out)


class CPUSeededNoise(tio.RandomNoise):
    """TorchIO's ``RandomNoise`` with its noise seeded on torch's CPU generator only.

    Same draws and output as ``tio.RandomNoise`` (tested): the mean, std and noise seed come
    from torch's RNG as there, and the noise is ``randn`` under that seed with the caller's RNG
    state restored. TorchIO seeds with ``torch.manual_seed``, which also queues a seed for
    every accelerator backend that is not initialised and records a stack trace for each
    (``torch.cuda._lazy_call``): 1-2 ms per call at a notebook's stack depth, more than the
    noise itself; the augmentation runs on the CPU, so the CPU generator is the one it uses.
    """

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        for image in self.get_images_dict(subject).values():
            mean, std, seed = self.get_params(self.mean_range, self.std_range)
            state = torch.random.get_rng_state()
            torch.random.default_generator.manual_seed(seed)
            noise = torch.randn(*image.data.shape) * std + mean
            torch.random.set_rng_state(state)
            image.set_data(image.data + noise)
        return subject


def build_augmentation(
    profile: Profile,
    shape: tuple[int, int, int] | None = None,
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0),
    blur_units: str = "voxel",
) -> tio.Compose:
    """The papers' augmentation pipeline for subjects with a ``ct`` image and ``masks`` map.

    Parameters
    ----------
    profile : Profile or str
        Supplies the processed grid (``preprocess.depth``, ``preprocess.size``) when ``shape``
        is not given.
    shape : tuple, optional
        ``(D, H, W)`` of the volumes.
    spacing_mm : tuple
        (z, y, x) spacing of the processed grid in mm.
    blur_units : {"voxel", "mm"}
        Unit of the paper's blur sigma range [0, 0.5] (see module docstring).

    Returns
    -------
    tio.Compose
        ``RandomElasticDeformation(7, max_displacement)`` -> ``RandomBlur`` (CT only) ->
        ``RandomNoise(std=(0, 0.1))`` (CT only, as :class:`CPUSeededNoise`).

    Notes
    -----
    The papers do not say how often each augmentation is applied. The elastic deformation is
    applied with probability ``profile.train.elastic_probability``: 1 in the ``paper`` profile
    (every training sample), lower in the CPU profiles, where TorchIO's B-spline resampling
    (about 0.13 s per sample on one core) would otherwise cost more than the network's step.
    """
    prof = profile
    if shape is None:
        shape = (prof.preprocess.depth, prof.preprocess.size, prof.preprocess.size)
    disp = elastic_displacement(shape, spacing_mm)
    if blur_units == "voxel":
        blur = tuple(v for sp in spacing_mm for v in (BLUR_STD[0] * sp, BLUR_STD[1] * sp))
    elif blur_units == "mm":
        blur = BLUR_STD
    else:
        raise ValueError(f"blur_units must be 'voxel' or 'mm', not {blur_units!r}")
    # The Compose deep-copies the subject once; its steps then work on that copy
    # (``copy=False``; same output: TorchIO otherwise copies the subject again in every
    # step, 13 tensor copies per sample).
    return tio.Compose(
        [
            tio.RandomElasticDeformation(
                num_control_points=NUM_CONTROL_POINTS,
                max_displacement=disp,
                locked_borders=2,
                image_interpolation="bspline",
                label_interpolation="nearest",
                p=prof.train.elastic_probability,
                copy=False,
            ),
            tio.RandomBlur(std=blur, include=["ct"], copy=False),
            CPUSeededNoise(std=NOISE_STD, include=["ct"], copy=False),
            tio.Clamp(out_min=-1.0, out_max=1.0, include=["ct"], copy=False),
        ],
        copy=True,
    )


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Run torch's intra-op work on one thread, then restore the caller's setting.

    A sample's tensors are small (64 KiB at the cpu profile's grid): splitting each elementwise
    op over OpenMP threads gains nothing, and on a loaded machine every hand-off waits for a
    descheduled thread (measured on the shared 2-core machine: 259 ms per cpu-size sample
    with two threads, 42 ms with one). DataLoader workers already run with one thread; this covers
    ``num_workers=0``. The outputs do not depend on the thread count.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def augment_sample(
    ct: np.ndarray | torch.Tensor,
    masks: np.ndarray | torch.Tensor,
    spacing: tuple[float, float, float],
    seed: int,
    profile: Profile | None = None,
    transform: tio.Compose | None = None,
    pack_masks: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Augment one CT with its masks, reproducibly.

    Parameters
    ----------
    ct : array
        ``[D, H, W]`` or ``[1, D, H, W]``, values in [-1, 1].
    masks : array
        ``[K, D, H, W]`` (0/1).
    spacing : tuple
        (z, y, x) spacing of the grid in mm.
    seed : int
        Same seed, same output (torch's RNG is forked, so the caller's stream is untouched).
    profile : Profile, optional
        The run's profile: its augmentation settings build the pipeline when ``transform`` is
        ``None`` (one of the two is required).
    transform : tio.Compose, optional
        Prebuilt pipeline (default: :func:`build_augmentation` for this shape and spacing).
    pack_masks : bool
        Resample the masks as bits of one label channel (default; same result, one
        resampling instead of ``K``) or channel by channel (``False``, the reference).

    Returns
    -------
    ct : torch.Tensor
        float32 ``[1, D, H, W]`` in [-1, 1].
    masks : torch.Tensor
        float32 ``[K, D, H, W]`` in {0, 1}.

    Raises
    ------
    TypeError
        When neither ``profile`` nor ``transform`` is given.
    """
    if profile is None and transform is None:
        raise TypeError("augment_sample needs the run's profile or a prebuilt transform")
    with _one_torch_thread():
        return _augment(ct, masks, spacing, seed, profile, transform, pack_masks)


def _augment(ct, masks, spacing, seed, profile, transform, pack_masks):
    """:func:`augment_sample` (the caller sets the thread count)."""
    ct_t = torch.as_tensor(np.asarray(ct), dtype=torch.float32)
    if ct_t.ndim == 3:
        ct_t = ct_t[None]
    m_t = torch.as_tensor(np.asarray(masks), dtype=torch.float32)
    affine = _affine(spacing)
    if transform is None:
        transform = build_augmentation(profile, tuple(ct_t.shape[1:]), spacing)
    n_masks = m_t.shape[0]
    if pack_masks and n_masks <= 24:
        # Speed: the elastic resampling (SimpleITK, nearest neighbour for labels)
        # runs once per channel and dominates a paper-size sample (~1 s per channel). The
        # binary masks are packed as bits of one label channel; nearest neighbour copies a
        # source voxel's value whole, so unpacking gives exactly the per-channel result (the
        # random deformation is drawn once per call, whatever the channel count; tested).
        bits = torch.arange(n_masks).view(-1, 1, 1, 1)
        packed = ((m_t > 0.5).to(torch.int64) << bits).sum(dim=0, keepdim=True)
        labels = tio.LabelMap(tensor=packed.to(torch.float32), affine=affine)
    else:
        labels = tio.LabelMap(tensor=m_t, affine=affine)
    subject = tio.Subject(ct=tio.ScalarImage(tensor=ct_t, affine=affine), masks=labels)
    # Only the CPU generator is forked and seeded (``torch.manual_seed`` would also reseed the
    # accelerators' generators, outside the fork, at the cost of a stack trace per backend).
    with torch.random.fork_rng(devices=[]):
        torch.random.default_generator.manual_seed(int(seed))
        out = transform(subject)
    if pack_masks and n_masks <= 24:
        packed = out["masks"].data.round().to(torch.int64)  # [1, D, H, W]
        bits = torch.arange(n_masks).view(-1, 1, 1, 1)
        return out["ct"].data.float(), ((packed >> bits) & 1).float()
    return out["ct"].data.float(), (out["masks"].data > 0.5).float()
