"""What happens around the training loop, as MONAI's handlers on Ignite's events: resume, the
plateau schedule, the history row, early stopping and ``best.pt``, ``last.pt``, ``history.csv``,
``timing.json`` and the epoch bar.

The loop (:func:`crlm_lib.train.fit`) runs the training and validation passes of each epoch
and calls every :class:`Handler` of its list on three events (``started``,
``epoch_completed``, ``completed``; ``start_scored`` for the untrained start of an anchored
model), all sharing one :class:`TrainState`. The files go through the run's
:class:`~crlm_lib.runfolder.RunFolder`, their one writer.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from crlm_lib import distributed
from crlm_lib.checkpoints import load_checkpoint, load_weights, rng_state, set_rng_state, unwrap
from crlm_lib.config import TrainConfig
from crlm_lib.errors import RunMismatchError
from crlm_lib.runfolder import RunFolder

__all__ = [
    "MONITORS",
    "BestCheckpoint",
    "CSVLogger",
    "EpochProgress",
    "Handler",
    "History",
    "HistoryRecorder",
    "LastCheckpoint",
    "PlateauScheduler",
    "Resume",
    "TimingLog",
    "TrainState",
    "default_handlers",
]


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
    run: RunFolder
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
    def run_dir(self) -> Path:
        """The run folder's path."""
        return self.run.path

    @property
    def last_path(self) -> Path:
        return self.run.last_path

    @property
    def best_path(self) -> Path:
        return self.run.best_path


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
        ckpt = state.run.read_last(map_location=state.device)
        if ckpt is None:
            return
        run_key = state.run_key
        if run_key is not None and isinstance(ckpt, dict) and ckpt.get("run_key") != run_key:
            old = ckpt.get("run_key") or {}
            differs = [k for k in run_key if old.get(k) != run_key[k]] or ["run"]
            raise RunMismatchError(
                f"{path}: checkpoint of another {', '.join(differs)}; not resumed "
                "(remove the run folder or train with resume=False)"
            )
        load_weights(state.model, ckpt, path)
        state.optimizer.load_state_dict(ckpt["optimizer"])
        state.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            state.scaler.load_state_dict(ckpt["scaler"])
        rng_ranks, rank = ckpt.get("rng_ranks"), state.rank
        if rank.enabled and rng_ranks is not None and len(rng_ranks) == rank.world_size:
            set_rng_state(rng_ranks[rank.rank])
        else:
            set_rng_state(ckpt["rng"])
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
                state.run.save_best(unwrap(state.model).state_dict(), state.epoch, val_loss)
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
            torch.distributed.all_gather_object(rng_ranks, rng_state())
        if not rank.is_main:
            return
        ckpt = {
            "model": unwrap(state.model).state_dict(),
            "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "scaler": state.scaler.state_dict(),
            "rng": rng_state(),
            "rng_ranks": rng_ranks,
            "epoch": state.epoch,
            "bad_epochs": state.bad_epochs,
            "history": asdict(state.history),
            "seed": state.seed,
            "objective": state.objective,
            "run_key": state.run_key,
        }
        state.run.save_last(ckpt)


class CSVLogger(Handler):
    """``history.csv`` (``History.to_frame()``) rewritten after every epoch by rank 0, and at
    the end when no epoch wrote it (a run of zero epochs)."""

    def epoch_completed(self, state: TrainState) -> None:
        if state.rank.is_main:
            state.run.write_history(state.history.to_frame())

    def completed(self, state: TrainState) -> None:
        if state.rank.is_main and not state.run.history_path.is_file():
            state.run.write_history(state.history.to_frame())


class TimingLog(Handler):
    """``timing.json``: ``{"epochs": [{"epoch": 1, "seconds": ...}, ...]}``, the wall-clock
    time of each epoch, rewritten after every epoch by rank 0. Kept out of ``history.csv`` and
    ``last.pt`` so that those are byte-reproducible; a resumed run keeps the rows of the epochs
    it resumes from."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def started(self, state: TrainState) -> None:
        rows = state.run.read_timing()  # unreadable: [] (times are informative only)
        self.rows = [r for r in rows if int(r.get("epoch", 0)) <= state.epoch]

    def epoch_completed(self, state: TrainState) -> None:
        self.rows.append({"epoch": state.epoch, "seconds": round(float(state.seconds), 3)})
        if state.rank.is_main:
            state.run.write_timing(self.rows)


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
