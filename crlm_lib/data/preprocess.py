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
3. **Window**: HU clipped to ``hu_window`` and scaled linearly to [0, 1]. Choice: the
   abdominal soft-tissue window -160..240 HU (level 40, width 400), because the papers use
   CLAHE "to improve tumor-liver parenchyma contrast": on the full range -1024..1024 HU (the
   other reading, ``PreprocessConfig(hu_window=(-1024, 1024))``) the equalisation maps all soft
   tissue into the top of [0, 1], where the cubic resize's clip saturates it; on the synthetic
   cohort's cpu grid tumours then came out *brighter* than the liver (mean 0.93 vs 0.89) and
   their attenuation was lost (Spearman 0.25 with the phantom's phenotype, 0.58 with the
   soft-tissue window; liver 0.40, tumours 0.12). Bone, air and fat are clipped to the
   window's ends; padding (-1024 HU) stays -1.
4. **CLAHE** (``skimage.exposure.equalize_adapthist``, ``clip_limit=clahe_clip_limit``) on the
   windowed slices. Choice: **per axial slice (2D)**, because slice thickness differs from the
   in-plane spacing (5 mm vs 0.7 mm in the collection) and a 3D tile would mix anatomy
   unevenly; ``clahe_mode="3d"`` is offered. The paper does not say; CLAHE output is in [0, 1]
   and keeps the window's meaning only monotonically (it is not linear in HU). The 2D form runs
   through ``data.clahe.clahe_slices``: scikit-image's algorithm on all slices at once, equal
   to it bit for bit and ~3x faster.
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
import os
import time
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import exposure, measure, morphology

from crlm_lib import atomic
from crlm_lib.config import MASK_NAMES, Paths, PreprocessConfig, Profile, with_options
from crlm_lib.data import dicom
from crlm_lib.data.clahe import clahe_slices
from crlm_lib.data.lesions import lesion_features, mask_bounding_box
from crlm_lib.data.parallel import run_jobs
from crlm_lib.locks import FolderLocked, folder_lock

log = logging.getLogger(__name__)

#: Bump when the algorithm changes so that caches are recomputed (2: ``mask_volumes_ml``;
#: the soft-tissue window changes the settings hash by itself).
PREPROCESS_VERSION = 2

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
        # Everything below runs inside the portal mask's bounding box (labelling the whole
        # volume would be most of this function's time). A crop keeps the raster order
        # of the voxels, so the components get the same numbers and the same one is the largest.
        outer = mask_bounding_box(portal)
        labels = measure.label(portal[outer], connectivity=3)
        counts = np.bincount(labels.ravel())
        counts[0] = 0
        main = labels == int(np.argmax(counts))
        box = mask_bounding_box(main)
        sub = np.pad(main[box], 1)
        skel = morphology.skeletonize(sub).astype(bool)
        if skel.any():
            neighbours = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3, 3), np.uint8))
            branch = skel & (neighbours - 1 >= 3)
            if branch.any():
                dist = ndimage.distance_transform_edt(sub, sampling=spacing)
                pts = np.argwhere(branch)
                best = pts[int(np.argmax(dist[tuple(pts.T)]))]
                return int(best[0] - 1 + box[0].start + outer[0].start), "portal_skeleton"
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
    """Each ``[Y, X]`` slice of ``vol`` ``[Z, Y, X]`` to ``size x size`` by
    ``scipy.ndimage.zoom(order, grid_mode=True, mode="nearest")``.

    For ``order >= 2`` (the CT's cubic spline) the slices are zoomed one by one rather than by
    one 3D zoom with factor 1 along z (the reference form, kept in the tests): the 3D call
    also spline-filters along z and evaluates 4 z-neighbours per voxel (64 taps instead of 16),
    only to land back on the same slices. Both are equal in exact arithmetic; their float64
    intermediates differ by <= 4e-15 and their float32 outputs were identical on every voxel
    compared (1.3 M random voxels from 16x96x96 to 40x512x512, the golden test, 24 synthetic
    patients), in 3-3.5x less time (40x512x512 -> 128: 0.63 -> 0.22 s). Orders 0 and 1 have no
    prefilter and stay one 3D call (the masks use order 0).
    """
    z, y, x = vol.shape
    if order < 2:  # no spline prefilter: the 3D call does no extra work along z
        return ndimage.zoom(
            vol, (1.0, size / y, size / x), order=order, grid_mode=True, mode="nearest"
        )
    out = np.empty((z, size, size), vol.dtype)
    for k in range(z):
        ndimage.zoom(
            vol[k], (size / y, size / x), output=out[k], order=order, grid_mode=True, mode="nearest"
        )
    return out


