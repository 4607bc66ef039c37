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

The engine is split along its seams; this module is the loop (:func:`fit`: the passes of each
epoch, :func:`predict`) and re-exports the rest, so ``crlm_lib.train.<name>`` keeps working:

- :mod:`crlm_lib.devices`: seeds, device, autocast precision, batches on a device;
- :mod:`crlm_lib.handlers`: what happens around the loop (resume, schedule, early stopping,
  checkpoints, logs, progress) and the :class:`~crlm_lib.handlers.History` of a run;
- :mod:`crlm_lib.checkpoints`: what a checkpoint holds (weights, RNG states);
- :mod:`crlm_lib.runfolder`: the run folder's files and their one writer.

Files in ``run_dir``:

- ``best.pt``: ``{"model", "epoch", "val_loss"}`` of the epoch with the lowest validation loss;
- ``last.pt``: model, optimizer, scheduler, RNG states, epoch, history, early-stopping counter,
  written atomically after every epoch; :func:`fit` resumes from it;
- ``history.csv``: one row per epoch (``epoch, lr, train_loss, val_loss, train_<part>,
  val_<part>``), the table the notebooks plot;
- ``timing.json``: the wall-clock seconds of each epoch. The only file of the three that
  differs between identical runs, so that ``best.pt``, ``last.pt`` and ``history.csv`` are
  byte-reproducible (on the CPU; see :func:`~crlm_lib.devices.set_seed` for CUDA).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm.auto import tqdm

from crlm_lib import distributed
from crlm_lib.checkpoints import TrainingError, load_checkpoint
from crlm_lib.config import N_YEARS, Profile, TrainConfig, get_profile
from crlm_lib.data.dataset import collate
from crlm_lib.devices import (
    amp_dtype,
    autocast,
    channels_last_3d,
    select_device,
    set_seed,
    to_device,
    worker_init_fn,
)
from crlm_lib.handlers import (
    MONITORS,
    BestCheckpoint,
    CSVLogger,
    EpochProgress,
    Handler,
    History,
    HistoryRecorder,
    LastCheckpoint,
    PlateauScheduler,
    Resume,
    TimingLog,
    TrainState,
    default_handlers,
)
from crlm_lib.models.heads import head_probabilities
from crlm_lib.runfolder import TIMING_FILE, RunFolder
from crlm_lib.types import ATTENTION_COLS, BEYOND_COL, PATIENT_ID, REC_COLS, SURV_COLS

#: Global L2 norm at which gradients are clipped (``clip_grad_norm_``). The papers do not clip;
#: with batch size 1 and STAR's alignment loss divided by an agreement term that can approach
#: zero, single steps can explode, and 1.0 is the conventional bound that leaves ordinary steps
#: untouched. ``fit(..., grad_clip=None)`` turns it off.
GRAD_CLIP_NORM: float = 1.0

LossFn = Callable[..., tuple[torch.Tensor, dict[str, float]]]

__all__ = [
    "GRAD_CLIP_NORM",
    "MONITORS",
    "TIMING_FILE",
    "TrainingError",
    "History",
    "FitOptions",
    "PassConfig",
    "OptimiserStep",
    "set_seed",
    "select_device",
    "amp_dtype",
    "build_optimizer",
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
    "validation_c_index",
    "fit",
    "predict",
]


# --------------------------------------------------------------------------------------------
# optimiser and loaders
# --------------------------------------------------------------------------------------------


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
        worker_init_fn=worker_init_fn,
        pin_memory=pin_memory,
        persistent_workers=False,
    )


# --------------------------------------------------------------------------------------------
# one pass over a loader
# --------------------------------------------------------------------------------------------


def _default_loss_fn() -> LossFn:
    from crlm_lib.losses import total_loss  # imported late: losses are built beside this module

    return total_loss


@dataclass(frozen=True)
class PassConfig:
    """What every pass of one run shares: the loss (``loss_fn(outputs, batch, weights=...,
    objective=...) -> (loss, parts)``), its weights and objective, the device, the autocast
    precision (``None``: float32, :func:`~crlm_lib.devices.amp_dtype`) and the process group
    (``None`` or a disabled one: a single process)."""

    loss_fn: LossFn
    device: torch.device
    objective: str = "paper"
    loss_weights: Mapping[str, float] | None = None
    dtype: torch.dtype | None = None
    rank: distributed.DistInfo | None = None

    @property
    def distributed(self) -> bool:
        return self.rank is not None and self.rank.enabled


