"""The clinical rows of NEW patients (``crlm predict --clinical``): template, reading, matching
each row to a patient, refusing missing predictors, and the imputation of ``--allow-missing``.

* :func:`write_template` writes the CSV to fill in: one column per predictor the run uses, a
  first row (``Patient-ID`` ``# unit / coding``) giving each column's unit and coding
  (:data:`~crlm_lib.data.clinical.PREDICTOR_CODING`), and one empty row per patient found.
* :func:`read_patient_clinical` reads such a table (CSV or XLSX, any subset of the columns, the
  coding row skipped) and refuses a column it does not know, naming the accepted ones and the
  close matches (``difflib`` on names without case, spaces, ``_`` or ``-``, plus a few common
  abbreviations such as ``CEA``): a column silently ignored is a predictor silently missing.
* :func:`match_rows` finds each patient's row by its DICOM ``PatientID``, else by the name of
  its folder, and says which.
* :func:`missing_predictors` / :func:`refuse_missing`: a patient scored without some of the
  predictors the model learnt from is refused unless ``--allow-missing`` is given.
* :func:`imputation_draws` (``--allow-missing``): the missing predictors are drawn
  ``n_draws`` times from the training distribution stored with the run
  (:class:`~crlm_lib.data.clinical.EncodedColumn`: the share of training rows missing the
  predictor, its 20 training quantiles, a binary column's prevalence), the observed ones kept;
  the prediction is the mean of the model's curves over the draws, i.e. the prediction
  averaged over the patients the training cohort says this one could be (multiple imputation
  from the marginal distributions, each predictor drawn independently: an assumption, since
  the run keeps no training rows). Filling every predictor with its training mean instead puts
  the patient at a point no training patient occupied (for example every missing-value
  indicator set at once) and moved the 5-year survival of a patient without clinical row from
  the cohort's 46% to 93% (``benchmarks/prediction_honesty.py`` measures both).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.data import clinical as C
from crlm_lib.errors import CRLMUserError

__all__ = [
    "CODING_ROW_ID",
    "MissingPredictorError",
    "check_columns",
    "imputation_draws",
    "match_rows",
    "missing_predictors",
    "read_patient_clinical",
    "refuse_missing",
    "write_template",
]

#: ``Patient-ID`` of the template's unit / coding row (rows whose ID starts with ``#`` are
#: skipped when read).
CODING_ROW_ID = "# unit / coding"
#: Common names of predictors that ``difflib`` cannot see (abbreviations), canonical keys.
_ALIASES: dict[str, str] = {
    "cea": "carcinoembryonic_antigen",
    "bmi": "body_mass_index",
    "gender": "sex",
    "tumoursize": "max_tumor_size",
    "tumorsize": "max_tumor_size",
    "pve": "preoperative_pve",
    "fong": "clinrisk_score",
    "fongscore": "clinrisk_score",
    "nas": "NASH_score",
}


class MissingPredictorError(CRLMUserError):
    """A new patient lacks clinical predictors the model learnt from (and ``--allow-missing``
    was not given); names the patient, the predictors with their coding and the table."""


def _key(name: object) -> str:
    """A column name without case, spaces, ``_``, ``-`` or a byte-order mark."""
    return "".join(ch for ch in str(name).replace("\ufeff", "").lower() if ch.isalnum())


def write_template(
    path: str | Path, predictors: Sequence[str], patient_ids: Sequence[str] = ()
) -> Path:
    """Write the clinical table to fill in for ``crlm predict``.

    Columns: ``Patient-ID`` then ``predictors`` (the run's, in its order). Row 1 holds
    :data:`CODING_ROW_ID` and each predictor's ``unit: coding``; then one row per patient ID
    (values empty). Written atomically; returns ``path``.
    """
    coding = {C.ID_COLUMN: CODING_ROW_ID}
    for col in predictors:
        unit, code = C.PREDICTOR_CODING.get(col, ("", ""))
        coding[col] = f"{unit}: {code}" if code else unit
    rows = [coding] + [{C.ID_COLUMN: pid} for pid in patient_ids]
    frame = pd.DataFrame(rows, columns=[C.ID_COLUMN, *predictors])
    atomic.write_csv(Path(path), frame, index=False)
    return Path(path)


def _suggestions(name: str, accepted: Sequence[str]) -> list[str]:
    """Accepted names close to ``name``: an alias, then ``difflib`` close matches."""
    by_key = {_key(a): a for a in accepted}
    out = []
    alias = _ALIASES.get(_key(name))
    if alias in accepted:
        out.append(alias)
    for key in difflib.get_close_matches(_key(name), list(by_key), n=3, cutoff=0.6):
        if by_key[key] not in out:
            out.append(by_key[key])
    return out


def check_columns(columns: Sequence[object], source: str) -> None:
    """Refuse columns that are not in the collection's table (:data:`~crlm_lib.data.clinical.
    COLUMNS`: ``Patient-ID``, the predictors, outcome and note columns), in one line naming
    each with its close matches and the accepted predictor names.

    Raises
    ------
    ClinicalTableError
    """
    known = {C._canonical_name(c) for c in C.COLUMNS}
    unknown = [str(c) for c in columns if C._canonical_name(c) not in known and str(c).strip()]
    if not unknown:
        return
    parts = []
    for name in unknown:
        close = _suggestions(name, [C.ID_COLUMN, *C.PREDICTORS])
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        parts.append(f"{name!r}{hint}")
    raise C.ClinicalTableError(
        f"{source}: unknown column(s) {', '.join(parts)}; accepted: {C.ID_COLUMN}, "
        f"{', '.join(C.PREDICTORS)} (outcome and note columns of the collection's table are "
        "ignored; crlm predict --template FILE writes them with units and codes)"
    )


def read_patient_clinical(path: str | Path) -> pd.DataFrame:
    """Clinical rows of new patients: any subset of the table's columns, no outcome needed.

    Columns are matched as in :func:`~crlm_lib.data.clinical.load_clinical`; an unknown column
    is refused (:func:`check_columns`); rows whose ``Patient-ID`` starts with ``#`` (the
    template's coding row) are skipped; absent columns (outcomes included) become missing,
    then the table is validated (codes, ranges) with every outcome optional.

    Raises
    ------
    FileNotFoundError, ClinicalTableError
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clinical table not found: {path}")
    raw, info = C._read_table(path)
    check_columns(list(raw.columns), str(path))
    id_key = C._canonical_name(C.ID_COLUMN)
    id_col = next((c for c in raw.columns if C._canonical_name(c) == id_key), None)
    if id_col is not None:
        comment = raw[id_col].astype(str).str.strip().str.startswith("#")
        raw = raw.loc[~comment].reset_index(drop=True)
    present = {C._canonical_name(c) for c in raw.columns}
    for col in C.COLUMNS:
        if C._canonical_name(col) not in present and col != C.ID_COLUMN:
            raw[col] = np.nan
    return C.validate_clinical(
        raw,
        source=str(path),
        optional_outcomes=C.OUTCOME_COLUMNS,
        percent_from_format=info.get("percent_from_format", ()),
    )


def match_rows(
    table: pd.DataFrame | None, patient_id: str, folder_name: str
) -> tuple[pd.DataFrame | None, str]:
    """The patient's row of ``table`` and how it was found: ``"DICOM PatientID"`` (the
    ``Patient-ID`` equals the CT's ``PatientID``), ``"folder name"`` (it equals the name of the
    patient's folder or ZIP), or ``"none"`` (no row; ``(None, "none")``)."""
    if table is None:
        return None, "none"
    if patient_id in table.index:
        return table.loc[[patient_id]], "DICOM PatientID"
    if folder_name and folder_name in table.index:
        row = table.loc[[folder_name]].copy()
        row.index = pd.Index([patient_id], name=table.index.name)
        return row, "folder name"
    return None, "none"


def missing_predictors(encoder: C.ClinicalEncoder, row: pd.DataFrame | None) -> list[str]:
    """The predictors the model learnt from (:attr:`ClinicalEncoder.required_columns`) that
    ``row`` (one patient; ``None``: no row) does not give."""
    required = encoder.required_columns
    if row is None:
        return list(required)
    values = row.iloc[0]
    return [
        c for c in required if c not in row.columns or pd.isna(pd.to_numeric(values[c], "coerce"))
    ]


def refuse_missing(missing: Mapping[str, Sequence[str]], clinical: str | Path | None) -> None:
    """Raise :class:`MissingPredictorError` (one line) when a patient lacks predictors: the
    first such patient's missing predictors with their coding, how many others, and the two
    ways on (fill them in, or ``--allow-missing``)."""
    lacking = {pid: cols for pid, cols in missing.items() if cols}
    if not lacking:
        return
    pid, cols = next(iter(lacking.items()))
    where = f"in {clinical}" if clinical is not None else "(no --clinical table given)"
    others = [p for p in lacking if p != pid]
    more = f"; {len(others)} other patient(s) too ({', '.join(others[:5])})" if others else ""
    raise MissingPredictorError(
        f"{pid}: {len(cols)} clinical predictor(s) missing {where}: "
        f"{', '.join(C.predictor_coding(c) for c in cols)}{more}; fill them in "
        "(crlm predict --template FILE writes the columns with units and codes) or pass "
        "--allow-missing to average the prediction over values drawn from the training cohort"
    )


def _draw_column(column: C.EncodedColumn, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` values of one predictor from its training distribution (NaN = missing, as in
    the share of training rows that missed it)."""
    values = np.empty(n)
    if column.binary:
        hit = rng.random(n) < column.mean
        values[:] = np.where(hit, 2.0, 1.0) if column.column == "sex" else hit.astype(float)
    elif column.quantiles:
        values[:] = rng.choice(np.asarray(column.quantiles, dtype=float), size=n)
    else:  # encoders stored before the quantiles were: normal on the encoded scale
        z = column.mean + column.std * rng.standard_normal(n)
        values[:] = np.expm1(z) if column.log1p else z
        lo, hi = C.RANGES.get(column.column, (-np.inf, np.inf))
        values[:] = np.clip(values, lo, hi)
    rate = column.missing_rate or 0.0
    values[rng.random(n) < rate] = np.nan
    return values


def imputation_draws(
    encoder: C.ClinicalEncoder,
    row: pd.DataFrame | None,
    patient_id: str,
    n_draws: int = 32,
    seed: int = 0,
) -> pd.DataFrame:
    """``n_draws`` copies of the patient's row with every missing predictor drawn from the
    training distribution stored in ``encoder`` (see module doc); one row when nothing is
    missing. Index: ``patient_id`` repeated. Deterministic for a given ``seed``."""
    missing = missing_predictors(encoder, row)
    base = row.copy() if row is not None else pd.DataFrame(index=pd.Index([patient_id]))
    if not missing:
        return base
    rng = np.random.default_rng([seed, int(n_draws)])
    draws = pd.DataFrame(
        {c: np.repeat(base[c].to_numpy(), n_draws) for c in base.columns},
        index=pd.Index([patient_id] * n_draws, name=base.index.name),
    )
    by_name = {c.column: c for c in encoder.columns}
    for col in missing:
        draws[col] = _draw_column(by_name[col], n_draws, rng)
    return draws
