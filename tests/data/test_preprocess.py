"""Tests of crlm_lib.data.preprocess: crop, padding, range, closing, cache and resume."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
from dicom_helpers import loaded_patient, paths_under, write_patient

from crlm_lib.config import MASK_NAMES, Paths, PreprocessConfig, get_profile
from crlm_lib.data import preprocess as pp

SMOKE = get_profile("smoke")
CFG = PreprocessConfig(depth=8, size=16, closing_radius=1)


def _patient(nz=30, ny=24, nx=24, bif=20, portal=True, seed=0):
    """Hand-made patient whose portal vein is a Y: thick trunk up to ``bif``, two branches."""
    rng = np.random.default_rng(seed)
    ct = rng.normal(40, 30, (nz, ny, nx)).astype(np.float32)
    z, y, x = np.indices((nz, ny, nx))
    liver = (np.abs(y - 12) < 9) & (np.abs(x - 12) < 9)
    pv = np.zeros((nz, ny, nx), bool)
    if portal:
        trunk = (z <= bif) & ((y - 12) ** 2 + (x - 12) ** 2 <= 4)
        up = z - bif
        left = (z >= bif) & (z < bif + 6) & ((y - 12) ** 2 + (x - 12 - up) ** 2 <= 1)
        right = (z >= bif) & (z < bif + 6) & ((y - 12) ** 2 + (x - 12 + up) ** 2 <= 1)
        pv = trunk | left | right
    tumour = (z - 5) ** 2 + (y - 6) ** 2 + (x - 6) ** 2 <= 4
    masks = {
        "liver": liver,
        "remnant": liver & (x < 12),
        "hepatic": liver & (y == 3),
        "portal": pv,
        "tumour": tumour,
    }
    return loaded_patient("P1", ct, (2.5, 1.5, 1.5), masks, tumour)


def test_bifurcation_found_from_skeleton():
    p = _patient(bif=20)
    z, method = pp.find_bifurcation(p.masks["portal"], p.spacing, p.masks["liver"])
    assert method == "portal_skeleton"
    assert abs(z - 20) <= 1


def test_crop_centred_on_bifurcation():
    out = pp.preprocess_patient(_patient(nz=30, bif=20), CFG)
    assert out["ct"].shape == (8, 16, 16)
    assert str(out["centre_method"]) == "portal_skeleton"
    assert abs(int(out["bifurcation_z"]) - 20) <= 1
    zi = out["z_index"]
    np.testing.assert_array_equal(zi, np.arange(zi[0], zi[0] + 8))
    assert zi[4] == out["bifurcation_z"]  # centre at depth // 2


def test_window_clamped_inside_series():
    np.testing.assert_array_equal(pp.slice_window(30, 1, 8), np.arange(0, 8))
    np.testing.assert_array_equal(pp.slice_window(30, 29, 8), np.arange(22, 30))


def test_fallback_to_liver_centre(caplog):
    out = pp.preprocess_patient(_patient(portal=False), CFG)
    assert str(out["centre_method"]) == "liver_centre"
    assert int(out["bifurcation_z"]) in (14, 15)  # liver centre of mass: z = 14.5
    assert "liver" in caplog.text


def test_short_volume_padded_symmetrically_with_minus_one():
    out = pp.preprocess_patient(_patient(nz=5, bif=2), CFG)
    zi = out["z_index"]
    np.testing.assert_array_equal(zi, [-1, 0, 1, 2, 3, 4, -1, -1])
    ct = out["ct"]
    assert np.all(ct[zi < 0] == -1.0)
    assert np.all(out["masks"][:, zi < 0] == 0)
    assert ct[zi >= 0].mean() > -0.5  # real slices are not padding


def test_value_range_and_dtypes():
    out = pp.preprocess_patient(_patient(), CFG)
    assert out["ct"].dtype == np.float32
    assert out["ct"].min() >= -1.0 and out["ct"].max() <= 1.0
    assert out["masks"].dtype == np.uint8 and out["masks"].shape == (len(MASK_NAMES), 8, 16, 16)
    assert set(np.unique(out["masks"])) <= {0, 1}
    assert out["lesion_features"].shape == (1, len(out["lesion_feature_names"]))


def test_without_clahe_mapping_is_linear():
    p = _patient()
    p.ct[:] = 40.0  # 40 HU, the centre of the soft-tissue window (-160, 240) -> 0
    out = pp.preprocess_patient(p, CFG, clahe=False)
    assert CFG.hu_window == (-160.0, 240.0)
    np.testing.assert_allclose(out["ct"], 0.0, atol=1e-6)
    p.ct[:] = 140.0  # three quarters of the window -> 0.5
    out = pp.preprocess_patient(p, CFG, clahe=False)
    np.testing.assert_allclose(out["ct"], 0.5, atol=1e-6)


@pytest.mark.parametrize("shape", [(16, 96, 96), (10, 80, 72), (3, 256, 200)])
def test_cubic_resize_slice_by_slice_equals_the_3d_zoom(shape):
    """The slice-by-slice cubic resize gives the 3D zoom's float32 output (factor 1 along z)."""
    from scipy import ndimage

    vol = np.random.default_rng(sum(shape)).random(shape).astype(np.float32)
    ref = ndimage.zoom(
        vol, (1.0, 32 / shape[1], 32 / shape[2]), order=3, grid_mode=True, mode="nearest"
    )
    out = pp._resize_inplane(vol, 32, order=3)
    assert out.dtype == np.float32 and out.shape == (shape[0], 32, 32)
    np.testing.assert_array_equal(out, ref)


