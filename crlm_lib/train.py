"""One training engine for every torch model of the project.

4D-ACFNet section 4.2 (repeated by STAR): AdamW, learning rate 1e-4, ``ReduceLROnPlateau``
(factor 0.5, patience 5) on the validation loss, batch size 1. The engine adds what the papers
leave implicit and a careful reproduction needs: early stopping on the validation loss, the
best and the last checkpoint, exact resumption, seeds, bf16 autocast on CUDA, gradient
clipping, a progress bar and a per-epoch CSV log.

Every model follows the contract of ``docs/interfaces.md``: ``forward(batch: dict) -> dict``
with ``recurrence_logits`` ``[B, 12]``, ``survival_logits`` ``[B, 12]`` and ``aux``; batches are
dicts of tensors plus a list of ``patient_id`` strings (``torch.utils.data.default_collate`` of
``CRLMDataset`` items). The loss is ``crlm_lib.losses.total_loss(outputs, batch, weights=...,
objective=...) -> (loss, parts)`` unless another ``loss_fn`` with that signature is given.

Files in ``run_dir``:

- ``best.pt``: ``{"model", "epoch", "val_loss"}`` of the epoch with the lowest validation loss;
- ``last.pt``: model, optimizer, scheduler, RNG states, epoch, history, early-stopping counter,
  written atomically after every epoch; :func:`fit` resumes from it;
- ``history.csv``: one row per epoch (``epoch, lr, train_loss, val_loss, train_<part>,
  val_<part>``), the table the notebooks plot;
- ``timing.json``: the wall-clock seconds of each epoch. The only file of the three that
  differs between identical runs, so that ``best.pt``, ``last.pt`` and ``history.csv`` are
  byte-reproducible (on the CPU; see :func:`set_seed` for CUDA).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from crlm_lib import atomic, distributed
from crlm_lib.config import N_YEARS, Profile, TrainConfig, get_profile
from crlm_lib.data.dataset import collate
from crlm_lib.errors import RunMismatchError
from crlm_lib.models.heads import head_probabilities
from crlm_lib.types import ATTENTION_COLS, BEYOND_COL, PATIENT_ID, REC_COLS, SURV_COLS

#: Global L2 norm at which gradients are clipped (``clip_grad_norm_``). The papers do not clip;
#: with batch size 1 and STAR's alignment loss divided by an agreement term that can approach
#: zero, single steps can explode, and 1.0 is the conventional bound that leaves ordinary steps
#: untouched. ``fit(..., grad_clip=None)`` turns it off.
GRAD_CLIP_NORM: float = 1.0

#: The file of a run folder that holds the wall-clock seconds of each epoch (:class:`TimingLog`).
TIMING_FILE = "timing.json"

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

__all__ = [
    "GRAD_CLIP_NORM",
    "TIMING_FILE",
    "TrainingError",
    "History",
    "set_seed",
    "select_device",
    "amp_dtype",
    "collate",
    "to_device",
    "channels_last_3d",
    "load_checkpoint",
    "TrainState",
    "Handler",
    "Resume",
    "PlateauScheduler",
    "HistoryRecorder",
    "BestCheckpoint",
    "LastCheckpoint",
    "CSVLogger",
    "TimingLog",
    "EpochProgress",
    "default_handlers",
    "fit",
    "predict",
]


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable checkpoint); names epoch and patients."""


@dataclass
class History:
    """What :func:`fit` did.

    Attributes
    ----------
    records : list of dict
        One per epoch: ``epoch`` (1-based), ``lr``, ``train_loss``, ``val_loss``,
        ``train_<part>``, ``val_<part>`` (wall-clock times are kept apart, in
        ``timing.json``: :class:`TimingLog`).
    best_epoch : int or None
        Epoch (1-based; 0 = the untrained start, with ``TrainConfig.score_start``) with the best
        monitored validation value (``TrainConfig.monitor``), saved as ``best.pt``.
    best_val_loss : float
        The validation loss of that epoch.
    best_score : float
        The monitored value of that epoch, signed so that higher is better.
    stopped_early : bool
        Whether early stopping ended the run before ``epochs``.
    """

    records: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_val_loss: float = math.inf
    best_score: float = -math.inf
    stopped_early: bool = False

    def to_frame(self) -> pd.DataFrame:
        """The records as a DataFrame (the content of ``history.csv``)."""
        return pd.DataFrame.from_records(self.records)


# --------------------------------------------------------------------------------------------
# seeds, devices, batches
# --------------------------------------------------------------------------------------------


