"""The data step of every run: make sure the cohort exists and is preprocessed, then load it.

``make data`` / ``crlm data`` call :func:`ensure_data`; notebooks call :func:`load_study`, which
does the same and returns everything a notebook needs about the cohort in one object.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from crlm_lib import atomic
from crlm_lib.config import Paths, Profile, get_profile, resolve_paths, with_options
from crlm_lib.types import Cohort

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataOptions:
    """Settings of :func:`ensure_data` (each also a keyword of it).

    Attributes
    ----------
    seed : int
        Seed of the synthetic cohort (ignored for real data).
    n_jobs : int, optional
        Patients synthesised and preprocessed in parallel (default: the profile's).
    verbose : bool
        Print the preprocessing summary (patients done, cached, excluded) and the exclusions.
    show_exclusions : bool
        Print the exclusion report even when not ``verbose``. It is always written to
        ``processed_dir/exclusions.csv`` (:func:`exclusion_table`).
    lock_timeout_s : float, optional
        Longest wait (seconds) for another run's lock on the synthetic cohort folder
        (:func:`crlm_lib.data.synthetic.cohort_lock`) and on the cache folder
        (:func:`crlm_lib.data.preprocess.cache_lock`); ``None``: wait until it finishes.
    root : path, optional
        Folder that takes the repository's place for ``data/``, ``runs/`` and ``results/``
        (``config.resolve_paths``); default: the repository. Benchmarks use it to keep cohorts
        of other seeds or settings apart.
    reuse : bool
        Reuse a finished step whose manifest matches (default). ``False`` runs the whole step
        (``crlm data``): the cache is then checked against the SHA-256 of every source file.
    """

    seed: int = 0
    n_jobs: int | None = None
    verbose: bool = False
    show_exclusions: bool = False
    lock_timeout_s: float | None = None
    root: str | Path | None = None
    reuse: bool = True


def ensure_data(
    profile: str | Profile,
    data_dir: str | Path | None = None,
    clinical: str | Path | None = None,
    options: DataOptions | None = None,
    **changes: Any,
) -> Paths:
    """Write the synthetic cohort if needed (no ``data_dir``), then preprocess every patient.

    The step runs once: at its end ``processed_dir/data_manifest.json`` records the
    fingerprints of its inputs and outputs (:mod:`crlm_lib.data.manifest`), and a later call
    with the same request whose inputs and outputs still match reuses them (``crlm notebooks``
    and every notebook's :func:`load_study` after ``crlm data``) instead of reading every
    DICOM header and hashing every source file again.

    Parameters
    ----------
    profile : str or Profile
        ``smoke``, ``cpu`` or ``paper``: the synthetic cohort's size and the preprocessing grid.
    data_dir, clinical : path, optional
        A real TCIA download and its clinical table. Without them the synthetic cohort of the
        profile is used (``data/raw/synthetic/<profile>``), written first when missing.
    options : DataOptions, optional
        Seed, processes, printing, lock timeout, work folder and reuse (defaults when omitted).
    **changes
        Fields of :class:`DataOptions` as keywords (``seed=5, n_jobs=1``), applied over
        ``options``; a keyword that is no field raises ``TypeError`` naming the valid ones.

    Returns
    -------
    Paths
        The resolved folders of the run.

    Raises
    ------
    FileNotFoundError
        For a ``data_dir`` or clinical table that does not exist.
    ClinicalTableError
        For a clinical table that breaks the schema (before any image is read).
    EmptyCohortError
        When the data folder holds no patient, or none that could be preprocessed.
    FolderLocked
        When ``lock_timeout_s`` passed while another run held the cohort's or the cache
        folder's lock (``PreprocessLocked`` for the cache).
    """
    from crlm_lib.data import manifest
    from crlm_lib.data.clinical import load_clinical
    from crlm_lib.data.preprocess import preprocess_cohort

    opts = with_options(DataOptions, options, changes)
    prof = get_profile(profile)
    paths = resolve_paths(prof, data_dir, clinical, root=opts.root)
    if opts.reuse and manifest.manifest_matches(paths, prof, opts.seed):
        _report_reused(paths, opts)
        return paths
    _ensure_source(paths, prof, opts)
    table = load_clinical(paths.clinical_csv)  # validate before the long step
    report = preprocess_cohort(
        paths, prof, n_jobs=opts.n_jobs or prof.n_jobs, lock_timeout_s=opts.lock_timeout_s
    )
    check_cohort_not_empty(paths, report)
    if opts.verbose:
        print(report["status"].value_counts().to_string())
    excluded = write_exclusions(paths, table, report)
    manifest.write_manifest(paths, prof, opts.seed)
    if opts.verbose or opts.show_exclusions:
        print(format_exclusions(excluded, paths))
    return paths


def _report_reused(paths: Paths, opts: DataOptions) -> None:
    """Log (and, as ``opts`` asks, print) that :func:`ensure_data` reused a finished step."""
    from crlm_lib.data.manifest import MANIFEST_NAME

    log.info("data step of %s reused (%s)", paths.processed_dir, MANIFEST_NAME)
    if opts.verbose:
        print(f"data step reused: inputs unchanged since {MANIFEST_NAME}")
    if opts.verbose or opts.show_exclusions:
        excluded = pd.read_csv(paths.processed_dir / "exclusions.csv", dtype=str)
        print(format_exclusions(excluded.fillna(""), paths))


def _ensure_source(paths: Paths, prof: Profile, opts: DataOptions) -> None:
    """The cohort folder of :func:`ensure_data`: the synthetic cohort written (or resumed)
    when ``paths`` is synthetic, else the real folder and clinical table checked to exist."""
    if paths.synthetic:
        from crlm_lib.data.synthetic import ensure_cohort

        ensure_cohort(
            paths.cohort_dir,
            prof.synth.n_patients,
            opts.seed,
            prof.synth,
            n_jobs=opts.n_jobs or prof.n_jobs,
            lock_timeout_s=opts.lock_timeout_s,
            announce=print if opts.verbose else None,
        )
        return
    if not paths.cohort_dir.is_dir():
        raise FileNotFoundError(f"DATA_DIR {paths.cohort_dir} does not exist")
    if not paths.clinical_csv.is_file():
        raise FileNotFoundError(
            f"clinical table {paths.clinical_csv} does not exist; pass CLINICAL=/path/to/table"
        )


def check_cohort_not_empty(paths: Paths, report: pd.DataFrame) -> None:
    """Refuse a cohort folder with no patient, or none whose CT could be preprocessed.

    Raises
    ------
    EmptyCohortError
        Naming the folder (and, when patients were found, the first exclusion reasons).
    """
    from crlm_lib.data.preprocess import USABLE_STATUSES
    from crlm_lib.errors import EmptyCohortError

    if report.empty:
        raise EmptyCohortError(
            f"{paths.cohort_dir}: no patient found (expected one folder per patient holding a "
            "CT series and its DICOM-SEG, as in the TCIA download)"
        )
    ok = report["status"].isin(USABLE_STATUSES)
    if not ok.any():
        first = "; ".join(
            f"{r.patient_id}: {r.reason}" for r in report.head(3).itertuples(index=False)
        )
        raise EmptyCohortError(
            f"{paths.cohort_dir}: none of the {len(report)} patients could be loaded ({first})"
        )


def exclusion_table(table: pd.DataFrame, report: pd.DataFrame) -> pd.DataFrame:
    """Every patient of the download or of the clinical table left out of the analysis.

    Parameters
    ----------
    table : DataFrame
        Validated clinical table (index ``Patient-ID``).
    report : DataFrame
        The preprocessing report (``patient_id``, ``status``, ``reason``).

    Returns
    -------
    DataFrame
        ``patient_id``, ``reason``: image excluded (with the loader's reason), images without a
        clinical row, clinical row without images; in that order, each sorted by ID.
    """
    from crlm_lib.data.preprocess import USABLE_STATUSES

    rows = []
    status = report["status"].astype(str)
    usable = status.isin(USABLE_STATUSES)  # done, cached, rebuilt
    for _, r in report[~usable].iterrows():
        rows.append({"patient_id": str(r["patient_id"]), "reason": f"image: {r.get('reason', '')}"})
    in_table = set(table.index.astype(str))
    ok = report.loc[usable, "patient_id"].astype(str)
    for pid in sorted(ok):
        if pid not in in_table:
            rows.append({"patient_id": pid, "reason": "no row in the clinical table"})
    imaged = set(report["patient_id"].astype(str))
    for pid in sorted(in_table - imaged):
        rows.append({"patient_id": pid, "reason": "clinical row without a CT/SEG in the cohort"})
    return pd.DataFrame(rows, columns=["patient_id", "reason"])


def write_exclusions(paths: Paths, table: pd.DataFrame, report: pd.DataFrame) -> pd.DataFrame:
    """:func:`exclusion_table`, written to ``processed_dir/exclusions.csv`` (atomically)."""
    excluded = exclusion_table(table, report)
    atomic.write_csv(paths.processed_dir / "exclusions.csv", excluded, index=False)
    return excluded


def format_exclusions(excluded: pd.DataFrame, paths: Paths) -> str:
    """The exclusion report as printed by every ``crlm`` command."""
    where = paths.processed_dir / "exclusions.csv"
    if excluded.empty:
        return f"excluded patients: none (report: {where})"
    listing = excluded.to_string(index=False)
    return f"excluded patients: {len(excluded)} (report: {where})\n{listing}"


#: ``load_study``'s result: the one cohort type (``crlm_lib.types.Cohort``), kept under the name
#: the notebooks use.
Study = Cohort


def load_oracle(paths: Paths | None) -> pd.DataFrame | None:
    """The synthetic generator's ``oracle.csv`` of ``paths`` (``None`` for a real cohort)."""
    if paths is not None and paths.oracle_csv is not None and Path(paths.oracle_csv).is_file():
        return pd.read_csv(paths.oracle_csv, dtype={"Patient-ID": str})
    return None


def _preprocessing_report(paths: Paths) -> pd.DataFrame | None:
    """The last preprocessing run's ``report.csv`` (``None`` when the cache has none)."""
    report = paths.processed_dir / "report.csv"
    if not report.is_file():
        return None
    return pd.read_csv(report, dtype={"patient_id": str})


def _usable_processed_ids(paths: Paths, report: pd.DataFrame | None) -> set[str]:
    """Patients of the last preprocessing run with a usable volume: those ``report`` marks
    usable whose ``.npz`` is in the cache (a volume left there by another download or an
    earlier run whose patient is now excluded must not enter), else every ``*.npz``."""
    from crlm_lib.data.preprocess import USABLE_STATUSES

    if not paths.processed_dir.is_dir():
        return set()
    if report is None:
        return {p.stem for p in paths.processed_dir.glob("*.npz")}
    usable = report.loc[report["status"].isin(USABLE_STATUSES), "patient_id"].astype(str)
    return {i for i in usable if (paths.processed_dir / f"{i}.npz").is_file()}


def build_cohort(
    paths: Paths, ids: Sequence[str] | None = None, profile: Profile | None = None
) -> Cohort:
    """The analysis cohort of ``paths``: the one place a :class:`~crlm_lib.types.Cohort` is
    built from the folders of a run (``load_study`` after the data step, ``crlm evaluate`` and
    the protocols through ``evaluation.as_cohort``).

    A patient enters the analysis when preprocessing succeeded (``report.csv`` marks it usable
    and its ``.npz`` is in the cache) and the clinical table has a row for it; every other
    patient is listed in ``Cohort.excluded`` with its reason (image excluded, no clinical row,
    no image), so nothing is dropped silently. When nothing is preprocessed the cohort is every
    clinical row (the clinical anchors need no image) and ``excluded`` is empty.

    Parameters
    ----------
    paths : Paths
        ``config.resolve_paths``'s folders; ``paths.profile`` gives ``Cohort.profile``.
    ids : sequence of str, optional
        Restrict the analysis cohort to these patients (in this order).
    profile : Profile, optional
        The run's profile when it is not the named one (a profile derived with
        ``Profile.with_``); its name must be ``paths.profile``. Default:
        ``get_profile(paths.profile)``.

    Returns
    -------
    Cohort

    Raises
    ------
    ValueError
        When ``profile`` is named otherwise than the profile ``paths`` were resolved for.
    """
    from crlm_lib.data.clinical import load_clinical, outcomes

    prof = get_profile(paths.profile) if profile is None else profile
    if prof.name != paths.profile:
        raise ValueError(
            f"profile {prof.name!r} given for the folders of profile {paths.profile!r} "
            f"({paths.processed_dir})"
        )
    table = load_clinical(paths.clinical_csv)
    table.index = table.index.astype(str)
    report = _preprocessing_report(paths)
    processed = _usable_processed_ids(paths, report)
    all_ids = sorted(table.index)
    chosen = sorted(i for i in all_ids if i in processed) if processed else all_ids
    if ids is not None:
        chosen = [str(i) for i in ids]
    if report is None:
        excluded = pd.DataFrame(columns=["patient_id", "reason"])
    else:
        excluded = exclusion_table(table, report)
    return Cohort(
        clinical=table,
        outcomes=outcomes(table.loc[chosen]),
        ids=list(chosen),
        paths=paths,
        oracle=load_oracle(paths),
        profile=prof,
        excluded=excluded,
    )


def load_study(
    profile: str | Profile,
    data_dir: str | Path | None = None,
    clinical: str | Path | None = None,
    *,
    seed: int = 0,
    root: str | Path | None = None,
) -> Cohort:
    """Ensure the data (see :func:`ensure_data`; ``root`` as there) and return the analysis
    cohort (:func:`build_cohort`).
    """
    prof = get_profile(profile)
    paths = ensure_data(prof, data_dir, clinical, seed=seed, root=root)
    return build_cohort(paths, profile=prof)
