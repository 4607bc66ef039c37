"""The clinical table of the TCIA "Colorectal-Liver-Metastases" collection: schema, validation,
outcomes, predictor encoding and the Fong clinical risk score.

The collection (Simpson et al., Sci Data 11:172, 2024; doi:10.7937/QXK2-QG03) ships one row per
patient with the columns listed in :data:`COLUMNS`, spelled exactly as here. ``-999`` marks a
missing value. Two versions were published: v1 (October 2022, sheet ``TCIA_n=197``, the 28
:data:`V1_COLUMNS`) and v2 (April 2023, all 36, adding :data:`V2_ONLY_COLUMNS`); both load, the
columns v1 lacks becoming missing values, and :func:`table_version` says which was read.

Codes and units assumed (flagged **[A]** where this module could not confirm them from the
collection's data dictionary and follows common use of the table in public analysis code; check
against the data dictionary of the download before publishing):

==================================  =========================================================
column                              meaning / code
==================================  =========================================================
``Patient-ID``                      ``CRLM-CT-1001`` ... (string; the index)
``De-identify Scout Name``          free text, never a predictor
``age``                             years at hepatic resection
``sex``                             1 = male, 2 = female **[A]**
``major_comorbidity``               0/1
``body_mass_index``                 kg/m^2
``node_positive_primary``           0/1, lymph-node-positive primary (Fong criterion 1)
``synchronous_crlm``                0/1, metastases found with the primary (proxy of Fong 2)
``multiple_metastases``             0/1, more than one liver tumour (Fong criterion 3)
``clinrisk_score``                  0..5, Fong clinical risk score
``clinrisk_stratified``             0 = low (score 0-2), 1 = high (score 3-5) **[A]**
``carcinoembryonic_antigen``        preoperative CEA, ng/mL (Fong criterion 4: > 200)
``max_tumor_size``                  largest tumour diameter, cm (Fong criterion 5: > 5 cm)
``bilobar_disease``                 0/1
``extrahep_disease``                0/1, resected extrahepatic disease
``chemo_before_liver_resection``    0/1
``preoperative_pve``                0/1, portal vein embolisation
``steatosis_yesno``                 0/1 (resection specimen)
``presence_sinusoidal_dilata``      0/1 (resection specimen)
``NASH_score``                      0..8, NAFLD activity score (Kleiner) **[A]**
``NASH_yesno``, ``NASH_greater_4``  0/1 (``_greater_4`` read as "score >= 4") **[A]**
``*_percent``                       0..100 here, pathological response / necrosis / fibrosis /
                                    mucin; the spreadsheet stores fractions (0.7) shown with
                                    Excel's ``0%`` format: converted (see validate_clinical)
``fibrosis_greater_40_percent``     0/1
``overall_survival_months``         months from resection to death or last follow-up
``vital_status``                    1 = dead, 0 = alive at last follow-up **[A]**
``progression_or_recurrence``       0/1, any recurrence observed
``months_to_DFS_progression``       months to recurrence, death or last follow-up
``vital_status_DFS``                1 = recurrence or death (the DFS event), 0 = censored **[A]**
``progression_or_recurrence_liveronly``  0/1, recurrence in the liver
``months_to_liver_DFS_progression`` months to liver recurrence, death or last follow-up
``vital_status_liver_DFS``          1 = liver recurrence or death, 0 = censored **[A]**
``relevant_notes``                  free text, never a predictor
==================================  =========================================================

Event coding of :func:`outcomes`: ``os_event = vital_status`` (death from any cause),
``dfs_event = vital_status_DFS`` (recurrence anywhere or death, whichever first),
``liver_dfs_event = vital_status_liver_DFS``; times are months / 12 (years).

Example
-------
>>> df = load_clinical("data/raw/synthetic/smoke/clinical.csv")  # doctest: +SKIP
>>> y = outcomes(df)  # doctest: +SKIP
>>> x, names = encode_predictors(df.loc[train_ids], reference=df.loc[train_ids])  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib.errors import CRLMUserError

#: Missing-value code of the collection.
MISSING_CODE: float = -999.0

ID_COLUMN = "Patient-ID"
SCOUT_COLUMN = "De-identify Scout Name"
NOTES_COLUMN = "relevant_notes"

#: Every column of the real table, in the real order and spelling.
COLUMNS: tuple[str, ...] = (
    "Patient-ID",
    "De-identify Scout Name",
    "age",
    "sex",
    "major_comorbidity",
    "body_mass_index",
    "node_positive_primary",
    "synchronous_crlm",
    "multiple_metastases",
    "clinrisk_score",
    "clinrisk_stratified",
    "carcinoembryonic_antigen",
    "max_tumor_size",
    "bilobar_disease",
    "extrahep_disease",
    "chemo_before_liver_resection",
    "preoperative_pve",
    "steatosis_yesno",
    "presence_sinusoidal_dilata",
    "NASH_score",
    "NASH_yesno",
    "NASH_greater_4",
    "total_response_percent",
    "necrosis_percent",
    "fibrosis_percent",
    "fibrosis_greater_40_percent",
    "mucin_percent",
    "overall_survival_months",
    "vital_status",
    "progression_or_recurrence",
    "months_to_DFS_progression",
    "vital_status_DFS",
    "progression_or_recurrence_liveronly",
    "months_to_liver_DFS_progression",
    "vital_status_liver_DFS",
    "relevant_notes",
)

TEXT_COLUMNS: tuple[str, ...] = (ID_COLUMN, SCOUT_COLUMN, NOTES_COLUMN)


def _columns_from_to(first: str, last: str) -> tuple[str, ...]:
    """The columns of :data:`COLUMNS` from ``first`` to ``last`` (both included), in order."""
    return COLUMNS[COLUMNS.index(first) : COLUMNS.index(last) + 1]


#: Follow-up times (months): must be present and >= 0.
TIME_COLUMNS: tuple[str, ...] = (
    "overall_survival_months",
    "months_to_DFS_progression",
    "months_to_liver_DFS_progression",
)
#: Outcome indicators (0/1): must be present.
EVENT_COLUMNS: tuple[str, ...] = (
    "vital_status",
    "progression_or_recurrence",
    "vital_status_DFS",
    "progression_or_recurrence_liveronly",
    "vital_status_liver_DFS",
)
OUTCOME_COLUMNS: tuple[str, ...] = TIME_COLUMNS + EVENT_COLUMNS

#: 0/1 columns (outcome indicators included).
BINARY_COLUMNS: tuple[str, ...] = (
    "major_comorbidity",
    "node_positive_primary",
    "synchronous_crlm",
    "multiple_metastases",
    "clinrisk_stratified",
    "bilobar_disease",
    "extrahep_disease",
    "chemo_before_liver_resection",
    "preoperative_pve",
    "steatosis_yesno",
    "presence_sinusoidal_dilata",
    "NASH_yesno",
    "NASH_greater_4",
    "fibrosis_greater_40_percent",
    *EVENT_COLUMNS,
)
PERCENT_COLUMNS: tuple[str, ...] = (
    "total_response_percent",
    "necrosis_percent",
    "fibrosis_percent",
    "mucin_percent",
)
#: Allowed closed ranges of the numeric non-binary columns (units in the module docstring).
RANGES: dict[str, tuple[float, float]] = {
    "age": (0.0, 120.0),
    "sex": (1.0, 2.0),
    "body_mass_index": (5.0, 100.0),
    "clinrisk_score": (0.0, 5.0),
    "carcinoembryonic_antigen": (0.0, 1e6),
    "max_tumor_size": (0.0, 50.0),
    "NASH_score": (0.0, 8.0),
    **{c: (0.0, 100.0) for c in PERCENT_COLUMNS},
    **{c: (0.0, 600.0) for c in TIME_COLUMNS},
}
#: Columns whose values must be whole numbers.
INTEGER_COLUMNS: tuple[str, ...] = ("sex", "clinrisk_score", "NASH_score")

#: Preoperative predictors (known when the preoperative CT is read).
PREOPERATIVE_PREDICTORS: tuple[str, ...] = _columns_from_to("age", "preoperative_pve")
#: Pathology of the resection specimen: known at time zero (the resection) of the postoperative
#: prognosis, but not before surgery. Included in :data:`PREDICTORS` by default (the papers feed
#: "clinical factors" without listing them); pass ``exclude=PATHOLOGY_PREDICTORS`` for a strictly
#: preoperative model.
PATHOLOGY_PREDICTORS: tuple[str, ...] = _columns_from_to("steatosis_yesno", "mucin_percent")
#: Default predictor columns: no outcome, no free text.
PREDICTORS: list[str] = [*PREOPERATIVE_PREDICTORS, *PATHOLOGY_PREDICTORS]
#: Predictors transformed with log1p before standardisation (right-skewed, ng/mL).
LOG_PREDICTORS: tuple[str, ...] = ("carcinoembryonic_antigen",)

#: What each predictor is, for figures and tables meant for people (units in brackets). The
#: encoded names of :func:`encode_predictors` (``sex_female``, ``<name>_missing``) are read
#: through :func:`predictor_label`.
PREDICTOR_LABELS: dict[str, str] = {
    "age": "Age (years)",
    "sex": "Sex",
    "sex_female": "Female sex",
    "major_comorbidity": "Major comorbidity",
    "body_mass_index": "Body mass index (kg/m²)",
    "node_positive_primary": "Node-positive primary",
    "synchronous_crlm": "Synchronous metastases",
    "multiple_metastases": "More than one metastasis",
    "clinrisk_score": "Fong clinical risk score (0–5)",
    "clinrisk_stratified": "Fong score high (3–5)",
    "carcinoembryonic_antigen": "CEA (log, ng/mL)",
    "max_tumor_size": "Largest tumour (cm)",
    "bilobar_disease": "Bilobar disease",
    "extrahep_disease": "Extrahepatic disease",
    "chemo_before_liver_resection": "Chemotherapy before resection",
    "preoperative_pve": "Portal vein embolisation",
    "steatosis_yesno": "Steatosis",
    "presence_sinusoidal_dilata": "Sinusoidal dilatation",
    "NASH_score": "NAFLD activity score (0–8)",
    "NASH_yesno": "Steatohepatitis (NASH)",
    "NASH_greater_4": "NAFLD activity score ≥ 4",
    "total_response_percent": "Pathological response (%)",
    "necrosis_percent": "Necrosis (%)",
    "fibrosis_percent": "Fibrosis (%)",
    "fibrosis_greater_40_percent": "Fibrosis > 40%",
    "mucin_percent": "Mucin (%)",
}


def predictor_label(name: str) -> str:
    """The label of a predictor or an encoded feature: ``"clinrisk_stratified"`` ->
    ``"Fong score high (3–5)"``, ``"max_tumor_size_missing"`` -> ``"Largest tumour (cm)
    missing"``; an unknown name is shown with its underscores as spaces."""
    if name.endswith("_missing") and name.removesuffix("_missing") in PREDICTOR_LABELS:
        return f"{PREDICTOR_LABELS[name.removesuffix('_missing')]} missing"
    return PREDICTOR_LABELS.get(name, name.replace("_", " "))


