"""The data step's manifest: what ``crlm data`` built, and from which inputs.

``pipeline.ensure_data`` writes ``<processed_dir>/data_manifest.json`` once the cohort is
written, preprocessed and its exclusions recorded. It holds the fingerprint of the step's
inputs (:func:`inputs_fingerprint`) and of its outputs (:func:`outputs_fingerprint`). The next
call with the same request (``crlm notebooks``, each notebook's ``pipeline.load_study``) reads
it and, when both fingerprints still match, reuses the cohort, the cache, ``report.csv`` and
``exclusions.csv`` as they are instead of reading every DICOM header and hashing every file
again; any change (a file added, removed or rewritten under the cohort folder, another
clinical table, seed, profile setting or preprocessing version, a cache file deleted or
rewritten) makes it run the whole step.

The fingerprints are those of ``make``: each file's path, size and modification time
(``os.stat``), not its bytes, so that checking costs one ``stat`` per file (milliseconds for
the cpu cohort's ~9,000 files). A file rewritten in place with its size and modification time
put back goes unseen here; the full step (``crlm data``, which never reuses) catches it, since
the preprocessing cache keys on the SHA-256 of every source file
(``data.preprocess.source_manifest``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path

from crlm_lib import atomic
from crlm_lib.config import Paths, Profile

#: File name of the manifest inside ``Paths.processed_dir``.
MANIFEST_NAME = "data_manifest.json"

#: Bumped when the manifest's layout or the data step's outputs change meaning.
MANIFEST_VERSION = 1


def _visible_files(root: Path) -> Iterable[Path]:
    """Every regular file under ``root`` (``root`` itself when a file), hidden files and
    folders left out (lock files, another writer's temporary folder)."""
    if root.is_file():
        yield root
        return
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield Path(folder) / name


def _stat_lines(files: Iterable[Path], base: Path) -> list[str]:
    """``relative path, size, mtime_ns`` of each file (``missing`` for one that is gone)."""
    lines = []
    for f in files:
        try:
            st = f.stat()
            lines.append(f"{os.path.relpath(f, base)}\t{st.st_size}\t{st.st_mtime_ns}")
        except OSError:
            lines.append(f"{f}\tmissing")
    return lines


def _digest(parts: Iterable[str]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\n")
    return h.hexdigest()


def inputs_fingerprint(paths: Paths, profile: Profile, seed: int) -> str:
    """SHA-256 (hex) of what the data step reads: the request (cohort folder, clinical table,
    synthetic or real, the seed of a synthetic cohort, the profile's generator and
    preprocessing settings, the preprocessing algorithm's version) and every visible file under
    the cohort folder and the clinical table (path, size, modification time)."""
    from crlm_lib.data.preprocess import settings_json

    request = {
        "version": MANIFEST_VERSION,
        "cohort_dir": str(paths.cohort_dir),
        "clinical_csv": str(paths.clinical_csv),
        "synthetic": paths.synthetic,
        "seed": int(seed) if paths.synthetic else None,
        "synth": asdict(profile.synth) if paths.synthetic else None,
        "preprocess": settings_json(profile.preprocess),
    }
    files = list(_visible_files(Path(paths.cohort_dir)))
    lines = [json.dumps(request, sort_keys=True)]
    lines += _stat_lines(files, Path(paths.cohort_dir))
    lines += _stat_lines([Path(paths.clinical_csv)], Path(paths.clinical_csv).parent)
    return _digest(lines)


def outputs_fingerprint(paths: Paths) -> str:
    """SHA-256 (hex) of the data step's outputs in ``paths.processed_dir``: every visible file
    but the manifest itself (cache ``.npz`` files, ``report.csv``, ``exclusions.csv``)."""
    folder = Path(paths.processed_dir)
    files = [f for f in _visible_files(folder) if f.name != MANIFEST_NAME]
    return _digest(_stat_lines(files, folder))


def write_manifest(paths: Paths, profile: Profile, seed: int) -> dict:
    """Record (atomically) that the data step of this request finished; returns the record."""
    record = {
        "version": MANIFEST_VERSION,
        "profile": profile.name,
        "inputs": inputs_fingerprint(paths, profile, seed),
        "outputs": outputs_fingerprint(paths),
    }
    atomic.write_json(Path(paths.processed_dir) / MANIFEST_NAME, record)
    return record


def manifest_matches(paths: Paths, profile: Profile, seed: int) -> bool:
    """Whether ``processed_dir/data_manifest.json`` records this request's data step with the
    inputs and outputs as they are now (then the step need not run again)."""
    path = Path(paths.processed_dir) / MANIFEST_NAME
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("version") != MANIFEST_VERSION:
        return False
    return (
        record.get("profile") == profile.name
        and record.get("outputs") == outputs_fingerprint(paths)
        and record.get("inputs") == inputs_fingerprint(paths, profile, seed)
    )