@dataclass(frozen=True)
class OptimiserStep:
    """What makes a pass a training pass: the optimiser, the fp16 gradient scaler (a disabled
    scaler or ``None``: no scaling) and the global gradient-norm bound (``None``: no
    clipping)."""

    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None = None
    grad_clip: float | None = None

    def __call__(self, model: nn.Module, loss: torch.Tensor) -> None:
        """Zero the gradients, backpropagate ``loss``, clip, step (through the scaler)."""
        optimizer, scaler, clip = self.optimizer, self.scaler, self.grad_clip
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            scaler.step(optimizer)
            scaler.update()
            return
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()


class _PassTotals:
    """Sums of one pass: the loss and its parts weighted by batch size, and the validation
    pass's 5-year death risks with the items' overall survival (for ``c_os``)."""

    def __init__(self) -> None:
        self.total, self.n_seen = 0.0, 0
        self.parts_sum: dict[str, float] = {}
        self.risks: list[np.ndarray] = []
        self.times: list[np.ndarray] = []
        self.events: list[np.ndarray] = []

    def add(self, loss: torch.Tensor, parts: Mapping[str, float], bsz: int) -> None:
        self.total += float(loss.detach()) * bsz
        self.n_seen += bsz
        for key, value in parts.items():
            self.parts_sum[key] = self.parts_sum.get(key, 0.0) + float(value) * bsz

    def add_risks(self, outputs: Mapping[str, Any], batch: Mapping[str, Any]) -> None:
        pmf = head_probabilities(outputs)[0].detach()
        self.risks.append(pmf[:, :5].sum(dim=1).cpu().numpy())
        self.times.append(batch["os_years"].float().cpu().numpy().reshape(-1))
        self.events.append(batch["os_event"].float().cpu().numpy().reshape(-1))

    def gather(self, rank: distributed.DistInfo) -> None:
        """Sum the totals of every rank (``all_gather_object``), in rank order."""
        gathered: list[Any] = [None] * rank.world_size
        torch.distributed.all_gather_object(gathered, (self.total, self.n_seen, self.parts_sum))
        self.total = sum(g[0] for g in gathered)
        self.n_seen = sum(g[1] for g in gathered)
        self.parts_sum = {}
        for _, _, ps in gathered:
            for key, value in ps.items():
                self.parts_sum[key] = self.parts_sum.get(key, 0.0) + value


def _run_epoch(
    model: nn.Module,
    loader: Iterable[dict[str, Any]],
    cfg: PassConfig,
    *,
    epoch: int,
    step: OptimiserStep | None = None,
    max_batches: int | None = None,
    bar: tqdm | None = None,
) -> tuple[float, dict[str, float]]:
    """One pass over ``loader``; trains when ``step`` is given. Returns the mean loss and
    mean loss parts, weighted by batch size (summed over every rank under DDP).

    A validation pass (no ``step``, one process) also returns ``c_os``: Harrell's C of the
    predicted probability of death by the end of year 5 (the sum of the first five survival
    bins, :func:`validation_c_index`) against the batch items' ``os_years``/``os_event``;
    ``history.csv`` then holds the learning curve ``val_c_os``."""
    train = step is not None
    model.train(train)
    sums = _PassTotals()
    with torch.enable_grad() if train else torch.no_grad():
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            batch = to_device(batch, cfg.device)
            with autocast(cfg.device, cfg.dtype):
                outputs = model(batch)
                loss, parts = cfg.loss_fn(
                    outputs, batch, weights=cfg.loss_weights, objective=cfg.objective
                )
            _check_finite(loss, parts, batch, epoch=epoch, index=i, train=train)
            if train:
                step(model, loss)
            if not train and "os_years" in batch:
                sums.add_risks(outputs, batch)
            sums.add(loss, parts, int(outputs["survival_logits"].shape[0]))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums.total / sums.n_seen:.4f}", refresh=False)
    if cfg.distributed:
        sums.gather(cfg.rank)
    if sums.n_seen == 0:
        return math.nan, {}
    parts = {k: v / sums.n_seen for k, v in sums.parts_sum.items()}
    if sums.risks and not cfg.distributed:
        parts["c_os"] = validation_c_index(
            np.concatenate(sums.times), np.concatenate(sums.events), np.concatenate(sums.risks)
        )
    return sums.total / sums.n_seen, parts


def _check_finite(loss, parts, batch, *, epoch: int, index: int, train: bool) -> None:
    """Stop the run on a non-finite loss, naming the epoch, batch, pass and patients."""
    if not torch.isfinite(loss):
        ids = batch.get("patient_id", "?")
        raise TrainingError(
            f"epoch {epoch}, batch {index}: non-finite loss {loss.item()} "
            f"({'train' if train else 'validation'}; patients {ids}; parts {parts})"
        )