_YES_NO = "0 = no, 1 = yes"
#: Unit and coding of every predictor as ``crlm predict`` expects it (``(unit, coding)``; the
#: codes flagged [A] in the module docstring included): the template of ``crlm predict
#: --template`` and the refusal of missing predictors print them.
PREDICTOR_CODING: dict[str, tuple[str, str]] = {
    "age": ("years", "age at liver resection"),
    "sex": ("code", "1 = male, 2 = female"),
    "major_comorbidity": ("0/1", _YES_NO),
    "body_mass_index": ("kg/m2", "body-mass index"),
    "node_positive_primary": ("0/1", "node-positive primary: " + _YES_NO),
    "synchronous_crlm": ("0/1", "metastases found with the primary: " + _YES_NO),
    "multiple_metastases": ("0/1", "more than one liver tumour: " + _YES_NO),
    "clinrisk_score": ("0-5", "Fong clinical risk score (whole number)"),
    "clinrisk_stratified": ("0/1", "0 = low (Fong 0-2), 1 = high (Fong 3-5)"),
    "carcinoembryonic_antigen": ("ng/mL", "preoperative CEA"),
    "max_tumor_size": ("cm", "largest tumour diameter"),
    "bilobar_disease": ("0/1", _YES_NO),
    "extrahep_disease": ("0/1", "resected extrahepatic disease: " + _YES_NO),
    "chemo_before_liver_resection": ("0/1", _YES_NO),
    "preoperative_pve": ("0/1", "portal vein embolisation: " + _YES_NO),
    "steatosis_yesno": ("0/1", "specimen: " + _YES_NO),
    "presence_sinusoidal_dilata": ("0/1", "specimen: " + _YES_NO),
    "NASH_score": ("0-8", "NAFLD activity score (whole number)"),
    "NASH_yesno": ("0/1", _YES_NO),
    "NASH_greater_4": ("0/1", "NAFLD activity score >= 4: " + _YES_NO),
    "total_response_percent": ("percent", "0-100, or a fraction 0-1 for the whole column"),
    "necrosis_percent": ("percent", "0-100, or a fraction 0-1 for the whole column"),
    "fibrosis_percent": ("percent", "0-100, or a fraction 0-1 for the whole column"),
    "fibrosis_greater_40_percent": ("0/1", _YES_NO),
    "mucin_percent": ("percent", "0-100, or a fraction 0-1 for the whole column"),
}


def predictor_coding(column: str) -> str:
    """``"sex (1 = male, 2 = female)"``, ``"age (years)"``: a predictor with its expected
    coding, as error messages name it."""
    unit, coding = PREDICTOR_CODING.get(column, ("", ""))
    if unit == "percent":
        return f"{column} (percent, 0-100)"
    if unit in ("0/1", "code") or unit[:1].isdigit():
        return f"{column} ({coding})"
    return f"{column} ({unit})" if unit else column


FONG_CRITERIA: tuple[str, ...] = (
    "node_positive_primary",
    "dfi_lt_12_months",
    "more_than_one_tumour",
    "cea_gt_200",
    "largest_tumour_gt_5cm",
)


#: Columns added by the April 2023 (v2, 36 columns) release of the clinical spreadsheet; the
#: October 2022 release (v1, sheet ``TCIA_n=197``, 28 columns) lacks them.
V2_ONLY_COLUMNS: tuple[str, ...] = (
    "body_mass_index",
    "node_positive_primary",
    "synchronous_crlm",
    "multiple_metastases",
    "carcinoembryonic_antigen",
    "max_tumor_size",
    "bilobar_disease",
    "preoperative_pve",
)
#: The 28 columns of the v1 release, in order.
V1_COLUMNS: tuple[str, ...] = tuple(c for c in COLUMNS if c not in V2_ONLY_COLUMNS)
#: Human-readable names of the published versions (printed in Table 1 and the manuscript).
TABLE_VERSIONS: dict[str, str] = {
    "v1": "v1 (October 2022, 28 columns)",
    "v2": "v2 (April 2023, 36 columns)",
}