def set_seed(seed: int, deterministic: bool = True) -> None:
    """Seed ``random``, ``numpy`` and ``torch`` (CPU and CUDA).

    With ``deterministic``, ``torch.use_deterministic_algorithms(True, warn_only=True)`` and
    ``cudnn.benchmark = False``: runs on CPU are bit-for-bit reproducible; on CUDA the few
    kernels without a deterministic version warn instead of failing (``CUBLAS_WORKSPACE_CONFIG``
    is set to ``:4096:8`` if unset, as PyTorch requires for deterministic cuBLAS).
    """
    random.seed(seed)
    # the legacy global numpy RNG is seeded on purpose: third-party augmentations draw from it
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else ``cuda`` when available (``cuda:<local rank>`` under
    ``torchrun``), else ``cpu``."""
    if device is None or device == "":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", distributed.info().local_rank % torch.cuda.device_count())
    return torch.device(device)


def amp_dtype(device: torch.device, amp: str = "auto") -> torch.dtype | None:
    """Autocast precision of the forward pass and loss, or ``None`` (float32).

    ``"auto"``: bf16 on a CUDA device that supports it (Ampere and later: same exponent range
    as float32, no loss scaling), fp16 with a gradient scaler on older GPUs, ``None`` on CPU
    (CPU autocast is slower than float32 for these 3-D convolutions). ``"bf16"`` and
    ``"fp16"`` force a precision on any device (``torch.autocast(device.type, dtype)``);
    ``"off"`` disables autocast.

    Raises
    ------
    ValueError
        For another value of ``amp``.
    """
    if amp not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"amp must be 'auto', 'bf16', 'fp16' or 'off', not {amp!r}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def _worker_init_fn(worker_id: int) -> None:
    """Seed ``numpy`` and ``random`` in a DataLoader worker from its torch seed (which the
    loader derives from its generator), so augmentations in workers are reproducible."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)  # noqa: NPY002 (legacy global RNG used by third-party code)
    random.seed(seed)


def to_device(batch: Mapping[str, Any], device: torch.device) -> dict[str, Any]:
    """Move every tensor of ``batch`` (nested dicts too) to ``device``; other values unchanged.

    On CUDA, 5-D image tensors (``ct`` ``[B, 1, D, H, W]``, ``masks``) use
    ``torch.channels_last_3d``, the fast layout of cuDNN 3-D convolutions.
    """
    cuda = device.type == "cuda"
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.to(device, non_blocking=cuda)
            if cuda and value.ndim == 5 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last_3d)
        elif isinstance(value, Mapping):
            value = to_device(value, device)
        out[key] = value
    return out


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float = TrainConfig.weight_decay
) -> torch.optim.AdamW:
    """The training engine's AdamW (4D-ACFNet section 4.2), in its fused form: one kernel over
    every parameter tensor instead of a Python loop over them (the loop over 4D-ACFNet's 73
    tensors takes ~20% of a cpu-profile step: 4.1 ms against 0.9 ms fused; equal to the loop
    up to float rounding). The benchmarks build theirs here too, so they time what ``fit`` runs.

    A model with a ``param_groups(lr)`` method (4D-ACFNet's ``head_lr_scale``) gives its own
    parameter groups and learning rates; every other model trains all parameters at ``lr``."""
    groups = model.param_groups(lr) if hasattr(model, "param_groups") else model.parameters()
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, fused=True)


def channels_last_3d(model: nn.Module) -> nn.Module:
    """Store every 5-D parameter (3-D convolution kernels) as ``torch.channels_last_3d``, in
    place. Unlike ``model.to(memory_format=...)``, which fails on 4-D weights, other tensors
    are left alone. Used on CUDA only."""
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 5:
                param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
    return model


