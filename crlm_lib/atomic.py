"""Atomic file writes: the one place every file of the project is written through.

A reader (another process, a resumed run, a crash in the middle of a write) sees either the old
file or the complete new one, never a half-written file: the content goes to a temporary file
in the SAME folder (same filesystem, so the rename is atomic), is flushed to disk, and is then
renamed over the destination with :func:`os.replace`. On any error the temporary file is
removed and the destination is left as it was.

Temporary names are ``.<stem>.<pid>.<random><suffixes>.tmp`` (for example
``.CRLM-CT-1001.4242.k3j9x1.npz.tmp``): hidden, recognisable by ``.*.tmp``, and carrying the
writer's PID so that a cleanup can tell a dead writer's leftovers from a live writer's file
(``data.preprocess.remove_stale_temps``). Writers that choose the format from the file name
(nibabel, matplotlib) get ``keep_extension=True``: ``.<stem>.<pid>.<random>.tmp<suffixes>``.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_text(folder / "a.txt", "hello")
>>> (folder / "a.txt").read_text()
'hello'
>>> with atomic_path(folder / "b.txt") as tmp:
...     _ = tmp.write_text("via any writer")
>>> sorted(p.name for p in folder.iterdir())
['a.txt', 'b.txt']
"""

from __future__ import annotations

import io
import json
import math
import os
import secrets
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _split_name(path: Path) -> tuple[str, str]:
    """``"CRLM-CT-1001.npz"`` -> ``("CRLM-CT-1001", ".npz")``; ``"a.nii.gz"`` -> ``("a", ".nii.gz")``."""
    stem, dot, rest = path.name.partition(".")
    return (stem or path.name), (dot + rest)


def _fsync(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _new_temporary(folder: Path, prefix: str, suffix: str) -> str:
    """Create an empty file ``<prefix><8 random hex digits><suffix>`` in ``folder`` that did
    not exist before (``O_CREAT | O_EXCL``) and return its path.

    Created with mode ``0o666`` filtered by the process's umask, as ``open()`` creates any
    file, so the renamed output has the permissions every other file the user writes has
    (``0o644`` under the usual umask 022, group-writable under 002). ``tempfile.mkstemp``
    creates ``0o600`` whatever the umask: outputs shared with a group would be unreadable to
    it.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f"{prefix}{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no unused temporary name {prefix}*{suffix} in {folder}")


@contextmanager
def atomic_path(path: str | Path, *, keep_extension: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync'ed and renamed to ``path``.

    Parameters
    ----------
    path : path
        Destination; its folder is created when missing.
    keep_extension : bool
        End the temporary name with the destination's extension (``.tmp.nii.gz`` instead of
        ``.nii.gz.tmp``) for writers that pick the format from the name.

    Yields
    ------
    Path
        An empty file to (over)write. If the block raises, it is removed and ``path`` is
        untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stem, suffixes = _split_name(path)
    tmp = _new_temporary(
        path.parent,
        prefix=f".{stem}.{os.getpid()}.",
        suffix=f".tmp{suffixes}" if keep_extension else f"{suffixes}.tmp",
    )
    try:
        yield Path(tmp)
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (``encoding``, no newline translation)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as fh:
            fh.write(text)


def json_default(obj: Any) -> Any:
    """numpy scalars -> Python numbers, paths -> strings (what run records hold)."""
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", None) == 0:
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def strict_json(obj: Any) -> Any:
    """``obj`` with every non-finite number (NaN, +/-inf; Python or numpy floats, in nested
    dicts, lists and tuples) replaced by ``None``, so that ``json.dumps(..., allow_nan=False)``
    writes standard JSON (``null``), which strict parsers (JavaScript's ``JSON.parse``,
    ``jq``) read; Python's default would write the non-standard ``NaN``.

    >>> strict_json({"c": float("nan"), "v": [1.0, float("inf")]})
    {'c': None, 'v': [1.0, None]}
    """
    if isinstance(obj, dict):
        return {k: strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    if hasattr(obj, "dtype") and getattr(obj, "ndim", None) == 0:  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | Path, obj: Any, **dumps_kwargs: Any) -> None:
    """``json.dumps(obj, **dumps_kwargs)`` written atomically as strict JSON: non-finite
    numbers become ``null`` (:func:`strict_json`) and ``allow_nan`` is always False; numpy
    scalars and paths are converted unless ``default=`` is given."""
    dumps_kwargs.setdefault("default", json_default)
    dumps_kwargs["allow_nan"] = False
    write_text(path, json.dumps(strict_json(obj), **dumps_kwargs))


def write_csv(path: str | Path, frame: Any, **to_csv_kwargs: Any) -> None:
    """``frame.to_csv(path, **to_csv_kwargs)`` written atomically (pandas' own defaults,
    so pass ``index=False`` where the index is not data)."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv_kwargs)


#: Deflate level of the compressed members of :func:`savez` (masks, labels).
NPZ_DEFLATE_LEVEL = 1


def savez(path: str | Path, **arrays: Any) -> None:
    """Arrays to an ``.npz`` archive (read by ``np.load``) written atomically.

    Like ``np.savez_compressed`` except for what is compressed: floating-point arrays are
    stored as they are, everything else is deflated (level :data:`NPZ_DEFLATE_LEVEL`). Why: a
    preprocessed CT (float32 after CLAHE, noisy mantissas) shrinks by only 14% under
    ``savez_compressed``, for 115 of the 141 ms that writing a paper-profile patient's cache
    file takes that way; the masks shrink ~300x at any level. Every member has a fixed timestamp, so the same arrays
    give the same bytes. ``allow_pickle=False``: object arrays are refused, as by the reader.
    """
    import numpy as np

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for name, value in arrays.items():
                array = np.asanyarray(value)
                buffer = io.BytesIO()
                np.lib.format.write_array(buffer, array, allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                floating = array.dtype.kind in "fc"
                zf.writestr(
                    info,
                    buffer.getbuffer(),
                    compress_type=zipfile.ZIP_STORED if floating else zipfile.ZIP_DEFLATED,
                    compresslevel=None if floating else NPZ_DEFLATE_LEVEL,
                )


def torch_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` with byte-reproducible output, written atomically.

    ``torch.save`` to a file name makes a zip archive whose record names start with the file's
    stem (``.best.pt.k3j9x1.tmp/data.pkl``): saving to the random temporary name of an atomic
    write would put that random name inside the file, so two identical runs would give
    different bytes. Serialising to memory first names the records ``archive/...`` whatever
    the destination; the bytes are then written atomically.
    """
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())
