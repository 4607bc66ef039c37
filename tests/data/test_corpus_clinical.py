"""Corpus of malformed or unusual clinical tables and command lines, each with its exact outcome.

One parametrised test runs every case of :data:`CASES`: either the input loads correctly (the
values are checked against the table they were written from), or it fails with a clear error
naming the patient, column and file; command-line cases exit 0 with the exclusion report
printed and written, or exit 2 with one line and no traceback. The table "Unusual inputs
(clinical table and command line)" of ``docs/inputs.md`` lists the same cases (a test keeps
them in sync).

The Excel files are real ``.xlsx`` written with openpyxl as the collection publishes them: the
data on sheet ``TCIA_n=197`` with ``*_percent`` cells stored as fractions in Excel's ``0%``
number format, and a ``Data Dictionary`` sheet.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus import Case, Registry

from crlm_lib.cli import main
from crlm_lib.data.clinical import (
    COLUMNS,
    MISSING_CODE,
    PERCENT_COLUMNS,
    TEXT_COLUMNS,
    V1_COLUMNS,
    V2_ONLY_COLUMNS,
    ClinicalTableError,
    load_clinical,
    table_one,
    table_version,
)
from crlm_lib.data.preprocess import USABLE_STATUSES
from crlm_lib.data.synthetic import simulate_cohort
from crlm_lib.errors import CRLMUserError

REPO = Path(__file__).resolve().parents[2]
N_COHORT = 10  # patients of the on-disk cohort of the command-line cases


# --------------------------------------------------------------------------------------------
# fixtures: a small valid table, writers, the on-disk cohort
# --------------------------------------------------------------------------------------------


def _base() -> pd.DataFrame:
    """Six patients in the v2 layout (percent columns 0..100, -999 for missing)."""
    return simulate_cohort(6, seed=3).clinical.copy()


def _reference() -> pd.DataFrame:
    from crlm_lib.data.clinical import validate_clinical

    return validate_clinical(_base())


def _assert_same_values(df: pd.DataFrame, ref: pd.DataFrame, columns=None) -> None:
    """Every numeric value of ``ref`` is in ``df`` (same patients, same order)."""
    assert list(df.index) == list(ref.index)
    cols = [c for c in (columns or ref.columns) if c not in TEXT_COLUMNS]
    pd.testing.assert_frame_equal(df[cols], ref[cols], check_exact=False, rtol=1e-12)


def _cell(v):
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and np.isnan(v):
        return None
    return v


def _write_xlsx(
    df: pd.DataFrame,
    path: Path,
    *,
    sheet: str = "TCIA_n=197",
    dictionary_first: bool = False,
    percent_format: bool = True,
) -> Path:
    """The collection's workbook: data sheet + ``Data Dictionary``; ``*_percent`` cells as
    fractions with the ``0%`` number format (70 % is stored as 0.7)."""
    from openpyxl import Workbook

    book = Workbook()
    data = book.active
    data.title = sheet
    dictionary = book.create_sheet("Data Dictionary", 0 if dictionary_first else None)
    dictionary.append(["Variable", "Description"])
    for col in df.columns:
        dictionary.append([col, f"description of {col}"])
    data.append(list(df.columns))
    for row in df.itertuples(index=False):
        data.append([_cell(v) for v in row])
    if percent_format:
        for j, col in enumerate(df.columns, start=1):
            if col not in PERCENT_COLUMNS:
                continue
            for i in range(2, len(df) + 2):
                cell = data.cell(row=i, column=j)
                if cell.value is not None and cell.value != MISSING_CODE:
                    cell.value = cell.value / 100.0
                    cell.number_format = "0%"
    book.save(path)
    return path


def _csv(df: pd.DataFrame, path: Path, **kw) -> Path:
    df.to_csv(path, index=False, **kw)
    return path


@contextmanager
def _cwd(path: Path):
    mp = pytest.MonkeyPatch()
    mp.chdir(path)
    try:
        yield
    finally:
        mp.undo()


@dataclass
class CohortOnDisk:
    root: Path  # a stand-in repository root (data/processed goes there)
    data: Path  # the TCIA-layout folder
    clinical: Path  # its valid clinical.csv
    ids: list[str]

    def table(self) -> pd.DataFrame:
        return pd.read_csv(self.clinical)

    def exclusions(self) -> pd.DataFrame:
        path = self.root / "data" / "processed" / "smoke-real" / "exclusions.csv"
        return pd.read_csv(path, dtype=str)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> CohortOnDisk:
    """Ten synthetic patients in the TCIA layout, preprocessed once (smoke grid)."""
    return make_cohort(tmp_path_factory.mktemp("corpus"))


def make_cohort(base: Path) -> CohortOnDisk:
    """The on-disk cohort of the command-line cases under ``base`` (the :func:`cohort`
    fixture; ``benchmarks/probe_inputs.py`` builds it the same way)."""
    from crlm_lib.config import get_profile
    from crlm_lib.data.synthetic import write_cohort
    from crlm_lib.pipeline import ensure_data

    root = base / "repo"
    (root / "crlm_lib").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    data = write_cohort(
        base / "tcia", n_patients=N_COHORT, seed=0, synth=get_profile("smoke").synth
    )
    clinical = Path(data) / "clinical.csv"
    with _cwd(root):
        ensure_data("smoke", data, clinical, n_jobs=1)
    ids = sorted(pd.read_csv(clinical)["Patient-ID"].astype(str))
    return CohortOnDisk(root=root, data=Path(data), clinical=clinical, ids=ids)


def _crlm(argv: list[str], capsys) -> tuple[int, str, str]:
    """Run ``crlm``; argparse refusals (SystemExit) count as their exit code."""
    capsys.readouterr()  # drop what fixtures printed
    try:
        rc = main(argv)
    except SystemExit as exc:
        rc = int(exc.code or 0)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_user_error(err: str, *needles: str) -> None:
    """Exactly one ``crlm <command>: <Error>: ...`` line holding every needle; no traceback
    (progress bars may precede it on stderr; a clinical table's problems follow it)."""
    assert "Traceback" not in err
    said = [line for line in err.splitlines() if line.startswith("crlm ")]
    assert len(said) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


# --------------------------------------------------------------------------------------------
# the cases
# --------------------------------------------------------------------------------------------


CASES = Registry()
case = CASES.case


@case(
    "v2 xlsx",
    "April 2023 workbook, 36 columns, sheet TCIA_n=197, `0%` percent cells, Data Dictionary",
    "loads; every value kept; percent cells 0.7 -> 70; Table 1 says v2",
)
def _v2_xlsx(tmp_path, capsys, request):
    df = load_clinical(_write_xlsx(_base(), tmp_path / "v2.xlsx"))
    _assert_same_values(df, _reference())
    assert table_version(df) == "v2 (April 2023, 36 columns)"
    assert df.attrs["clinical_sheet"] == "TCIA_n=197" and df.attrs["percent_unit"] == "format"
    t = table_one(df)
    assert t.loc[t["variable"] == "Clinical table version", "value"].item().startswith("v2")


@case(
    "v1 xlsx",
    "October 2022 workbook, 28 columns (no BMI, CEA, tumour size, ...), `0%` percent cells",
    "loads; the 8 absent columns are missing (NaN), no row or value dropped; Table 1 says v1",
)
def _v1_xlsx(tmp_path, capsys, request):
    base = _base()[list(V1_COLUMNS)]
    df = load_clinical(_write_xlsx(base, tmp_path / "v1.xlsx"))
    assert len(V1_COLUMNS) == 28 and len(COLUMNS) == 36
    _assert_same_values(df, _reference(), columns=[c for c in V1_COLUMNS if c != "Patient-ID"])
    assert df[list(V2_ONLY_COLUMNS)].isna().all().all()
    assert table_version(df) == "v1 (October 2022, 28 columns)"
    t = table_one(df)
    assert t.loc[t["variable"] == "Clinical table version", "value"].item().startswith("v1")
    bmi = t[t["variable"].str.startswith("BMI")].iloc[0]
    assert bmi["value"] == "n/a" and bmi["missing"] == len(df)
    from crlm_lib.data.clinical import encode_predictors

    x, names = encode_predictors(df)
    assert "body_mass_index_missing" in names and np.isfinite(x).all()


@case(
    "Data Dictionary first",
    "workbook whose first sheet is the Data Dictionary, data on TCIA_n=197",
    "loads from TCIA_n=197",
)
def _dictionary_first(tmp_path, capsys, request):
    df = load_clinical(_write_xlsx(_base(), tmp_path / "d.xlsx", dictionary_first=True))
    assert df.attrs["clinical_sheet"] == "TCIA_n=197"
    _assert_same_values(df, _reference())


@case(
    "no data sheet",
    "workbook where no sheet has a Patient-ID header",
    "ClinicalTableError: columns not found on sheet 'Sheet1'; sheets are [...]",
)
def _no_data_sheet(tmp_path, capsys, request):
    from openpyxl import Workbook

    book = Workbook()
    book.active.title = "Sheet1"
    book.active.append(["something", "else"])
    book.create_sheet("Data Dictionary").append(["Variable", "Description"])
    book.save(tmp_path / "n.xlsx")
    msg = "columns not found on sheet 'Sheet1'; sheets are ['Sheet1', 'Data Dictionary']"
    with pytest.raises(ClinicalTableError, match=f"n.xlsx: {msg}".replace("[", r"\[")):
        load_clinical(tmp_path / "n.xlsx")


@case(
    "semicolon CSV, decimal commas",
    "`;`-separated CSV with `0,7`-style decimals (Excel, European locale)",
    "loads; delimiter detected; values equal the original",
)
def _semicolon(tmp_path, capsys, request):
    df = load_clinical(_csv(_base(), tmp_path / "s.csv", sep=";", decimal=","))
    assert df.attrs["delimiter"] == ";"
    _assert_same_values(df, _reference())


@case(
    "decimal comma, comma CSV",
    'a quoted "1,5" in a `,`-separated CSV (thousands or decimal?)',
    "ClinicalTableError naming patient and column (never guessed)",
)
def _comma_in_comma_csv(tmp_path, capsys, request):
    raw = _base()
    raw["max_tumor_size"] = raw["max_tumor_size"].astype(object)
    raw.loc[2, "max_tumor_size"] = "1,5"
    with pytest.raises(ClinicalTableError, match="CRLM-CT-1003: column 'max_tumor_size' has "
                       "non-numeric value '1,5'"):  # fmt: skip
        load_clinical(_csv(raw, tmp_path / "c.csv"))


@case("BOM", "UTF-8 CSV starting with a byte-order mark", "loads; `Patient-ID` found")
def _bom(tmp_path, capsys, request):
    path = _csv(_base(), tmp_path / "b.csv", encoding="utf-8-sig")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    _assert_same_values(load_clinical(path), _reference())


@case(
    "percent strings",
    'CSV saved by Excel: percent cells as "70%"',
    "loads; 70% -> 70",
)
def _percent_strings(tmp_path, capsys, request):
    raw = _base()
    for col in PERCENT_COLUMNS:
        raw[col] = [f"{v:g}%" if v != MISSING_CODE else v for v in raw[col]]
    df = load_clinical(_csv(raw, tmp_path / "p.csv"))
    assert df.attrs["percent_unit"] == "percent strings"
    _assert_same_values(df, _reference())


@case(
    "percent fractions",
    "CSV with plain fractions 0..1 in the `*_percent` columns (the sheet's stored values)",
    "loads; multiplied by 100 (documented rule: all in [0, 1], some not whole)",
)
def _percent_fractions(tmp_path, capsys, request):
    raw = _base()
    for col in PERCENT_COLUMNS:
        raw[col] = [v / 100.0 if v != MISSING_CODE else v for v in raw[col]]
    df = load_clinical(_csv(raw, tmp_path / "f.csv"))
    assert df.attrs["percent_unit"] == "fraction"
    _assert_same_values(df, _reference())


@case(
    "xlsx fractions, no % format",
    "workbook with fractions in `*_percent` cells formatted `General`",
    "loads; multiplied by 100 by the value-range rule",
)
def _xlsx_fractions_general(tmp_path, capsys, request):
    raw = _base()
    for col in PERCENT_COLUMNS:
        raw[col] = [v / 100.0 if v != MISSING_CODE else v for v in raw[col]]
    df = load_clinical(_write_xlsx(raw, tmp_path / "g.xlsx", percent_format=False))
    assert df.attrs["percent_unit"] == "fraction"
    _assert_same_values(df, _reference())


@case(
    "bad percent string",
    'a percent cell "70 pct"',
    "ClinicalTableError naming file, patient and column",
)
def _bad_percent(tmp_path, capsys, request):
    raw = _base()
    raw["necrosis_percent"] = raw["necrosis_percent"].astype(object)
    raw.loc[1, "necrosis_percent"] = "70 pct"
    path = _csv(raw, tmp_path / "bp.csv")
    with pytest.raises(ClinicalTableError) as info:
        load_clinical(path)
    msg = str(info.value)
    assert str(path) in msg and "1 problem(s)" in msg
    assert "CRLM-CT-1002: column 'necrosis_percent' has non-numeric value '70 pct'" in msg


@case(
    "negative time",
    "overall_survival_months = -3",
    "ClinicalTableError: patient, column, 'negative follow-up time'",
)
def _negative_time(tmp_path, capsys, request):
    raw = _base()
    raw.loc[1, "overall_survival_months"] = -3
    with pytest.raises(ClinicalTableError, match=r"CRLM-CT-1002: column 'overall_survival_months'"
                       r" = -3 negative follow-up time"):  # fmt: skip
        load_clinical(_csv(raw, tmp_path / "t.csv"))


@case("duplicate IDs", "two rows with the same Patient-ID", "ClinicalTableError: ID, row count")
def _duplicates(tmp_path, capsys, request):
    raw = _base()
    raw.loc[2, "Patient-ID"] = raw.loc[0, "Patient-ID"]
    with pytest.raises(ClinicalTableError, match=r"CRLM-CT-1001: duplicate Patient-ID \(2 rows\)"):
        load_clinical(_csv(raw, tmp_path / "d.csv"))


@case("unicode IDs", "Patient-IDs with accents and CJK characters", "loads; IDs kept as written")
def _unicode(tmp_path, capsys, request):
    raw = _base()
    raw.loc[0, "Patient-ID"] = "CRLM-CT-1001-é"
    raw.loc[1, "Patient-ID"] = "患者-0002"
    df = load_clinical(_csv(raw, tmp_path / "u.csv"))
    assert list(df.index[:2]) == ["CRLM-CT-1001-é", "患者-0002"]
    df = load_clinical(_write_xlsx(raw, tmp_path / "u.xlsx"))
    assert list(df.index[:2]) == ["CRLM-CT-1001-é", "患者-0002"]


@case(
    "-999 missing",
    "-999 in a predictor and in an outcome",
    "predictor -> NaN; outcome -> ClinicalTableError naming patient and column",
)
def _missing_code(tmp_path, capsys, request):
    raw = _base()
    raw.loc[0, "age"] = -999
    df = load_clinical(_csv(raw, tmp_path / "m.csv"))
    assert np.isnan(df.loc["CRLM-CT-1001", "age"])
    raw.loc[3, "vital_status"] = -999
    with pytest.raises(ClinicalTableError, match="CRLM-CT-1004: column 'vital_status'"):
        load_clinical(_csv(raw, tmp_path / "m2.csv"))


@case(
    "partial v2",
    "36-column table missing 2 of the 8 v2 columns",
    "ClinicalTableError listing exactly those 2 missing columns",
)
def _partial(tmp_path, capsys, request):
    raw = _base().drop(columns=["bilobar_disease", "max_tumor_size"])
    with pytest.raises(ClinicalTableError) as info:
        load_clinical(_csv(raw, tmp_path / "p.csv"))
    msg = str(info.value)
    assert "2 problem(s)" in msg
    assert "missing column 'max_tumor_size'" in msg and "missing column 'bilobar_disease'" in msg


@case(
    "no header row",
    "CSV whose first line is a title, not the header",
    "ClinicalTableError: no 'Patient-ID' column; the header read is [...]",
)
def _title_line(tmp_path, capsys, request):
    path = tmp_path / "h.csv"
    path.write_text("Clinical data export\n" + _base().to_csv(index=False))
    with pytest.raises(ClinicalTableError, match="no 'Patient-ID' column; the header read is"):
        load_clinical(path)


@case("old .xls", "Excel 97 `.xls` file", "ClinicalTableError: save it as .xlsx")
def _xls(tmp_path, capsys, request):
    (tmp_path / "c.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(ClinicalTableError, match=r"c.xls: the old .xls format is not read"):
        load_clinical(tmp_path / "c.xls")


# ---- command line ---------------------------------------------------------------------------


@case(
    "clinical row without images",
    "`crlm data`, `crlm preprocess`: the table has a patient the download lacks",
    "exit 0; listed (`clinical row without a CT/SEG`) on stdout and in exclusions.csv "
    "(also by `crlm preprocess`); the other patients processed",
)
def _row_without_images(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    raw = c.table()
    extra = raw.iloc[[0]].assign(**{"Patient-ID": "CRLM-CT-9999"})
    path = _csv(pd.concat([raw, extra]), tmp_path / "c.csv")
    with _cwd(c.root):
        rc, out, err = _crlm(["data", "--profile", "smoke", "--data", str(c.data),
                              "--clinical", str(path)], capsys)  # fmt: skip
    assert rc == 0, err
    assert "CRLM-CT-9999" in out and "clinical row without a CT/SEG" in out
    ex = c.exclusions()
    assert ex["patient_id"].tolist() == ["CRLM-CT-9999"]
    report = pd.read_csv(c.root / "data" / "processed" / "smoke-real" / "report.csv")
    assert report["status"].isin(USABLE_STATUSES).sum() == N_COHORT  # the others processed
    (c.root / "data" / "processed" / "smoke-real" / "exclusions.csv").unlink()
    with _cwd(c.root):  # crlm preprocess reports it too
        rc, out, err = _crlm(["preprocess", "--profile", "smoke", "--jobs", "1", "--data",
                              str(c.data), "--clinical", str(path)], capsys)  # fmt: skip
    assert rc == 0, err
    assert "CRLM-CT-9999" in out and c.exclusions()["patient_id"].tolist() == ["CRLM-CT-9999"]


@case(
    "images without clinical row",
    "`crlm train`: a downloaded patient has no row in the table",
    "exit 0; listed (`no row in the clinical table`) on stdout and in exclusions.csv",
)
def _images_without_row(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    raw = c.table()
    dropped = str(raw["Patient-ID"].iloc[-1])
    path = _csv(raw.iloc[:-1], tmp_path / "c.csv")
    with _cwd(c.root):
        rc, out, err = _crlm(["train", "--model", "fong", "--profile", "smoke", "--data",
                              str(c.data), "--clinical", str(path), "--out",
                              str(tmp_path / "run")], capsys)  # fmt: skip
    assert rc == 0, err
    assert f"{dropped}" in out and "no row in the clinical table" in out
    assert c.exclusions()["patient_id"].tolist() == [dropped]
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert dropped not in rec["train_ids"] + rec["test_ids"]
    assert len(rec["train_ids"] + rec["test_ids"]) == N_COHORT - 1


@case(
    "v1 xlsx, crlm train",
    "`crlm train --model clinical_mlp` with the v1 workbook of the download",
    "exit 0; the 8 absent columns enter as missing-indicators; every patient trained or tested",
)
def _v1_train(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    path = _write_xlsx(c.table()[list(V1_COLUMNS)], tmp_path / "v1.xlsx")
    run = tmp_path / "run"
    with _cwd(c.root):
        rc, out, err = _crlm(["train", "--model", "clinical_mlp", "--epochs", "1", "--profile",
                              "smoke", "--data", str(c.data), "--clinical", str(path), "--out",
                              str(run)], capsys)  # fmt: skip
    assert rc == 0, err
    assert "excluded patients: none" in out
    rec = json.loads((run / "run.json").read_text())
    assert len(rec["train_ids"] + rec["val_ids"] + rec["test_ids"]) == N_COHORT
    assert "body_mass_index_missing" in rec["clinical_feature_names"]


@case(
    "stale cache of another download",
    "`crlm train`: a patient's volume is still in the cache but its CT left the download",
    "exit 0; the patient is excluded (`clinical row without a CT/SEG`), not trained on",
)
def _stale_cache(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    gone = c.ids[-1]
    folder = c.data / "Colorectal-Liver-Metastases" / gone
    assert (c.root / "data" / "processed" / "smoke-real" / f"{gone}.npz").is_file()
    folder.rename(tmp_path / gone)
    try:
        with _cwd(c.root):
            rc, out, err = _crlm(["train", "--model", "fong", "--profile", "smoke", "--data",
                                  str(c.data), "--clinical", str(c.clinical), "--out",
                                  str(tmp_path / "run")], capsys)  # fmt: skip
    finally:
        (tmp_path / gone).rename(folder)
    assert rc == 0, err
    assert gone in out and "clinical row without a CT/SEG" in out
    rec = json.loads((tmp_path / "run" / "run.json").read_text())
    assert gone not in rec["train_ids"] + rec["test_ids"]
    assert len(rec["train_ids"] + rec["test_ids"]) == N_COHORT - 1


@case("empty --data", "`crlm data --data` on an empty folder", "exit 2: EmptyCohortError, 1 line")
def _empty_data(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    (tmp_path / "empty").mkdir()
    with _cwd(c.root):
        rc, out, err = _crlm(["data", "--profile", "smoke", "--data", str(tmp_path / "empty"),
                              "--clinical", str(c.clinical)], capsys)  # fmt: skip
    assert rc == 2 and "Series([]" not in out
    _one_line_user_error(err, "EmptyCohortError", str(tmp_path / "empty"), "no patient found")


@case(
    "image-less --data",
    "`crlm data --data` on a folder with a patient folder holding no DICOM",
    "exit 2: EmptyCohortError naming the folder",
)
def _imageless(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    stray = tmp_path / "stray" / "CRLM-CT-1001" / "notes"
    stray.mkdir(parents=True)
    (stray / "readme.txt").write_text("no images here")
    with _cwd(c.root):
        rc, _, err = _crlm(["data", "--profile", "smoke", "--data", str(tmp_path / "stray"),
                            "--clinical", str(c.clinical)], capsys)  # fmt: skip
    assert rc == 2
    _one_line_user_error(err, "EmptyCohortError", str(tmp_path / "stray"))


@case(
    "invalid table, crlm data",
    "`crlm data` with a table holding a negative time",
    "exit 2 before any image is read; message names file, patient, column",
)
def _invalid_table_cli(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    raw = c.table()
    raw.loc[0, "overall_survival_months"] = -1
    path = _csv(raw, tmp_path / "bad.csv")
    with _cwd(c.root):
        rc, _, err = _crlm(["data", "--profile", "smoke", "--data", str(c.data),
                            "--clinical", str(path)], capsys)  # fmt: skip
    assert rc == 2
    _one_line_user_error(err, "ClinicalTableError", str(path), f"{c.ids[0]}: column "
                         "'overall_survival_months' = -1 negative follow-up time")  # fmt: skip


@case(
    "invalid table, crlm preprocess",
    "`crlm preprocess --clinical` with a duplicated ID",
    "exit 2: `--clinical` is validated by preprocess too",
)
def _invalid_table_preprocess(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    raw = c.table()
    raw.loc[1, "Patient-ID"] = raw.loc[0, "Patient-ID"]
    path = _csv(raw, tmp_path / "dup.csv")
    with _cwd(c.root):
        rc, _, err = _crlm(["preprocess", "--profile", "smoke", "--jobs", "1", "--data",
                            str(c.data), "--clinical", str(path)], capsys)  # fmt: skip
    assert rc == 2
    _one_line_user_error(err, "ClinicalTableError", str(path), "duplicate Patient-ID")


@case(
    "missing --clinical file",
    "`crlm data --clinical` pointing nowhere",
    "exit 2: FileNotFoundError naming the path",
)
def _missing_clinical(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    with _cwd(c.root):
        rc, _, err = _crlm(["data", "--profile", "smoke", "--data", str(c.data),
                            "--clinical", str(tmp_path / "nope.csv")], capsys)  # fmt: skip
    assert rc == 2
    _one_line_user_error(err, "FileNotFoundError", "nope.csv", "does not exist")


@case("synth --n 0", "`crlm synth --out x --n 0`", "exit 2 from argparse: must be at least 1")
def _synth_zero(tmp_path, capsys, request):
    rc, _, err = _crlm(["synth", "--out", str(tmp_path / "x"), "--n", "0"], capsys)
    assert rc == 2 and "must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists()


@case("--epochs 0", "`crlm train --epochs 0`", "exit 2 from argparse before the data step")
def _epochs_zero(tmp_path, capsys, request):
    rc, out, err = _crlm(["train", "--model", "acfnet", "--out", str(tmp_path / "r"),
                          "--epochs", "0", "--data", str(tmp_path / "absent")], capsys)  # fmt: skip
    assert rc == 2 and "--epochs: must be at least 1" in err and "Traceback" not in err
    from crlm_lib.cli import CohortSource, train_cli
    from crlm_lib.errors import ArgumentError

    with pytest.raises(ArgumentError, match="--epochs must be at least 1"):
        train_cli("acfnet", CohortSource("smoke"), tmp_path / "r", 0, 0, "paper")


@case("unknown model", "`crlm train --model resnet99`", "exit 2 from argparse: invalid choice")
def _unknown_model(tmp_path, capsys, request):
    rc, _, err = _crlm(["train", "--model", "resnet99", "--out", str(tmp_path / "r"),
                        "--data", str(tmp_path / "absent")], capsys)  # fmt: skip
    assert rc == 2 and "invalid choice: 'resnet99'" in err and "Traceback" not in err


@case("unknown profile", "`crlm data --profile laptop`", "exit 2 from argparse: invalid choice")
def _unknown_profile(tmp_path, capsys, request):
    rc, _, err = _crlm(["data", "--profile", "laptop"], capsys)
    assert rc == 2 and "invalid choice: 'laptop'" in err and "Traceback" not in err


@case(
    "run of another cohort",
    "`crlm train --out R` again after a patient left the table",
    "exit 2 (RunMismatchError: another cohort, split), run.json untouched; `--restart` retrains",
)
def _other_cohort(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    run = tmp_path / "run"
    argv = ["train", "--model", "fong", "--profile", "smoke", "--data", str(c.data), "--out",
            str(run)]  # fmt: skip
    fewer = _csv(c.table().iloc[:-1], tmp_path / "fewer.csv")
    with _cwd(c.root):
        rc, _, err = _crlm([*argv, "--clinical", str(c.clinical)], capsys)
        assert rc == 0, err
        before = (run / "run.json").read_bytes()
        rc, _, err = _crlm([*argv, "--clinical", str(c.clinical)], capsys)  # same: resumes
        assert rc == 0, err
        rc, _, err = _crlm([*argv, "--clinical", str(fewer)], capsys)
        assert rc == 2
        _one_line_user_error(err, "RunMismatchError", str(run), "another cohort, split",
                             "--restart")  # fmt: skip
        assert (run / "run.json").read_bytes() == before
        with pytest.warns(UserWarning, match="--restart"):
            rc, _, err = _crlm([*argv, "--clinical", str(fewer), "--restart"], capsys)
        assert rc == 0, err
    assert len(json.loads((run / "run.json").read_text())["test_ids"]) >= 1
    assert (run / "run.json").read_bytes() != before


@case(
    "checkpoint of another run",
    "`crlm train --model clinical_mlp --out R` resumed with more epochs, then another seed or model",
    "same run: resumes (epochs 1 -> 2); other seed/model: exit 2, last.pt and run.json untouched",
)
def _other_torch_run(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    run = tmp_path / "run"
    argv = ["train", "--profile", "smoke", "--data", str(c.data), "--clinical", str(c.clinical),
            "--out", str(run)]  # fmt: skip
    with _cwd(c.root):
        rc, _, err = _crlm([*argv, "--model", "clinical_mlp", "--epochs", "1"], capsys)
        assert rc == 0, err
        rc, _, err = _crlm([*argv, "--model", "clinical_mlp", "--epochs", "2"], capsys)
        assert rc == 0, err
        assert len(pd.read_csv(run / "history.csv")) == 2  # resumed, not restarted
        files = {n: (run / n).read_bytes() for n in ("run.json", "last.pt", "best.pt")}
        for extra in (["--model", "clinical_mlp", "--seed", "1"], ["--model", "cnn3d"]):
            rc, _, err = _crlm([*argv, *extra, "--epochs", "3"], capsys)
            assert rc == 2
            _one_line_user_error(err, "RunMismatchError", str(run), "config")
            assert {n: (run / n).read_bytes() for n in files} == files


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_corpus_case(item: Case, tmp_path, capsys, request):
    item.run(tmp_path, capsys, request)


def test_corpus_size_and_docs_table():
    assert len(CASES) >= 13
    page = (REPO / "docs" / "inputs.md").read_text(encoding="utf-8")
    section = page.split("## Unusual inputs (clinical table and command line)")[1]
    for item in CASES:
        assert f"| {item.name} |" in section, item.name


def test_user_errors_share_one_base():
    from crlm_lib.data.tcia import CohortDataError
    from crlm_lib.errors import ArgumentError, EmptyCohortError, RunMismatchError

    for cls in (ClinicalTableError, CohortDataError, EmptyCohortError, RunMismatchError,
                ArgumentError):  # fmt: skip
        assert issubclass(cls, CRLMUserError)


def test_model_choices_match_the_registry():
    from crlm_lib.cli import MODEL_CHOICES
    from crlm_lib.evaluation import ANCHOR_NAMES
    from crlm_lib.models import MODEL_NAMES

    assert set(MODEL_CHOICES) == {*MODEL_NAMES, *ANCHOR_NAMES, "oracle"}


def test_synthetic_table_keeps_its_numbers(tmp_path):
    """Valid v2-like input (the synthetic writer's) reads exactly as before: percent 0..100."""
    raw = _base()
    df = load_clinical(_csv(raw, tmp_path / "c.csv"))
    assert df.attrs["percent_unit"] == "percent" and table_version(df).startswith("v2")
    for col in PERCENT_COLUMNS:
        present = raw[col] != MISSING_CODE
        np.testing.assert_array_equal(df[col].to_numpy()[present], raw.loc[present, col])


def test_cli_errors_are_not_swallowed(tmp_path, capsys, monkeypatch):
    """A bug (not a user error) keeps its traceback: main() does not catch everything."""
    import crlm_lib.cli as cli

    def boom(_):
        raise RuntimeError("bug")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["synth"].set_defaults(func=boom)
    with pytest.raises(RuntimeError, match="bug"):
        cli.main(["synth", "--out", str(tmp_path / "x")])