def validation_c_index(os_years: np.ndarray, os_event: np.ndarray, risk: np.ndarray) -> float:
    """Harrell's C of ``risk`` (higher = earlier death) on validation patients; NaN when no
    pair is comparable (no event, or one patient). Recorded per epoch, never optimised."""
    from lifelines.utils import concordance_index

    try:
        return float(concordance_index(os_years, -np.asarray(risk, float), os_event))
    except ZeroDivisionError:  # lifelines: no admissible pairs
        return math.nan


# --------------------------------------------------------------------------------------------
# the engine
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FitOptions:
    """How :func:`fit` trains, beside the model, data, profile and run folder.

    Attributes
    ----------
    epochs : int, optional
        Total epochs (a resumed run continues up to this number). Default
        ``profile.train.epochs``.
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
        ``cuda`` when available unless told otherwise (see :func:`fit`).
    resume : bool
        Continue from ``run_dir/last.pt`` when present (model, optimizer, scheduler, RNG
        states, history, early-stopping counter): a resumed run ends with the same weights as
        an uninterrupted one (bit-for-bit on CPU). ``False`` starts afresh and overwrites.
    progress : bool
        tqdm bars: one over epochs (train/val loss, lr) and one per epoch over batches.
    grad_clip : float or None
        Max global gradient norm (:data:`GRAD_CLIP_NORM` = 1.0); ``None``: no clipping.
    restore_best : bool
        Load the best epoch's weights into the model before returning (default). ``False``
        leaves the last epoch's weights.
    run_key : dict, optional
        What the run is trained on (``evaluation.run_identity``: cohort, split and config
        hashes), stored in ``last.pt``. Resuming a ``last.pt`` whose key differs (or that has
        none) raises :class:`~crlm_lib.errors.RunMismatchError` before anything is written.
    handlers : list of Handler, optional
        Replaces :func:`~crlm_lib.handlers.default_handlers` (built from ``resume``,
        ``progress`` and ``restore_best``), e.g. to add a handler:
        ``default_handlers(tc) + [MyHandler()]``.
    """

    epochs: int | None = None
    objective: str = "paper"
    loss_weights: Mapping[str, float] | None = None
    loss_fn: LossFn | None = None
    seed: int | None = None
    device: str | torch.device | None = None
    resume: bool = True
    progress: bool = True
    grad_clip: float | None = GRAD_CLIP_NORM
    restore_best: bool = True
    run_key: Mapping[str, str] | None = None
    handlers: Sequence[Handler] | None = None


def _setup(model: nn.Module, prof: Profile, run_dir: Path, options: FitOptions) -> TrainState:
    """Seeds, device, autocast, DDP wrapper, AdamW, ``ReduceLROnPlateau`` and the scaler."""
    tc = prof.train
    seed = prof.seed if options.seed is None else int(options.seed)
    dev = select_device(options.device)
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
    run_key = options.run_key
    return TrainState(
        model=model, net=net, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
        device=dev, dtype=dtype, rank=rank, run=RunFolder(run_dir),
        n_epochs=tc.epochs if options.epochs is None else int(options.epochs),
        seed=seed, objective=options.objective,
        run_key=None if run_key is None else dict(run_key),
    )  # fmt: skip


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


@dataclass
class _Epochs:
    """What the loop of one :func:`fit` call holds besides the :class:`TrainState`."""

    state: TrainState
    tc: TrainConfig
    cfg: PassConfig
    train_ds: Dataset
    val_loader: DataLoader | None
    loader_kw: dict[str, Any]
    handlers: Sequence[Handler]
    options: FitOptions

    def train_pass(self) -> tuple[float, dict[str, float]]:
        """The training pass of ``state.epoch``: its loader (shuffled from ``seed + epoch``, so
        a resumed run sees the same order), a batch bar, :func:`_run_epoch` with the
        optimiser."""
        state, tc = self.state, self.tc
        train_loader = _loader(
            self.train_ds, tc.batch_size, True, state.seed + state.epoch, tc.num_workers,
            epoch=state.epoch, **self.loader_kw,
        )  # fmt: skip
        n_batches = len(train_loader)
        if tc.max_train_batches is not None:
            n_batches = min(n_batches, tc.max_train_batches)
        bar = tqdm(
            total=n_batches,
            desc=f"epoch {state.epoch}/{state.n_epochs}",
            disable=not (self.options.progress and state.rank.is_main),
            leave=False,
        )
        step = OptimiserStep(state.optimizer, state.scaler, self.options.grad_clip)
        train = _run_epoch(
            state.net, train_loader, self.cfg, epoch=state.epoch, step=step,
            max_batches=tc.max_train_batches, bar=bar,
        )  # fmt: skip
        bar.close()
        return train

    def validate(self, epoch: int) -> tuple[float, dict[str, float]]:
        """The validation pass (no optimiser, every item)."""
        return _run_epoch(self.state.net, self.val_loader, self.cfg, epoch=epoch)

    def score_start(self) -> None:
        """Validate the untrained model (epoch 0) and offer it to the handlers as the first
        candidate of ``best.pt`` (:meth:`Handler.start_scored`); no history row, no RNG
        drawn."""
        state = self.state
        with torch.random.fork_rng():
            val = self.validate(0)
        state.val_loss = val[0]
        state.record = {
            "epoch": 0,
            "val_loss": val[0],
            **{f"val_{k}": v for k, v in val[1].items()},
        }
        for handler in self.handlers:
            handler.start_scored(state)

    def run_epoch(self) -> None:
        """One epoch: the training pass, the validation pass (the training pass's numbers
        without a validation set), the history row, then every handler's
        ``epoch_completed``."""
        state = self.state
        state.epoch += 1
        t0 = time.perf_counter()
        lr = float(state.optimizer.param_groups[0]["lr"])
        train = self.train_pass()
        val = self.validate(state.epoch) if self.val_loader is not None else train
        state.val_loss = val[0]
        state.record = _epoch_record(state.epoch, lr, train, val)
        state.seconds = time.perf_counter() - t0
        for handler in self.handlers:
            handler.epoch_completed(state)