def _autocast(device: torch.device, dtype: torch.dtype | None = None):
    """``torch.autocast`` with ``dtype`` on ``device``; no-op for ``None``."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int,
    *,
    pin_memory: bool = False,
    rank: distributed.DistInfo | None = None,
    epoch: int = 0,
) -> DataLoader:
    """DataLoader of one epoch. Under DDP (``rank.enabled``) the training set is sharded by
    a ``DistributedSampler`` (shuffled from ``seed``, reshuffled per ``epoch``, padded so every
    rank runs the same number of steps) and the validation set by ``rank::world_size`` without
    padding (losses are summed across ranks, so each item counts once)."""
    rank = rank or distributed.DistInfo()
    generator = torch.Generator()
    generator.manual_seed(seed + 100_003 * rank.rank)  # rank 0: the single-process seed
    sampler = None
    if rank.enabled and shuffle:
        sampler = DistributedSampler(
            ds, num_replicas=rank.world_size, rank=rank.rank, shuffle=True, seed=seed
        )
        sampler.set_epoch(epoch)
        shuffle = False
    elif rank.enabled:
        ds = Subset(ds, range(rank.rank, len(ds), rank.world_size))
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        generator=generator,
        worker_init_fn=_worker_init_fn,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DistributedDataParallel wrapper
    return getattr(model, "_orig_mod", model)  # torch.compile wrapper


def load_checkpoint(
    model: nn.Module, path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Load the weights of ``best.pt`` or ``last.pt`` into ``model`` (strict).

    Returns
    -------
    dict
        The checkpoint (``epoch``, ``val_loss`` ... alongside ``model``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    TrainingError
        If the file is not a checkpoint of this engine or does not fit ``model``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ckpt = torch.load(path, map_location=map_location, weights_only=False)
    _load_weights(model, ckpt, path)
    return ckpt


def _load_weights(model: nn.Module, ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise TrainingError(f"{path}: not a crlm_lib checkpoint (no 'model' entry)")
    try:
        _unwrap(model).load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise TrainingError(f"{path}: weights do not fit {type(model).__name__}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# one pass over a loader
# --------------------------------------------------------------------------------------------


def _default_loss_fn() -> LossFn:
    from crlm_lib.losses import total_loss  # imported late: losses are built beside this module

    return total_loss


def _run_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    loss_fn: LossFn,
    device: torch.device,
    *,
    epoch: int,
    loss_weights: Mapping[str, float] | None,
    objective: str,
    optimizer: torch.optim.Optimizer | None,
    grad_clip: float | None,
    max_batches: int | None,
    bar: tqdm | None,
    dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    rank: distributed.DistInfo | None = None,
) -> tuple[float, dict[str, float]]:
    """One pass over ``loader``; trains when ``optimizer`` is given. Returns the mean loss and
    mean loss parts, weighted by batch size (summed over every rank under DDP). ``dtype``:
    autocast precision; ``scaler``: fp16 gradient scaler (a disabled scaler is a no-op).

    A validation pass (no optimizer, one process) also returns ``c_os``: Harrell's C of the
    predicted probability of death by the end of year 5 (the sum of the first five survival
    bins, :func:`validation_c_index`) against the batch items' ``os_years``/``os_event``;
    ``history.csv`` then holds the learning curve ``val_c_os``."""
    train = optimizer is not None
    model.train(train)
    total, n_seen = 0.0, 0
    parts_sum: dict[str, float] = {}
    risks: list[np.ndarray] = []
    times: list[np.ndarray] = []
    events: list[np.ndarray] = []
    grad = torch.enable_grad() if train else torch.no_grad()
    with grad:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = to_device(batch, device)
            with _autocast(device, dtype):
                outputs = model(batch)
                loss, parts = loss_fn(outputs, batch, weights=loss_weights, objective=objective)
            if not torch.isfinite(loss):
                ids = batch.get("patient_id", "?")
                raise TrainingError(
                    f"epoch {epoch}, batch {i}: non-finite loss {loss.item()} "
                    f"({'train' if train else 'validation'}; patients {ids}; parts {parts})"
                )
            if train:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    if grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
                    optimizer.step()
            bsz = int(outputs["survival_logits"].shape[0])
            if not train and "os_years" in batch:
                pmf = head_probabilities(outputs)[0].detach()
                risks.append(pmf[:, :5].sum(dim=1).cpu().numpy())
                times.append(batch["os_years"].float().cpu().numpy().reshape(-1))
                events.append(batch["os_event"].float().cpu().numpy().reshape(-1))
            total += float(loss.detach()) * bsz
            n_seen += bsz
            for key, value in parts.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + float(value) * bsz
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{total / n_seen:.4f}", refresh=False)
    if rank is not None and rank.enabled:
        gathered: list[Any] = [None] * rank.world_size
        torch.distributed.all_gather_object(gathered, (total, n_seen, parts_sum))
        total = sum(g[0] for g in gathered)
        n_seen = sum(g[1] for g in gathered)
        parts_sum = {}
        for _, _, ps in gathered:
            for key, value in ps.items():
                parts_sum[key] = parts_sum.get(key, 0.0) + value
    if n_seen == 0:
        return math.nan, {}
    parts = {k: v / n_seen for k, v in parts_sum.items()}
    if risks and not (rank is not None and rank.enabled):
        parts["c_os"] = validation_c_index(
            np.concatenate(times), np.concatenate(events), np.concatenate(risks)
        )
    return total / n_seen, parts


def validation_c_index(os_years: np.ndarray, os_event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of ``risk`` (higher = earlier death) on validation patients; NaN when no
    pair is comparable (no event, or one patient). Recorded per epoch, never optimised."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(os_years, -np.asarray(risk, float), os_event))
    except ZeroDivisionError:  # lifelines: no admissible pairs
        return math.nan


# --------------------------------------------------------------------------------------------
# handlers: what happens around the loop (as MONAI's handlers on Ignite's events)
# --------------------------------------------------------------------------------------------


@dataclass
class TrainState:
    """Everything a training run holds between epochs; the loop and its handlers share it.

    ``model`` is the bare module (checkpoints, weights), ``net`` what the loop calls (the DDP
    wrapper under ``torchrun``, else ``model``). ``epoch`` is the last finished epoch
    (1-based; 0 before the first), ``bad_epochs`` the early-stopping counter; ``record`` the
    row of the epoch just finished, ``val_loss`` the loss that drives the schedule and
    ``seconds`` the epoch's wall-clock time.
    """

    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    device: torch.device
    dtype: torch.dtype | None
    rank: distributed.DistInfo
    run_dir: Path
    n_epochs: int
    seed: int
    objective: str
    run_key: dict[str, str] | None
    history: History = field(default_factory=History)
    epoch: int = 0
    bad_epochs: int = 0
    record: dict[str, float] = field(default_factory=dict)
    val_loss: float = math.nan
    seconds: float = math.nan

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"


class Handler:
    """A piece of the training run attached to the loop's three events (Ignite's ``STARTED``,
    ``EPOCH_COMPLETED``, ``COMPLETED``); each method gets the shared :class:`TrainState`.
    Handlers run in list order, so the order of :func:`default_handlers` is part of the
    engine's behaviour."""

    def started(self, state: TrainState) -> None:  # noqa: B027 (optional hook)
        """Before the first epoch (after the optimiser, scheduler and scaler exist)."""

    def start_scored(self, state: TrainState) -> None:  # noqa: B027 (optional hook)
        """After the validation pass of the untrained model (``TrainConfig.score_start``;
        ``state.epoch`` is 0, ``state.record`` holds its ``val_*`` values)."""

    def epoch_completed(self, state: TrainState) -> None:  # noqa: B027 (optional hook)
        """After the training and validation passes of ``state.epoch``."""

    def completed(self, state: TrainState) -> None:  # noqa: B027 (optional hook)
        """After the last epoch (every rank has finished writing)."""


