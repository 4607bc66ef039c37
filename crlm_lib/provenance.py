"""Which software made a file: package version, git commit, run identity.

One home for the provenance strings that ``run.json`` (``software``), the per-patient report and
the DICOM Parametric Maps (``SoftwareVersions``) carry, so the three always agree.

The git commit is read from the checkout the package is imported from (``git rev-parse HEAD``,
``git status --porcelain`` for uncommitted changes); an installed copy outside a checkout, or a
machine without git, records ``"unknown"`` rather than failing.

Example
-------
>>> rec = software_record()  # doctest: +SKIP
>>> rec["package"], rec["version"], len(rec["git_commit"])  # doctest: +SKIP
('crlm_lib', '0.1.0', 40)
"""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import crlm_lib

__all__ = ["ensemble_identity_text", "run_identity_text", "software_record", "software_text"]

_UNKNOWN = "unknown"


def _git(*args: str) -> str | None:
    """Output of ``git <args>`` in the package's checkout, or ``None`` (no git, no checkout)."""
    root = Path(crlm_lib.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


@functools.lru_cache(maxsize=1)
def software_record() -> dict[str, object]:
    """``{"package": "crlm_lib", "version": "0.1.0", "git_commit": "<40 hex>" | "unknown",
    "git_dirty": bool | None}`` of the code running now (cached: one ``git`` call per process).

    ``git_dirty`` is True when tracked files differ from the commit (the commit alone then does
    not reproduce the code), ``None`` when unknown.
    """
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "package": "crlm_lib",
        "version": crlm_lib.__version__,
        "git_commit": commit or _UNKNOWN,
        "git_dirty": None if status is None else bool(status),
    }


def software_text(record: Mapping[str, object] | None = None) -> str:
    """One line, e.g. ``crlm_lib 0.1.0 (git 0a287b6c1d2e, uncommitted changes)``: the report's
    and DICOM ``SoftwareVersions``' form of :func:`software_record` (default: this process)."""
    rec = software_record() if record is None else record
    commit = str(rec.get("git_commit") or _UNKNOWN)
    short = commit[:12] if commit != _UNKNOWN else commit
    dirty = ", uncommitted changes" if rec.get("git_dirty") else ""
    return f"{rec.get('package', 'crlm_lib')} {rec.get('version', '?')} (git {short}{dirty})"


def run_identity_text(record: Mapping[str, object]) -> str:
    """A run's identity from its ``run.json``: ``cohort 1a2b... / split 3c4d... / config
    5e6f...`` (``evaluation.run_identity``'s hashes), or ``"not recorded"``."""
    ident = record.get("identity")
    if not isinstance(ident, Mapping) or not ident:
        return "not recorded"
    return " / ".join(f"{k} {v}" for k, v in ident.items())


def ensemble_identity_text(records: Sequence[Mapping[str, object]]) -> str:
    """The identities of several runs in one line: a hash the runs share once (``cohort
    1a2b...``), one that differs per run listed in run order (``split per run: 3c4d..., ...``);
    ``"not recorded"`` when a run has none."""
    idents = [r.get("identity") for r in records]
    if not idents or not all(isinstance(i, Mapping) and i for i in idents):
        return "not recorded"
    parts = []
    for key in idents[0]:
        values = [str(i.get(key)) for i in idents]
        if len(set(values)) == 1:
            parts.append(f"{key} {values[0]}")
        else:
            parts.append(f"{key} per run: {', '.join(values)}")
    return " / ".join(parts)
