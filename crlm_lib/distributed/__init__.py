"""Multi-process data parallel training (``torch.distributed`` DDP), launched by ``torchrun``.

One process per GPU (or per CPU process group with the ``gloo`` backend in tests). The entry
point -- ``crlm`` (:func:`crlm_lib.cli.main`) -- calls :func:`init_from_env` once; from then on
``crlm_lib.train.fit`` sees an initialised process group and trains data-parallel without any
further argument, so every caller of ``fit`` (``crlm train``, the paper split and the
cross-validation folds of ``crlm_lib.evaluation``) scales the same way:

- the model is wrapped in ``DistributedDataParallel`` (gradients averaged across ranks);
- each rank reads its shard of the training set (``DistributedSampler``, reshuffled per
  epoch from the run's seed), so the *global* batch is ``batch_size x world_size``;
- validation losses are summed across ranks (``all_reduce``), so the learning-rate schedule,
  early stopping and the best epoch are the same decision on every rank;
- only rank 0 writes checkpoints and ``history.csv``; every rank resumes from rank 0's
  ``last.pt`` (one machine or a shared file system).

Command (one node, 4 GPUs)::

    crlm data --profile paper                      # once: synthetic cohort + cache
    torchrun --standalone --nproc_per_node 4 -m crlm_lib.cli train --model acfnet \\
        --profile paper --out runs/paper/acfnet-ddp
    torchrun --standalone --nproc_per_node 4 -m crlm_lib.cli cv --profile paper

``python -m crlm_lib.distributed cv`` (:mod:`crlm_lib.distributed.__main__`) is the same as
``crlm cv``; the hand-over lives in that entry module, on top of the layers, so that this
package imports nothing of the library.

The environment variables ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` are set by
``torchrun``; they are read here, at the entry point, and nowhere deeper in the library.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "info", "init_from_env", "init_process_group", "barrier", "cleanup"]


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process (``world_size == 1``: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def info() -> DistInfo:
    """The current process group's rank and size (``DistInfo()`` when none is initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def init_process_group(
    rank: int, world_size: int, backend: str | None = None, init_method: str | None = None
) -> DistInfo:
    """Join a process group explicitly (tests, ``torch.multiprocessing`` launchers).

    ``backend`` defaults to ``nccl`` when CUDA is available, else ``gloo``. On CUDA the process
    is bound to GPU ``rank % device_count``.
    """
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(
        backend, init_method=init_method or "env://", rank=rank, world_size=world_size
    )
    if backend == "nccl":
        torch.cuda.set_device(rank % torch.cuda.device_count())
    return info()


def init_from_env(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Initialise the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``).

    Returns ``DistInfo()`` (no process group) for a plain ``python``/``crlm`` launch.
    """
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return info()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(int(env.get("LOCAL_RANK", "0")))
    return info()


def barrier() -> None:
    """Wait for every rank (no-op when not distributed)."""
    if info().enabled:
        dist.barrier()


def cleanup() -> None:
    """Destroy the process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
