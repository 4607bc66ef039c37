"""One way to run independent per-patient jobs: in this process or in a ``spawn`` process pool.

Used by ``data.preprocess`` (cache entries) and ``data.synthetic`` (synthetic patients).
``spawn`` rather than ``fork``: safe after torch/OpenMP have started threads in the parent.
The pool's workers die with the parent (:func:`_die_with_parent`): a killed run leaves no
worker behind that would go on writing cache files beside the next run.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tqdm.auto import tqdm

#: Seconds between two checks of the parent's PID where the kernel cannot signal its death.
PARENT_POLL_S = 0.5


def _die_with_parent(parent_pid: int) -> None:
    """Initializer of every pool worker: end this process as soon as ``parent_pid`` is gone.

    A worker whose parent is killed (SIGKILL, the OOM killer, a closed terminal) would finish
    its job and write its outputs after the run was given up, and ``concurrent.futures``
    workers only notice the lost parent when they ask for the next job. On Linux the kernel
    sends SIGKILL at once (``prctl(PR_SET_PDEATHSIG)``; it fires when the parent thread that
    started the worker ends, which in :func:`run_jobs` waits for every job); elsewhere a daemon
    thread checks the parent PID every :data:`PARENT_POLL_S` seconds. A parent that died
    before either was set up is caught by the first check.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:  # pragma: no cover - other platforms
        threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:
        os._exit(1)


def _watch_parent(parent_pid: int) -> None:  # pragma: no cover - other platforms
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def run_jobs(
    worker: Callable,
    jobs: list[tuple],
    n_jobs: int,
    *,
    desc: str,
    progress: bool = True,
    mp_context: str = "spawn",
    already_done: int = 0,
    leave: bool = True,
) -> tuple[list, BaseException | None]:
    """Run ``worker(*job)`` for every job, in this process when ``n_jobs <= 1`` (or a single
    job), else in a pool of ``n_jobs`` processes, with a tqdm bar (``already_done`` counts jobs
    finished before, shown in its total; ``leave=False`` clears it when done).

    Returns the workers' results in completion order and the :class:`BrokenProcessPool` error
    when a worker process died (``None`` otherwise); any other exception of a worker is raised.
    The workers end with this process (:func:`_die_with_parent`).
    """
    results: list = []
    broken: BaseException | None = None
    total = already_done + len(jobs)
    bar_options = {"desc": desc, "disable": not progress, "leave": leave}
    with tqdm(total=total, initial=already_done, **bar_options) as bar:
        if n_jobs <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(worker(*job))
                bar.update()
            return results, broken
        ctx = mp.get_context(mp_context)
        with ProcessPoolExecutor(
            max_workers=min(n_jobs, len(jobs)),
            mp_context=ctx,
            initializer=_die_with_parent,
            initargs=(os.getpid(),),
        ) as pool:
            for fut in as_completed([pool.submit(worker, *job) for job in jobs]):
                try:
                    results.append(fut.result())
                except BrokenProcessPool as err:
                    broken = err
                bar.update()
    return results, broken


def _numbered(index: int, worker: Callable, *args: Any) -> tuple[int, Any]:
    """``(index, worker(*args))``: one job of :func:`run_jobs_in_order`."""
    return index, worker(*args)


def run_jobs_in_order(
    worker: Callable, jobs: Sequence[tuple], n_jobs: int = 1, **options: Any
) -> tuple[list, BaseException | None]:
    """:func:`run_jobs` (``options``: its keywords) with the results in the order of ``jobs``
    rather than of completion, so that a caller's result does not depend on ``n_jobs``. When a
    worker process died, the results of the jobs that finished, in job order, and the error."""
    numbered = [(i, worker, *job) for i, job in enumerate(jobs)]
    results, broken = run_jobs(_numbered, numbered, n_jobs, **options)
    return [value for _, value in sorted(results, key=lambda r: r[0])], broken
