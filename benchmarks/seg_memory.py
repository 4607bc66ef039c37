"""Benchmark: peak memory of loading a DICOM-SEG with many tumour segments (not a test).

``python benchmarks/seg_memory.py [--shape 73 256 256] [--tumours 1 8 32]`` writes, for each
tumour count, one patient (CT series + a BINARY DICOM-SEG with the 4 fixed structures and one
segment per tumour, empty frames omitted, as the collection's SEGs) in a temporary folder, then
loads it with ``tcia.load_patient`` in a fresh subprocess and prints the peak of the memory
allocated while loading (``tracemalloc``, which numpy arrays report to; measured after a warm-up
load so that lazy imports do not count), the memory still held by the returned ``Patient``, and
the increase per tumour segment (slope between the smallest and the largest tumour count).

The CT volume itself (float32) is part of every row; the per-segment slope is the cost of one
more tumour (each is kept as its bounding-box crop). Measured peaks: ``docs/performance.md``,
"Memory of a SEG with many tumours".
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

_CHILD = r"""
import json, sys, tracemalloc
from crlm_lib.data import tcia
import highdicom, pydicom, numpy  # imported before the measurement
tcia.load_patient(sys.argv[1])  # warm-up: lazy imports inside the loader
tracemalloc.start()
p = tcia.load_patient(sys.argv[1])
current, peak = tracemalloc.get_traced_memory()
print(json.dumps({"peak_mb": peak / 2**20, "kept_mb": current / 2**20, "lesions": len(p.lesions)}))
"""


def _write(folder: Path, shape: tuple[int, int, int], n_tumours: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests" / "data"))
    from dicom_helpers import write_ct, write_seg  # the tests' pydicom/highdicom writers

    nz, ny, nx = shape
    rng = np.random.default_rng(0)
    z, y, x = np.ogrid[:nz, :ny, :nx]
    hu = np.full(shape, -100.0, np.float32)
    c = np.array(shape) / 2
    liver = ((z - c[0]) / (nz * 0.4)) ** 2 + ((y - c[1]) / (ny * 0.3)) ** 2 + (
        (x - c[2]) / (nx * 0.3)
    ) ** 2 <= 1
    segs = {
        "Liver": liver,
        "Liver_Remnant": liver & (x < c[2]),
        "Hepatic": liver & (np.abs(y - c[1] + ny // 8) <= 2) & (np.abs(x - c[2]) <= 2),
        "Portal": liver & (np.abs(y - c[1]) <= 2) & (np.abs(x - c[2] + nx // 8) <= 2),
    }
    for t in range(n_tumours):
        cz, cy, cx = (rng.uniform(0.3, 0.7) * s for s in shape)
        r = rng.uniform(2, 5)
        segs[f"Tumor_{t + 1}"] = (z - cz) ** 2 / 4 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    files, datasets = write_ct(folder / "ct", hu, patient_id="BENCH-1", shuffle_names=False)
    write_seg(folder / "seg" / "seg.dcm", datasets, segs)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(73, 256, 256), metavar=("Z", "Y", "X"))
    ap.add_argument("--tumours", type=int, nargs="+", default=(1, 8, 32))
    args = ap.parse_args()
    shape = tuple(args.shape)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.tumours:
            folder = _write(Path(tmp) / f"t{n}", shape, n)
            out = subprocess.run(
                [sys.executable, "-c", _CHILD, str(folder)],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if out.returncode:
                sys.exit(f"loading failed:\n{out.stderr}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append((n, r["peak_mb"]))
            print(
                f"{shape} {4 + n:3d} segments ({n:2d} tumours): peak {r['peak_mb']:7.1f} MB, "
                f"kept in the Patient {r['kept_mb']:7.1f} MB"
            )
    (n0, m0), (n1, m1) = rows[0], rows[-1]
    vol_mb = np.prod(shape) / 2**20
    if n1 > n0:
        per = (m1 - m0) / (n1 - n0)
        print(
            f"per tumour segment: {per:.2f} MB "
            f"(one full bool volume = {vol_mb:.2f} MB; ratio {per / vol_mb:.2f})"
        )


if __name__ == "__main__":
    main()