class Resume(Handler):
    """Continue from ``last.pt`` (model, optimiser, scheduler, scaler, RNG states, history,
    early-stopping counter); refuse a checkpoint of another run (``run_key`` differs)."""

    def started(self, state: TrainState) -> None:
        path = state.last_path
        if not path.is_file():
            return
        ckpt = torch.load(path, map_location=state.device, weights_only=False)
        run_key = state.run_key
        if run_key is not None and isinstance(ckpt, dict) and ckpt.get("run_key") != run_key:
            old = ckpt.get("run_key") or {}
            differs = [k for k in run_key if old.get(k) != run_key[k]] or ["run"]
            raise RunMismatchError(
                f"{path}: checkpoint of another {', '.join(differs)}; not resumed "
                "(remove the run folder or train with resume=False)"
            )
        _load_weights(state.model, ckpt, path)
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            state.scaler.load_state_dict(ckpt["scaler"])
        rng_ranks, rank = ckpt.get("rng_ranks"), state.rank
        if rank.enabled and rng_ranks is not None and len(rng_ranks) == rank.world_size:
            _set_rng_state(rng_ranks[rank.rank])
        else:
            _set_rng_state(ckpt["rng"])
        state.history = History(**ckpt["history"])
        for record in state.history.records:  # checkpoints written before timing.json
            record.pop("seconds", None)
        state.epoch, state.bad_epochs = int(ckpt["epoch"]), int(ckpt["bad_epochs"])
        if ckpt.get("seed") != state.seed or ckpt.get("objective") != state.objective:
            warnings.warn(
                f"{path}: resuming a run made with seed={ckpt.get('seed')}, "
                f"objective={ckpt.get('objective')!r} under seed={state.seed}, "
                f"objective={state.objective!r}",
                stacklevel=3,
            )


class PlateauScheduler(Handler):
    """``ReduceLROnPlateau.step`` on the epoch's validation loss (4D-ACFNet section 4.2)."""

    def epoch_completed(self, state: TrainState) -> None:
        state.scheduler.step(state.val_loss)


class HistoryRecorder(Handler):
    """Append the epoch's row to ``state.history.records``."""

    def epoch_completed(self, state: TrainState) -> None:
        state.history.records.append(state.record)


#: Monitored values of :class:`BestCheckpoint` and their sign (+1: higher is better).
MONITORS: dict[str, float] = {"val_loss": -1.0, "val_c_os": 1.0}