def close_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Morphological closing with a ball of ``radius`` voxels, without border erosion.

    Defined as ``binary_closing`` of the mask zero-padded by ``radius`` on every side, cropped
    back. Computed on the mask's bounding box grown by ``radius`` (most structures fill a
    small part of the volume): the dilation is ``False`` beyond the grown box, and the
    erosion keeps a voxel only when its whole ball lies in the dilation, hence inside the grown
    box; a voxel whose ball leaves the grown box is eroded either way (the crop's zero border
    stands for the dilation's ``False`` there, or for the same ``radius`` of zero padding at
    the volume's edge). Equal to the whole-volume form (tested on random masks, also touching
    the borders; a box grown by less fails those tests).
    """
    mask = np.asarray(mask, bool)
    if radius <= 0:
        return mask.copy()
    out = np.zeros(mask.shape, bool)
    if not mask.any():
        return out
    inner, pads = [], []
    for sl, n in zip(mask_bounding_box(mask), mask.shape):
        lo, hi = sl.start - radius, sl.stop + radius
        a, b = max(lo, 0), min(hi, n)
        inner.append(slice(a, b))
        pads.append((a - lo, hi - b))  # zeros where the grown box leaves the volume
    sub = np.pad(mask[tuple(inner)], pads)
    closed = ndimage.binary_closing(sub, structure=morphology.ball(radius))
    keep = tuple(slice(p[0], p[0] + s.stop - s.start) for p, s in zip(pads, inner))
    out[tuple(inner)] = closed[keep]
    return out


def settings_hash(
    cfg: PreprocessConfig, clahe_mode: str = "2d", label_map: dicom.LabelMap | None = None
) -> str:
    """Hash of everything that changes a cached file (settings + algorithm version, and the
    segment label map when it is not the TCIA collection's): the hash of
    :func:`settings_json`."""
    return hashlib.sha256(settings_json(cfg, clahe_mode, label_map).encode()).hexdigest()[:16]


def preprocess_patient(
    patient: dicom.Patient, cfg: PreprocessConfig, clahe_mode: str = "2d", clahe: bool = True
) -> dict[str, np.ndarray]:
    """Apply the papers' preprocessing to one loaded patient (see the module docstring).

    Parameters
    ----------
    patient : dicom.Patient
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
        ``bifurcation_z`` (source slice index); ``centre_method``; ``mask_volumes_ml`` float64
        ``[K]``: each mask's volume on the source CT grid (voxels x voxel volume, mL, before
        any crop or closing; the SEG volumetrics of :func:`volumetrics`).
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
        if clahe_mode == "2d":  # skimage's per-slice CLAHE, all slices at once (data.clahe)
            u = clahe_slices(u, clip_limit=cfg.clahe_clip_limit)
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
        "image_fingerprint": np.asarray(dicom.image_fingerprint(patient.ct_sop_uids)),
        "mask_volumes_ml": np.asarray(
            [patient.masks[name].sum() for name in MASK_NAMES], dtype=np.float64
        )
        * float(np.prod(patient.spacing))
        / 1000.0,
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
#: Report statuses of a patient whose cache file is usable (``excluded`` is the other one).
USABLE_STATUSES = ("done", "cached", "rebuilt")

#: Lock file that serialises preprocessing runs sharing one cache folder.
LOCK_NAME = ".preprocess.lock"
#: Beside the lock: the PID of the run holding it (named in :class:`PreprocessLocked`).
LOCK_OWNER_NAME = ".preprocess.lock.pid"

#: Longest patient ID (UTF-8 bytes) used as a file name.
MAX_ID_BYTES = 200

_WINDOWS_RESERVED = {"con", "prn", "aux", "nul"} | {
    f"{d}{i}" for d in ("com", "lpt") for i in range(10)
}


class UnsafePatientIdError(dicom.CohortDataError):
    """A PatientID cannot name a cache file (empty, path separators, control characters...)."""


class PreprocessLocked(FolderLocked):
    """Another preprocessing run holds the cache folder's lock longer than the timeout.

    A user error (``crlm`` prints it in one line, exit 2): the message names the lock file and
    the PID of the run holding it.
    """