class ClinicalTableError(CRLMUserError, ValueError):
    """The clinical table breaks the schema; the message lists every problem found."""


# --------------------------------------------------------------------------------------------
# loading and validation
# --------------------------------------------------------------------------------------------


def _canonical_name(name: object) -> str:
    return str(name).replace("\ufeff", "").strip().lower()


_ID_KEY = _canonical_name(ID_COLUMN)
_PERCENT_KEYS = {_canonical_name(c) for c in PERCENT_COLUMNS}
_DECIMAL_COMMA = re.compile(r"^([+-]?\d*),(\d+)$")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _read_excel(path: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """The sheet whose first row holds ``Patient-ID``; ``*_percent`` cells with a ``%`` number
    format (stored by Excel as fractions: 0.7 shows as 70 %) are returned as the text Excel
    shows (``"70%"``), which :func:`validate_clinical` reads as 70."""
    try:
        import openpyxl
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ClinicalTableError(
            f"{path}: reading Excel needs openpyxl ({exc}); export the sheet to CSV"
        ) from exc
    try:
        # not read_only: the read-only reader trusts the sheet's stored dimensions, which
        # files written by other tools may get wrong (rows silently cut); the table is small
        book = openpyxl.load_workbook(path, data_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure of the reader is the file's fault
        raise ClinicalTableError(f"{path}: not a readable Excel workbook ({exc})") from exc
    try:
        sheets = list(book.sheetnames)
        for name in sheets:
            rows = book[name].iter_rows()
            first = next(rows, None)
            if first is None:
                continue
            header = [c.value for c in first]
            keys = [_canonical_name(h) if h is not None else "" for h in header]
            if _ID_KEY not in keys:
                continue
            width = len(header)
            pct_idx = {i for i, k in enumerate(keys) if k in _PERCENT_KEYS}
            scaled: set[str] = set()
            data: list[list[object]] = []
            for row in rows:
                values: list[object] = [None] * width
                for i, cell in enumerate(row[:width]):
                    v = cell.value
                    fmt = getattr(cell, "number_format", None) or ""
                    if i in pct_idx and _is_number(v) and "%" in fmt and v != MISSING_CODE:
                        v = f"{round(float(v) * 100.0, 10)!r}%"
                        scaled.add(str(header[i]))
                    values[i] = v
                if any(v is not None and str(v).strip() != "" for v in values):
                    data.append(values)
            columns = [h if h is not None else f"Unnamed: {i}" for i, h in enumerate(header)]
            frame = pd.DataFrame(data, columns=columns)
            unnamed = [c for c, h in zip(columns, header, strict=True) if h is None]
            frame = frame.drop(columns=[c for c in unnamed if frame[c].isna().all()])
            info = {"sheet": name, "sheets": sheets, "percent_from_format": sorted(scaled)}
            return frame, info
    finally:
        book.close()
    raise ClinicalTableError(
        f"{path}: columns not found on sheet {sheets[0] if sheets else None!r}; "
        f"sheets are {sheets}; none has a header row with {ID_COLUMN!r}"
    )


#: Leading bytes of files that are not text tables, and what they are.
_BINARY_SIGNATURES: dict[bytes, str] = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook?): give an .xlsx file its .xlsx suffix",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) workbook: save it as .xlsx",
    b"\x89PNG": "a PNG image, not a table",
    b"%PDF": "a PDF document, not a table",
}


def _decode_text(path: Path, raw: bytes) -> tuple[str, str]:
    """The text of a table file and its encoding: UTF-16 when the file starts with its
    byte-order mark (Excel's "Unicode Text" export), else UTF-8 (a byte-order mark dropped),
    else Windows-1252 (Excel's "CSV" export on Windows). A binary file (a workbook or an image
    renamed ``.csv``, NUL bytes) or bytes no encoding decodes raise
    :class:`ClinicalTableError` naming the file and what to do."""
    for magic, what in _BINARY_SIGNATURES.items():
        if raw.startswith(magic):
            raise ClinicalTableError(f"{path}: not a text table but {what}")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise ClinicalTableError(
                f"{path}: starts with a UTF-16 byte-order mark but is not UTF-16 text ({exc}); "
                "save the table as CSV (UTF-8)"
            ) from exc
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        raise ClinicalTableError(
            f"{path}: not a text table (NUL byte at offset {at}): a binary file, or UTF-16 text "
            "without a byte-order mark; save the table as CSV (UTF-8)"
        )
    try:
        return raw.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("cp1252"), "cp1252"
    except UnicodeDecodeError as exc:
        raise ClinicalTableError(
            f"{path}: neither UTF-8 nor Windows-1252 text (byte 0x{raw[exc.start]:02x} at offset "
            f"{exc.start}); save the table as CSV (UTF-8)"
        ) from exc