class BestCheckpoint(Handler):
    """Early stopping and ``best.pt``: a better monitored validation value (``monitor``: the
    loss, or Harrell's C of the 5-year death risk, ``val_c_os``) saves ``best.pt`` and resets
    the counter; ``patience`` epochs without one stop the run (``history.stopped_early`` when
    it ends before ``n_epochs``); a value that cannot be computed (NaN: no comparable pair)
    counts as no improvement; a run that never computes it (under DDP the validation C is not
    gathered) follows the loss. With ``restore_best``, the best weights are loaded back into the
    model at the end. :meth:`start_scored` makes the untrained start (epoch 0) the first
    candidate."""

    def __init__(self, patience: int, restore_best: bool = True, monitor: str = "val_loss"):
        if monitor not in MONITORS:
            raise ValueError(f"unknown monitor {monitor!r}; use one of {sorted(MONITORS)}")
        self.patience = patience
        self.restore_best = restore_best
        self.monitor = monitor

    def _score(self, state: TrainState) -> float:
        monitor = self.monitor
        if monitor not in state.record:  # not computed at all (a DDP run): the loss, every epoch
            monitor = "val_loss"
        value = state.val_loss if monitor == "val_loss" else float(state.record[monitor])
        return -math.inf if math.isnan(value) else MONITORS[monitor] * value

    def start_scored(self, state: TrainState) -> None:
        self._consider(state)

    def epoch_completed(self, state: TrainState) -> None:
        self._consider(state)

    def _consider(self, state: TrainState) -> None:
        history, val_loss = state.history, state.val_loss
        score = self._score(state)
        if score > history.best_score:
            history.best_val_loss, history.best_epoch = float(val_loss), state.epoch
            history.best_score = score
            state.bad_epochs = 0
            if state.rank.is_main:
                best = {
                    "model": _unwrap(state.model).state_dict(),
                    "epoch": state.epoch,
                    "val_loss": float(val_loss),
                }
                atomic.torch_save(state.best_path, best)
        else:
            state.bad_epochs += 1
            if state.bad_epochs >= self.patience:
                history.stopped_early = state.epoch < state.n_epochs

    def completed(self, state: TrainState) -> None:
        if self.restore_best and state.best_path.is_file():
            load_checkpoint(state.model, state.best_path, map_location=state.device)


class LastCheckpoint(Handler):
    """``last.pt`` after every epoch: everything :class:`Resume` needs (the RNG states of every
    rank under DDP); only rank 0 writes."""

    def epoch_completed(self, state: TrainState) -> None:
        rank, rng_ranks = state.rank, None
        if rank.enabled:
            rng_ranks = [None] * rank.world_size
            torch.distributed.all_gather_object(rng_ranks, _rng_state())
        if not rank.is_main:
            return
        ckpt = {
            "model": _unwrap(state.model).state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "rng": _rng_state(),
            "rng_ranks": rng_ranks,
            "epoch": state.epoch,
            "bad_epochs": state.bad_epochs,
            "history": asdict(state.history),
            "seed": state.seed,
            "objective": state.objective,
            "run_key": state.run_key,
        }
        atomic.torch_save(state.last_path, ckpt)


class CSVLogger(Handler):
    """``history.csv`` (``History.to_frame()``) rewritten after every epoch by rank 0."""

    def epoch_completed(self, state: TrainState) -> None:
        if state.rank.is_main:
            atomic.write_csv(state.run_dir / "history.csv", state.history.to_frame(), index=False)


class TimingLog(Handler):
    """``timing.json``: ``{"epochs": [{"epoch": 1, "seconds": ...}, ...]}``, the wall-clock
    time of each epoch, rewritten after every epoch by rank 0. Kept out of ``history.csv`` and
    ``last.pt`` so that those are byte-reproducible; a resumed run keeps the rows of the epochs
    it resumes from."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def started(self, state: TrainState) -> None:
        path = state.run_dir / TIMING_FILE
        try:
            rows = json.loads(path.read_text()).get("epochs", []) if path.is_file() else []
        except ValueError:  # unreadable: times are informative only
            rows = []
        self.rows = [r for r in rows if int(r.get("epoch", 0)) <= state.epoch]

    def epoch_completed(self, state: TrainState) -> None:
        self.rows.append({"epoch": state.epoch, "seconds": round(float(state.seconds), 3)})
        if state.rank.is_main:
            atomic.write_json(state.run_dir / TIMING_FILE, {"epochs": self.rows}, indent=1)


class EpochProgress(Handler):
    """The tqdm bar over epochs (train/val loss, lr), on rank 0 only."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None

    def started(self, state: TrainState) -> None:
        self.bar = tqdm(
            total=state.n_epochs,
            initial=state.epoch,
            desc="epochs",
            disable=not (self.enabled and state.rank.is_main),
            leave=True,
        )

    def epoch_completed(self, state: TrainState) -> None:
        rec = state.record
        self.bar.update(1)
        self.bar.set_postfix(
            train=f"{rec['train_loss']:.4f}", val=f"{rec['val_loss']:.4f}", lr=f"{rec['lr']:.1e}"
        )

    def completed(self, state: TrainState) -> None:
        self.bar.close()


