"""Folder locks that serialise runs writing one folder: the preprocessing cache
(``data.preprocess.cache_lock``) and a synthetic cohort (``data.synthetic.cohort_lock``).

A lock is a file in the folder held with ``filelock`` (an ``fcntl.flock`` on POSIX, released by
the kernel when its process dies, so a killed run never leaves the folder locked); beside it,
``<lock>.pid`` names the process holding it, so that a run that waits, or gives up, can say who
holds it. A second run waits (logging who it waits for) or, after ``timeout_s`` seconds, raises
:class:`FolderLocked` in one line.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from crlm_lib import atomic
from crlm_lib.errors import CRLMUserError

log = logging.getLogger(__name__)


class FolderLocked(CRLMUserError, RuntimeError):
    """Another run held a folder's lock longer than the timeout (names the lock file and the
    PID of its owner); ``crlm`` prints it in one line, exit 2."""


def lock_owner(folder: str | Path, lock_name: str) -> str:
    """The PID recorded by the run holding ``folder/lock_name``, or ``"unknown"``."""
    try:
        return (Path(folder) / f"{lock_name}.pid").read_text().strip() or "unknown"
    except OSError:
        return "unknown"


@contextmanager
def folder_lock(
    folder: str | Path,
    lock_name: str,
    what: str,
    timeout_s: float | None = None,
    error: type[FolderLocked] = FolderLocked,
) -> Iterator[None]:
    """Hold the lock ``folder/lock_name`` (the folder must exist) while the block runs.

    Parameters
    ----------
    folder : path
        The folder the runs share.
    lock_name : str
        The lock file's name (``.preprocess.lock``); the owner's PID goes to ``<name>.pid``.
    what : str
        What holds such a lock, for the messages ("preprocessing run").
    timeout_s : float, optional
        Longest wait (seconds) for another run's lock; ``None`` waits until it is released.
    error : subclass of FolderLocked
        The class raised on timeout.

    Raises
    ------
    FolderLocked
        (``error``) when ``timeout_s`` passed while another run held the lock.
    """
    from filelock import FileLock, Timeout

    folder = Path(folder)
    lock = FileLock(folder / lock_name)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log.warning(
            "another %s (PID %s) is using %s; waiting for its lock %s",
            what, lock_owner(folder, lock_name), folder, lock.lock_file,
        )  # fmt: skip
        try:
            lock.acquire(timeout=-1 if timeout_s is None else timeout_s)
        except Timeout as err:
            raise error(
                f"another {what} holds {folder / lock_name} (owner PID "
                f"{lock_owner(folder, lock_name)}; waited {timeout_s} s); wait for it to "
                "finish, or remove the lock file if no run is alive"
            ) from err
    owner = folder / f"{lock_name}.pid"
    try:
        atomic.write_text(owner, str(os.getpid()))
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
