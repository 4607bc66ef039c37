"""Golden test of the preprocessing compute path (its speed-ups keep the outputs identical).

``golden/preprocess_golden.npz`` holds the outputs of :func:`preprocess_patient` for two
hand-made patients, written by the code as it was *before* the speed work (commit
"golden fixture of preprocess_patient"). Every later optimisation of the compute functions
(CLAHE, cubic resize, mask resize and closing, centre slice) must reproduce them bit for bit.
Lesion radiomics are not compared: they belong to ``data/lesions.py`` and change on their own.

Regenerate only when the algorithm changes on purpose (and bump ``PREPROCESS_VERSION``)::

    python tests/data/test_preprocess_golden.py --write
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import loaded_patient

from crlm_lib.config import PreprocessConfig
from crlm_lib.data import preprocess as pp
from crlm_lib.data.tcia import Patient

GOLDEN = Path(__file__).parent / "golden" / "preprocess_golden.npz"
#: The cpu profile's grid (96x96 synthetic slices -> 16x32x32), with a radius-1 closing.
#: The golden outputs were written with the full-range window (the compute path is what it pins).
CFG = PreprocessConfig(depth=16, size=32, closing_radius=1, hu_window=(-1024.0, 1024.0))
COMPARED = ("ct", "masks", "z_index", "bifurcation_z", "centre_method")


def golden_patient(kind: str) -> Patient:
    """Deterministic CT-like patient: ``long`` (40 slices, cropped) or ``short`` (10, padded)."""
    nz, ny, nx = (40, 96, 96) if kind == "long" else (10, 80, 72)
    rng = np.random.default_rng(11 if kind == "long" else 12)
    z, y, x = np.indices((nz, ny, nx), dtype=np.float32)
    cy, cx = ny / 2, nx / 2
    body = ((y - cy) / (0.45 * ny)) ** 2 + ((x - cx) / (0.45 * nx)) ** 2 <= 1
    liver = ((y - cy + 8) / (0.25 * ny)) ** 2 + ((x - cx - 6) / (0.2 * nx)) ** 2 <= 1
    ct = np.where(body, 40.0, -1000.0) + np.where(liver, 30.0, 0.0)
    ct = (ct + rng.normal(0, 25, ct.shape) + 200 * np.sin(x / 7) * body).astype(np.float32)
    bif = nz // 2
    r2 = (y - cy + 8) ** 2 + (x - cx - 6) ** 2
    up = z - bif
    branch = (z > bif) & (z < bif + 6)
    left = branch & ((y - cy + 8) ** 2 + (x - cx - 6 - 2 * up) ** 2 <= 2)
    right = branch & ((y - cy + 8) ** 2 + (x - cx - 6 + 2 * up) ** 2 <= 2)
    portal = ((z <= bif) & (r2 <= 9)) | left | right
    tumour = (z - nz / 3) ** 2 + (y - cy - 4) ** 2 + (x - cx) ** 2 <= 16
    ct[tumour] -= 60
    holes = rng.random(ct.shape) < 0.02  # pinholes the closing must fill
    masks = {
        "liver": liver & ~holes,
        "remnant": liver & (x < cx),
        "hepatic": liver & (np.abs(y - cy - 2) < 1.5),
        "portal": portal,
        "tumour": tumour,
    }
    ct[liver] += 20
    return loaded_patient(f"GOLD-{kind}", ct, (5.0, 4.0, 4.0), masks, tumour)


def _outputs() -> dict[str, np.ndarray]:
    out = {}
    for kind in ("long", "short"):
        arrays = pp.preprocess_patient(golden_patient(kind), CFG)
        out.update({f"{kind}/{k}": np.asarray(arrays[k]) for k in COMPARED})
    return out


@pytest.mark.parametrize("kind", ["long", "short"])
def test_preprocess_matches_golden_bit_for_bit(kind):
    with np.load(GOLDEN, allow_pickle=False) as z:
        want = {k: z[k] for k in z.files}
    got = pp.preprocess_patient(golden_patient(kind), CFG)
    for key in COMPARED:
        np.testing.assert_array_equal(np.asarray(got[key]), want[f"{kind}/{key}"], err_msg=key)
    assert got["ct"].dtype == want[f"{kind}/ct"].dtype
    assert got["masks"].dtype == want[f"{kind}/masks"].dtype


if __name__ == "__main__" and "--write" in sys.argv:
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **_outputs())
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size} bytes)")