def default_handlers(
    tc: TrainConfig, *, resume: bool = True, progress: bool = True, restore_best: bool = True
) -> list[Handler]:
    """The handlers of :func:`fit`, in the order they run: resume (when asked), the plateau
    schedule, the history row, early stopping + ``best.pt``, ``last.pt``, ``history.csv``,
    ``timing.json``, the epoch bar."""
    handlers: list[Handler] = [Resume()] if resume else []
    return handlers + [
        PlateauScheduler(),
        HistoryRecorder(),
        BestCheckpoint(tc.early_stopping_patience, restore_best=restore_best, monitor=tc.monitor),
        LastCheckpoint(),
        CSVLogger(),
        TimingLog(),
        EpochProgress(progress),
    ]


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------


def _setup(
    model: nn.Module,
    tc: TrainConfig,
    run_dir: Path,
    *,
    n_epochs: int,
    seed: int,
    objective: str,
    device: str | torch.device | None,
    run_key: Mapping[str, str] | None,
) -> TrainState:
    """Seeds, device, autocast, DDP wrapper, AdamW, ``ReduceLROnPlateau`` and the scaler."""
    dev = select_device(device)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank = distributed.info()
    set_seed(seed, deterministic=tc.deterministic)
    if not tc.deterministic:
        torch.backends.cudnn.benchmark = True
    if rank.enabled:  # different dropout/augmentation draws per rank; rank 0 as single-process
        set_seed(seed + 1009 * rank.rank, deterministic=tc.deterministic)
    dtype = amp_dtype(dev, tc.amp)
    model.to(dev)
    if dev.type == "cuda":
        channels_last_3d(model)
    net: nn.Module = model
    if rank.enabled:
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[dev.index] if dev.type == "cuda" else None,
            find_unused_parameters=True,  # ablation switches leave some parameters unused
        )
    optimizer = build_optimizer(model, lr=tc.lr, weight_decay=tc.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=tc.plateau_factor, patience=tc.plateau_patience
    )
    scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
    return TrainState(
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=scheduler,
        scaler=scaler,
        device=dev,
        dtype=dtype,
        rank=rank,
        run_dir=run_dir,
        n_epochs=n_epochs,
        seed=seed,
        objective=objective,
        run_key=None if run_key is None else dict(run_key),
    )


def _epoch_record(
    epoch: int,
    lr: float,
    train: tuple[float, dict[str, float]],
    val: tuple[float, dict[str, float]],
) -> dict[str, float]:
    """One row of ``history.csv``: ``epoch, lr, train_loss, val_loss, train_<part>...,
    val_<part>...``."""
    record: dict[str, float] = {"epoch": epoch, "lr": lr, "train_loss": train[0]}
    record["val_loss"] = val[0]
    record.update({f"train_{k}": v for k, v in train[1].items()})
    record.update({f"val_{k}": v for k, v in val[1].items()})
    return record


def _train_pass(
    state: TrainState,
    train_ds: Dataset,
    tc: TrainConfig,
    loss_fn: LossFn,
    *,
    grad_clip: float | None,
    progress: bool,
    loader_kw: Mapping[str, Any],
    passes: Mapping[str, Any],
) -> tuple[float, dict[str, float]]:
    """The training pass of ``state.epoch``: its loader (shuffled from ``seed + epoch``, so a
    resumed run sees the same order), a batch bar, :func:`_run_epoch` with the optimiser."""
    train_loader = _loader(
        train_ds, tc.batch_size, True, state.seed + state.epoch, tc.num_workers,
        epoch=state.epoch, **loader_kw,
    )  # fmt: skip
    n_batches = len(train_loader)
    if tc.max_train_batches is not None:
        n_batches = min(n_batches, tc.max_train_batches)
    bar = tqdm(
        total=n_batches,
        desc=f"epoch {state.epoch}/{state.n_epochs}",
        disable=not (progress and state.rank.is_main),
        leave=False,
    )
    train = _run_epoch(
        state.net, train_loader, loss_fn, state.device, epoch=state.epoch,
        optimizer=state.optimizer, grad_clip=grad_clip, max_batches=tc.max_train_batches,
        bar=bar, scaler=state.scaler, **passes,
    )  # fmt: skip
    bar.close()
    return train


def _score_start(
    state: TrainState, val_loader, loss_fn: LossFn, passes: Mapping[str, Any], handlers
) -> None:
    """Validate the untrained model (epoch 0) and offer it to the handlers as the first
    candidate of ``best.pt`` (:meth:`Handler.start_scored`); no history row, no RNG drawn."""
    with torch.random.fork_rng():
        val = _run_epoch(
            state.net, val_loader, loss_fn, state.device, epoch=0,
            optimizer=None, grad_clip=None, max_batches=None, bar=None, **passes,
        )  # fmt: skip
    state.val_loss = val[0]
    state.record = {"epoch": 0, "val_loss": val[0], **{f"val_{k}": v for k, v in val[1].items()}}
    for handler in handlers:
        handler.start_scored(state)


