"""Execute the numbered notebooks with papermill, and prove that every cell ran.

``run_notebooks`` is what ``make notebooks`` / ``crlm notebooks`` call: each notebook is executed
with the profile's parameters (``profile``, ``data_dir``, ``clinical_path``, ``seed``)
and the executed copy is written to ``notebooks/executed/<tag>/`` where the manuscript renderer
finds it. Timings go to ``results/<tag>/notebook_times.csv`` (``docs/performance.md`` quotes
measured ones).

nbval can pass a notebook whose cells never ran (for example a notebook saved with no code
cells, or cells skipped by markers). So importing this module inside a kernel registers an IPython
``post_run_cell`` hook that counts the cells that ran without error, the last cell of every
notebook calls :func:`mark_done`, which records that count, and ``python -m crlm_lib.notebooks
check`` fails unless it reaches the notebook's number of code cells after its parameters cell.

The kernel's own ``execution_count`` cannot serve: nbval (0.11) executes cells with
``store_history=False``, which leaves the counter at 1, while papermill increments it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

from crlm_lib import atomic
from crlm_lib.config import find_repo_root, get_profile, resolve_paths, run_tag
from crlm_lib.errors import ArgumentError


def notebook_files(root: Path | None = None) -> list[Path]:
    """The numbered notebooks ``notebooks/NN_*.ipynb`` in run order."""
    root = root or find_repo_root()
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def select_notebooks(only: list[str] | None, root: Path | None = None) -> list[Path]:
    """The notebooks ``--only`` names (numbers such as ``"01"`` or ``"1"``), in run order; all
    of them when ``only`` is empty or None.

    Raises
    ------
    ArgumentError
        For a number no notebook has (``--only 99``), listing the numbers there are: running
        nothing and reporting success would hide the typo.
    """
    files = notebook_files(root)
    if not only:
        return files
    numbers = {nb.name[:2] for nb in files}
    wanted = {str(o).strip().zfill(2) for o in only}
    unknown = [str(o) for o in only if str(o).strip().zfill(2) not in numbers]
    if unknown:
        folder = (root or find_repo_root()) / "notebooks"
        raise ArgumentError(
            f"--only {' '.join(unknown)}: no such notebook in {folder}; the notebooks are "
            f"{', '.join(sorted(numbers)) or 'none'}"
        )
    return [nb for nb in files if nb.name[:2] in wanted]


def _done_dir(profile: str, real: bool = False, root: Path | None = None) -> Path:
    root = root or find_repo_root()
    return root / "results" / run_tag(profile, real) / ".done"


_PARAMETER_TAGS = {"parameters", "injected-parameters"}
_counter = {"ok": 0, "failed": 0, "registered": False}


def _count_cell(result) -> None:
    info = getattr(result, "info", None)
    if info is not None and not (info.raw_cell or "").strip():
        return  # nbval runs blank cells, papermill skips them: count neither
    _counter["ok" if result.success else "failed"] += 1


def _register_counter() -> bool:
    """Count executed cells from the cell that imports this module on (idempotent).

    Returns whether an IPython shell was found.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency of the notebooks extra
        return False
    shell = get_ipython()
    if shell is None:
        return False
    if not _counter["registered"]:
        shell.events.register("post_run_cell", _count_cell)
        _counter["registered"] = True
    return True


_register_counter()


def mark_done(name: str, profile: str, real: bool = False) -> Path:
    """Record that notebook ``name`` ran to its last cell, with the number of cells that ran.

    Call it as the last code cell of every numbered notebook; the notebook's first cell after
    its parameters cell must import this module (all numbered notebooks do, in their set-up
    cell). The count covers the importing cell through this one (whose own hook fires after
    it returns, hence the ``+ 1``); a cell that raised is counted as ``failed_cells`` instead.
    Outside IPython the count is -1, which :func:`check` rejects.
    """
    if _register_counter():
        executed, failed = _counter["ok"] + 1, _counter["failed"]
    else:
        executed, failed = -1, 0
    path = _done_dir(profile, real) / f"{name}.json"
    record = {"notebook": name, "executed_cells": executed, "failed_cells": failed}
    atomic.write_json(path, {**record, "time": time.time()})
    return path


