"""crlm_lib.atomic: every file written whole or not at all, in one place."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from crlm_lib import atomic
from crlm_lib.data.preprocess import _tmp_owner


def test_writers_round_trip_and_leave_no_temporary(tmp_path: Path):
    atomic.write_text(tmp_path / "sub" / "a.txt", "héllo\n")
    atomic.write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic.write_json(tmp_path / "c.json", {"x": np.float32(0.5), "p": Path("/a")}, indent=2)
    atomic.write_csv(tmp_path / "d.csv", pd.DataFrame({"a": [1, 2]}), index=False)
    atomic.savez(tmp_path / "e.npz", ct=np.arange(3, dtype=np.float32))
    assert (tmp_path / "sub" / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert json.loads((tmp_path / "c.json").read_text()) == {"x": 0.5, "p": "/a"}
    assert (tmp_path / "d.csv").read_text() == "a\n1\n2\n"
    assert np.load(tmp_path / "e.npz")["ct"].tolist() == [0.0, 1.0, 2.0]
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]


def test_savez_stores_floats_deflates_the_rest_and_is_reproducible(tmp_path: Path):
    import zipfile

    rng = np.random.default_rng(0)
    arrays = {
        "ct": rng.random((4, 16, 16), dtype=np.float32),
        "masks": (rng.random((2, 4, 16, 16)) < 0.1).astype(np.uint8),
        "z_index": np.arange(4),
        "patient_id": np.asarray("CRLM-CT-1001"),
        "names": np.asarray(["a", "bb"]),
        "spacing": np.asarray([2.5, 0.8, 0.8]),
    }
    atomic.savez(tmp_path / "a.npz", **arrays)
    atomic.savez(tmp_path / "b.npz", **{k: v.copy() for k, v in arrays.items()})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert sorted(z.files) == sorted(arrays)
        for k, v in arrays.items():
            assert z[k].dtype == v.dtype
            np.testing.assert_array_equal(z[k], v)
    with zipfile.ZipFile(tmp_path / "a.npz") as zf:
        kinds = {i.filename: i.compress_type for i in zf.infolist()}
    assert kinds["ct.npy"] == kinds["spacing.npy"] == zipfile.ZIP_STORED
    assert kinds["masks.npy"] == kinds["names.npy"] == zipfile.ZIP_DEFLATED
    with pytest.raises(ValueError, match="pickle"):
        atomic.savez(tmp_path / "c.npz", bad=np.asarray([{"a": 1}], dtype=object))
    assert not (tmp_path / "c.npz").exists()


def test_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path):
    path = tmp_path / "metrics.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic.atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_temporary_names_carry_the_pid_and_optionally_the_extension(tmp_path: Path):
    with atomic.atomic_path(tmp_path / "CRLM-CT-1001.npz") as tmp:
        assert tmp.parent == tmp_path and tmp.name.endswith(".npz.tmp")
        assert _tmp_owner(tmp) == os.getpid()  # preprocess's stale-temp cleanup reads it
    with atomic.atomic_path(tmp_path / "map.nii.gz", keep_extension=True) as tmp:
        assert tmp.name.endswith(".tmp.nii.gz")


def test_torch_save_is_byte_reproducible_across_destinations(tmp_path: Path):
    obj = {"w": torch.arange(4.0), "epoch": 3}
    atomic.torch_save(tmp_path / "best.pt", obj)
    atomic.torch_save(tmp_path / "last.pt", obj)
    assert (tmp_path / "best.pt").read_bytes() == (tmp_path / "last.pt").read_bytes()
    assert torch.load(tmp_path / "best.pt")["epoch"] == 3


def _refuse_constant(name: str):
    raise ValueError(f"not standard JSON: {name}")


def test_json_is_strict_non_finite_numbers_become_null(tmp_path: Path):
    """NaN and infinities (Python or numpy, nested) are written as ``null``, so a strict
    parser reads every JSON file the project writes; Python's default would write NaN."""
    obj = {"c": float("nan"), "v": [np.float32(0.5), np.float64("inf")], "n": {"k": -np.inf}}
    atomic.write_json(tmp_path / "m.json", obj, indent=2)
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=_refuse_constant) == {
        "c": None, "v": [0.5, None], "n": {"k": None}
    }  # fmt: skip
    atomic.write_json(tmp_path / "n.json", {"a": float("nan")}, allow_nan=True)
    assert json.loads((tmp_path / "n.json").read_text(), parse_constant=_refuse_constant) == {
        "a": None
    }


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_get_the_mode_the_umask_gives(tmp_path: Path, umask: int):
    """Every writer's file ends with mode ``0o666 & ~umask``, as a file ``open()`` creates
    (not the ``0o600`` of ``tempfile.mkstemp``)."""
    old = os.umask(umask)
    try:
        atomic.write_text(tmp_path / "a.txt", "x")
        atomic.write_csv(tmp_path / "b.csv", pd.DataFrame({"a": [1]}))
        atomic.savez(tmp_path / "c.npz", a=np.zeros(2))
        atomic.torch_save(tmp_path / "d.pt", {"a": 1})
        with atomic.atomic_path(tmp_path / "e.nii.gz", keep_extension=True) as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(old)
    for name in ("a.txt", "b.csv", "c.npz", "d.pt", "e.nii.gz"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask, name