def check_patient_id(patient_id: str, source: str | Path | None = None) -> str:
    """Return ``patient_id`` if it is safe as the file name ``<patient_id>.npz``, else raise.

    Refused (never rewritten, so two IDs cannot silently share a file): empty or blank IDs,
    leading/trailing spaces, ``/`` or ``\\``, a leading ``.`` (hidden file, ``..``), control
    characters, the characters ``<>:"|?*`` and a trailing ``.`` (invalid on Windows), Windows
    device names (``CON``, ``NUL``, ``COM1``...), and more than ``MAX_ID_BYTES`` bytes.
    Unicode letters are allowed (``Müller-01``).

    Raises
    ------
    UnsafePatientIdError
        Naming the ID (``repr``), the rules broken, and ``source`` (where the ID came from).
    """
    pid = str(patient_id)
    problems = []
    if not pid.strip():
        problems.append("it is empty")
    elif pid != pid.strip():
        problems.append("it has leading or trailing spaces")
    if "/" in pid or "\\" in pid:
        problems.append("it contains a path separator")
    if pid.startswith("."):
        problems.append("it starts with '.'")
    if any(unicodedata.category(c).startswith("C") for c in pid):
        problems.append("it contains control characters")
    if any(c in '<>:"|?*' for c in pid) or pid.endswith("."):
        problems.append('it contains <>:"|?* or ends with "." (invalid file names on Windows)')
    if pid.split(".")[0].strip().lower() in _WINDOWS_RESERVED:
        problems.append("it is a Windows device name")
    if len(pid.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        problems.append(f"it is longer than {MAX_ID_BYTES} bytes")
    if problems:
        where = f" (files under {source})" if source is not None else ""
        raise UnsafePatientIdError(
            f"patient ID {pid!r}{where} cannot name a cache file: {'; '.join(problems)}"
        )
    return pid


def cache_path(processed_dir: str | Path, patient_id: str) -> Path:
    """``processed_dir/<patient_id>.npz`` after :func:`check_patient_id`."""
    folder = Path(processed_dir)
    path = folder / f"{check_patient_id(patient_id)}.npz"
    if path.parent != folder:  # belt and braces: never outside the cache folder
        raise UnsafePatientIdError(f"patient ID {patient_id!r} leaves the cache folder {folder}")
    return path


def settings_json(
    cfg: PreprocessConfig, clahe_mode: str = "2d", label_map: dicom.LabelMap | None = None
) -> str:
    """The settings :func:`settings_hash` hashes, as JSON (stored to explain a rebuild); a
    label map other than :data:`~crlm_lib.data.dicom.TCIA_LABELS` adds its ``labels`` entry
    (another map names other voxels)."""
    settings = {"cfg": asdict(cfg), "clahe_mode": clahe_mode, "version": PREPROCESS_VERSION}
    if label_map is not None and label_map != dicom.TCIA_LABELS:
        settings["labels"] = label_map.to_dict()
    return json.dumps(settings, sort_keys=True)


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in chunks (``hashlib.file_digest``)."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def source_manifest(ref: dicom.PatientRef) -> dict[str, list]:
    """Identity of the files a patient's cache entry is built from.

    Keys are SOP instance UIDs (``file:<name>`` for files without one, ``#2``... for repeated
    UIDs); values ``[size_bytes, sha256_hex]`` of the file's bytes. So another cohort with the
    same patient IDs (other UIDs), a deleted, added or rewritten slice, a new SEG, and a slice
    changed in place with its size and modification time put back all change the manifest,
    whereas moving or copying the cohort folder (with or without its times) does not. Hashing
    reads every file once more (at ~1.2 GB/s, SHA-256 with the CPU's instructions; cheaper
    than decoding the DICOM), so checking a cache costs a read of the sources, not a
    preprocessing.
    """
    files = [f for fs in ref.ct_series.values() for f in fs] + list(ref.seg_files)
    files += [f for f, _ in ref.unreadable]
    out: dict[str, list] = {}
    for f in sorted(files):
        key = ref.sop_uids.get(f) or f"file:{f.name}"
        n = 1
        while (key if n == 1 else f"{key}#{n}") in out:
            n += 1
        key = key if n == 1 else f"{key}#{n}"
        try:
            out[key] = [int(f.stat().st_size), file_sha256(f)]
        except OSError:
            out[key] = [-1, ""]
    return dict(sorted(out.items()))


def _hashes_content(manifest: dict) -> bool:
    """Whether a stored manifest records content hashes (older ones hold modification times)."""
    return all(
        isinstance(v, list) and len(v) == 2 and isinstance(v[1], str) for v in manifest.values()
    )


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _source_diff(old: dict, new: dict) -> str:
    removed = len(set(old) - set(new))
    added = len(set(new) - set(old))
    modified = sum(1 for k in set(old) & set(new) if list(old[k]) != list(new[k]))
    parts = [
        f"{_plural(n, 'file')} {what}"
        for n, what in ((removed, "removed"), (added, "added"), (modified, "modified"))
        if n
    ]
    return "source changed: " + ", ".join(parts)


def _settings_diff(old: str | None, new: str) -> str:
    if not old:
        return "config changed"
    try:
        a, b = json.loads(old), json.loads(new)
    except ValueError:
        return "config changed"
    flat_a = {**a.get("cfg", {}), **{k: v for k, v in a.items() if k != "cfg"}}
    flat_b = {**b.get("cfg", {}), **{k: v for k, v in b.items() if k != "cfg"}}
    diffs = [
        f"{k} {flat_a.get(k)} -> {flat_b.get(k)}"
        for k in sorted(set(flat_a) | set(flat_b))
        if flat_a.get(k) != flat_b.get(k)
    ]
    return "config changed" + (f": {', '.join(diffs)}" if diffs else "")


def cache_state(path: Path, digest: str, settings: str, manifest: dict) -> tuple[str, str]:
    """Whether ``path`` may be served: ``("cached", "")``, ``("done", "")`` (absent) or
    ``("rebuilt", reason)`` with the reason it is stale (config or source changed, unreadable).
    """
    if not path.is_file():
        return "done", ""
    try:
        with np.load(path, allow_pickle=False) as z:
            old_digest = str(z["settings_hash"])
            old_settings = str(z["settings_json"]) if "settings_json" in z.files else None
            old_manifest = (
                json.loads(str(z["source_manifest"])) if "source_manifest" in z.files else None
            )
    except Exception as err:  # noqa: BLE001 - unreadable cache: rebuild
        return "rebuilt", f"cache file unreadable ({type(err).__name__})"
    reasons = []
    if old_digest != digest:
        reasons.append(_settings_diff(old_settings, settings))
    if old_manifest is None:
        reasons.append("cache file has no source record (older version)")
    elif not _hashes_content(old_manifest):
        reasons.append("cache file records no content hash of its sources (older version)")
    elif old_manifest != manifest:
        reasons.append(_source_diff(old_manifest, manifest))
    return ("rebuilt", "; ".join(reasons)) if reasons else ("cached", "")


def _tmp_owner(tmp: Path) -> int | None:
    """PID in a temp name ``.<stem>.<pid>.<random>.<ext>.tmp`` (:func:`atomic_savez`)."""
    parts = tmp.name.split(".")
    if len(parts) >= 5 and parts[-4].isdigit():
        return int(parts[-4])
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(out_dir: Path) -> list[Path]:
    """Remove ``.*.tmp`` files whose writing process is gone; returns the removed paths.

    Called with the cache lock held, so no other run is writing; temps of a live process
    (e.g. an orphaned worker still finishing) are left alone.
    """
    removed = []
    for tmp in out_dir.glob(".*.tmp"):
        owner = _tmp_owner(tmp)
        if owner is not None and owner != os.getpid() and _pid_alive(owner):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def atomic_savez(path: Path, **arrays) -> None:
    """:func:`crlm_lib.atomic.savez` (an ``.npz``: floating-point arrays stored, the rest
    deflated) to a temporary file in the same folder, then ``os.replace``.

    The temporary name carries this process's PID (``.<stem>.<pid>.<random>.npz.tmp``) so that
    a cleanup never removes a live writer's file (:func:`remove_stale_temps`).
    """
    atomic.savez(path, **arrays)


def load_processed(processed_dir: str | Path, patient_id: str) -> dict:
    """Read ``processed_dir/<patient_id>.npz`` into a dict (0-d string arrays -> ``str``)."""
    path = cache_path(processed_dir, patient_id)
    with np.load(path, allow_pickle=False) as z:
        out = {k: z[k] for k in z.files}
    for k in (
        "centre_method",
        "patient_id",
        "settings_hash",
        "settings_json",
        "source_manifest",
        "load_warnings",
        "image_fingerprint",
    ):
        if k in out:
            out[k] = str(out[k])
    out["lesion_feature_names"] = [str(n) for n in out["lesion_feature_names"]]
    return out


#: How ``run.json``'s ``training_images`` identifies images (:func:`training_images`).
IMAGE_FINGERPRINT_RULE = "sha256[:16] of the sorted CT SOP instance UIDs (dicom.image_fingerprint)"


def training_images(processed_dir: str | Path, patient_ids: Sequence[str]) -> dict | None:
    """The images a run trains on, for ``run.json``: ``{"rule": IMAGE_FINGERPRINT_RULE,
    "fingerprints": [...]}`` (sorted :func:`~crlm_lib.data.dicom.image_fingerprint` of each
    patient's cache entry); ``None`` when an entry is missing or was written without one, so
    that training-set membership is then reported unknown rather than guessed."""
    prints = []
    for pid in patient_ids:
        path = cache_path(processed_dir, pid)
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as z:
            fp = str(z["image_fingerprint"]) if "image_fingerprint" in z.files else ""
        if not fp:
            return None
        prints.append(fp)
    return {"rule": IMAGE_FINGERPRINT_RULE, "fingerprints": sorted(prints)}


#: Columns of :func:`volumetrics`.
VOLUMETRIC_FEATURES: tuple[str, ...] = (
    "log_tumour_volume_ml",
    "n_lesions",
    "largest_diameter_cm",
    "remnant_fraction",
    "tumour_burden_score",
)


def volumetrics(processed_dir: str | Path, patient_ids: Sequence[str]) -> pd.DataFrame:
    """SEG-derived volumetrics of each patient, from the preprocessing cache.

    What a clinic can measure on the segmentation tomorrow, on the real cohort as on the
    synthetic one (all at the source CT resolution):

    - ``log_tumour_volume_ml``: ``log(total tumour volume in mL + 0.1)``;
    - ``n_lesions``: the SEG's tumour segments;
    - ``largest_diameter_cm``: the largest lesion's equivalent-sphere diameter
      ``2 (3 V / 4 pi)^(1/3)``;
    - ``remnant_fraction``: future liver remnant / (liver - tumour) volume;
    - ``tumour_burden_score``: Sasaki et al. (Ann Surg 2018), ``sqrt(d^2 + n^2)`` with the
      largest diameter ``d`` in cm and the count ``n``.

    Returns
    -------
    DataFrame
        Index = patient ID, columns :data:`VOLUMETRIC_FEATURES`.
    """
    rows = []
    for pid in patient_ids:
        volumes, les = _cached_lesions(processed_dir, pid, volumes=True)
        vol = dict(zip(MASK_NAMES, volumes, strict=True))
        lesion_ml = les["volume_mm3"].to_numpy() / 1000.0
        d_cm = 2.0 * (3.0 * lesion_ml.max(initial=0.0) / (4.0 * np.pi)) ** (1 / 3)
        n = float(len(lesion_ml))
        rows.append(
            {
                "patient_id": str(pid),
                "log_tumour_volume_ml": float(np.log(vol["tumour"] + 0.1)),
                "n_lesions": n,
                "largest_diameter_cm": d_cm,
                "remnant_fraction": vol["remnant"] / max(vol["liver"] - vol["tumour"], 1e-6),
                "tumour_burden_score": float(np.hypot(d_cm, n)),
            }
        )
    return pd.DataFrame(rows).set_index("patient_id")[list(VOLUMETRIC_FEATURES)]


def _cached_lesions(
    processed_dir: str | Path, pid: str, volumes: bool = False
) -> tuple[np.ndarray | None, pd.DataFrame]:
    """A cache entry's mask volumes (mL, ``MASK_NAMES`` order; only with ``volumes``) and its
    per-lesion features as a frame (one row per tumour segment, columns
    ``lesion_feature_names``)."""
    with np.load(cache_path(processed_dir, pid), allow_pickle=False) as z:
        if volumes and "mask_volumes_ml" not in z.files:
            raise PreprocessInterrupted(
                f"{pid}: cache entry made before mask volumes were stored; rerun `crlm data`"
            )
        vol = np.asarray(z["mask_volumes_ml"], float) if volumes else None
        names = [str(n) for n in z["lesion_feature_names"]]
        les = np.asarray(z["lesion_features"], float).reshape(-1, len(names))
    return vol, pd.DataFrame(les, columns=names)


#: Columns of :func:`tumour_first_order`.
FIRST_ORDER_FEATURES: tuple[str, ...] = ("tumour_mean_hu", "tumour_sd_hu", "tumour_p10_hu")


def tumour_first_order(processed_dir: str | Path, patient_ids: Sequence[str]) -> pd.DataFrame:
    """First-order radiomics of each patient's tumours, from the preprocessing cache.

    The per-lesion ``mean``, ``std`` and ``p10`` of ``lesion_features`` (HU inside each SEG
    tumour segment at the source CT resolution, ``data.lesions``) averaged over the lesions
    with their volumes as weights: the tumours' attenuation and heterogeneity, which the masks'
    volumetrics do not carry. A patient without a tumour segment gets NaN (the caller decides;
    the SEG of every MSKCC patient has at least one).

    Returns
    -------
    DataFrame
        Index = patient ID, columns :data:`FIRST_ORDER_FEATURES`.
    """
    rows = []
    for pid in patient_ids:
        _, les = _cached_lesions(processed_dir, pid)
        row: dict = {"patient_id": str(pid)}
        weights = les["volume_mm3"].to_numpy()
        for col, feat in zip(FIRST_ORDER_FEATURES, ("mean", "std", "p10"), strict=True):
            values = les[feat].to_numpy()
            ok = weights.sum() > 0
            row[col] = float(np.average(values, weights=weights)) if ok else float("nan")
        rows.append(row)
    return pd.DataFrame(rows).set_index("patient_id")[list(FIRST_ORDER_FEATURES)]


def process_one(
    ref: dicom.PatientRef,
    cfg: PreprocessConfig,
    out_path: Path,
    digest: str,
    clahe_mode: str,
    source: dicom.DicomSource | None = None,
) -> dict:
    """Load (through ``source``, default the TCIA reader), preprocess and atomically save one
    patient; returns its report row.

    The file records the settings (``settings_hash``, ``settings_json``), the source files
    (``source_manifest``, :func:`source_manifest` taken before loading) and the loader's
    warnings (``load_warnings``, JSON list). An excluded patient's old cache file is removed, so
    no stale volume is ever served for it.
    """
    t0 = time.perf_counter()
    manifest = source_manifest(ref)
    try:
        patient = dicom.load_patient(ref, source)
    except dicom.CohortDataError as err:
        stale = Path(out_path).is_file()
        Path(out_path).unlink(missing_ok=True)
        return {
            "patient_id": ref.patient_id,
            "status": "excluded",
            "reason": f"{type(err).__name__}: {err}"
            + (" (old cache file removed)" if stale else ""),
            "seconds": time.perf_counter() - t0,
        }
    arrays = preprocess_patient(patient, cfg, clahe_mode=clahe_mode)
    atomic_savez(
        out_path,
        settings_hash=np.asarray(digest),
        settings_json=np.asarray(
            settings_json(cfg, clahe_mode, None if source is None else source.label_map)
        ),
        source_manifest=np.asarray(json.dumps(manifest, sort_keys=True)),
        load_warnings=np.asarray(json.dumps(list(patient.warnings))),
        **arrays,
    )
    return {
        "patient_id": ref.patient_id,
        "status": "done",
        "reason": "",
        "centre_method": str(arrays["centre_method"]),
        "warnings": "; ".join(patient.warnings),
        "seconds": time.perf_counter() - t0,
    }


@contextmanager
def cache_lock(out_dir: str | Path, timeout_s: float | None = None) -> Iterator[None]:
    """Hold the preprocessing lock of the cache folder ``out_dir`` (:func:`locks.folder_lock`).

    While held, ``out_dir/.preprocess.lock.pid`` names this process, so that a run waiting for
    the lock can say who holds it.

    Parameters
    ----------
    out_dir : path
        The cache folder (``Paths.processed_dir``); it must exist.
    timeout_s : float, optional
        Longest wait (seconds) for another run's lock; ``None`` waits until it is released.

    Raises
    ------
    PreprocessLocked
        When ``timeout_s`` passed while another run held the lock.
    """
    with folder_lock(out_dir, LOCK_NAME, "preprocessing run", timeout_s, PreprocessLocked):
        yield


@dataclass(frozen=True)
class PreprocessOptions:
    """How :func:`preprocess_cohort` runs (which patients, how many processes, which reader);
    what it computes is ``profile.preprocess``. Every field is also a keyword of
    :func:`preprocess_cohort`.

    Attributes
    ----------
    n_jobs : int
        Patients preprocessed in parallel (``<= 1``: in this process).
    ids : sequence of str, optional
        Restrict to these patients (default: every patient of the cohort folder).
    clahe_mode : {"2d", "3d"}
        CLAHE slice by slice (the papers') or on the volume.
    progress : bool
        Show a progress bar.
    mp_context : str
        Multiprocessing start method of the worker processes.
    worker : callable
        Per-patient function (:func:`process_one`); a hook for tests.
    lock_timeout_s : float, optional
        Longest wait (seconds) for another run's lock (``None``: wait until it finishes).
    source : DicomSource, optional
        The export's reader (default :func:`crlm_lib.data.dicom.source_for` of the cohort
        folder: its own ``label_map.json`` when it has one, else the TCIA labels). A label map
        other than the TCIA one enters the settings hash.
    """

    n_jobs: int = 2
    ids: Sequence[str] | None = None
    clahe_mode: str = "2d"
    progress: bool = True
    mp_context: str = "spawn"
    worker: Callable[..., dict] = process_one
    lock_timeout_s: float | None = None
    source: dicom.DicomSource | None = None


def preprocess_cohort(
    paths: Paths,
    profile: Profile,
    options: PreprocessOptions | None = None,
    **changes: Any,
) -> pd.DataFrame:
    """Preprocess every patient of ``paths.cohort_dir`` into ``paths.processed_dir``.

    Resumable and honest: a patient's ``<id>.npz`` is served (``cached``) only when it was
    written with the same settings **and** from the same source files (SOP instance UIDs, sizes
    and SHA-256 of the bytes: :func:`source_manifest`); otherwise it is rebuilt and the report
    says why (``rebuilt``, e.g. "source changed: 1 file removed", "config changed: depth 16 ->
    8"). Files are written atomically, so a killed run leaves no half file; a rerun resumes and
    writes byte-identical files. Runs sharing one cache folder are serialised by a lock file
    (``processed_dir/.preprocess.lock``, ``filelock``): a second run waits, then finds the
    first one's files cached. Leftover temporary files of dead runs are removed under the lock.
    Patient IDs that cannot name a file (:func:`check_patient_id`) are excluded with the reason.
    Patients run in parallel in ``n_jobs`` processes (``ProcessPoolExecutor``, ``spawn``
    context: safe after torch/OpenMP initialisation); ``n_jobs <= 1`` runs in this process.

    Parameters
    ----------
    paths : Paths
    profile : Profile or str
        Supplies ``profile.preprocess``.
    options : PreprocessOptions, optional
        Processes, patients, CLAHE mode, progress bar, start method, worker, lock timeout
        and reader (defaults when omitted).
    **changes
        Fields of :class:`PreprocessOptions` as keywords (``n_jobs=1, progress=False``),
        applied over ``options``; a keyword that is no field raises ``TypeError`` naming the
        valid ones.

    Returns
    -------
    pd.DataFrame
        ``patient_id``, ``status`` (``done`` / ``cached`` / ``rebuilt`` / ``excluded``),
        ``reason`` (why excluded or rebuilt), ``centre_method``, ``warnings`` (what the loader
        found unusual, e.g. missing optional structures), ``seconds``; also written atomically
        to ``processed_dir/report.csv``.

    Raises
    ------
    PreprocessInterrupted
        When a worker process died; the report of finished patients is written first, and a
        rerun resumes.
    PreprocessLocked
        When ``lock_timeout_s`` passed while another run held the lock.
    """
    opts = with_options(PreprocessOptions, options, changes)
    out_dir = Path(paths.processed_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if opts.source is None:
        opts = replace(opts, source=dicom.source_for(paths.cohort_dir))
    with cache_lock(out_dir, opts.lock_timeout_s):
        return _preprocess_locked(paths, profile.preprocess, out_dir, opts)


#: Columns of ``report.csv``, in order.
REPORT_COLUMNS = ("patient_id", "status", "reason", "centre_method", "warnings", "seconds")


def _preprocess_locked(
    paths: Paths, cfg: PreprocessConfig, out_dir: Path, opts: PreprocessOptions
) -> pd.DataFrame:
    """The body of :func:`preprocess_cohort`, run with the cache lock held (``opts.source``
    resolved)."""
    clahe_mode, source = opts.clahe_mode, opts.source
    remove_stale_temps(out_dir)
    digest = settings_hash(cfg, clahe_mode, source.label_map)
    refs = _select_refs(paths.cohort_dir, opts.ids, source)
    settings = settings_json(cfg, clahe_mode, source.label_map)
    rows, todo, rebuilt = _plan(refs, out_dir, digest, settings)
    jobs = [(ref, cfg, out, digest, clahe_mode, source) for ref, out in todo]
    done, broken = run_jobs(
        opts.worker, jobs, opts.n_jobs, desc="preprocess", progress=opts.progress,
        mp_context=opts.mp_context,
    )  # fmt: skip
    for row in done:
        pid = row["patient_id"]
        if pid in rebuilt and row.get("status") == "done":
            row = {**row, "status": "rebuilt", "reason": rebuilt[pid]}
        rows.append(row)
    report = pd.DataFrame(rows, columns=list(REPORT_COLUMNS))
    report = report.sort_values("patient_id").reset_index(drop=True)
    atomic.write_csv(out_dir / "report.csv", report, index=False)
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


def _select_refs(
    cohort_dir: Path, ids: Sequence[str] | None, source: dicom.DicomSource
) -> list[dicom.PatientRef]:
    """The patients of the cohort folder, or those of ``ids`` in their order (an ID with no
    folder gets a reference to the cohort folder, so that loading it reports it missing)."""
    refs = source.discover(cohort_dir)
    if ids is None:
        return refs
    by_id = {r.patient_id: r for r in refs}
    wanted = dict.fromkeys(str(i) for i in ids)
    return [by_id.get(i, dicom.PatientRef(i, Path(cohort_dir))) for i in wanted]


def _plan(
    refs: list[dicom.PatientRef], out_dir: Path, digest: str, settings: str
) -> tuple[list[dict], list[tuple[dicom.PatientRef, Path]], dict[str, str]]:
    """Sort the patients into report rows known now (unsafe IDs excluded, usable caches), the
    patients to (re)build with their cache path, and why each stale cache is rebuilt."""
    folded: dict[str, set[str]] = {}
    for ref in refs:
        folded.setdefault(ref.patient_id.casefold(), set()).add(ref.patient_id)
    rows, todo, rebuilt = [], [], {}
    for ref in refs:
        try:
            out = _safe_cache_path(ref, out_dir, sorted(folded[ref.patient_id.casefold()]))
        except UnsafePatientIdError as err:
            rows.append(
                {
                    "patient_id": ref.patient_id,
                    "status": "excluded",
                    "reason": f"{type(err).__name__}: {err}",
                    "seconds": 0.0,
                }
            )
            continue
        state, why = cache_state(out, digest, settings, source_manifest(ref))
        if state == "cached":
            rows.append(_cached_row(ref.patient_id, out))
        else:
            if state == "rebuilt":
                rebuilt[ref.patient_id] = why
            todo.append((ref, out))
    return rows, todo, rebuilt


def _safe_cache_path(ref: dicom.PatientRef, out_dir: Path, twins: list[str]) -> Path:
    """The cache file of ``ref``; :class:`UnsafePatientIdError` for an ID unsafe as a file name
    or one that differs from another (``twins``) only in case."""
    check_patient_id(ref.patient_id, ref.path)
    out = cache_path(out_dir, ref.patient_id)
    if len(twins) > 1:
        raise UnsafePatientIdError(
            f"patient IDs {twins} (files under {ref.path}) differ only in case: their "
            "cache files would collide on case-insensitive file systems"
        )
    return out


def _cached_row(patient_id: str, out: Path) -> dict:
    """The report row of a usable cache file (its centre method and loader warnings)."""
    with np.load(out) as cached:
        method = str(cached["centre_method"]) if "centre_method" in cached else ""
        warns = json.loads(str(cached["load_warnings"])) if "load_warnings" in cached.files else []
    return {
        "patient_id": patient_id,
        "status": "cached",
        "reason": "",
        "centre_method": method,
        "warnings": "; ".join(warns),
        "seconds": 0.0,
    }
