"""The papers' preprocessing (4D-ACFNet section 4.1, repeated by STAR), cached per patient.

4D-ACFNet: "CT data were first enhanced using adaptive histogram equalization ..., followed by
downsampling to 128 x 128 resolution using third-order spline interpolation ... for cases with
>= 40 slices, a 40-slice volume centered at the hepatic portal vein bifurcation was extracted;
for cases with fewer slices, symmetric padding with -1024 HU ... Segmentation labels were
refined using mathematical morphological closing ... CT values were linearly mapped to the
[-1, 1] range."

Order of operations (per patient, :func:`preprocess_patient`)
-------------------------------------------------------------
1. **Centre slice** at the original resolution from the portal-vein mask
   (:func:`find_bifurcation`), falling back to the liver's centre (warning logged; the method
   is stored as ``centre_method``).
2. **Slice selection**: ``depth`` consecutive source slices centred on it (window shifted to
   stay inside the series); series with fewer than ``depth`` slices keep every slice and are
   padded symmetrically (the extra odd slice goes after). ``z_index`` records the source slice
   of each output slice (-1 = padding).
3. **Window**: HU clipped to ``hu_window`` and scaled linearly to [0, 1].
4. **CLAHE** (``skimage.exposure.equalize_adapthist``, ``clip_limit=clahe_clip_limit``) on the
   windowed slices. Choice: **per axial slice (2D)**, because slice thickness differs from the
   in-plane spacing (5 mm vs 0.7 mm in the collection) and a 3D tile would mix anatomy
   unevenly; ``clahe_mode="3d"`` is offered. The paper does not say; CLAHE output is in [0, 1]
   and keeps the window's meaning only monotonically (it is not linear in HU).
5. **In-plane resize** to ``size x size`` with a third-order spline
   (``scipy.ndimage.zoom(order=3, grid_mode=True)``, pixel-edge aligned), clipped back to
   [0, 1] (cubic overshoot). Masks use nearest neighbour (order 0).
6. **Map to [-1, 1]**: ``x = 2 u - 1``. Padding slices are then set to the mapped ``pad_hu``,
   i.e. exactly -1 for ``pad_hu = -1024`` and the default window; they are never equalised.
7. **Masks closed** morphologically (``scipy.ndimage.binary_closing`` with a ball of
   ``closing_radius`` voxels on the output grid, after zero padding by the radius so that the
   border does not erode them).

Per-lesion radiomics (:mod:`crlm_lib.data.lesions`) are computed at the original resolution.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing as mp
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import exposure, measure, morphology
from tqdm.auto import tqdm

from crlm_lib.config import MASK_NAMES, Paths, PreprocessConfig, Profile, get_profile
from crlm_lib.data import tcia
from crlm_lib.data.lesions import lesion_features

log = logging.getLogger(__name__)

#: Bump when the algorithm changes so that caches are recomputed.
PREPROCESS_VERSION = 1

CENTRE_METHODS = ("portal_skeleton", "portal_area", "liver_centre", "volume_centre")


class PreprocessInterrupted(RuntimeError):
    """A worker died (killed, out of memory); finished patients are kept, rerun to resume."""


# --------------------------------------------------------------------------------------------
# Centre slice
# --------------------------------------------------------------------------------------------
def find_bifurcation(
    portal: np.ndarray,
    spacing: tuple[float, float, float],
    liver: np.ndarray | None = None,
) -> tuple[int, str]:
    """Slice index of the portal-vein bifurcation, with the method that found it.

    Method (``portal_skeleton``): the portal mask's largest 3D component is skeletonised
    (``skimage.morphology.skeletonize``); branch points are skeleton voxels with >= 3 skeleton
    neighbours (26-connectivity); the bifurcation is the branch point lying in the thickest
    vessel, i.e. with the largest distance-transform value (mm) of the portal mask. The main
    portal vein is the thickest vessel of the tree, so its division into the right and left
    branches is the thickest junction, whereas peripheral branchings are thin. Where the
    skeleton has no branch point: ``portal_area``, the slice with the largest portal
    cross-section. Without a portal mask: ``liver_centre`` (centre of mass of the liver) and
    finally ``volume_centre``; both log a warning.

    Parameters
    ----------
    portal : np.ndarray
        bool ``[Z, Y, X]``.
    spacing : tuple
        (z, y, x) mm.
    liver : np.ndarray, optional
        bool ``[Z, Y, X]``, for the fallback.

    Returns
    -------
    z : int
        Slice index (0-based, in the sorted series).
    method : str
        One of ``CENTRE_METHODS``.
    """
    portal = np.asarray(portal, bool)
    if portal.any():
        labels = measure.label(portal, connectivity=3)
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        main = labels == int(np.argmax(counts))
        box = ndimage.find_objects(main.astype(np.uint8))[0]
        sub = np.pad(main[box], 1)
        skel = morphology.skeletonize(sub).astype(bool)
        if skel.any():
            neighbours = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3, 3), np.uint8))
            branch = skel & (neighbours - 1 >= 3)
            if branch.any():
                dist = ndimage.distance_transform_edt(sub, sampling=spacing)
                pts = np.argwhere(branch)
                best = pts[int(np.argmax(dist[tuple(pts.T)]))]
                return int(best[0] - 1 + box[0].start), "portal_skeleton"
        area = portal.sum(axis=(1, 2))
        return int(np.argmax(area)), "portal_area"
    if liver is not None and np.any(liver):
        log.warning("no portal-vein mask: centring on the liver's centre of mass")
        return int(round(ndimage.center_of_mass(liver)[0])), "liver_centre"
    log.warning("no portal-vein or liver mask: centring on the middle slice")
    return portal.shape[0] // 2, "volume_centre"


def slice_window(n_slices: int, centre: int, depth: int) -> np.ndarray:
    """Source slice index of each of ``depth`` output slices (-1 = padding).

    With ``n_slices >= depth``: ``depth`` consecutive slices starting at
    ``centre - depth // 2``, shifted to stay inside ``[0, n_slices)``. Otherwise every slice,
    padded symmetrically (``(depth - n) // 2`` before, the rest after).
    """
    if n_slices >= depth:
        start = int(np.clip(centre - depth // 2, 0, n_slices - depth))
        return np.arange(start, start + depth)
    before = (depth - n_slices) // 2
    out = np.full(depth, -1, dtype=np.int64)
    out[before : before + n_slices] = np.arange(n_slices)
    return out


# --------------------------------------------------------------------------------------------
# Per patient
# --------------------------------------------------------------------------------------------
def _window01(hu: np.ndarray, hu_window: tuple[float, float]) -> np.ndarray:
    lo, hi = hu_window
    return ((np.clip(hu, lo, hi) - lo) / (hi - lo)).astype(np.float32)


def _resize_inplane(vol: np.ndarray, size: int, order: int) -> np.ndarray:
    z, y, x = vol.shape
    out = ndimage.zoom(vol, (1.0, size / y, size / x), order=order, grid_mode=True, mode="nearest")
    assert out.shape == (z, size, size), out.shape
    return out


def close_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological closing with a ball of ``radius`` voxels, without border erosion."""
    if radius <= 0:
        return mask.astype(bool)
    padded = np.pad(mask.astype(bool), radius)
    closed = ndimage.binary_closing(padded, structure=morphology.ball(radius))
    sl = tuple(slice(radius, -radius) for _ in range(3))
    return closed[sl]


def settings_hash(cfg: PreprocessConfig, clahe_mode: str = "2d") -> str:
    """Hash of everything that changes a cached file (settings + algorithm version)."""
    blob = json.dumps(
        {"cfg": asdict(cfg), "clahe_mode": clahe_mode, "version": PREPROCESS_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def preprocess_patient(
    patient: tcia.Patient, cfg: PreprocessConfig, clahe_mode: str = "2d", clahe: bool = True
) -> dict[str, np.ndarray]:
    """Apply the papers' preprocessing to one loaded patient (see the module docstring).

    Parameters
    ----------
    patient : tcia.Patient
    cfg : PreprocessConfig
        ``depth``, ``size``, ``hu_window``, ``pad_hu``, ``clahe_clip_limit``,
        ``closing_radius``.
    clahe_mode : {"2d", "3d"}
        CLAHE per axial slice (default) or on the whole kept volume.
    clahe : bool
        ``False`` skips CLAHE (ablation; HU then maps exactly linearly to [-1, 1]).

    Returns
    -------
    dict
        The arrays of the ``.npz`` cache (keys of docs/interfaces.md): ``ct`` float32
        ``[D, H, W]`` in [-1, 1]; ``masks`` uint8 ``[K, D, H, W]`` (``MASK_NAMES`` order);
        ``lesion_features`` float32 ``[L, F]``; ``lesion_feature_names``; ``z_index`` int64
        ``[D]``; ``source_shape``; ``source_spacing_mm``; ``origin_mm``; ``direction``;
        ``bifurcation_z`` (source slice index); ``centre_method``.
    """
    if clahe_mode not in ("2d", "3d"):
        raise ValueError(f"clahe_mode must be '2d' or '3d', not {clahe_mode!r}")
    hu = patient.ct
    nz = hu.shape[0]
    centre, method = find_bifurcation(
        patient.masks["portal"], patient.spacing, patient.masks.get("liver")
    )
    if method in ("liver_centre", "volume_centre"):
        log.warning("%s: centre slice from %s (no usable portal mask)", patient.patient_id, method)
    z_index = slice_window(nz, centre, cfg.depth)
    real = z_index >= 0
    kept = z_index[real]

    u = _window01(hu[kept], cfg.hu_window)  # [d, Y, X] in [0, 1]
    if clahe:
        if clahe_mode == "2d":
            u = np.stack(
                [exposure.equalize_adapthist(s, clip_limit=cfg.clahe_clip_limit) for s in u]
            )
        else:
            u = exposure.equalize_adapthist(u, clip_limit=cfg.clahe_clip_limit)
    u = np.clip(_resize_inplane(u.astype(np.float32), cfg.size, order=3), 0.0, 1.0)
    pad_value = 2.0 * float(_window01(np.float32(cfg.pad_hu), cfg.hu_window)) - 1.0
    ct = np.full((cfg.depth, cfg.size, cfg.size), pad_value, dtype=np.float32)
    ct[real] = 2.0 * u - 1.0

    masks = np.zeros((len(MASK_NAMES), cfg.depth, cfg.size, cfg.size), dtype=np.uint8)
    for k, name in enumerate(MASK_NAMES):
        m = _resize_inplane(patient.masks[name][kept].astype(np.uint8), cfg.size, order=0)
        full = np.zeros((cfg.depth, cfg.size, cfg.size), bool)
        full[real] = m > 0
        masks[k] = close_mask(full, cfg.closing_radius)

    feats, names = lesion_features(
        hu, patient.lesions, patient.spacing, tumour_mask=patient.masks["tumour"]
    )
    return {
        "ct": ct,
        "masks": masks,
        "lesion_features": feats,
        "lesion_feature_names": np.asarray(names),
        "z_index": z_index.astype(np.int64),
        "source_shape": np.asarray(hu.shape, dtype=np.int64),
        "source_spacing_mm": np.asarray(patient.spacing, dtype=np.float64),
        "origin_mm": np.asarray(patient.origin, dtype=np.float64),
        "direction": np.asarray(patient.direction, dtype=np.float64),
        "bifurcation_z": np.int64(centre),
        "centre_method": np.asarray(method),
        "patient_id": np.asarray(patient.patient_id),
    }


def invert_to_source(
    volume: np.ndarray, npz_meta: dict, order: int = 1, fill: float = 0.0
) -> np.ndarray:
    """Map a processed-grid volume (e.g. a Grad-CAM heatmap) back onto the source CT grid.

    Parameters
    ----------
    volume : np.ndarray
        ``[D, H, W]`` on the processed grid.
    npz_meta : dict
        At least ``z_index`` and ``source_shape`` (as from :func:`load_processed`).
    order : int
        Spline order of the in-plane resize back (1 = linear, no overshoot for heatmaps; 0 for
        labels).
    fill : float
        Value of source slices outside the processed window.

    Returns
    -------
    np.ndarray
        float32 ``[Z, Y, X]`` (source shape); slices not kept hold ``fill``.
    """
    z_index = np.asarray(npz_meta["z_index"])
    nz, ny, nx = (int(v) for v in npz_meta["source_shape"])
    vol = np.asarray(volume, dtype=np.float32)
    real = z_index >= 0
    d, h, w = vol.shape
    back = ndimage.zoom(
        vol[real], (1.0, ny / h, nx / w), order=order, grid_mode=True, mode="nearest"
    )
    out = np.full((nz, ny, nx), fill, dtype=np.float32)
    out[z_index[real]] = back
    return out


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------
def atomic_savez(path: Path, **arrays) -> None:
    """``np.savez_compressed`` to a temporary file in the same folder, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".npz.tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_csv(df: pd.DataFrame, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".csv.tmp")
    with os.fdopen(fd, "w") as fh:
        df.to_csv(fh, index=False)
    os.replace(tmp, path)


def load_processed(processed_dir: str | Path, patient_id: str) -> dict:
    """Read ``processed_dir/<patient_id>.npz`` into a dict (0-d string arrays -> ``str``)."""
    path = Path(processed_dir) / f"{patient_id}.npz"
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for k in ("centre_method", "patient_id", "settings_hash"):
        if k in out:
            out[k] = str(out[k])
    out["lesion_feature_names"] = [str(n) for n in out["lesion_feature_names"]]
    return out


def is_cached(path: Path, digest: str) -> bool:
    """Whether ``path`` is a readable cache written with settings hash ``digest``."""
    if not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return str(z["settings_hash"]) == digest
    except Exception:  # noqa: BLE001 - unreadable cache: recompute
        return False


def process_one(
    ref: tcia.PatientRef, cfg: PreprocessConfig, out_path: Path, digest: str, clahe_mode: str
) -> dict:
    """Load, preprocess and atomically save one patient; returns its report row."""
    t0 = time.perf_counter()
    try:
        patient = tcia.load_patient(ref)
    except tcia.CohortDataError as err:
        return {
            "patient_id": ref.patient_id,
            "status": "excluded",
            "reason": f"{type(err).__name__}: {err}",
            "seconds": time.perf_counter() - t0,
        }
    arrays = preprocess_patient(patient, cfg, clahe_mode=clahe_mode)
    atomic_savez(out_path, settings_hash=np.asarray(digest), **arrays)
    return {
        "patient_id": ref.patient_id,
        "status": "done",
        "reason": "",
        "centre_method": str(arrays["centre_method"]),
        "seconds": time.perf_counter() - t0,
    }


def preprocess_cohort(
    paths: Paths,
    profile: Profile | str,
    n_jobs: int = 2,
    ids: Sequence[str] | None = None,
    clahe_mode: str = "2d",
    progress: bool = True,
    mp_context: str = "spawn",
    worker: Callable[..., dict] = process_one,
) -> pd.DataFrame:
    """Preprocess every patient of ``paths.cohort_dir`` into ``paths.processed_dir``.

    Resumable: a patient whose ``<id>.npz`` exists with the same settings hash is ``cached``;
    files are written atomically, so a killed run leaves no half file (leftover ``.*.tmp``
    files are removed at start). Patients run in parallel in ``n_jobs`` processes
    (``ProcessPoolExecutor``, ``spawn`` context: safe after torch/OpenMP initialisation);
    ``n_jobs <= 1`` runs in this process.

    Parameters
    ----------
    paths : Paths
    profile : Profile or str
        Supplies ``profile.preprocess``.
    n_jobs : int
    ids : sequence of str, optional
        Restrict to these patients.
    clahe_mode : {"2d", "3d"}
    progress : bool
    mp_context : str
        Multiprocessing start method.
    worker : callable
        Per-patient function (``process_one``); a hook for tests.

    Returns
    -------
    pd.DataFrame
        ``patient_id``, ``status`` (``done`` / ``cached`` / ``excluded``), ``reason`` (the
        exclusion reason, or the centre method), ``seconds``; also written atomically to
        ``processed_dir/report.csv``.

    Raises
    ------
    PreprocessInterrupted
        When a worker process died; the report of finished patients is written first, and a
        rerun resumes.
    """
    cfg = get_profile(profile).preprocess
    out_dir = Path(paths.processed_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for tmp in out_dir.glob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    digest = settings_hash(cfg, clahe_mode)
    refs = tcia.discover(paths.cohort_dir)
    if ids is not None:
        by_id = {r.patient_id: r for r in refs}
        refs = [by_id.get(str(i), tcia.PatientRef(str(i), Path(paths.cohort_dir))) for i in ids]
    rows, todo = [], []
    for ref in refs:
        out = out_dir / f"{ref.patient_id}.npz"
        if is_cached(out, digest):
            with np.load(out) as cached:
                method = str(cached["centre_method"]) if "centre_method" in cached else ""
            rows.append(
                {
                    "patient_id": ref.patient_id,
                    "status": "cached",
                    "reason": "",
                    "centre_method": method,
                    "seconds": 0.0,
                }
            )
        else:
            todo.append((ref, out))
    bar = tqdm(total=len(todo), desc="preprocess", disable=not progress)
    broken: BaseException | None = None
    if n_jobs <= 1:
        for ref, out in todo:
            rows.append(worker(ref, cfg, out, digest, clahe_mode))
            bar.update()
    else:
        ctx = mp.get_context(mp_context)
        with ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
            futures = {
                pool.submit(worker, ref, cfg, out, digest, clahe_mode): ref for ref, out in todo
            }
            for fut in as_completed(futures):
                try:
                    rows.append(fut.result())
                except BrokenProcessPool as err:
                    broken = err
                bar.update()
    bar.close()
    report = pd.DataFrame(
        rows, columns=["patient_id", "status", "reason", "centre_method", "seconds"]
    )
    report = report.sort_values("patient_id").reset_index(drop=True)
    _atomic_csv(report, out_dir / "report.csv")
    if broken is not None:
        missing = sorted({r.patient_id for r, _ in todo} - set(report["patient_id"]))
        raise PreprocessInterrupted(
            f"a preprocessing worker died ({broken}); {len(missing)} patient(s) unfinished "
            f"({missing[:5]}...); finished ones are cached in {out_dir}: rerun to resume"
        )
    n_ex = int((report["status"] == "excluded").sum())
    if n_ex:
        log.warning("%d patient(s) excluded; see %s", n_ex, out_dir / "report.csv")
    return report
