"""What the protocols need about a cohort (:class:`Cohort`) and how it is built from a
``pipeline.Study``, a ``config.Paths`` or a :class:`Cohort` (:func:`as_cohort`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crlm_lib.config import Paths


@dataclass
class Cohort:
    """What the protocols need about the cohort (built from a ``pipeline.Study`` or ``Paths``).

    Attributes
    ----------
    clinical : DataFrame, index = patient ID (validated table)
    outcomes : DataFrame, index = patient ID (``os_years`` ... ``dfs_event``)
    ids : list of str (analysis cohort)
    paths : Paths or None
    oracle : DataFrame or None (synthetic cohorts only)
    """

    clinical: pd.DataFrame
    outcomes: pd.DataFrame
    ids: list[str]
    paths: Paths | None = None
    oracle: pd.DataFrame | None = None

    @property
    def synthetic(self) -> bool:
        return self.oracle is not None


def _usable_processed_ids(paths: Paths) -> set[str]:
    """Patients of the last preprocessing run with a usable volume: from ``report.csv`` when it
    exists (a volume left in the cache by another download or an earlier run whose patient is
    now excluded must not enter), else every ``*.npz`` of the folder."""
    if not paths.processed_dir.is_dir():
        return set()
    report = paths.processed_dir / "report.csv"
    if report.is_file():
        from crlm_lib.data.preprocess import USABLE_STATUSES

        rep = pd.read_csv(report, dtype={"patient_id": str})
        usable = rep.loc[rep["status"].isin(USABLE_STATUSES), "patient_id"].astype(str)
        return {i for i in usable if (paths.processed_dir / f"{i}.npz").is_file()}
    return {p.stem for p in paths.processed_dir.glob("*.npz")}


def as_cohort(source: Any, ids: Sequence[str] | None = None) -> Cohort:
    """A :class:`Cohort` from a ``pipeline.Study``, a ``config.Paths`` or a :class:`Cohort`.

    For ``Paths`` the analysis cohort is every clinical row with a usable preprocessed volume
    (the patients ``report.csv`` of the last preprocessing run marks usable; every clinical row
    when nothing is preprocessed: anchors only), the same patients as ``pipeline.load_study``.
    """
    if isinstance(source, Cohort):
        return source
    from crlm_lib.data.clinical import load_clinical, outcomes

    if isinstance(source, Paths):
        paths = source
        clinical = load_clinical(paths.clinical_csv)
        clinical.index = clinical.index.astype(str)
        processed = _usable_processed_ids(paths)
        all_ids = sorted(clinical.index)
        chosen = sorted(i for i in all_ids if i in processed) or all_ids
    else:  # pipeline.Study
        paths = source.paths
        clinical = source.clinical
        clinical.index = clinical.index.astype(str)
        chosen = list(source.ids)
    if ids is not None:
        chosen = [str(i) for i in ids]
    oracle = None
    if paths is not None and paths.oracle_csv is not None and Path(paths.oracle_csv).is_file():
        oracle = pd.read_csv(paths.oracle_csv, dtype={"Patient-ID": str})
    out = outcomes(clinical.loc[chosen])
    return Cohort(clinical=clinical, outcomes=out, ids=list(chosen), paths=paths, oracle=oracle)