def _read_csv(path: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    """A CSV with its delimiter (``,``, ``;`` or tab) detected from the header line, decoded by
    :func:`_decode_text`."""
    text, encoding = _decode_text(path, path.read_bytes())
    first = next((line for line in text.splitlines() if line.strip()), "")
    counts = {d: first.count(d) for d in (",", ";", "\t")}
    sep = max(counts, key=lambda d: counts[d])  # ties (none found) -> ","
    if _ID_KEY not in {_canonical_name(c.strip('"')) for c in first.split(sep)}:
        raise ClinicalTableError(
            f"{path}: no {ID_COLUMN!r} column; the header read is {first[:120]!r} "
            "(the first line must be the header)"
        )
    try:
        frame = pd.read_csv(io.StringIO(text), sep=sep)
        header = pd.read_csv(io.StringIO(text), sep=sep, header=None, nrows=1, dtype=str)
    except (pd.errors.ParserError, ValueError) as exc:
        raise ClinicalTableError(f"{path}: not a {sep!r}-separated table ({exc})") from exc
    # the header as written: pandas renames a repeated name (age, age.1), which would hide it
    written = header.iloc[0].tolist() if len(header) else []
    if len(written) == frame.shape[1]:
        frame.columns = [
            w if isinstance(w, str) else c for w, c in zip(written, frame.columns, strict=True)
        ]
    return frame, {"delimiter": sep, "encoding": encoding}


def _read_table(path: Path) -> tuple[pd.DataFrame, dict[str, object]]:
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        return _read_excel(path)
    if path.suffix.lower() == ".xls":
        raise ClinicalTableError(f"{path}: the old .xls format is not read; save it as .xlsx")
    return _read_csv(path)


def _parse_numbers(
    column: pd.Series, allow_percent: bool, decimal_comma: bool = False
) -> tuple[pd.Series, pd.Series]:
    """Numbers of a raw column: with ``decimal_comma``, ``"0,7"`` -> 0.7; for ``*_percent``
    columns ``"70%"`` -> 70. Returns (values, NaN where unparsable or empty; mask of ``%``
    strings)."""
    if column.dtype != object:
        values = pd.to_numeric(column, errors="coerce").astype(float)
        return values, pd.Series(False, index=column.index)
    numbers = pd.Series(np.nan, index=column.index, dtype=float)
    pct = pd.Series(False, index=column.index)
    for idx, v in column.items():
        if _is_number(v) or isinstance(v, bool | np.bool_):
            numbers[idx] = float(v)
            continue
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        text = str(v).strip()
        if allow_percent and text.endswith("%"):
            text, pct[idx] = text[:-1].strip(), True
        if decimal_comma:
            text = _DECIMAL_COMMA.sub(r"\1.\2", text)
        try:
            numbers[idx] = float(text)
        except ValueError:
            pct[idx] = False
    return numbers, pct


def validate_clinical(
    raw: pd.DataFrame,
    source: str = "<table>",
    optional_outcomes: Iterable[str] = (),
    percent_from_format: Iterable[str] = (),
    decimal_comma: bool = False,
) -> pd.DataFrame:
    """Validate a raw clinical table and return it in canonical form.

    Both published versions are accepted: v2 (April 2023, the 36 columns of :data:`COLUMNS`) and
    v1 (October 2022, the 28 of :data:`V1_COLUMNS`); the eight columns v1 lacks
    (:data:`V2_ONLY_COLUMNS`) are added as missing (NaN), so that every row and every value is
    kept and the encoders add missing-indicators. The version read is in
    ``df.attrs["clinical_version"]`` (see :func:`table_version`).

    Numbers: ``-999`` and empty cells are missing; with ``decimal_comma`` (set by
    :func:`load_clinical` for a ``;``-separated CSV, the European Excel export) ``"0,7"`` is
    read as 0.7; elsewhere a comma in a number is a problem (``"1,234"`` could be a thousands
    separator). ``*_percent`` columns (:data:`PERCENT_COLUMNS`) are returned in percent, 0..100:
    ``"70%"`` strings (a CSV saved by Excel, or an Excel cell with a ``%`` number format, which
    the reader turns into the text Excel shows) give 70. The scale of the plain numbers is
    decided per column from the table's values (:func:`_percent_scales`): a value above 1 means
    percent (the synthetic table's convention); every value in [0, 1] with some not whole
    means fractions, multiplied by 100 (the spreadsheet stores 70 % as 0.7); a column holding
    only 0 and 1 takes the scale of the other percent columns. Whatever cannot be decided is a
    problem, never a guess: a 0/1 column with no other column to settle it (a one-patient
    table), a column mixing values above 1 with fractions, columns in different scales. The
    table's convention is in ``df.attrs["percent_unit"]``, each column's in
    ``df.attrs["percent_scales"]``; a cell that is neither a number nor ``"<number>%"`` is a
    problem naming patient and column.

    Parameters
    ----------
    raw : DataFrame
        One row per patient; column names matched case-insensitively after stripping spaces
        (and a byte-order mark).
    source : str
        File name used in error messages.
    optional_outcomes : iterable of str
        Outcome columns allowed to be missing (-999 or empty), for tables that do not record an
        endpoint; they become NaN. By default every outcome must be present.
    percent_from_format : iterable of str
        Percent columns that had Excel ``%`` cells (reported in ``attrs["percent_unit"]``).
    decimal_comma : bool
        Read ``"0,7"`` as 0.7 (default False).

    Returns
    -------
    DataFrame
        Index ``Patient-ID`` (str); columns of :data:`COLUMNS` in canonical spelling and order
        (extra columns kept after them); -999 replaced by NaN; numeric columns float64.

    Raises
    ------
    ClinicalTableError
        Listing every problem (missing column, duplicate ID, non-numeric value, negative or
        missing follow-up time, missing outcome, code out of range), each with the patient ID
        and the column.
    """
    problems: list[str] = []
    df, version, extra = _canonical_columns(raw, source, problems)
    ids = _check_ids(df, problems)
    df[ID_COLUMN] = ids
    parsed = _parse_numeric_columns(df, ids, extra, decimal_comma, problems)
    scales = _percent_scales(parsed, ids, problems)
    unit = _percent_unit(parsed, scales, set(percent_from_format))
    _fractions_to_percent(parsed, [col for col, scale in scales.items() if scale == "fraction"])
    optional = set(optional_outcomes)
    for col, (values, _) in parsed.items():
        df[col] = _check_column(col, values, ids, col not in optional, problems).astype(float)

    if problems:
        listing = "\n  ".join(problems)
        raise ClinicalTableError(f"{source}: {len(problems)} problem(s):\n  {listing}")
    out = df.set_index(ID_COLUMN)
    out.attrs.update(
        clinical_version=version, clinical_source=source, percent_unit=unit, percent_scales=scales
    )
    return out


def _canonical_columns(
    raw: pd.DataFrame, source: str, problems: list[str]
) -> tuple[pd.DataFrame, str, list[str]]:
    """Rename ``raw``'s columns to the canonical spelling and order of :data:`COLUMNS`.

    Returns the renamed copy, the table version (``"v1"`` when every column of
    :data:`V2_ONLY_COLUMNS` is absent: they are added as NaN; else ``"v2"``) and the extra
    columns (kept after the canonical ones). Missing columns are appended to ``problems``; a
    table without a ``Patient-ID`` column raises :class:`ClinicalTableError` at once.
    """
    _check_unique_columns(raw, source)
    lookup = {_canonical_name(c): c for c in raw.columns}
    if _ID_KEY not in lookup:
        shown = [str(c) for c in raw.columns[:8]]
        more = f" ... ({len(raw.columns)} columns)" if len(raw.columns) > 8 else ""
        raise ClinicalTableError(
            f"{source}: no {ID_COLUMN!r} column; the header read is {shown}{more}"
        )
    rename: dict[object, str] = {}
    missing_cols: list[str] = []
    for col in COLUMNS:
        key = _canonical_name(col)
        if key in lookup:
            rename[lookup[key]] = col
        else:
            missing_cols.append(col)
    version = "v2"
    if set(V2_ONLY_COLUMNS) <= set(missing_cols):
        version = "v1"
        missing_cols = [c for c in missing_cols if c not in V2_ONLY_COLUMNS]
    for col in missing_cols:
        problems.append(f"missing column {col!r}")
    df = raw.rename(columns=rename).copy()
    if version == "v1":
        for col in V2_ONLY_COLUMNS:
            df[col] = np.nan
    extra = [c for c in df.columns if c not in COLUMNS]
    return df[[c for c in COLUMNS if c in df.columns] + extra], version, extra


def _check_unique_columns(raw: pd.DataFrame, source: str) -> None:
    """Raise :class:`ClinicalTableError` when two header cells name the same column (after
    :func:`_canonical_name`: ``age`` and ``Age `` are one column): which copy holds the data
    cannot be told, and reading one would ignore the other."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(raw.columns, start=1):
        key = _canonical_name(name)
        if key:
            positions.setdefault(key, []).append(i)
    dups = {k: v for k, v in positions.items() if len(v) > 1}
    if dups:
        listing = "; ".join(
            f"{raw.columns[v[0] - 1]!r} appears {len(v)} times (columns "
            f"{', '.join(str(i) for i in v)})"
            for v in dups.values()
        )
        raise ClinicalTableError(
            f"{source}: duplicated column: {listing}; keep one column of each name"
        )


def _check_ids(df: pd.DataFrame, problems: list[str]) -> pd.Series:
    """The stripped ``Patient-ID`` strings; empty and duplicate IDs are appended to
    ``problems``."""
    ids = df[ID_COLUMN].map(lambda v: "" if pd.isna(v) else str(v).strip())
    if ids.eq("").any():
        problems.append(f"{int(ids.eq('').sum())} rows without Patient-ID")
    for pid in sorted(ids[ids.duplicated(keep=False) & ids.ne("")].unique()):
        problems.append(f"{pid}: duplicate Patient-ID ({int((ids == pid).sum())} rows)")
    return ids


def _expected(column: str) -> str:
    """``" (expected: 1 = male, 2 = female)"`` for a predictor with a coding, else ``""``."""
    unit, coding = PREDICTOR_CODING.get(column, ("", ""))
    if not unit:
        return ""
    return f" (expected: {coding if unit in ('0/1', 'code') else predictor_coding(column)})"


def _parse_numeric_columns(
    df: pd.DataFrame, ids: pd.Series, extra: list[str], decimal_comma: bool, problems: list[str]
) -> dict[str, tuple[pd.Series, pd.Series]]:
    """Every numeric column parsed by :func:`_parse_numbers`: ``{column: (values, is_percent
    string)}``; a cell that is neither empty nor a number is appended to ``problems``."""
    parsed: dict[str, tuple[pd.Series, pd.Series]] = {}
    for col in df.columns:
        if col in TEXT_COLUMNS or col in extra:
            continue
        values, pct = _parse_numbers(
            df[col], allow_percent=col in PERCENT_COLUMNS, decimal_comma=decimal_comma
        )
        bad_text = values.isna() & df[col].notna() & df[col].astype(str).str.strip().ne("")
        for pid, val in zip(ids[bad_text], df.loc[bad_text, col], strict=True):
            problems.append(f"{pid}: column {col!r} has non-numeric value {val!r}{_expected(col)}")
        parsed[col] = (values, pct)
    return parsed


def _fractions_to_percent(
    parsed: dict[str, tuple[pd.Series, pd.Series]], columns: Iterable[str]
) -> None:
    """Multiply the plain (not ``"%"``, not -999) values of ``columns`` by 100, in place: the
    spreadsheet stores 70 % as 0.7 (see :func:`_percent_scales`)."""
    for col in columns:
        values, pct = parsed[col]
        plain = ~pct & values.notna() & ~np.isclose(values, MISSING_CODE)
        parsed[col] = (values.where(~plain, (values * 100.0).round(10)), pct)


def _check_column(
    col: str, values: pd.Series, ids: pd.Series, outcome_required: bool, problems: list[str]
) -> pd.Series:
    """``values`` of column ``col`` with -999 and empty cells as NaN; a missing required outcome,
    a binary code other than 0/1, a value outside :data:`RANGES` or a fraction in an
    :data:`INTEGER_COLUMNS` column is appended to ``problems`` with its patient ID."""
    missing = values.isna() | np.isclose(values, MISSING_CODE)
    values = values.mask(missing)
    if col in OUTCOME_COLUMNS and outcome_required:
        for pid in ids[missing]:
            problems.append(f"{pid}: column {col!r} (outcome) is missing")
    present = values.notna()
    if col in BINARY_COLUMNS:
        bad = present & ~values.isin([0.0, 1.0])
        for pid, val in zip(ids[bad], values[bad], strict=True):
            problems.append(f"{pid}: column {col!r} = {val:g} is not 0/1{_expected(col)}")
    elif col in RANGES:
        lo, hi = RANGES[col]
        bad = present & ((values < lo) | (values > hi))
        what = "negative follow-up time" if col in TIME_COLUMNS else "out of range"
        for pid, val in zip(ids[bad], values[bad], strict=True):
            problems.append(f"{pid}: column {col!r} = {val:g} {what} [{lo:g}, {hi:g}]")
        if col in INTEGER_COLUMNS:
            bad = present & (values != np.round(values))
            for pid, val in zip(ids[bad], values[bad], strict=True):
                problems.append(f"{pid}: column {col!r} = {val:g} is not a whole number")
    return values


_SCALE_HOW_TO = (
    "write those cells with a % sign ('100%' or '1%'), or load the whole table as published "
    "(the xlsx keeps Excel's % cell format)"
)


def _column_scale(values: pd.Series, pct: pd.Series) -> str:
    """What the plain numbers (not ``"%"`` cells, not -999) of one percent column say about
    their scale: ``"percent"`` (a value above 1: fractions never exceed 1), ``"fraction"``
    (every value in [0, 1], some not whole), ``"none"`` (no plain number other than 0: the
    scale does not matter) or ``"ambiguous"`` (only 0 and 1: 0/1 % or 0/100 %)."""
    plain = values[~pct & values.notna() & ~np.isclose(values, MISSING_CODE)]
    if (plain > 1.0).any():
        return "percent"
    if (plain != np.round(plain)).any():
        return "fraction"
    return "ambiguous" if (plain == 1.0).any() else "none"


def _percent_scales(
    parsed: dict[str, tuple[pd.Series, pd.Series]], ids: pd.Series, problems: list[str]
) -> dict[str, str]:
    """The scale of the plain numbers of each percent column: ``"percent"`` or ``"fraction"``
    (multiplied by 100 by :func:`_fractions_to_percent`); ``"%"`` cells are percent whatever
    their column's scale.

    Each column is decided by its own plain values (:func:`_column_scale`). A column holding
    only 0 and 1 takes the scale of the table's other percent columns when those were decided
    and agree (one table is written in one convention: the published sheet stores fractions,
    the synthetic table percent). Appended to ``problems``, naming column and cells: a column
    mixing values above 1 with fractions below 1 (``0.07`` among ``30, 70``); columns whose
    values decide different scales; a 0/1 column that nothing else decides (a one-patient
    table, or a subset of the published one).
    """
    own = {col: _column_scale(*parsed[col]) for col in PERCENT_COLUMNS}
    for col, scale in own.items():
        values, pct = parsed[col]
        frac = ~pct & values.gt(0.0) & values.lt(1.0)
        if scale == "percent" and frac.any():
            cells = ", ".join(f"{pid} = {v:g}" for pid, v in zip(ids[frac], values[frac]))
            problems.append(
                f"column {col!r} mixes percent values (0-100, up to {values.max():g}) with "
                f"fractions below 1 ({cells}); write every cell of the column in one scale "
                "(a fraction 0.07 as 7, or as '7%')"
            )
    decided = {s for s in own.values() if s in ("percent", "fraction")}
    if len(decided) > 1:
        listing = "; ".join(f"{c}: {s}" for c, s in own.items() if s in decided)
        problems.append(
            f"percent columns in different scales ({listing}): values above 1 are percent, "
            "values all in [0, 1] with decimals are fractions; write every percent column in "
            "one scale"
        )
    out = {}
    for col, scale in own.items():
        if scale == "ambiguous":
            if len(decided) == 1:
                scale = next(iter(decided))
            else:
                values, pct = parsed[col]
                ones = ", ".join(ids[~pct & values.eq(1.0)])
                problems.append(
                    f"column {col!r} holds only 0 and 1 ({ones} = 1), which is 1 % as percent "
                    f"or 100 % as a fraction, and no other percent column settles the scale; "
                    f"{_SCALE_HOW_TO}"
                )
        out[col] = "fraction" if scale == "fraction" else "percent"
    return out


def _percent_unit(
    parsed: dict[str, tuple[pd.Series, pd.Series]], scales: dict[str, str], from_format: set[str]
) -> str:
    """The table's percent convention in one word (``attrs["percent_unit"]``): ``"fraction"``
    (some column's plain numbers were fractions, multiplied by 100); otherwise ``"format"``
    (Excel ``%`` cells), ``"percent strings"`` ("70%") or ``"percent"``."""
    if "fraction" in scales.values():
        return "fraction"
    if from_format:
        return "format"
    any_pct = any(bool(parsed[col][1].any()) for col in PERCENT_COLUMNS)
    return "percent strings" if any_pct else "percent"


def table_version(df: pd.DataFrame) -> str:
    """Which published version of the clinical table ``df`` was read from, in words, e.g.
    ``"v1 (October 2022, 28 columns)"`` (``"unknown"`` for a frame not made by
    :func:`validate_clinical`)."""
    key = df.attrs.get("clinical_version")
    return TABLE_VERSIONS.get(str(key), "unknown")


def load_clinical(path: str | Path, optional_outcomes: Iterable[str] = ()) -> pd.DataFrame:
    """Read and validate the clinical table (CSV, or XLSX via openpyxl).

    CSV: the delimiter (``,``, ``;``, tab) is detected from the header, a byte-order mark is
    ignored, ``"70%"`` strings are read, and decimal commas when the delimiter is ``;`` (see
    :func:`validate_clinical`).
    XLSX: the first sheet whose header row holds ``Patient-ID`` is read (the collection's
    ``TCIA_n=197``; a ``Data Dictionary`` sheet is skipped); ``*_percent`` cells with a ``%``
    number format are converted from fractions to percent.

    Parameters
    ----------
    path : path
        ``clinical.csv`` or the collection's ``.xlsx`` (v1 or v2).
    optional_outcomes : iterable of str
        See :func:`validate_clinical`.

    Returns
    -------
    DataFrame
        Index ``Patient-ID``; canonical columns; -999 -> NaN (see :func:`validate_clinical`);
        ``attrs``: ``clinical_version`` (``v1``/``v2``), ``clinical_source``, ``percent_unit``,
        ``clinical_sheet`` (XLSX) or ``delimiter`` (CSV).

    Raises
    ------
    ClinicalTableError
        Every schema problem at once, each naming the patient and the column; or, when no
        sheet holds the columns, ``columns not found on sheet X; sheets are [...]``.
    FileNotFoundError
        If ``path`` does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"clinical table not found: {path}")
    frame, info = _read_table(path)
    source = f"{path} (sheet {info['sheet']!r})" if "sheet" in info else str(path)
    df = validate_clinical(
        frame,
        source=source,
        optional_outcomes=optional_outcomes,
        percent_from_format=info.get("percent_from_format", ()),
        decimal_comma=info.get("delimiter") == ";",
    )
    if "sheet" in info:
        df.attrs["clinical_sheet"] = info["sheet"]
    if "delimiter" in info:
        df.attrs["delimiter"] = info["delimiter"]
    return df


# --------------------------------------------------------------------------------------------
# outcomes, predictors, Fong score
# --------------------------------------------------------------------------------------------


def outcomes(df: pd.DataFrame) -> pd.DataFrame:
    """Survival outcomes in years with 0/1 events.

    ``os_years = overall_survival_months / 12``, ``os_event = vital_status`` (1 = death);
    ``dfs_years = months_to_DFS_progression / 12``, ``dfs_event = vital_status_DFS`` (1 =
    recurrence or death); ``liver_dfs_years``/``liver_dfs_event`` likewise from the liver-only
    columns.

    Parameters
    ----------
    df : DataFrame
        Output of :func:`load_clinical`.

    Returns
    -------
    DataFrame
        Columns ``os_years, os_event, dfs_years, dfs_event, liver_dfs_years,
        liver_dfs_event`` (float64 years, int64 events), same index.

    Raises
    ------
    ClinicalTableError
        If any outcome is missing (a bad value never becomes a silent NaN here).
    """
    pairs = {
        "os": ("overall_survival_months", "vital_status"),
        "dfs": ("months_to_DFS_progression", "vital_status_DFS"),
        "liver_dfs": ("months_to_liver_DFS_progression", "vital_status_liver_DFS"),
    }
    out = pd.DataFrame(index=df.index)
    problems = []
    for name, (tcol, ecol) in pairs.items():
        for col in (tcol, ecol):
            if col not in df.columns:
                problems.append(f"missing column {col!r}")
                continue
            for pid in df.index[pd.to_numeric(df[col], errors="coerce").isna()]:
                problems.append(f"{pid}: column {col!r} (outcome) is missing")
        if tcol in df.columns and ecol in df.columns:
            out[f"{name}_years"] = df[tcol].astype(float) / 12.0
            out[f"{name}_event"] = df[ecol].fillna(-1).astype(np.int64)
    if problems:
        raise ClinicalTableError("outcomes: " + "; ".join(problems))
    return out


def encode_predictors(
    df: pd.DataFrame,
    reference: pd.DataFrame | None = None,
    columns: Sequence[str] | None = None,
    exclude: Iterable[str] = (),
) -> tuple[np.ndarray, list[str]]:
    """Encode the predictor columns as a float32 matrix.

    Encoding (one, documented): binary columns stay 0/1; ``sex`` becomes ``sex_female``
    (``sex == 2``); :data:`LOG_PREDICTORS` (CEA) are log1p-transformed; every non-binary column
    is standardised ``(x - mean_ref) / std_ref`` with the statistics of ``reference`` (the
    training rows; population std, 1 where it is 0). For each predictor with missing values in
    ``reference`` a column ``<name>_missing`` (1 = missing) follows the value columns; missing
    values are filled with the reference mean (0 after standardisation; the prevalence for
    binary columns). A predictor missing in ``df`` but never in ``reference`` is filled the
    same way without an indicator, so train and test matrices always have the same columns.

    Parameters
    ----------
    df : DataFrame
        Rows to encode (output of :func:`load_clinical`).
    reference : DataFrame, optional
        Rows whose statistics are used (default: ``df`` itself). Pass the training rows.
    columns : sequence of str, optional
        Predictors (default :data:`PREDICTORS`). Outcome and text columns are refused.
    exclude : iterable of str
        Predictors to drop (e.g. ``PATHOLOGY_PREDICTORS`` or ``["clinrisk_score"]``).

    Returns
    -------
    x : ndarray, float32 [N, F]
    feature_names : list of str, length F

    Raises
    ------
    ClinicalTableError
        If an outcome or free-text column is asked for, or a column is absent.
    """
    ref = df if reference is None else reference
    cols = [c for c in (PREDICTORS if columns is None else columns) if c not in set(exclude)]
    forbidden = [c for c in cols if c in OUTCOME_COLUMNS or c in TEXT_COLUMNS]
    absent = [c for c in cols if c not in df.columns or c not in ref.columns]
    if forbidden or absent:
        raise ClinicalTableError(
            f"encode_predictors: outcome/text columns {forbidden} refused; absent {absent}"
        )
    values, names, indicators, ind_names = [], [], [], []
    for col in cols:
        x = df[col].astype(float).to_numpy()
        r = ref[col].astype(float).to_numpy()
        name = col
        if col == "sex":
            x = np.where(np.isnan(x), np.nan, (x == 2).astype(float))
            r = np.where(np.isnan(r), np.nan, (r == 2).astype(float))
            name = "sex_female"
        binary = col in BINARY_COLUMNS or col == "sex"
        if col in LOG_PREDICTORS:
            x, r = np.log1p(np.clip(x, 0, None)), np.log1p(np.clip(r, 0, None))
        r_missing = np.isnan(r)
        mean = float(np.nanmean(r)) if (~r_missing).any() else 0.0
        x_missing = np.isnan(x)
        filled = np.where(x_missing, mean, x)
        if not binary:
            std = float(np.nanstd(r)) if (~r_missing).sum() > 1 else 0.0
            filled = (filled - mean) / (std if std > 0 else 1.0)
        values.append(filled)
        names.append(name)
        if r_missing.any():
            indicators.append(x_missing.astype(float))
            ind_names.append(f"{name}_missing")
    mat = np.stack(values + indicators, axis=1) if values else np.zeros((len(df), 0))
    return mat.astype(np.float32), names + ind_names


# --------------------------------------------------------------------------------------------
# the fitted encoder stored with a run (new patients are encoded without the training table)
# --------------------------------------------------------------------------------------------


#: Levels of :attr:`EncodedColumn.quantiles`.
QUANTILE_LEVELS: tuple[float, ...] = tuple((k + 0.5) / 20 for k in range(20))


def _training_quantiles(values: pd.Series) -> tuple[float, ...] | None:
    """The observed training values at :data:`QUANTILE_LEVELS` (original units, rounded to 6
    significant digits for ``run.json``), or ``None`` when none is observed."""
    x = pd.to_numeric(values, errors="coerce").astype(float).dropna().to_numpy()
    if not len(x):
        return None
    return tuple(float(f"{v:.6g}") for v in np.quantile(x, QUANTILE_LEVELS))


@dataclass(frozen=True)
class EncodedColumn:
    """How one predictor is encoded (fitted on the training rows).

    ``name`` is the output feature (``sex_female`` for ``sex``); ``mean`` and ``std`` are the
    training statistics after the ``sex -> female`` and log1p steps (``std`` 1.0 for binary
    columns, which are not standardised); ``indicator`` says whether a ``<name>_missing``
    column follows the value columns (the column had missing values in training).

    What ``crlm predict --allow-missing`` draws a missing value from (``None`` in encoders
    stored before they were recorded): ``missing_rate``, the share of training rows missing
    this predictor, and ``quantiles``, the training values (original units: years, cm, ng/mL;
    ``None`` for binary columns, whose distribution is ``mean``) at the 20 levels
    ``(k + 0.5) / 20``, ``k = 0..19``.
    """

    column: str
    name: str
    mean: float
    std: float
    binary: bool
    log1p: bool
    indicator: bool
    missing_rate: float | None = None
    quantiles: tuple[float, ...] | None = None


@dataclass(frozen=True)
class ClinicalEncoder:
    """The encoding of :func:`encode_predictors`, fitted once and serialisable (``run.json``).

    ``encode_predictors(df, reference=ref)`` needs the training table each time it is called;
    a model used on tomorrow's patient has only the patient's own row. The encoder keeps what
    the encoding needs (per column: mean, SD, binary/log flags, missing indicator) and gives
    the same matrix: ``ClinicalEncoder.fit(ref).transform(df)`` equals
    ``encode_predictors(df, reference=ref)`` (tested).

    Missing predictors are handled as in training: a missing value (NaN, or the whole column
    absent from ``df``) is filled with the training mean (0 after standardisation, the
    prevalence for binary columns) and flagged in its ``<name>_missing`` column where training
    had one.

    Example
    -------
    >>> enc = ClinicalEncoder.fit(df.loc[train_ids])  # doctest: +SKIP
    >>> record["clinical_encoder"] = enc.to_dict()  # JSON-ready  # doctest: +SKIP
    >>> x, names = ClinicalEncoder.from_dict(record["clinical_encoder"]).transform(row)  # doctest: +SKIP
    """

    columns: tuple[EncodedColumn, ...]
    version: int = 1

    @classmethod
    def fit(
        cls,
        reference: pd.DataFrame,
        columns: Sequence[str] | None = None,
        exclude: Iterable[str] = (),
    ) -> ClinicalEncoder:
        """Fit on the training rows (arguments as :func:`encode_predictors`)."""
        cols = [c for c in (PREDICTORS if columns is None else columns) if c not in set(exclude)]
        forbidden = [c for c in cols if c in OUTCOME_COLUMNS or c in TEXT_COLUMNS]
        absent = [c for c in cols if c not in reference.columns]
        if forbidden or absent:
            raise ClinicalTableError(
                f"ClinicalEncoder.fit: outcome/text columns {forbidden} refused; absent {absent}"
            )
        out = []
        for col in cols:
            r = reference[col].astype(float).to_numpy()
            if col == "sex":
                r = np.where(np.isnan(r), np.nan, (r == 2).astype(float))
            binary = col in BINARY_COLUMNS or col == "sex"
            log1p = col in LOG_PREDICTORS
            if log1p:
                r = np.log1p(np.clip(r, 0, None))
            r_missing = np.isnan(r)
            mean = float(np.nanmean(r)) if (~r_missing).any() else 0.0
            std = 1.0
            if not binary:
                std = float(np.nanstd(r)) if (~r_missing).sum() > 1 else 0.0
                std = std if std > 0 else 1.0
            out.append(
                EncodedColumn(
                    column=col,
                    name="sex_female" if col == "sex" else col,
                    mean=mean,
                    std=std,
                    binary=binary,
                    log1p=log1p,
                    indicator=bool(r_missing.any()),
                    missing_rate=float(r_missing.mean()) if len(r) else 1.0,
                    quantiles=None if binary else _training_quantiles(reference[col]),
                )
            )
        return cls(columns=tuple(out))

    @property
    def required_columns(self) -> list[str]:
        """The predictors the model learnt from: every column observed in some training row
        (a column missing in every training row carries no information and is not asked
        for)."""
        return [c.column for c in self.columns if c.missing_rate is None or c.missing_rate < 1]

    @property
    def feature_names(self) -> list[str]:
        """Output feature names: value columns, then ``<name>_missing`` indicators."""
        return [c.name for c in self.columns] + [
            f"{c.name}_missing" for c in self.columns if c.indicator
        ]

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
        """Encode ``df`` (rows of :func:`load_clinical`; outcome columns may be absent).

        Returns
        -------
        x : ndarray, float32 ``[N, F]``
        feature_names : list of str, length F
        """
        values, indicators = [], []
        for c in self.columns:
            if c.column in df.columns:
                x = pd.to_numeric(df[c.column], errors="coerce").astype(float).to_numpy()
            else:
                x = np.full(len(df), np.nan)
            if c.column == "sex":
                x = np.where(np.isnan(x), np.nan, (x == 2).astype(float))
            if c.log1p:
                x = np.log1p(np.clip(x, 0, None))
            missing = np.isnan(x)
            filled = np.where(missing, c.mean, x)
            if not c.binary:
                filled = (filled - c.mean) / c.std
            values.append(filled)
            if c.indicator:
                indicators.append(missing.astype(float))
        mat = np.stack(values + indicators, axis=1) if values else np.zeros((len(df), 0))
        return mat.astype(np.float32), self.feature_names

    def baseline(self) -> np.ndarray:
        """The average training patient: float32 ``[F]``, every value at its training mean
        (0 after standardisation, the prevalence for binary columns), no indicator set. Used
        as the SHAP reference when the training rows themselves are not at hand."""
        return np.asarray(
            [c.mean if c.binary else 0.0 for c in self.columns]
            + [0.0 for c in self.columns if c.indicator],
            dtype=np.float32,
        )

    def missing_predictors(self, df: pd.DataFrame) -> dict[str, list[str]]:
        """Per patient (index of ``df``), the predictor columns that are missing (filled)."""
        out: dict[str, list[str]] = {}
        for pid, row in df.iterrows():
            miss = [
                c.column
                for c in self.columns
                if c.column not in df.columns or pd.isna(pd.to_numeric(row[c.column], "coerce"))
            ]
            out[str(pid)] = miss
        return out

    def to_dict(self) -> dict:
        """JSON-ready form (``run.json["clinical_encoder"]``)."""
        return {"version": self.version, "columns": [asdict(c) for c in self.columns]}

    @classmethod
    def from_dict(cls, data: dict) -> ClinicalEncoder:
        """Inverse of :meth:`to_dict`; raises :class:`ClinicalTableError` on a bad record."""
        try:
            cols = tuple(
                EncodedColumn(**{**c, "quantiles": _as_tuple(c.get("quantiles"))})
                for c in data["columns"]
            )
            return cls(columns=cols, version=int(data.get("version", 1)))
        except (KeyError, TypeError) as err:
            raise ClinicalTableError(f"stored clinical encoder is malformed: {err}") from err


def _as_tuple(values: Sequence[float] | None) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def fong_criteria(df: pd.DataFrame) -> pd.DataFrame:
    """The five criteria of the Fong clinical risk score (Fong et al., Ann Surg 1999).

    1. ``node_positive_primary``: node-positive primary;
    2. ``dfi_lt_12_months``: disease-free interval from primary to metastases < 12 months. The
       table has no interval; ``synchronous_crlm`` (interval 0) is used as its proxy, so
       metachronous metastases found within 12 months are counted as criterion-negative;
    3. ``more_than_one_tumour``: ``multiple_metastases``;
    4. ``cea_gt_200``: preoperative CEA > 200 ng/mL;
    5. ``largest_tumour_gt_5cm``: ``max_tumor_size`` > 5 cm.

    Returns
    -------
    DataFrame
        Nullable boolean columns :data:`FONG_CRITERIA`; ``<NA>`` where the source is missing.
    """
    src = {
        "node_positive_primary": df["node_positive_primary"] == 1,
        "dfi_lt_12_months": df["synchronous_crlm"] == 1,
        "more_than_one_tumour": df["multiple_metastases"] == 1,
        "cea_gt_200": df["carcinoembryonic_antigen"] > 200,
        "largest_tumour_gt_5cm": df["max_tumor_size"] > 5,
    }
    cols = {
        "node_positive_primary": "node_positive_primary",
        "dfi_lt_12_months": "synchronous_crlm",
        "more_than_one_tumour": "multiple_metastases",
        "cea_gt_200": "carcinoembryonic_antigen",
        "largest_tumour_gt_5cm": "max_tumor_size",
    }
    out = pd.DataFrame(index=df.index)
    for name, flag in src.items():
        s = flag.astype("boolean")
        s[df[cols[name]].isna()] = pd.NA
        out[name] = s
    return out


def fong_score(df: pd.DataFrame) -> pd.Series:
    """Fong clinical risk score 0..5 = number of :func:`fong_criteria` met; NaN if any is missing."""
    crit = fong_criteria(df)
    score = crit.astype("Float64").sum(axis=1, skipna=False).astype(float)
    return score.rename("fong_score")


# --------------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------------


def _median_iqr(s: pd.Series, digits: int = 1) -> str:
    s = s.dropna()
    if s.empty:
        return "n/a"
    q = s.quantile([0.25, 0.5, 0.75])
    return f"{q[0.5]:.{digits}f} ({q[0.25]:.{digits}f}-{q[0.75]:.{digits}f})"


def _count(mask: pd.Series, n: int) -> str:
    k = int(mask.sum())
    return f"{k} ({100.0 * k / max(n, 1):.0f}%)"


def table_one(df: pd.DataFrame) -> pd.DataFrame:
    """Table-1-style description of a cohort.

    Median (IQR) for continuous variables, n (%) for categories, events, and the median
    follow-up by the reverse Kaplan-Meier method (censoring treated as the event; lifelines
    ``KaplanMeierFitter``). The first row names the version of the clinical table read
    (:func:`table_version`); a v1 table has no BMI, CEA, tumour size, multiplicity or bilobar
    columns, so those rows read ``n/a`` with every patient missing.

    The Fong rows are the score **recorded** in the table (``clinrisk_score``), the quantity the
    Fong anchor uses. The score recomputed from the five criteria (:func:`fong_score`) is a
    different quantity on the real table (``synchronous_crlm`` is only a proxy of a disease-free
    interval under 12 months) and is compared with it in the agreement table only
    (``models.clinical.fong_agreement``).

    Returns
    -------
    DataFrame
        Columns ``variable``, ``value`` (strings ready to print), ``missing`` (count).
    """
    from lifelines import KaplanMeierFitter

    n = len(df)
    rows: list[tuple[str, str, int]] = [
        ("Clinical table version", table_version(df), 0),
        ("Patients", str(n), 0),
    ]

    def add(name: str, col: str, value: str) -> None:
        rows.append((name, value, int(df[col].isna().sum()) if col in df else 0))

    add("Age, years, median (IQR)", "age", _median_iqr(df["age"]))
    add("Female sex, n (%)", "sex", _count(df["sex"] == 2, n))
    add("BMI, kg/m2, median (IQR)", "body_mass_index", _median_iqr(df["body_mass_index"]))
    add("Major comorbidity, n (%)", "major_comorbidity", _count(df["major_comorbidity"] == 1, n))
    add(
        "CEA, ng/mL, median (IQR)",
        "carcinoembryonic_antigen",
        _median_iqr(df["carcinoembryonic_antigen"]),
    )
    add("Largest tumour, cm, median (IQR)", "max_tumor_size", _median_iqr(df["max_tumor_size"]))
    add(
        "Multiple metastases, n (%)",
        "multiple_metastases",
        _count(df["multiple_metastases"] == 1, n),
    )
    add("Bilobar disease, n (%)", "bilobar_disease", _count(df["bilobar_disease"] == 1, n))
    add("Extrahepatic disease, n (%)", "extrahep_disease", _count(df["extrahep_disease"] == 1, n))
    add(
        "Chemotherapy before resection, n (%)",
        "chemo_before_liver_resection",
        _count(df["chemo_before_liver_resection"] == 1, n),
    )
    add("Steatosis, n (%)", "steatosis_yesno", _count(df["steatosis_yesno"] == 1, n))
    score = pd.to_numeric(df["clinrisk_score"], errors="coerce")
    for k in range(6):
        rows.append((f"Fong score {k} (recorded), n (%)", _count(score == k, n), 0))
    rows.append(("Fong score (recorded) missing, n", str(int(score.isna().sum())), 0))
    y = outcomes(df)
    rows.append(("Deaths, n (%)", _count(y["os_event"] == 1, n), 0))
    rows.append(("Recurrences, n (%)", _count(df["progression_or_recurrence"] == 1, n), 0))
    rows.append(
        ("Liver recurrences, n (%)", _count(df["progression_or_recurrence_liveronly"] == 1, n), 0)
    )
    kmf = KaplanMeierFitter().fit(y["os_years"], event_observed=1 - y["os_event"])
    rows.append(("Median follow-up, years (reverse KM)", f"{kmf.median_survival_time_:.1f}", 0))
    kmf = KaplanMeierFitter().fit(y["os_years"], event_observed=y["os_event"])
    rows.append(("Median OS, years (KM)", f"{kmf.median_survival_time_:.1f}", 0))
    return pd.DataFrame(rows, columns=["variable", "value", "missing"])
