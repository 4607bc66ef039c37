"""One way to run independent per-patient jobs: in this process or in a ``spawn`` process pool.

Used by ``data.preprocess`` (cache entries) and ``data.synthetic`` (synthetic patients).
``spawn`` rather than ``fork``: safe after torch/OpenMP have started threads in the parent.
"""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool

from tqdm.auto import tqdm


def run_jobs(
    worker: Callable,
    jobs: list[tuple],
    n_jobs: int,
    *,
    desc: str,
    progress: bool = True,
    mp_context: str = "spawn",
    already_done: int = 0,
) -> tuple[list, BaseException | None]:
    """Run ``worker(*job)`` for every job, in this process when ``n_jobs <= 1`` (or a single
    job), else in a pool of ``n_jobs`` processes, with a tqdm bar (``already_done`` counts jobs
    finished before, shown in its total).

    Returns the workers' results in completion order and the :class:`BrokenProcessPool` error
    when a worker process died (``None`` otherwise); any other exception of a worker is raised.
    """
    results: list = []
    broken: BaseException | None = None
    total = already_done + len(jobs)
    with tqdm(total=total, initial=already_done, desc=desc, disable=not progress) as bar:
        if n_jobs <= 1 or len(jobs) <= 1:
            for job in jobs:
                results.append(worker(*job))
                bar.update()
            return results, broken
        ctx = mp.get_context(mp_context)
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=ctx) as pool:
            for fut in as_completed([pool.submit(worker, *job) for job in jobs]):
                try:
                    results.append(fut.result())
                except BrokenProcessPool as err:
                    broken = err
                bar.update()
    return results, broken