def fit(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset | None,
    profile: str | Profile,
    run_dir: str | Path,
    *,
    epochs: int | None = None,
    objective: str = "paper",
    loss_weights: Mapping[str, float] | None = None,
    loss_fn: LossFn | None = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    resume: bool = True,
    progress: bool = True,
    grad_clip: float | None = GRAD_CLIP_NORM,
    restore_best: bool = True,
    run_key: Mapping[str, str] | None = None,
    handlers: Sequence[Handler] | None = None,
) -> History:
    """Train ``model`` with the papers' optimiser and schedule; checkpoint, log and resume.

    The loop itself only runs the training and validation passes of each epoch; everything
    around it is a :class:`Handler` (:func:`default_handlers`: :class:`Resume`,
    :class:`PlateauScheduler`, :class:`HistoryRecorder`, :class:`BestCheckpoint` (early
    stopping), :class:`LastCheckpoint`, :class:`CSVLogger`, :class:`EpochProgress`).

    Parameters
    ----------
    model : nn.Module
        Any model of ``crlm_lib.models`` (moved to ``device`` in place).
    train_ds, val_ds : Dataset
        Items as ``CRLMDataset`` (dicts of tensors + ``patient_id``). Without a validation set
        (``None`` or empty) the training loss drives the schedule, early stopping and
        ``best.pt``; say so when reporting.
    profile : str or Profile
        ``profile.train`` gives ``lr``, ``weight_decay``, ``batch_size``, ``plateau_factor``
        (0.5), ``plateau_patience`` (5), ``early_stopping_patience``, ``num_workers``,
        ``max_train_batches`` and ``epochs``; ``profile.seed`` the default seed. A name is
        resolved here (:func:`~crlm_lib.config.get_profile`), the public entry.
    run_dir : path
        Where ``best.pt``, ``last.pt`` and ``history.csv`` go (created).
    epochs : int, optional
        Total epochs (a resumed run continues up to this number). Default ``profile.train.epochs``.
    objective : {"paper", "censored"}
        Passed to the loss: the papers' cross-entropy or the censoring-aware likelihood.
    loss_weights : dict, optional
        Weights of the loss terms, passed to the loss.
    loss_fn : callable, optional
        ``loss_fn(outputs, batch, weights=..., objective=...) -> (loss, parts)``; default
        ``crlm_lib.losses.total_loss``.
    seed : int, optional
        Default ``profile.seed``. Seeds python, numpy, torch; the training DataLoader's
        shuffling uses a generator seeded with ``seed + epoch``, so that epoch ``e`` sees the
        same order whether or not the run was interrupted.
    device : str, optional
        ``cuda`` when available unless told otherwise. On CUDA the forward pass and loss run
        under autocast (``profile.train.amp``: bf16 where supported, see :func:`amp_dtype`),
        5-D inputs and weights use ``channels_last_3d``, batches come from pinned memory
        (``pin_memory``) through ``num_workers`` workers, and ``cudnn.benchmark`` is on only
        when ``profile.train.deterministic`` is off.
        Under ``torchrun`` (a process group is initialised, see :mod:`crlm_lib.distributed`)
        training is data-parallel (DDP): the training set is sharded, gradients and losses
        averaged across ranks, and only rank 0 writes files.
    resume : bool
        Continue from ``run_dir/last.pt`` when present (model, optimizer, scheduler, RNG
        states, history, early-stopping counter): a resumed run ends with the same weights as
        an uninterrupted one (bit-for-bit on CPU). ``False`` starts afresh and overwrites.
    progress : bool
        tqdm bars: one over epochs (train/val loss, lr) and one per epoch over batches.
    grad_clip : float or None
        Max global gradient norm (:data:`GRAD_CLIP_NORM` = 1.0); ``None``: no clipping.
    restore_best : bool
        Load the best epoch's weights into ``model`` before returning (default). ``False``
        leaves the last epoch's weights.
    run_key : dict, optional
        What the run is trained on (``evaluation.run_identity``: cohort, split and config
        hashes), stored in ``last.pt``. Resuming a ``last.pt`` whose key differs (or that has
        none) raises :class:`~crlm_lib.errors.RunMismatchError` before anything is written.
    handlers : list of Handler, optional
        Replaces :func:`default_handlers` (built from ``resume``, ``progress`` and
        ``restore_best``), e.g. to add a handler: ``default_handlers(tc) + [MyHandler()]``.

    Raises
    ------
    RunMismatchError
        When ``resume`` finds a ``last.pt`` of another run (``run_key`` differs).

    Returns
    -------
    History
    """
    prof = get_profile(profile)
    tc = prof.train
    state = _setup(
        model,
        tc,
        Path(run_dir),
        n_epochs=tc.epochs if epochs is None else int(epochs),
        seed=prof.seed if seed is None else int(seed),
        objective=objective,
        device=device,
        run_key=run_key,
    )
    if handlers is None:
        handlers = default_handlers(tc, resume=resume, progress=progress, restore_best=restore_best)
    for handler in handlers:
        handler.started(state)

    loss_fn = loss_fn or _default_loss_fn()
    dev, rank, seed = state.device, state.rank, state.seed
    loader_kw = {"pin_memory": tc.pin_memory and dev.type == "cuda", "rank": rank}
    has_val = val_ds is not None and len(val_ds) > 0
    val_loader = (
        _loader(val_ds, tc.batch_size, False, seed, tc.num_workers, **loader_kw)
        if has_val
        else None
    )
    passes = {
        "loss_weights": loss_weights,
        "objective": objective,
        "dtype": state.dtype,
        "rank": rank,
    }
    anchored = bool(getattr(model, "anchored_start", False))
    if tc.score_start and anchored and has_val and state.epoch == 0:
        _score_start(state, val_loader, loss_fn, passes, handlers)
    while state.epoch < state.n_epochs and not state.history.stopped_early:
        state.epoch += 1
        t0 = time.perf_counter()
        lr = float(state.optimizer.param_groups[0]["lr"])
        train = _train_pass(
            state, train_ds, tc, loss_fn, grad_clip=grad_clip, progress=progress,
            loader_kw=loader_kw, passes=passes,
        )  # fmt: skip
        val = train
        if has_val:
            val = _run_epoch(
                state.net, val_loader, loss_fn, dev, epoch=state.epoch,
                optimizer=None, grad_clip=None, max_batches=None, bar=None, **passes,
            )  # fmt: skip
        state.val_loss = val[0]
        state.record = _epoch_record(state.epoch, lr, train, val)
        state.seconds = time.perf_counter() - t0
        for handler in handlers:
            handler.epoch_completed(state)
    if rank.enabled:
        torch.distributed.barrier()  # rank 0's best.pt is complete before anyone reads it
    for handler in handlers:
        handler.completed(state)
    return state.history