def test_masks_closed():
    hole = np.ones((8, 12, 12), bool)
    hole[4, 6, 6] = False
    closed = pp.close_mask(hole, 1)
    assert closed[4, 6, 6]
    assert closed.all()  # no erosion at the border


def _close_whole_volume(mask, radius):
    """The closing's definition (the reference form): the whole volume."""
    from scipy import ndimage
    from skimage import morphology

    padded = np.pad(mask.astype(bool), radius)
    closed = ndimage.binary_closing(padded, structure=morphology.ball(radius))
    return closed[tuple(slice(radius, -radius) for _ in range(3))]


@pytest.mark.parametrize("radius", [1, 2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_closing_on_the_bounding_box_equals_the_whole_volume(radius, seed):
    rng = np.random.default_rng(seed)
    shape = (14, 30, 26)
    mask = np.zeros(shape, bool)
    # a blob somewhere (seed 0 and 1: touching the volume's first / last faces), pinholes
    lo = [0 if seed == 0 else int(rng.integers(0, n - 6)) for n in shape]
    hi = [n if seed == 1 else int(rng.integers(a + 3, n + 1)) for a, n in zip(lo, shape)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask[box] = rng.random(mask[box].shape) < 0.7
    if seed == 5:
        mask[:] = False
        mask[7, 15, 13] = True  # a single voxel
    np.testing.assert_array_equal(pp.close_mask(mask, radius), _close_whole_volume(mask, radius))
    assert not pp.close_mask(np.zeros(shape, bool), radius).any()


def _bifurcation_whole_volume(portal, spacing):
    """``find_bifurcation``'s skeleton method labelling the whole volume (the form before)."""
    from scipy import ndimage
    from skimage import measure, morphology

    labels = measure.label(portal, connectivity=3)
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    main = labels == int(np.argmax(counts))
    box = ndimage.find_objects(main.astype(np.uint8))[0]
    sub = np.pad(main[box], 1)
    skel = morphology.skeletonize(sub).astype(bool)
    neighbours = ndimage.convolve(skel.astype(np.uint8), np.ones((3, 3, 3), np.uint8))
    branch = skel & (neighbours - 1 >= 3)
    if not branch.any():
        return None
    dist = ndimage.distance_transform_edt(sub, sampling=spacing)
    pts = np.argwhere(branch)
    return int(pts[int(np.argmax(dist[tuple(pts.T)]))][0] - 1 + box[0].start)


@pytest.mark.parametrize("bif", [6, 12, 20])
def test_bifurcation_in_the_bounding_box_equals_the_whole_volume(bif):
    p = _patient(nz=30, bif=bif)
    portal = p.masks["portal"].copy()
    portal[2:4, 2:4, 2:4] = True  # a second, smaller component elsewhere
    z, method = pp.find_bifurcation(portal, p.spacing, p.masks["liver"])
    assert method == "portal_skeleton"
    assert z == _bifurcation_whole_volume(portal, p.spacing)


def test_invert_to_source_round_trip():
    out = pp.preprocess_patient(_patient(nz=30, ny=32, nx=32), CFG)
    back = pp.invert_to_source(out["masks"][0].astype(np.float32), out, order=0)
    assert back.shape == (30, 32, 32)
    zi = out["z_index"]
    outside = np.setdiff1d(np.arange(30), zi)
    assert np.all(back[outside] == 0)
    liver = _patient(nz=30, ny=32, nx=32).masks["liver"][zi]
    assert (back[zi] > 0.5).mean() == pytest.approx(liver.mean(), abs=0.05)


def _paths(tmp_path: Path) -> Paths:
    return paths_under(tmp_path)


def _killer(ref, cfg, out, digest, clahe_mode, source):
    if ref.patient_id == "CRLM-CT-0002":
        os._exit(1)  # simulate a worker killed mid-run
    return pp.process_one(ref, cfg, out, digest, clahe_mode, source)


@pytest.fixture
def cohort(tmp_path):
    for i in (1, 2, 3):
        write_patient(tmp_path / "cohort", f"CRLM-CT-000{i}", seed=i)
    bad = tmp_path / "cohort" / "CRLM-CT-0003" / "study" / "2-SEG"
    for f in bad.iterdir():
        f.unlink()
    return _paths(tmp_path)


def test_cohort_cache_resume_and_report(cohort):
    out_dir = cohort.processed_dir
    out_dir.mkdir(parents=True)
    leftover = out_dir / ".CRLM-CT-0001.abc.npz.tmp"
    leftover.write_bytes(b"half a file")
    with pytest.raises(pp.PreprocessInterrupted):
        pp.preprocess_cohort(
            cohort, SMOKE, n_jobs=2, progress=False, mp_context="fork", worker=_killer
        )
    assert not (out_dir / "CRLM-CT-0002.npz").exists()
    assert not leftover.exists()
    assert not list(out_dir.glob(".*.tmp"))
    report = pp.preprocess_cohort(cohort, SMOKE, n_jobs=1, progress=False)
    status = dict(zip(report["patient_id"], report["status"]))
    assert status["CRLM-CT-0002"] == "done"
    assert status["CRLM-CT-0003"] == "excluded"
    assert status["CRLM-CT-0001"] in {"cached", "done"}
    assert "MissingSeriesError" in report.set_index("patient_id").loc["CRLM-CT-0003", "reason"]
    assert (out_dir / "report.csv").is_file()
    again = pp.preprocess_cohort(cohort, SMOKE, n_jobs=1, progress=False)
    assert dict(zip(again["patient_id"], again["status"])) == {
        "CRLM-CT-0001": "cached",
        "CRLM-CT-0002": "cached",
        "CRLM-CT-0003": "excluded",
    }
    data = pp.load_processed(out_dir, "CRLM-CT-0001")
    d, s = SMOKE.preprocess.depth, SMOKE.preprocess.size
    assert data["ct"].shape == (d, s, s)
    assert data["masks"].shape == (5, d, s, s)
    assert tuple(data["source_shape"]) == (12, 24, 24)
    np.testing.assert_allclose(data["source_spacing_mm"], (2.5, 1.5, 1.5))
    # kill + resume wrote the same bytes as one uninterrupted run
    fresh = dataclasses.replace(cohort, processed_dir=cohort.processed_dir.parent / "fresh")
    pp.preprocess_cohort(fresh, SMOKE, n_jobs=1, progress=False)
    for pid in ("CRLM-CT-0001", "CRLM-CT-0002"):
        name = f"{pid}.npz"
        assert (out_dir / name).read_bytes() == (fresh.processed_dir / name).read_bytes(), pid
    # changed settings -> rebuilt, and the report says what changed
    other = SMOKE.with_(preprocess=PreprocessConfig(depth=8, size=16))
    changed = pp.preprocess_cohort(cohort, other, n_jobs=1, progress=False).set_index("patient_id")
    assert changed["status"].to_dict() == {
        "CRLM-CT-0001": "rebuilt",
        "CRLM-CT-0002": "rebuilt",
        "CRLM-CT-0003": "excluded",
    }
    assert changed.loc["CRLM-CT-0001", "reason"].startswith("config changed: ")
    assert "depth 16 -> 8" in changed.loc["CRLM-CT-0001", "reason"]


@pytest.mark.parametrize(
    ("patient_id", "why"),
    [
        ("../x", "path separator"),
        ("../../etc/x", "path separator"),
        ("", "empty"),
        ("   ", "empty"),
        ("..", "starts with '.'"),
        (".hidden", "starts with '.'"),
        ("a\\b", "path separator"),
        ("a\x00b", "control characters"),
        (" CRLM-1", "leading or trailing spaces"),
        ("CON", "Windows device name"),
        ("a:b", "invalid file names on Windows"),
        ("x" * 300, "longer than"),
    ],
)
def test_unsafe_patient_ids_refused(tmp_path, patient_id, why):
    with pytest.raises(pp.UnsafePatientIdError, match="cannot name a cache file") as err:
        pp.cache_path(tmp_path, patient_id)
    assert why in str(err.value)
    assert repr(patient_id) in str(err.value)


@pytest.mark.parametrize("patient_id", ["CRLM-CT-1001", "Müller-01", "患者 7", "a.b_c"])
def test_safe_patient_ids_accepted(tmp_path, patient_id):
    assert pp.cache_path(tmp_path, patient_id) == tmp_path / f"{patient_id}.npz"


def _run_preprocess(paths, queue):
    try:
        report = pp.preprocess_cohort(paths, SMOKE, n_jobs=1, progress=False)
        queue.put(("ok", dict(zip(report["patient_id"], report["status"]))))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        queue.put(("error", f"{type(err).__name__}: {err}"))


def test_two_concurrent_runs_share_one_cache(cohort):
    """Two runs at once on one cache: both succeed; the lock serialises them, so one builds."""
    import multiprocessing as mp

    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_run_preprocess, args=(cohort, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert [r[0] for r in results] == ["ok", "ok"], results
    statuses = sorted(r[1]["CRLM-CT-0001"] for r in results)
    assert statuses == ["cached", "done"]
    assert all(r[1]["CRLM-CT-0003"] == "excluded" for r in results)
    assert not list(cohort.processed_dir.glob(".*.tmp"))
    for pid in ("CRLM-CT-0001", "CRLM-CT-0002"):
        assert pp.load_processed(cohort.processed_dir, pid)["ct"].shape[0] == SMOKE.preprocess.depth


def test_lock_held_by_another_run(cohort):
    from filelock import FileLock

    cohort.processed_dir.mkdir(parents=True)
    with FileLock(cohort.processed_dir / pp.LOCK_NAME):
        with pytest.raises(pp.PreprocessLocked, match="another preprocessing run holds"):
            pp.preprocess_cohort(cohort, SMOKE, n_jobs=1, progress=False, lock_timeout_s=0.2)


def test_only_stale_temps_removed(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(dead.stdout)
    live = tmp_path / f".CRLM-CT-0001.{os.getppid()}.abcd1234.npz.tmp"
    stale = tmp_path / f".CRLM-CT-0002.{dead_pid}.abcd1234.npz.tmp"
    legacy = tmp_path / ".CRLM-CT-0003.abcd1234.npz.tmp"
    for f in (live, stale, legacy):
        f.write_bytes(b"partial")
    removed = pp.remove_stale_temps(tmp_path)
    assert sorted(removed) == sorted([stale, legacy])
    assert live.exists()


def test_ids_differing_only_in_case_are_refused(tmp_path):
    paths = _paths(tmp_path)
    for pid, seed in (("CRLM-CT-000A", 1), ("crlm-ct-000a", 2), ("CRLM-CT-0003", 3)):
        write_patient(paths.cohort_dir, pid, seed=seed)
    report = pp.preprocess_cohort(paths, SMOKE, n_jobs=1, progress=False).set_index("patient_id")
    assert report["status"].to_dict() == {
        "CRLM-CT-0003": "done",
        "CRLM-CT-000A": "excluded",
        "crlm-ct-000a": "excluded",
    }
    reason = report.loc["crlm-ct-000a", "reason"]
    assert reason.startswith("UnsafePatientIdError: ") and "differ only in case" in reason
    assert "crlm-ct-000a" in reason and "CRLM-CT-000A" in reason


def test_lock_names_its_owner_and_is_released(cohort):
    """The lock records the holder's PID while held; a timed-out waiter names it."""
    out_dir = cohort.processed_dir
    out_dir.mkdir(parents=True)
    with pp.cache_lock(out_dir):
        assert (out_dir / pp.LOCK_OWNER_NAME).read_text() == str(os.getpid())
        with pytest.raises(pp.PreprocessLocked, match=f"owner PID {os.getpid()};") as info:
            pp.preprocess_cohort(cohort, SMOKE, n_jobs=1, progress=False, lock_timeout_s=0.1)
        assert str(out_dir / pp.LOCK_NAME) in str(info.value)
    assert not (out_dir / pp.LOCK_OWNER_NAME).exists()
    with pp.cache_lock(out_dir, timeout_s=0):  # released: taken at once
        pass
