"""The analysis cohort of the protocols: :class:`crlm_lib.types.Cohort` (re-exported here; the
same type as ``pipeline.Study``) and :func:`as_cohort`, which builds it from a ``config.Paths``
(``crlm evaluate``) or passes a :class:`Cohort` through."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from crlm_lib.config import Paths
from crlm_lib.types import Cohort

__all__ = ["Cohort", "as_cohort", "load_oracle"]


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


def load_oracle(paths: Paths | None) -> pd.DataFrame | None:
    """The synthetic generator's ``oracle.csv`` of ``paths`` (``None`` for a real cohort)."""
    if paths is not None and paths.oracle_csv is not None and Path(paths.oracle_csv).is_file():
        return pd.read_csv(paths.oracle_csv, dtype={"Patient-ID": str})
    return None


def as_cohort(source: Cohort | Paths, ids: Sequence[str] | None = None) -> Cohort:
    """The :class:`Cohort` of ``source`` (a ``Cohort``, e.g. ``pipeline.load_study``'s, or the
    ``config.Paths`` of ``crlm evaluate``), restricted to ``ids`` when given.

    For ``Paths`` the analysis cohort is every clinical row with a usable preprocessed volume
    (the patients ``report.csv`` of the last preprocessing run marks usable; every clinical row
    when nothing is preprocessed: anchors only), the same patients as ``pipeline.load_study``.
    """
    if isinstance(source, Cohort):
        return source if ids is None else source.subset(ids)
    if not isinstance(source, Paths):
        raise TypeError(f"as_cohort takes a Cohort or a config.Paths, not {type(source).__name__}")
    from crlm_lib.data.clinical import load_clinical, outcomes

    paths = source
    clinical = load_clinical(paths.clinical_csv)
    clinical.index = clinical.index.astype(str)
    processed = _usable_processed_ids(paths)
    all_ids = sorted(clinical.index)
    chosen = sorted(i for i in all_ids if i in processed) or all_ids
    if ids is not None:
        chosen = [str(i) for i in ids]
    out = outcomes(clinical.loc[chosen])
    return Cohort(
        clinical=clinical, outcomes=out, ids=list(chosen), paths=paths, oracle=load_oracle(paths)
    )
