"""Torch dataset over the preprocessing cache, yearly targets, and the evaluation splits.

Targets (one place that turns years into the 12 yearly bins)
-----------------------------------------------------------
* ``survival_bin = min(floor(os_years), 11)``; ``recurrence_bin`` likewise from ``dfs_years``
  (DFS event = recurrence or death, as in the clinical table).
* ``recurrence_target[k] = 1`` if the DFS event was observed by the end of year k+1,
  ``floor(dfs_years) <= k`` (year ``k``: "recurrence by the end of year k+1"), else 0; an
  event after year 12 leaves every year 0 (not clamped into year 12).
* ``recurrence_known[k]``: an observed event makes every year known. A patient censored at
  ``dfs_years`` (``c = floor(dfs_years)``, not clamped) is known event-free for the years that
  ended before censoring, ``k < c``, and unknown for ``k >= c``: one followed past 12 years
  is known for all 12.

Encodings (no leakage)
----------------------
Clinical predictors: ``crlm_lib.data.clinical.encode_predictors(df.loc[ids],
reference=df.loc[clinical_reference_ids])`` - pass the training ids for val/test. Lesion
features (AMINN): log-shift ``log(x - min_ref + 1)`` per feature then z-score with the
reference lesions' mean and std (AMINN's transform); the statistics are exposed as
``dataset.feature_stats`` and can be passed to the val/test datasets. Patients with more than
``L_MAX = 16`` lesions keep the 16 largest (by ``volume_mm3``); fewer are zero-padded with
``lesion_mask = False``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, default_collate

from crlm_lib import curves
from crlm_lib.config import N_YEARS, Profile
from crlm_lib.data.preprocess import load_processed
from crlm_lib.errors import TooFewPatientsError

#: Maximum lesions per patient fed to set-based models (AMINN, STG).
L_MAX = 16

#: Items of a dataset are kept in memory after their first read when all of them together
#: (estimated from the first file) fit in this many bytes: the cpu profile (~150 KiB per
#: patient) is read once per fit instead of once per epoch; the paper profile (~6 MiB per
#: patient, 8 DataLoader workers) reads from disk as before.
ITEM_CACHE_BYTES = 256 * 2**20

#: The arrays of a cache file that ``CRLMDataset.__getitem__`` uses.
_ITEM_KEYS = ("ct", "masks", "lesion_features", "source_spacing_mm", "source_shape")


class _SharedEntries:
    """Decompressed cache entries shared by every dataset of this process, least recently
    used first out beyond ``ITEM_CACHE_BYTES``. A protocol builds several datasets over the
    same patients for every fit (training, early stopping, test, the permutation control, the
    training reference) and every fit of a cross-validation reads the same files again;
    decompressing an entry costs ~9 ms at the cpu profile's size. Keyed by the file and its
    size and modification time, so a rebuilt entry is read again. The arrays are read-only."""

    def __init__(self) -> None:
        from collections import OrderedDict

        self.entries: OrderedDict[tuple[str, int, int], dict] = OrderedDict()
        self.nbytes = 0

    def get(self, processed_dir: Path, pid: str) -> dict:
        """The :data:`_ITEM_KEYS` arrays and ``lesion_feature_names`` of one patient."""
        path = Path(processed_dir) / f"{pid}.npz"
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        hit = self.entries.get(key)
        if hit is not None:
            self.entries.move_to_end(key)
            return hit
        data = load_processed(processed_dir, pid)
        entry: dict = {k: data[k] for k in _ITEM_KEYS}
        for a in entry.values():
            a.flags.writeable = False
        entry["lesion_feature_names"] = tuple(data["lesion_feature_names"])
        size = sum(entry[k].nbytes for k in _ITEM_KEYS)
        if size <= ITEM_CACHE_BYTES:
            self.entries[key] = entry
            self.nbytes += size
            while self.nbytes > ITEM_CACHE_BYTES:
                _, old = self.entries.popitem(last=False)
                self.nbytes -= sum(old[k].nbytes for k in _ITEM_KEYS)
        return entry

    def clear(self) -> None:
        self.entries.clear()
        self.nbytes = 0


#: The process's shared entries (:class:`_SharedEntries`).
_SHARED = _SharedEntries()


def year_bin(years: float, n_years: int = N_YEARS) -> int:
    """``min(floor(years), n_years - 1)`` of one time as an ``int`` (negative times -> bin 0);
    the rule itself is :func:`crlm_lib.curves.year_bin`."""
    return int(curves.year_bin(max(float(years), 0.0), n_years))


def recurrence_targets(
    dfs_years: float, dfs_event: int, n_years: int = N_YEARS
) -> tuple[np.ndarray, np.ndarray]:
    """Yearly recurrence target and known-mask (see module docstring).

    Returns
    -------
    target, known : np.ndarray
        float32 ``[n_years]`` each.
    """
    b = int(np.floor(max(float(dfs_years), 0.0)))  # the year that ends after the time
    k = np.arange(n_years)
    if int(dfs_event) == 1:
        return (k >= b).astype(np.float32), np.ones(n_years, np.float32)
    return np.zeros(n_years, np.float32), (k < b).astype(np.float32)


def processed_spacing(meta: dict, shape: Sequence[int]) -> tuple[float, float, float]:
    """(z, y, x) mm spacing of the processed grid: slices keep their thickness, in-plane
    spacing grows by ``source / size``."""
    sz, sy, sx = (float(v) for v in meta["source_spacing_mm"])
    _, ny, nx = (int(v) for v in meta["source_shape"])
    return sz, sy * ny / shape[1], sx * nx / shape[2]


def fit_lesion_stats(features: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """Log-shift + z-score statistics from the reference (training) patients' lesions."""
    stacked = [f for f in features if len(f)]
    if not stacked:
        raise ValueError("no lesion features in the reference patients")
    allf = np.concatenate(stacked).astype(np.float64)
    lo = allf.min(axis=0)
    logged = np.log(allf - lo + 1.0)
    std = logged.std(axis=0)
    return {"min": lo, "mean": logged.mean(axis=0), "std": np.where(std > 0, std, 1.0)}


