"""Tests of crlm_lib.data.parallel: results of both paths; the pool's workers die with the parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from crlm_lib.data.parallel import run_jobs

REPO = Path(__file__).resolve().parents[2]


def _square(x: int) -> int:
    return x * x


def test_in_process_and_pool_give_the_same_results():
    jobs = [(i,) for i in range(5)]
    serial, broken = run_jobs(_square, jobs, 1, desc="x", progress=False)
    assert serial == [0, 1, 4, 9, 16] and broken is None
    pooled, broken = run_jobs(_square, jobs, 2, desc="x", progress=False)
    assert sorted(pooled) == serial and broken is None


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def test_workers_die_with_a_killed_parent(tmp_path):
    """SIGKILL the parent while both workers are inside a job: neither finishes its write."""
    script = tmp_path / "parent.py"
    script.write_text(
        textwrap.dedent(
            """
            import os, sys, time
            from pathlib import Path
            from crlm_lib.data.parallel import run_jobs

            def job(folder, i):
                Path(folder, f"started-{os.getpid()}").write_text("")
                time.sleep(4)
                Path(folder, f"written-{i}").write_text("orphan write")

            if __name__ == "__main__":
                run_jobs(job, [(sys.argv[1], 0), (sys.argv[1], 1)], 2, desc="x", progress=False)
            """
        )
    )
    out = tmp_path / "out"
    out.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, str(script), str(out)], env=env)
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("started-*"))) < 2:
            assert time.monotonic() < deadline, "the workers never started"
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.05)
        workers = [int(p.name.split("-")[1]) for p in out.glob("started-*")]
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [pid for pid in workers if _alive(pid)]
    time.sleep(4.5)  # past the end of the jobs: nothing was written after the kill
    assert not list(out.glob("written-*"))