# --------------------------------------------------------------------------------------------
# predictions
# --------------------------------------------------------------------------------------------

_OUTCOMES = ("os_years", "os_event", "dfs_years", "dfs_event")


@torch.no_grad()
def predict(
    model: nn.Module,
    ds: Dataset,
    batch_size: int = 8,
    device: str | torch.device | None = None,
    num_workers: int = 0,
    progress: bool = False,
    amp: str = "auto",
) -> pd.DataFrame:
    """Predictions of ``model`` for every item of ``ds`` (the ``Predictions`` table).

    Returns
    -------
    DataFrame, one row per patient in dataset order:
        ``patient_id``; ``surv_p1..surv_p12`` = softmax of ``survival_logits`` (probability of
        death in year k, rows sum to ``1 - S(12)``), and ``surv_p_beyond`` = ``S(12)`` when the
        head has the class beyond year 12 (``models.heads.head_probabilities``);
        ``rec_p1..rec_p12`` = sigmoid of ``recurrence_logits`` (probability of recurrence by
        the end of year k); the outcomes
        ``os_years, os_event, dfs_years, dfs_event`` when the items carry them; and
        ``att_1..att_12`` when the model exposes ``aux["attention"]`` ``[B, 12]``.
        Probabilities are computed in float32 from the logits (also after bf16 autocast).
        ``amp`` as ``TrainConfig.amp`` (:func:`amp_dtype`): bf16 autocast on a CUDA GPU.
    """
    dev = select_device(device)
    dtype = amp_dtype(dev, amp)
    model.to(dev)
    model.eval()
    loader = DataLoader(
        ds, batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=num_workers
    )
    frames: list[pd.DataFrame] = []
    for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
        batch = to_device(batch, dev)
        with _autocast(dev, dtype):
            out = model(batch)
        surv, beyond, rec = (t.cpu().numpy() for t in head_probabilities(out))
        cols: dict[str, Any] = {PATIENT_ID: [str(p) for p in batch["patient_id"]]}
        cols.update({c: surv[:, k] for k, c in enumerate(SURV_COLS)})
        cols.update({c: rec[:, k] for k, c in enumerate(REC_COLS)})
        if out["survival_logits"].shape[1] > N_YEARS:
            cols[BEYOND_COL] = beyond
        for key in _OUTCOMES:
            if key in batch:
                cols[key] = batch[key].float().cpu().numpy().reshape(-1)
        att = (out.get("aux") or {}).get("attention")
        if isinstance(att, torch.Tensor) and att.ndim == 2 and att.shape[1] == N_YEARS:
            att_np = att.float().cpu().numpy()
            cols.update({c: att_np[:, k] for k, c in enumerate(ATTENTION_COLS)})
        frames.append(pd.DataFrame(cols))
    if not frames:
        return pd.DataFrame(columns=[PATIENT_ID])
    df = pd.concat(frames, ignore_index=True)
    for key in ("os_event", "dfs_event"):
        if key in df:
            df[key] = df[key].round().astype(int)
    return df