def apply_lesion_stats(features: np.ndarray, stats: dict[str, np.ndarray]) -> np.ndarray:
    """``(log(max(x - min, 0) + 1) - mean) / std`` per feature, float32."""
    x = np.log(np.clip(features - stats["min"], 0, None) + 1.0)
    return ((x - stats["mean"]) / stats["std"]).astype(np.float32)


def lesion_set(
    raw: np.ndarray, feature_names: Sequence[str], stats: dict[str, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """One patient's lesion set as the set-based models read it (AMINN, STG).

    Parameters
    ----------
    raw : array ``[n_lesions, F]``
        The cache entry's ``lesion_features`` (``data.lesions``), one row per lesion.
    feature_names : sequence of str
        Their ``F`` column names; ``volume_mm3`` ranks the lesions when there are more than
        :data:`L_MAX`.
    stats : dict
        :func:`fit_lesion_stats` of the training lesions (:func:`apply_lesion_stats`).

    Returns
    -------
    features : float32 array ``[L_MAX, F]``
        The :data:`L_MAX` largest lesions (by volume, ties in stored order) standardised with
        ``stats``, zero rows after them.
    mask : bool array ``[L_MAX]``
        ``True`` for the rows that hold a lesion.

    Raises
    ------
    ValueError
        More than :data:`L_MAX` lesions and no ``volume_mm3`` column to choose them by.
    """
    raw = np.asarray(raw, dtype=np.float64)
    out = np.zeros((L_MAX, len(stats["mean"])), np.float32)
    mask = np.zeros(L_MAX, bool)
    if len(raw) > L_MAX:
        names = [str(n) for n in feature_names]
        if "volume_mm3" not in names:
            raise ValueError(
                f"{len(raw)} lesions (more than {L_MAX}) and no 'volume_mm3' among the lesion "
                f"features {names} to keep the largest by"
            )
        raw = raw[np.argsort(-raw[:, names.index("volume_mm3")], kind="stable")[:L_MAX]]
    if len(raw):
        out[: len(raw)] = apply_lesion_stats(raw, stats)
        mask[: len(raw)] = True
    return out, mask


class CRLMDataset(Dataset):
    """Preprocessed CT + masks + clinical vector + lesion set + yearly targets per patient.

    Parameters
    ----------
    processed_dir : path
        Folder of ``<patient_id>.npz`` files (``preprocess.preprocess_cohort``).
    clinical_df : pd.DataFrame
        Output of ``clinical.load_clinical`` (index = patient id).
    ids : sequence of str
        Patients of this dataset (order kept).
    profile : Profile
        Resolved by the caller (``config.get_profile`` at the public entry); gives the
        augmentation settings.
    augment : bool
        Apply the training augmentations (:mod:`crlm_lib.data.augment`); the per-item seed is
        drawn from torch's global RNG, so runs are reproducible under ``torch.manual_seed``.
    clinical_reference_ids : sequence of str, optional
        Rows whose statistics encode the clinical table (default ``ids``: pass the training ids
        for val/test datasets).
    feature_stats : dict, optional
        Lesion-feature statistics (default: fitted on ``clinical_reference_ids``' lesions).
    clinical_encoder : clinical.ClinicalEncoder, optional
        A fitted encoder (e.g. the one stored in a run's ``run.json``); when given it encodes
        the clinical table and ``clinical_reference_ids`` is not used for that.

    Item
    ----
    dict with ``patient_id`` (str), ``ct`` float32 ``[1, D, H, W]``, ``masks`` float32
    ``[K, D, H, W]``, ``clinical`` float32 ``[F]``, ``lesion_features`` float32
    ``[L_MAX, F_les]``, ``lesion_mask`` bool ``[L_MAX]``, ``os_years``, ``os_event``,
    ``dfs_years``, ``dfs_event`` float32 ``[]``, ``survival_bin``, ``recurrence_bin`` int64
    ``[]``, ``recurrence_target``, ``recurrence_known`` float32 ``[12]``.
    """

    def __init__(
        self,
        processed_dir: str | Path,
        clinical_df: pd.DataFrame,
        ids: Sequence[str],
        profile: Profile,
        augment: bool = False,
        clinical_reference_ids: Sequence[str] | None = None,
        feature_stats: dict[str, np.ndarray] | None = None,
        clinical_encoder: object | None = None,
    ) -> None:
        from crlm_lib.data import clinical

        self.processed_dir = Path(processed_dir)
        self.profile = profile
        self.ids = [str(i) for i in ids]
        self.augment = augment
        ref_ids = [str(i) for i in (clinical_reference_ids or self.ids)]
        missing = [i for i in self.ids if not (self.processed_dir / f"{i}.npz").is_file()]
        if missing:
            raise FileNotFoundError(
                f"no preprocessed file for {missing[:5]} in {self.processed_dir} "
                f"({len(missing)} missing); run preprocess_cohort first"
            )
        if clinical_encoder is not None:
            self.clinical, self.clinical_names = clinical_encoder.transform(
                clinical_df.loc[self.ids]
            )
        else:
            self.clinical, self.clinical_names = clinical.encode_predictors(
                clinical_df.loc[self.ids], reference=clinical_df.loc[ref_ids]
            )
        self.outcomes = clinical.outcomes(clinical_df.loc[self.ids])
        if feature_stats is None:
            ref_feats = [self._lesions_raw(i) for i in ref_ids]
            feature_stats = fit_lesion_stats(ref_feats)
        self.feature_stats = feature_stats
        first = _SHARED.get(self.processed_dir, self.ids[0])
        self.lesion_feature_names = [str(n) for n in first["lesion_feature_names"]]
        item_bytes = first["ct"].nbytes + first["masks"].nbytes
        self._items: dict[str, dict[str, np.ndarray]] | None = (
            {} if item_bytes * len(self.ids) <= ITEM_CACHE_BYTES else None
        )

    def _lesions_raw(self, pid: str) -> np.ndarray:
        return _SHARED.get(self.processed_dir, pid)["lesion_features"]

    def __len__(self) -> int:
        return len(self.ids)

    def lesion_set(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Standardised, padded ``[L_MAX, F]`` lesion features and their ``[L_MAX]`` mask
        (:func:`lesion_set` with this dataset's statistics and feature names)."""
        return lesion_set(raw, self.lesion_feature_names, self.feature_stats)

    def _arrays(self, pid: str) -> dict[str, np.ndarray]:
        """The arrays ``__getitem__`` needs (read-only), kept by the dataset when they fit in
        ``ITEM_CACHE_BYTES`` (decompressing every ``.npz`` every epoch costs ~35x more than
        a read from memory at the cpu profile's size: 8.7 against 0.25 ms per item) and shared
        with the process's other datasets (:class:`_SharedEntries`). Callers copy before
        changing them (``astype``)."""
        if self._items is not None and pid in self._items:
            return self._items[pid]
        entry = _SHARED.get(self.processed_dir, pid)
        arrays = {k: entry[k] for k in _ITEM_KEYS}
        if self._items is not None:
            self._items[pid] = arrays
        return arrays

    def __getitem__(self, index: int) -> dict:
        pid = self.ids[index]
        data = self._arrays(pid)
        ct = torch.from_numpy(data["ct"].astype(np.float32))[None]
        masks = torch.from_numpy(data["masks"].astype(np.float32))
        if self.augment:
            seed = int(torch.randint(0, 2**31 - 1, ()).item())
            spacing = processed_spacing(data, data["ct"].shape)
            # imported here: TorchIO costs ~0.5 s of every import of this module (crlm
            # predict's start-up) and only training items are augmented
            from crlm_lib.data.augment import augment_sample

            ct, masks = augment_sample(ct, masks, spacing, seed, self.profile)
        feats, lmask = self.lesion_set(data["lesion_features"])
        o = self.outcomes.iloc[index]
        target, known = recurrence_targets(o["dfs_years"], o["dfs_event"])
        return {
            "patient_id": pid,
            "ct": ct,
            "masks": masks,
            "clinical": torch.from_numpy(self.clinical[index]),
            "lesion_features": torch.from_numpy(feats),
            "lesion_mask": torch.from_numpy(lmask),
            "os_years": torch.tensor(float(o["os_years"]), dtype=torch.float32),
            "os_event": torch.tensor(float(o["os_event"]), dtype=torch.float32),
            "dfs_years": torch.tensor(float(o["dfs_years"]), dtype=torch.float32),
            "dfs_event": torch.tensor(float(o["dfs_event"]), dtype=torch.float32),
            "survival_bin": torch.tensor(year_bin(o["os_years"]), dtype=torch.int64),
            "recurrence_bin": torch.tensor(year_bin(o["dfs_years"]), dtype=torch.int64),
            "recurrence_target": torch.from_numpy(target),
            "recurrence_known": torch.from_numpy(known),
        }


#: Item keys that come from the patient's images (the CT, the SEG masks and the lesion set
#: measured on them): what :class:`ImagePermutation` hands from one patient to another.
IMAGE_KEYS: tuple[str, ...] = ("ct", "masks", "lesion_features", "lesion_mask")


class ImagePermutation(Dataset):
    """A dataset whose patients keep their clinical data and outcomes but read another
    patient's images: item ``i`` carries the :data:`IMAGE_KEYS` of item ``permutation[i]``.

    The negative control of an image model: if its predictions on this dataset rank patients
    as well as on the original, the model does not use the image. Used by
    ``evaluation.runs.permuted_predictions`` with permutations among the test patients.
    """

    def __init__(self, ds: Dataset, permutation: Sequence[int]) -> None:
        perm = np.asarray(permutation, dtype=int)
        if sorted(perm.tolist()) != list(range(len(ds))):  # type: ignore[arg-type]
            raise ValueError(f"not a permutation of {len(ds)} items: {perm.tolist()}")  # type: ignore[arg-type]
        self.ds, self.permutation = ds, perm

    def __len__(self) -> int:
        return len(self.permutation)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.ds[index])
        donor = self.ds[int(self.permutation[index])]
        item.update({k: donor[k] for k in IMAGE_KEYS if k in donor})
        return item


def collate(batch: list[dict]) -> dict:
    """Stack dataset items into a batch (``torch.utils.data.default_collate``): tensors get a
    batch dimension, ``patient_id`` becomes a list of strings. The engine
    (``crlm_lib.train``) uses this one."""
    return default_collate(batch)


# --------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------
def _stratify(events: np.ndarray, n_holdout: int) -> np.ndarray | None:
    """Stratify by event when every class has at least 2 members and fits the hold-out."""
    _, counts = np.unique(events, return_counts=True)
    if len(counts) < 2 or counts.min() < 2 or n_holdout < len(counts):
        return None
    return events


def _split_sizes(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, validation, test) sizes of :func:`paper_split` for ``n`` patients."""
    n_test = int(round(fractions[2] * n))
    n_val = int(round(fractions[1] * n))
    return n - n_test - n_val, n_val, n_test


def paper_split_minimum(fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)) -> int:
    """The fewest patients :func:`paper_split` accepts: one training, one validation and one
    test patient after rounding (6 for 8:1:1, as ``round(0.1 * 5) == 0``)."""
    return next(n for n in itertools.count(1) if min(_split_sizes(n, fractions)) >= 1)


def paper_split(
    ids: Sequence[str],
    events: Sequence[int],
    seed: int,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> tuple[list[str], list[str], list[str]]:
    """The papers' 8:1:1 split (157/20/20 for 197 patients), stratified by event.

    Sizes: ``n_test = n_val = round(0.1 n)`` and the rest for training (4D-ACFNet/STAR report
    8:1:1 without rounding rules; 197 -> 157/20/20). Stratified by ``events`` (e.g. the DFS
    event) when each class has >= 2 patients, otherwise a plain random split. Deterministic
    under ``seed``.
    """
    ids = np.asarray([str(i) for i in ids])
    events = np.asarray(events)
    if len(ids) != len(events):
        raise ValueError(f"{len(ids)} ids but {len(events)} events")
    n = len(ids)
    _, n_val, n_test = sizes = _split_sizes(n, fractions)
    if min(sizes) < 1:
        raise TooFewPatientsError(
            f"{n} usable patient(s) (CT, SEG and a clinical row) but the split "
            f"{':'.join(f'{f * 10:g}' for f in fractions)} needs at least "
            f"{paper_split_minimum(fractions)}: one test and one validation patient and the "
            "rest for training; add patients (or check the exclusion report)"
        )
    from sklearn.model_selection import train_test_split  # splits only: not at import time

    rest, test = train_test_split(
        np.arange(n), test_size=n_test, random_state=seed, stratify=_stratify(events, n_test)
    )
    train, val = train_test_split(
        rest,
        test_size=n_val,
        random_state=seed + 1,
        stratify=_stratify(events[rest], n_val),
    )
    return ids[train].tolist(), ids[val].tolist(), ids[test].tolist()


def repeated_stratified_kfold(
    ids: Sequence[str], events: Sequence[int], folds: int, repeats: int, seed: int
) -> Iterator[tuple[int, int, list[str], list[str]]]:
    """Yield ``(repeat, fold, train_ids, test_ids)`` of sklearn's RepeatedStratifiedKFold."""
    from sklearn.model_selection import RepeatedStratifiedKFold  # splits only

    ids = np.asarray([str(i) for i in ids])
    events = np.asarray(events)
    cv = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for j, (tr, te) in enumerate(cv.split(ids, events)):
        yield j // folds, j % folds, ids[tr].tolist(), ids[te].tolist()
