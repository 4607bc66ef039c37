"""Where the fits of a protocol run: in this process, on a Dask cluster, or as Slurm jobs.

An executor is chosen by one plain string (``crlm cv --executor``, the notebooks' ``executor``
parameter), parsed by :func:`parse_executor`::

    local                              one fit after another in this process (the default)
    local:threads=1                    ... with 1 torch CPU thread per fit
    dask                               a Dask cluster on this machine: one worker process per
                                       GPU (CUDA_VISIBLE_DEVICES set per worker), else 2
    dask:workers=4,threads=1           4 worker processes of 1 torch thread each
    dask:address=tcp://10.0.0.5:8786   an existing Dask cluster (``dask scheduler`` +
                                       ``dask worker ... --nthreads 1 --resources GPU=1``)
    slurm:partition=gpu,timeout_min=720    one Slurm array task per fit (submitit), 1 GPU each

:func:`run_tasks` runs a function on every item with the chosen engine and returns when all
have ended; the engines are imported only when chosen, so the default path pays nothing for
them. Each item is one task: Dask retries a task whose worker died (``retries``, on another or
the restarted worker); Slurm requeues a preempted or timed-out job (submitit's
``Checkpointable``). The functions given must make a task resumable from its own files (the
protocols' fits resume from their run folder's ``last.pt``), so that a rerun does the unfinished
tasks only. A task that fails does not stop the others: :class:`ExecutorError` names every
failed task once all have ended.

Thread count and identical numbers: on the CPU, a convolution's floating-point sums depend on
how many threads share them, so a fit's numbers are reproduced to the last digit only with the
same ``torch.set_num_threads``. ``threads`` sets it for every task (any executor); left out,
local fits keep this process's setting and Dask workers run ``cores // workers`` threads.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crlm_lib.errors import ArgumentError

__all__ = ["EXECUTORS", "ExecutorError", "ExecutorSpec", "parse_executor", "run_tasks"]

#: The executor kinds :func:`parse_executor` accepts.
EXECUTORS: tuple[str, ...] = ("local", "dask", "slurm")

#: Default Slurm parameters (submitit ``AutoExecutor`` names): one GPU and the paper profile's
#: 8 loader workers per fit, 12 hours (far above a fit's estimated time, README "Scaling out";
#: a job that runs out is requeued and resumes from its ``last.pt``).
SLURM_DEFAULTS: dict[str, Any] = {"gpus_per_node": 1, "cpus_per_task": 8, "timeout_min": 720}

_INT_KEYS = {"threads", "workers", "retries", "timeout_min", "gpus_per_node", "cpus_per_task"}
_INT_KEYS |= {"nodes", "tasks_per_node", "mem_gb"}
_KEYS = {
    "local": {"threads"},
    "dask": {"threads", "workers", "address", "retries"},
    "slurm": {"threads", "cluster", "folder", *SLURM_DEFAULTS},
}


class ExecutorError(RuntimeError):
    """Tasks of an executor failed; the others finished (and a rerun skips them)."""


@dataclass(frozen=True)
class ExecutorSpec:
    """A parsed executor string (see the module docstring).

    Attributes
    ----------
    kind : ``"local"``, ``"dask"`` or ``"slurm"``
    threads : torch CPU threads per task (None: see the module docstring)
    workers : Dask worker processes on this machine (None: one per GPU, else 2)
    address : an existing Dask scheduler (``tcp://host:port``); ``workers`` is then unused
    retries : Dask's retries of a task whose worker died or that raised
    options : the other ``key=value`` pairs: submitit parameters for Slurm (``partition``,
        ``account``, ``qos``, ... become ``slurm_partition`` ...; ``cluster=local`` or
        ``cluster=debug`` runs the jobs on this machine, ``folder`` holds the job logs)
    """

    kind: str = "local"
    threads: int | None = None
    workers: int | None = None
    address: str | None = None
    retries: int = 2
    options: tuple[tuple[str, Any], ...] = field(default=())

    def __str__(self) -> str:
        pairs = [(k, getattr(self, k)) for k in ("threads", "workers", "address")]
        pairs += list(self.options)
        text = ",".join(f"{k}={v}" for k, v in pairs if v is not None)
        return f"{self.kind}:{text}" if text else self.kind


def parse_executor(text: str | ExecutorSpec | None) -> ExecutorSpec:
    """``"KIND[:KEY=VALUE,...]"`` -> :class:`ExecutorSpec` (None or ``""``: local).

    Raises
    ------
    ArgumentError
        For an unknown kind or key, a missing ``=``, or a count that is not a positive integer.
    """
    if isinstance(text, ExecutorSpec):
        return text
    kind, _, rest = (text or "local").strip().partition(":")
    if kind not in EXECUTORS:
        raise ArgumentError(f"--executor {text}: unknown executor {kind!r}; choose {EXECUTORS}")
    values: dict[str, Any] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not value:
            raise ArgumentError(f"--executor {text}: {item!r} is not KEY=VALUE")
        if key not in _KEYS[kind] and not (kind == "slurm" and key.isidentifier()):
            raise ArgumentError(
                f"--executor {text}: {kind} takes {', '.join(sorted(_KEYS[kind]))}, not {key!r}"
            )
        if key in _INT_KEYS:
            if not value.isdigit() or (int(value) < 1 and key != "retries"):
                raise ArgumentError(f"--executor {text}: {key} must be a positive integer")
            values[key] = int(value)
        else:
            values[key] = value
    own = {k: values.pop(k) for k in ("threads", "workers", "address", "retries") if k in values}
    return ExecutorSpec(kind, options=tuple(sorted(values.items())), **own)


def run_tasks(
    fn: Callable[[Any], Any],
    items: Sequence[Any],
    executor: str | ExecutorSpec | None = None,
    *,
    labels: Sequence[str] | None = None,
    log_dir: str | Path | None = None,
) -> None:
    """Call ``fn(item)`` for every item with the chosen executor; return when all ended.

    ``fn`` and the items must be picklable (module-level functions, ``functools.partial``,
    dataclasses) for Dask and Slurm. ``labels`` name the tasks in progress bars and errors
    (default ``task <i>``); ``log_dir`` holds submitit's job files and logs (Slurm only).

    Raises
    ------
    ExecutorError
        Naming every task that failed (Dask, Slurm), after the others finished; the first
        failure is chained. The local executor lets a task's exception through as it is.
    """
    spec = parse_executor(executor)
    items = list(items)
    labels = list(labels) if labels is not None else [f"task {i}" for i in range(len(items))]
    if not items:
        return
    if spec.kind == "local":
        from tqdm.auto import tqdm

        for item in tqdm(items, desc="fits", leave=False):
            _with_threads(fn, item, spec.threads)
        return
    runner = _run_dask if spec.kind == "dask" else _run_slurm
    failed = runner(fn, items, labels, spec, Path(log_dir) if log_dir else None)
    if failed:
        names = "; ".join(f"{label}: {_one_line(err)}" for label, err in failed)
        raise ExecutorError(
            f"{len(failed)} of {len(items)} tasks failed ({names}); the other tasks finished "
            "and are kept: run the same command again to redo the failed ones only"
        ) from failed[0][1]


def _one_line(err: BaseException) -> str:
    """``"FileNotFoundError: ..."``: the exception a task raised, also from inside a submitit
    ``FailedJobError`` (whose message holds the job's whole traceback)."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    raised = [line for line in lines if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b", line)]
    return raised[-1] if raised else f"{type(err).__name__}: {lines[0] if lines else ''}"


def _gpu_count() -> int:
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def worker_specs(workers: int | None = None, gpus: int = 0) -> dict[str, dict]:
    """The worker processes of :func:`local_dask_cluster`: ``{name: {"cls": Nanny, "options":
    ...}}``, one task at a time each (``nthreads=1``); with ``gpus``, worker ``i`` sees GPU
    ``i % gpus`` only (``CUDA_VISIBLE_DEVICES``) and declares the resource ``GPU=1``, as
    dask-cuda's ``LocalCUDACluster`` does. ``workers`` defaults to ``gpus``, else 2. No memory
    limit: a fit's memory is the fit's (a limit would only restart it)."""
    from distributed import Nanny

    workers = workers or gpus or 2
    base = {"nthreads": 1, "host": "127.0.0.1", "memory_limit": 0, "silence_logs": 40}
    specs = {}
    for i in range(workers):
        options = dict(base)
        if gpus:
            options["env"] = {"CUDA_VISIBLE_DEVICES": str(i % gpus)}
            options["resources"] = {"GPU": 1}
        specs[f"fit-worker-{i}"] = {"cls": Nanny, "options": options}
    return specs


def local_dask_cluster(workers: int | None = None, gpus: int | None = None):
    """A Dask cluster on this machine of :func:`worker_specs` (``gpus`` default: the GPUs torch
    sees), so that every fit gets one GPU of its own. Returns a started
    ``distributed.SpecCluster`` (close it, or use it in ``with``)."""
    from distributed import Scheduler, SpecCluster

    gpus = _gpu_count() if gpus is None else gpus
    scheduler = {
        "cls": Scheduler,
        "options": {"host": "127.0.0.1", "dashboard": False, "dashboard_address": None},
    }
    return SpecCluster(workers=worker_specs(workers, gpus), scheduler=scheduler, silence_logs=40)


def _run_dask(fn, items, labels, spec: ExecutorSpec, log_dir) -> list[tuple[str, BaseException]]:
    """Every item as one Dask task; ``[(label, error)]`` of the failed ones."""
    from distributed import Client, as_completed
    from tqdm.auto import tqdm

    cluster = None if spec.address else local_dask_cluster(spec.workers)
    client = Client(spec.address or cluster)
    try:
        infos = client.scheduler_info()["workers"].values()
        gpu = any("GPU" in (w.get("resources") or {}) for w in infos)
        n_workers = max(1, len(infos))
        threads = spec.threads or max(1, (os.cpu_count() or 1) // n_workers)
        run_id = uuid.uuid4().hex[:8]
        keys = [f"{label}-{run_id}" for label in labels]
        futures = client.map(
            _with_threads, [fn] * len(items), items, [threads] * len(items),
            key=keys, pure=False, retries=spec.retries, resources={"GPU": 1} if gpu else None,
        )  # fmt: skip
        label_of = dict(zip(keys, labels, strict=True))
        failed = []
        for fut in tqdm(as_completed(futures), total=len(futures), desc="fits", leave=False):
            if fut.status == "error":
                failed.append((label_of[fut.key], fut.exception()))
        return failed
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _with_threads(fn, item, threads: int | None):
    """``fn(item)`` with ``torch.set_num_threads(threads)`` (restored after)."""
    if threads is None:
        return fn(item)
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return fn(item)
    finally:
        torch.set_num_threads(before)


def _run_slurm(fn, items, labels, spec: ExecutorSpec, log_dir) -> list[tuple[str, BaseException]]:
    """Every item as one task of a Slurm job array (submitit); ``[(label, error)]``."""
    import submitit

    class _Requeueable(submitit.helpers.Checkpointable):
        """A task that Slurm requeues when preempted or timed out (it resumes from its run
        folder), instead of failing."""

        def __call__(self, item, threads):
            return _with_threads(fn, item, threads)

    options = {**SLURM_DEFAULTS, **dict(spec.options)}
    cluster = options.pop("cluster", None)
    folder = Path(options.pop("folder", None) or log_dir or "slurm-logs") / "%j"
    generic = set(submitit.AutoExecutor._valid_parameters())
    params = {k if k in generic else f"slurm_{k}": v for k, v in options.items()}
    if cluster in ("local", "debug"):  # no Slurm: the same jobs on this machine
        params = {k: v for k, v in params.items() if k in generic and k != "gpus_per_node"}
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(name="crlm-fit", **params)
    jobs = executor.map_array(_Requeueable(), items, [spec.threads] * len(items))
    failed = []
    for job, label in zip(jobs, labels, strict=True):
        try:
            job.result()
        except Exception as err:  # noqa: BLE001 - every failure is reported together
            failed.append((label, err))
    return failed