def count_code_cells(path: Path) -> int:
    """Number of non-empty code cells of a notebook file, parameters cells not included."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    return sum(
        1
        for c in nb.cells
        if c.cell_type == "code"
        and c.source.strip()
        and not _PARAMETER_TAGS & set(c.get("metadata", {}).get("tags", []))
    )


def check(profile: str, notebooks: list[Path], real: bool = False) -> list[str]:
    """Problems found: a notebook without its done-marker, one with a failed cell, or one that
    executed fewer cells than it has (parameters cells aside)."""
    problems = []
    for nb in notebooks:
        marker = _done_dir(profile, real) / f"{nb.stem}.json"
        if not marker.is_file():
            problems.append(f"{nb.name}: never reached its last cell (no {marker})")
            continue
        record = json.loads(marker.read_text())
        executed = record["executed_cells"]
        expected = count_code_cells(nb)
        if record.get("failed_cells", 0):
            problems.append(f"{nb.name}: {record['failed_cells']} cells raised an error")
        elif executed < expected:
            problems.append(f"{nb.name}: {executed} cells executed of {expected}")
    return problems


def clear(profile: str, real: bool = False) -> None:
    """Remove the done-markers of a profile (before a fresh nbval run)."""
    folder = _done_dir(profile, real)
    if folder.is_dir():
        for f in folder.glob("*.json"):
            f.unlink()


def run_notebooks(
    profile: str,
    data_dir: str | Path | None = None,
    clinical: str | Path | None = None,
    *,
    seed: int = 0,
    only: list[str] | None = None,
    root: Path | None = None,
    executor: str | None = None,
) -> pd.DataFrame:
    """Execute the numbered notebooks with papermill, in order.

    Parameters
    ----------
    profile : str
        ``smoke``, ``cpu`` or ``paper``.
    data_dir, clinical : path, optional
        A real TCIA download and its clinical table (default: the synthetic cohort).
    seed : int
        Passed to every notebook.
    only : list of str, optional
        Notebook numbers to run (``["01", "02"]``); default all; an unknown number raises
        :class:`~crlm_lib.errors.ArgumentError` (:func:`select_notebooks`).
    root : path, optional
        The checkout whose notebooks run (default: found from the current directory).
    executor : str, optional
        Where the notebooks' protocols run their fits (``crlm_lib.executors``: ``"local"``,
        ``"dask"``, ``"slurm:partition=gpu"`` ...), given as the papermill parameter
        ``executor`` to the notebooks that declare it (those that train); None: the
        profile's (``Profile.executor``).

    Returns
    -------
    pandas.DataFrame
        ``notebook``, ``seconds`` (also written to ``results/<tag>/notebook_times.csv``).
    """
    import papermill as pm

    prof = get_profile(profile)
    paths = resolve_paths(prof, data_dir, clinical, root=root)
    selected = select_notebooks(only, paths.root)
    real = not paths.synthetic
    out_dir = paths.root / "notebooks" / "executed" / run_tag(prof.name, real)
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "profile": prof.name,
        "data_dir": str(paths.cohort_dir) if real else None,
        "clinical_path": str(paths.clinical_csv) if real else None,
        "seed": seed,
    }
    times_csv = paths.results_dir / "notebook_times.csv"
    rows = pd.read_csv(times_csv).to_dict("records") if times_csv.is_file() else []
    for nb in selected:
        print(f"[{time.strftime('%H:%M:%S')}] {nb.name} (profile {prof.name})", flush=True)
        start = time.perf_counter()
        declared = pm.inspect_notebook(str(nb))
        pm.execute_notebook(
            str(nb),
            str(out_dir / nb.name),
            parameters={
                **params,
                **({"executor": executor} if executor and "executor" in declared else {}),
            },
            cwd=str(nb.parent),
            progress_bar=False,
            kernel_name="python3",
        )
        seconds = time.perf_counter() - start
        rows = [r for r in rows if r["notebook"] != nb.stem] + [
            {"notebook": nb.stem, "seconds": round(seconds, 1)}
        ]
        print(f"    done in {seconds / 60:.1f} min", flush=True)
        atomic.write_csv(times_csv, pd.DataFrame(rows).sort_values("notebook"), index=False)
    problems = check(prof.name, selected, real)
    if problems:
        raise RuntimeError("notebooks did not run to the end:\n" + "\n".join(problems))
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crlm_lib.notebooks")
    parser.add_argument("action", choices=["check", "clear"])
    parser.add_argument("--profile", default="smoke")
    parser.add_argument("--real", action="store_true")
    parser.add_argument("notebooks", nargs="*", type=Path)
    a = parser.parse_intermixed_args(argv)
    if a.action == "clear":
        clear(a.profile, a.real)
        return 0
    nbs = a.notebooks or notebook_files()
    problems = check(a.profile, nbs, a.real)
    for p in problems:
        print(f"FAILED {p}")
    print(f"{len(nbs) - len(problems)} passed, {len(problems)} failed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
