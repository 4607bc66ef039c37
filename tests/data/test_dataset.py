"""Tests of crlm_lib.data.dataset (targets, encodings, batching, splits) and a round trip
through the synthetic cohort writer (crlm_lib.data.synthetic -> tcia -> preprocess)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from crlm_lib.config import MASK_NAMES, Paths, get_profile
from crlm_lib.data import dataset as ds
from crlm_lib.data import preprocess as pp
from crlm_lib.data import tcia

SMOKE = get_profile("smoke")


@pytest.mark.parametrize(
    ("years", "event", "target", "known"),
    [
        (2.5, 1, [0, 0] + [1] * 10, [1] * 12),  # recurrence in year 3 (bin 2)
        (0.3, 1, [1] * 12, [1] * 12),
        (2.5, 0, [0] * 12, [1, 1] + [0] * 10),  # censored in bin 2: years 1-2 known
        (0.4, 0, [0] * 12, [0] * 12),
        (15.0, 0, [0] * 12, [1] * 12),  # followed event-free past year 12: every year known
        (12.5, 1, [0] * 12, [1] * 12),  # recurrence after year 12: none by the end of year 12
        (11.5, 1, [0] * 11 + [1], [1] * 12),  # recurrence in year 12
    ],
)
def test_recurrence_targets(years, event, target, known):
    t, k = ds.recurrence_targets(years, event)
    np.testing.assert_array_equal(t, target)
    np.testing.assert_array_equal(k, known)
    assert ds.year_bin(years) == min(int(years), 11)


def test_paper_split_sizes_and_determinism():
    ids = [f"P{i:03d}" for i in range(197)]
    events = np.random.default_rng(0).integers(0, 2, 197)
    tr, va, te = ds.paper_split(ids, events, seed=0)
    assert (len(tr), len(va), len(te)) == (157, 20, 20)
    assert set(tr) | set(va) | set(te) == set(ids)
    assert not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert ds.paper_split(ids, events, seed=0) == (tr, va, te)
    assert ds.paper_split(ids, events, seed=1)[2] != te
    ev = dict(zip(ids, events))
    assert abs(np.mean([ev[i] for i in te]) - events.mean()) < 0.06  # stratified


def test_repeated_stratified_kfold():
    ids = [f"P{i:02d}" for i in range(20)]
    events = [0, 1] * 10
    splits = list(ds.repeated_stratified_kfold(ids, events, folds=5, repeats=2, seed=0))
    assert [(r, f) for r, f, _, _ in splits] == [(r, f) for r in range(2) for f in range(5)]
    for _, _, tr, te in splits:
        assert len(te) == 4 and set(tr) | set(te) == set(ids) and not set(tr) & set(te)
    first = sorted(i for _, _, _, te in splits[:5] for i in te)
    assert first == sorted(ids)
    assert splits == list(ds.repeated_stratified_kfold(ids, events, 5, 2, seed=0))


def test_lesion_set_keeps_16_largest_and_pads():
    stats = {"min": np.zeros(2), "mean": np.zeros(2), "std": np.ones(2)}
    obj = ds.CRLMDataset.__new__(ds.CRLMDataset)
    obj.feature_stats = stats
    obj.lesion_feature_names = ["mean", "volume_mm3"]
    raw = np.stack([np.zeros(20), np.arange(20.0)], axis=1)
    feats, mask = obj.lesion_set(raw)
    assert feats.shape == (16, 2) and mask.all()
    np.testing.assert_allclose(np.sort(feats[:, 1]), np.log(np.arange(4.0, 20.0) + 1))
    feats, mask = obj.lesion_set(raw[:3])
    assert mask.tolist() == [True] * 3 + [False] * 13
    assert np.all(feats[3:] == 0)


def test_lesion_set_is_one_function_for_training_and_new_patients():
    stats = {"min": np.zeros(2), "mean": np.zeros(2), "std": np.ones(2)}
    raw = np.stack([np.zeros(20), np.arange(20.0)], axis=1).astype(np.float32)
    feats, mask = ds.lesion_set(raw, ["mean", "volume_mm3"], stats)
    assert feats.dtype == np.float32 and mask.all()
    # the largest by volume, in descending order; the same as the dataset's method
    np.testing.assert_allclose(feats[:, 1], np.log(np.arange(19.0, 3.0, -1) + 1), rtol=1e-6)
    obj = ds.CRLMDataset.__new__(ds.CRLMDataset)
    obj.feature_stats, obj.lesion_feature_names = stats, ["mean", "volume_mm3"]
    np.testing.assert_array_equal(obj.lesion_set(raw)[0], feats)
    empty, none = ds.lesion_set(np.zeros((0, 2)), ["mean", "volume_mm3"], stats)
    assert not none.any() and not empty.any()
    with pytest.raises(ValueError, match="20 lesions.*volume_mm3"):
        ds.lesion_set(raw, ["a", "b"], stats)
    assert ds.lesion_set(raw[:16], ["a", "b"], stats)[1].all()  # 16 fit without ranking


@pytest.fixture(scope="module")
def synthetic_processed(tmp_path_factory):
    synthetic = pytest.importorskip("crlm_lib.data.synthetic")
    root = tmp_path_factory.mktemp("synth")
    cohort = synthetic.write_cohort(root / "cohort", 3, 0, SMOKE.synth, progress=False)
    paths = Paths(
        root,
        "smoke",
        cohort,
        cohort / "clinical.csv",
        None,
        root / "processed",
        root / "runs",
        root / "results",
        True,
    )
    report = pp.preprocess_cohort(paths, SMOKE, n_jobs=1, progress=False)
    return synthetic, paths, report


def test_synthetic_round_trip(synthetic_processed):
    synthetic, paths, _ = synthetic_processed
    refs = tcia.discover(paths.cohort_dir)
    assert [r.patient_id for r in refs] == ["CRLM-CT-1001", "CRLM-CT-1002", "CRLM-CT-1003"]
    for index in range(2):
        spec = synthetic.sample_patient(0, index)
        img = synthetic.render_patient(spec, 0, SMOKE.synth)
        p = tcia.load_patient(refs[index])
        np.testing.assert_array_equal(p.ct, img.hu.astype(np.float32))
        assert p.spacing == pytest.approx(
            (
                SMOKE.synth.slice_thickness_mm,
                SMOKE.synth.pixel_spacing_mm,
                SMOKE.synth.pixel_spacing_mm,
            )
        )
        for name in ("liver", "remnant", "hepatic", "portal"):
            np.testing.assert_array_equal(p.masks[name], img.masks[name])
        assert len(p.lesions) == len(img.lesions)
        for a, b in zip(p.lesions, img.lesions):
            np.testing.assert_array_equal(a, b)
        # the crop is centred on the phantom's portal bifurcation (within 1 slice)
        z_bif = int(np.argmin(np.abs(img.z_mm - spec.anatomy.bifurcation_z_mm)))
        meta = pp.load_processed(paths.processed_dir, p.patient_id)
        assert meta["centre_method"] == "portal_skeleton"
        assert abs(int(meta["bifurcation_z"]) - z_bif) <= 1


def test_dataset_items_and_loader(synthetic_processed):
    from crlm_lib.data import clinical

    _, paths, report = synthetic_processed
    assert set(report["status"]) == {"done"}
    df = clinical.load_clinical(paths.clinical_csv)
    ids = report["patient_id"].tolist()
    train = ds.CRLMDataset(paths.processed_dir, df, ids[:2], SMOKE, augment=True)
    test = ds.CRLMDataset(
        paths.processed_dir,
        df,
        ids[2:],
        SMOKE,
        clinical_reference_ids=ids[:2],
        feature_stats=train.feature_stats,
    )
    item = test[0]
    d, s = SMOKE.preprocess.depth, SMOKE.preprocess.size
    assert item["patient_id"] == ids[2]
    assert item["ct"].shape == (1, d, s, s) and item["ct"].dtype == torch.float32
    assert item["masks"].shape == (len(MASK_NAMES), d, s, s)
    assert item["clinical"].shape == (train.clinical.shape[1],)
    assert item["lesion_features"].shape == (16, len(train.lesion_feature_names))
    assert item["lesion_mask"].dtype == torch.bool
    out = clinical.outcomes(df.loc[[ids[2]]]).iloc[0]
    assert item["survival_bin"] == min(int(out["os_years"]), 11)
    t, k = ds.recurrence_targets(out["dfs_years"], out["dfs_event"])
    np.testing.assert_array_equal(item["recurrence_target"].numpy(), t)
    np.testing.assert_array_equal(item["recurrence_known"].numpy(), k)
    torch.manual_seed(0)
    a = train[0]["ct"]
    torch.manual_seed(0)
    assert torch.equal(a, train[0]["ct"])
    batch = next(iter(DataLoader(train, batch_size=2, collate_fn=ds.collate)))
    assert batch["patient_id"] == ids[:2]
    assert batch["ct"].shape == (2, 1, d, s, s)
    assert batch["recurrence_target"].shape == (2, 12)


def test_dataset_reads_each_file_once_when_it_fits(synthetic_processed, monkeypatch):
    import os

    from crlm_lib.data import clinical

    _, paths, report = synthetic_processed
    df = clinical.load_clinical(paths.clinical_csv)
    ids = report["patient_id"].tolist()
    reads: list[str] = []
    real = ds.load_processed

    def counting(folder, pid):
        reads.append(pid)
        return real(folder, pid)

    monkeypatch.setattr(ds, "load_processed", counting)
    ds._SHARED.clear()
    cached = ds.CRLMDataset(paths.processed_dir, df, ids, SMOKE)
    # another dataset of this process over the same files (the next fit, the permutation
    # control, the training reference) shares the decompressed entries
    again = ds.CRLMDataset(paths.processed_dir, df, ids[::-1], SMOKE)
    for i in range(len(ids)):
        cached[i], again[i]
    assert reads.count(ids[0]) == 1
    assert again._arrays(ids[0])["ct"] is cached._arrays(ids[0])["ct"]
    # a rebuilt cache entry (another modification time) is read again
    path = paths.processed_dir / f"{ids[0]}.npz"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    ds.CRLMDataset(paths.processed_dir, df, ids[:1], SMOKE)[0]
    assert reads.count(ids[0]) == 2

    monkeypatch.setattr(ds, "ITEM_CACHE_BYTES", 0)
    ds._SHARED.clear()
    uncached = ds.CRLMDataset(paths.processed_dir, df, ids, SMOKE)
    reads.clear()
    for _ in range(2):  # two "epochs"
        for i in range(len(ids)):
            a, b = cached[i], uncached[i]
            for key in ("ct", "masks", "lesion_features", "lesion_mask", "clinical"):
                assert torch.equal(a[key], b[key]), key
            a["ct"] += 1  # an item is the caller's copy: the cache is not changed
    assert reads.count(ids[0]) == 2  # nothing kept: once per epoch
    assert not ds._SHARED.entries
    torch.manual_seed(0)
    aug = ds.CRLMDataset(paths.processed_dir, df, ids, SMOKE, augment=True)
    first = aug[0]["ct"]
    torch.manual_seed(0)
    assert torch.equal(first, aug[0]["ct"])  # augmenting a cached item leaves it as it was


def test_shared_entries_drop_the_least_recently_used_beyond_the_bound(
    synthetic_processed, monkeypatch
):
    _, paths, report = synthetic_processed
    ids = report["patient_id"].tolist()[:3]
    shared = ds._SharedEntries()
    one = shared.get(paths.processed_dir, ids[0])
    size = sum(one[k].nbytes for k in ds._ITEM_KEYS)
    monkeypatch.setattr(ds, "ITEM_CACHE_BYTES", 2 * size + size // 2)  # room for two
    shared.clear()
    for pid in (ids[0], ids[1], ids[0], ids[2]):  # ids[1] is the least recently used
        shared.get(paths.processed_dir, pid)
    kept = {Path(k[0]).stem for k in shared.entries}
    assert kept == {ids[0], ids[2]} and shared.nbytes <= ds.ITEM_CACHE_BYTES


def test_seg_volumetrics_follow_the_phantom(synthetic_processed):
    """``preprocess.volumetrics`` reads the SEG at the source grid: counts exact, volumes and the
    remnant fraction close to the phantom's analytic values (the smoke grid is coarse: 8 mm
    pixels, so within a factor of ~2 for volume), burden score = hypot(diameter, count)."""
    import pandas as pd

    _, paths, _ = synthetic_processed
    ids = ["CRLM-CT-1001", "CRLM-CT-1002", "CRLM-CT-1003"]
    vol = pp.volumetrics(paths.processed_dir, ids)
    assert list(vol.columns) == list(pp.VOLUMETRIC_FEATURES) and list(vol.index) == ids
    oracle = pd.read_csv(paths.cohort_dir / "oracle.csv").set_index("Patient-ID").loc[ids]
    np.testing.assert_array_equal(vol["n_lesions"], oracle["n_tumours"])
    ratio = np.exp(vol["log_tumour_volume_ml"]) / oracle["tumour_volume_ml"]
    assert ((ratio > 0.4) & (ratio < 2.5)).all(), ratio
    assert (vol["remnant_fraction"] - oracle["remnant_fraction"]).abs().max() < 0.2
    np.testing.assert_allclose(
        vol["tumour_burden_score"], np.hypot(vol["largest_diameter_cm"], vol["n_lesions"])
    )


def test_tumour_first_order_follows_the_attenuation_phenotype(synthetic_processed):
    """``preprocess.tumour_first_order``: volume-weighted mean / SD / p10 HU of the SEG tumours;
    the mean rises with the generator's attenuation phenotype (tumour HU = 45 + 20 z)."""
    import pandas as pd
    from scipy.stats import spearmanr

    _, paths, _ = synthetic_processed
    oracle = pd.read_csv(paths.cohort_dir / "oracle.csv", dtype={"Patient-ID": str})
    ids = [i for i in oracle["Patient-ID"] if (pp.cache_path(paths.processed_dir, i)).is_file()]
    first = pp.tumour_first_order(paths.processed_dir, ids)
    assert list(first.columns) == list(pp.FIRST_ORDER_FEATURES) and list(first.index) == ids
    assert first.notna().all().all()
    assert (first["tumour_p10_hu"] <= first["tumour_mean_hu"]).all()
    z = oracle.set_index("Patient-ID").loc[ids, "tumour_attenuation_z"]
    assert spearmanr(first["tumour_mean_hu"], z).statistic > 0.4