def fit(
    model: nn.Module,
    train_ds: Dataset,
    val_ds: Dataset | None,
    profile: str | Profile,
    run_dir: str | Path,
    options: FitOptions | None = None,
    **overrides: Any,
) -> History:
    """Train ``model`` with the papers' optimiser and schedule; checkpoint, log and resume.

    The loop itself only runs the training and validation passes of each epoch; everything
    around it is a :class:`~crlm_lib.handlers.Handler` (:func:`default_handlers`:
    :class:`Resume`, :class:`PlateauScheduler`, :class:`HistoryRecorder`,
    :class:`BestCheckpoint` (early stopping), :class:`LastCheckpoint`, :class:`CSVLogger`,
    :class:`TimingLog`, :class:`EpochProgress`).

    Parameters
    ----------
    model : nn.Module
        Any model of ``crlm_lib.models`` (moved to the device in place).
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
        Where ``best.pt``, ``last.pt``, ``history.csv`` and ``timing.json`` go (created;
        :class:`~crlm_lib.runfolder.RunFolder`).
    options : FitOptions, optional
        Epochs, objective, loss, seed, device, resume, progress, clipping, restoring the best
        weights, the run key and the handlers (:class:`FitOptions`; defaults when omitted).
    **overrides
        Fields of :class:`FitOptions` given as keywords (``fit(..., epochs=3, seed=5)``),
        replacing those of ``options``.

    On CUDA the forward pass and loss run under autocast (``profile.train.amp``: bf16 where
    supported, :func:`~crlm_lib.devices.amp_dtype`), 5-D inputs and weights use
    ``channels_last_3d``, batches come from pinned memory (``pin_memory``) through
    ``num_workers`` workers, and ``cudnn.benchmark`` is on only when
    ``profile.train.deterministic`` is off. Under ``torchrun`` (a process group is initialised,
    see :mod:`crlm_lib.distributed`) training is data-parallel (DDP): the training set is
    sharded, gradients and losses averaged across ranks, and only rank 0 writes files.

    Raises
    ------
    RunMismatchError
        When ``resume`` finds a ``last.pt`` of another run (``run_key`` differs).
    TypeError
        For a keyword that is no field of :class:`FitOptions`.

    Returns
    -------
    History
    """
    options = replace(options or FitOptions(), **overrides)
    prof = get_profile(profile)
    tc = prof.train
    state = _setup(model, prof, Path(run_dir), options)
    handlers = options.handlers
    if handlers is None:
        handlers = default_handlers(
            tc, resume=options.resume, progress=options.progress, restore_best=options.restore_best
        )
    for handler in handlers:
        handler.started(state)

    dev, rank = state.device, state.rank
    cfg = PassConfig(
        loss_fn=options.loss_fn or _default_loss_fn(), device=dev, objective=options.objective,
        loss_weights=options.loss_weights, dtype=state.dtype, rank=rank,
    )  # fmt: skip
    loader_kw = {"pin_memory": tc.pin_memory and dev.type == "cuda", "rank": rank}
    has_val = val_ds is not None and len(val_ds) > 0
    val_loader = None
    if has_val:
        val_loader = _loader(val_ds, tc.batch_size, False, state.seed, tc.num_workers, **loader_kw)
    epochs = _Epochs(state, tc, cfg, train_ds, val_loader, loader_kw, handlers, options)
    anchored = bool(getattr(model, "anchored_start", False))
    if tc.score_start and anchored and has_val and state.epoch == 0:
        epochs.score_start()
    while state.epoch < state.n_epochs and not state.history.stopped_early:
        epochs.run_epoch()
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
        with autocast(dev, dtype):
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
