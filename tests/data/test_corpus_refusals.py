"""Corpus of inputs and faults that used to load silently wrong or end in a traceback, each with
its exact outcome: the right result, or one clear error naming the file, patient, column or
path; also runs killed half-way, folders written by two runs at once, ``crlm`` outside a
checkout and training-set membership.

Same form as ``test_corpus_clinical.py`` (whose helpers it uses): one parametrised test runs
every case of :data:`CASES` (a ``corpus.Registry``). The section "Inputs and faults that were
once silently wrong" of ``docs/inputs.md`` lists the same cases (a test keeps them in sync);
``benchmarks/probe_inputs.py`` runs them with the other two corpora.
"""

from __future__ import annotations

import codecs
import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from corpus import Case, Registry
from test_corpus_clinical import (
    REPO,
    _base,
    _crlm,
    _csv,
    _cwd,
    _one_line_user_error,
    _reference,
    _write_xlsx,
    cohort,  # noqa: F401 - the on-disk cohort fixture of the command-line cases
)

from crlm_lib.data.clinical import (
    MISSING_CODE,
    PERCENT_COLUMNS,
    ClinicalTableError,
    load_clinical,
)

CASES = Registry()
case = CASES.case


def _fractions(raw: pd.DataFrame) -> pd.DataFrame:
    """``raw`` with its percent columns stored as the published sheet stores them (0.7)."""
    raw = raw.copy()
    for col in PERCENT_COLUMNS:
        raw[col] = [v / 100.0 if v != MISSING_CODE else v for v in raw[col]]
    return raw


# ---- percent scale ------------------------------------------------------------------------


@case(
    "one patient, percent 0/1 only",
    "one-row CSV whose percent cells are all 0 or 1 (0/1 % or 0/100 %?)",
    "ClinicalTableError naming the column and patient and how to write it unambiguously",
)
def _one_row_ambiguous(tmp_path, capsys, request):
    raw = _base().iloc[[0]].copy()
    raw["necrosis_percent"] = 1
    for col in ("total_response_percent", "fibrosis_percent", "mucin_percent"):
        raw[col] = 0
    with pytest.raises(ClinicalTableError) as info:
        load_clinical(_csv(raw, tmp_path / "one.csv"))
    msg = str(info.value)
    assert "column 'necrosis_percent' holds only 0 and 1 (CRLM-CT-1001 = 1)" in msg
    assert "'100%' or '1%'" in msg and "1 problem(s)" in msg


@case(
    "one patient, percent strings",
    'the same row with "100%" / "0%" cells',
    "loads; 100% -> 100",
)
def _one_row_strings(tmp_path, capsys, request):
    raw = _base().iloc[[0]].copy()
    raw["necrosis_percent"] = "100%"
    for col in ("total_response_percent", "fibrosis_percent", "mucin_percent"):
        raw[col] = "0%"
    df = load_clinical(_csv(raw, tmp_path / "one.csv"))
    assert df["necrosis_percent"].item() == 100.0 and df["mucin_percent"].item() == 0.0


@case(
    "subset of the sheet, 0/1 column",
    "rows of the published sheet (fractions) where one percent column is only 0 and 1",
    "loads; that column read as fractions like the others (1 -> 100), not as 1 %",
)
def _subset_fraction_column(tmp_path, capsys, request):
    raw = _base()
    raw["mucin_percent"] = [0, 100, 0, 100, 0, 0]
    ref = _reference()
    ref["mucin_percent"] = [0.0, 100.0, 0.0, 100.0, 0.0, 0.0]
    df = load_clinical(_csv(_fractions(raw), tmp_path / "s.csv"))
    assert df.attrs["percent_scales"]["mucin_percent"] == "fraction"
    pd.testing.assert_series_equal(df["mucin_percent"], ref["mucin_percent"])
    # the same column in a table written in percent stays 0/1 %
    raw["mucin_percent"] = [0, 1, 0, 1, 0, 0]
    df = load_clinical(_csv(raw, tmp_path / "p.csv"))
    assert df["mucin_percent"].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0, 0.0]


@case(
    "xlsx, one patient, percent format",
    "one-row workbook, percent cells 0 and 1 in Excel's `0%` format",
    "loads; the format decides (1 -> 100)",
)
def _one_row_xlsx(tmp_path, capsys, request):
    raw = _base().iloc[[0]].copy()
    raw["necrosis_percent"] = 100
    for col in ("total_response_percent", "fibrosis_percent", "mucin_percent"):
        raw[col] = 0
    df = load_clinical(_write_xlsx(raw, tmp_path / "one.xlsx"))
    assert df["necrosis_percent"].item() == 100.0 and df.attrs["percent_unit"] == "format"


@case(
    "fraction among percent values",
    "necrosis_percent 30, 70, ... and one 0.07 (a fraction left over)",
    "ClinicalTableError naming the column and the cell (patient = 0.07)",
)
def _mixed_column(tmp_path, capsys, request):
    raw = _base()
    raw["necrosis_percent"] = raw["necrosis_percent"].astype(float)
    raw.loc[2, "necrosis_percent"] = 0.07
    with pytest.raises(ClinicalTableError) as info:
        load_clinical(_csv(raw, tmp_path / "m.csv"))
    msg = str(info.value)
    assert "column 'necrosis_percent' mixes percent values" in msg
    assert "CRLM-CT-1003 = 0.07" in msg and "1 problem(s)" in msg


@case(
    "percent columns in two scales",
    "necrosis_percent in fractions (0.3), fibrosis_percent in percent (40)",
    "ClinicalTableError naming both columns and their scales",
)
def _two_scales(tmp_path, capsys, request):
    raw = _base()
    raw["necrosis_percent"] = [v / 100.0 for v in raw["necrosis_percent"]]
    assert (raw["necrosis_percent"] % 1 != 0).any() and (raw["fibrosis_percent"] > 1).any()
    with pytest.raises(ClinicalTableError, match="percent columns in different scales") as info:
        load_clinical(_csv(raw, tmp_path / "t.csv"))
    assert "necrosis_percent: fraction" in str(info.value)
    assert "fibrosis_percent: percent" in str(info.value)


# ---- columns and encodings ----------------------------------------------------------------


@case(
    "duplicated column",
    "CSV (and xlsx) with `age` twice",
    "ClinicalTableError: 'age' appears 2 times (columns 3, 37); nothing read as age.1",
)
def _duplicated_column(tmp_path, capsys, request):
    raw = _base()
    raw.insert(len(raw.columns), "age ", raw["age"] + 1, allow_duplicates=True)
    for path in (_csv(raw, tmp_path / "d.csv"), _write_xlsx(raw, tmp_path / "d.xlsx")):
        with pytest.raises(ClinicalTableError, match="duplicated column") as info:
            load_clinical(path)
        assert str(path) in str(info.value)
        assert "'age' appears 2 times (columns 3, 37)" in str(info.value)


@case(
    "PNG named .csv",
    "an image renamed clinical.csv",
    "ClinicalTableError: not a text table but a PNG image",
)
def _png(tmp_path, capsys, request):
    path = tmp_path / "clinical.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with pytest.raises(ClinicalTableError, match="clinical.csv: not a text table but a PNG"):
        load_clinical(path)


@case(
    "xlsx named .csv",
    "the published workbook renamed clinical.csv",
    "ClinicalTableError: a ZIP archive (an .xlsx workbook?): give it its .xlsx suffix",
)
def _xlsx_as_csv(tmp_path, capsys, request):
    path = _write_xlsx(_base(), tmp_path / "c.xlsx").rename(tmp_path / "clinical.csv")
    with pytest.raises(ClinicalTableError, match=r"not a text table but a ZIP archive \(an .xlsx"):
        load_clinical(path)


@case(
    "UTF-16 table",
    "CSV saved as UTF-16 with a byte-order mark (Excel's Unicode Text); and without one",
    "with the mark: loads, values equal; without: ClinicalTableError naming UTF-16",
)
def _utf16(tmp_path, capsys, request):
    path = tmp_path / "u16.csv"
    path.write_bytes(codecs.BOM_UTF16_LE + _base().to_csv(index=False).encode("utf-16-le"))
    df = load_clinical(path)
    pd.testing.assert_frame_equal(df, _reference(), check_exact=False, rtol=1e-12)
    path.write_bytes(_base().to_csv(index=False).encode("utf-16-le"))
    with pytest.raises(ClinicalTableError, match="UTF-16 text without a byte-order mark"):
        load_clinical(path)


@case(
    "undecodable bytes",
    "a CSV holding byte 0x81 (neither UTF-8 nor Windows-1252)",
    "ClinicalTableError naming the byte, its offset and the encodings tried",
)
def _undecodable(tmp_path, capsys, request):
    path = tmp_path / "b.csv"
    text = _base().to_csv(index=False).encode()
    path.write_bytes(text.replace(b"CRLM-CT-1002", b"CRLM-CT-\x81002"))
    with pytest.raises(ClinicalTableError, match=r"neither UTF-8 nor Windows-1252 text \(byte "
                       r"0x81 at offset \d+\)"):  # fmt: skip
        load_clinical(path)


# ---- command line ---------------------------------------------------------------------------


@case(
    "notebooks --only 99",
    "`crlm notebooks --only 99` (no such notebook)",
    "exit 2 before the data step: ArgumentError naming 99 and the notebooks there are",
)
def _only_unknown(tmp_path, capsys, request):
    with _cwd(REPO):
        rc, _, err = _crlm(["notebooks", "--profile", "smoke", "--data", str(tmp_path / "no"),
                            "--only", "02", "99"], capsys)  # fmt: skip
    assert rc == 2
    _one_line_user_error(err, "ArgumentError", "--only 99: no such notebook", "01, 02")
    from crlm_lib.notebooks import select_notebooks

    assert [nb.name[:2] for nb in select_notebooks(["1", "03"], REPO)] == ["01", "03"]


@case(
    "predict --tta -5, --seed -1",
    "`crlm predict --tta -5`, `crlm train --seed -1`",
    "exit 2 from argparse: must be at least 0; predict_new with PredictOptions(n_tta=-5) raises ArgumentError",
)
def _negative_numbers(tmp_path, capsys, request):
    argv = ["predict", "--run", str(tmp_path / "r"), "--patient", str(tmp_path / "p"),
            "--out", str(tmp_path / "o")]  # fmt: skip
    rc, _, err = _crlm([*argv, "--tta", "-5"], capsys)
    assert rc == 2 and "--tta: must be at least 0, got -5" in err and "Traceback" not in err
    rc, _, err = _crlm(["train", "--model", "fong", "--out", str(tmp_path / "r"), "--seed",
                        "-1"], capsys)  # fmt: skip
    assert rc == 2 and "--seed: must be at least 0, got -1" in err
    from crlm_lib.errors import ArgumentError
    from crlm_lib.predict import PredictOptions, predict_new

    with pytest.raises(ArgumentError, match="must be at least 0, got -5"):
        predict_new([tmp_path / "r"], [tmp_path / "p"], tmp_path / "o", None,
                     PredictOptions(n_tta=-5))  # fmt: skip


@case(
    "patient IDs equal after sanitising",
    "`crlm predict --patient` outputs of `Müller-01` and `Mäller-01` (both `M_ller-01`)",
    "two folders: the sanitised name + an 8-digit hash of the ID; plain IDs unchanged",
)
def _sanitised_collision(tmp_path, capsys, request):
    from crlm_lib.patient_outputs import safe_name as _safe_name

    names = {_safe_name(pid) for pid in ("Müller-01", "Mäller-01", "M_ller-01", "M ller-01")}
    assert len(names) == 4 and "M_ller-01" in names
    assert all(n.startswith("M_ller-01") for n in names)
    assert _safe_name("CRLM-CT-1001") == "CRLM-CT-1001"
    assert _safe_name("Müller-01") == _safe_name("Müller-01")  # stable
    assert _safe_name("../..").startswith("patient-") and "/" not in _safe_name("a/b")


@case(
    "read-only or full output folder",
    "`crlm train --out R` where writing R/metrics.json fails with errno 30 (read-only file "
    "system) or 28 (no space left)",
    "exit 2: FileAccessError naming the file and what to do; another OSError keeps its traceback",
)
def _read_only_output(tmp_path, capsys, request):
    import crlm_lib.atomic as atomic
    import crlm_lib.cli as cli

    c = request.getfixturevalue("cohort")
    fsync = atomic._fsync
    for code, todo in ((errno.EROFS, "make the folder writable"), (errno.ENOSPC, "free space")):
        run = tmp_path / f"run{code}"

        def failing_fsync(path, code=code):
            if ".metrics." in str(path):
                raise OSError(code, os.strerror(code), str(path))
            fsync(path)

        with _cwd(c.root), pytest.MonkeyPatch.context() as mp:
            mp.setattr(atomic, "_fsync", failing_fsync)
            rc, _, err = _crlm(["train", "--model", "fong", "--profile", "smoke", "--data",
                                str(c.data), "--clinical", str(c.clinical), "--out", str(run)],
                               capsys)  # fmt: skip
        assert rc == 2
        _one_line_user_error(err, "FileAccessError", f"cannot write {run}", os.strerror(code),
                             todo)  # fmt: skip
        assert not list(run.glob(".*.tmp"))  # the atomic writer left nothing behind

    def no_permission(_):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x"))

    def bug(_):
        raise OSError(errno.EBADF, "Bad file descriptor")

    parser = cli.build_parser()
    synth = parser._subparsers._group_actions[0].choices["synth"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "build_parser", lambda: parser)
        synth.set_defaults(func=no_permission)
        rc, _, err = _crlm(["synth", "--out", str(tmp_path / "x")], capsys)
        assert rc == 2
        _one_line_user_error(err, "FileAccessError", f"cannot access {tmp_path / 'x'}")
        synth.set_defaults(func=bug)
        with pytest.raises(OSError, match="Bad file descriptor"):
            cli.main(["synth", "--out", str(tmp_path / "x")])


@case(
    "too few patients to train",
    "`crlm train` on 3 patients; on a header-only table",
    "exit 2: one line saying the 8:1:1 split needs at least 6 patients",
)
def _too_few(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    for rows, name in ((3, "three.csv"), (0, "header.csv")):
        path = _csv(c.table().iloc[:rows], tmp_path / name)
        with _cwd(c.root):
            rc, _, err = _crlm(["train", "--model", "fong", "--profile", "smoke", "--data",
                                str(c.data), "--clinical", str(path), "--out",
                                str(tmp_path / f"run{rows}")], capsys)  # fmt: skip
        assert rc == 2, err
        _one_line_user_error(err, "needs at least 6")


@case(
    "render before the notebooks",
    "`crlm render` when no notebook has been executed for the profile",
    "exit 2: MissingNotebookError in one line: run `crlm notebooks --profile smoke` first",
)
def _render_first(tmp_path, capsys, request):
    (tmp_path / "crlm_lib").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    with _cwd(tmp_path):
        rc, _, err = _crlm(["render", "--profile", "smoke"], capsys)
    assert rc == 2
    _one_line_user_error(err, "MissingNotebookError", "crlm notebooks --profile smoke",
                         "make paper")  # fmt: skip


@case(
    "missing --run folder",
    "`crlm evaluate --run`, `crlm predict --run`, `crlm model-card --run` on a missing folder",
    "exit 2 before the data step: MissingRunError naming the folder",
)
def _missing_run(tmp_path, capsys, request):
    run = tmp_path / "nope"
    data = ["--profile", "smoke", "--data", str(tmp_path / "absent")]
    for argv in (["evaluate", *data, "--run", str(run)],
                 ["predict", *data, "--run", str(run), "--out", str(tmp_path / "p.csv")],
                 ["model-card", "--run", str(run), "--out", str(tmp_path / "m.md")]):  # fmt: skip
        rc, _, err = _crlm(argv, capsys)
        assert rc == 2
        _one_line_user_error(err, "MissingRunError", f"run folder {run} does not exist")
    run.mkdir()
    rc, _, err = _crlm(["evaluate", *data, "--run", str(run)], capsys)
    assert rc == 2
    _one_line_user_error(err, "MissingRunError", str(run / "predictions.csv"))


@case(
    "run killed after 2 of 6 epochs",
    "`crlm model-card`, `crlm predict --patient` and `crlm predict` (cohort) on a run folder "
    "whose training was killed after epoch 2 of 6",
    "model card: 'INCOMPLETE RUN: 2 of 6 planned epochs done', cut points 'none stored' (never "
    "'OS [], DFS []'); predict: exit 2, IncompleteRunError with the resume command; resumed: "
    "finished",
)
def _killed_run(tmp_path, capsys, request):
    import crlm_lib.train as T

    c = request.getfixturevalue("cohort")
    run, card = tmp_path / "run", tmp_path / "card.md"
    train = ["train", "--model", "clinical_mlp", "--profile", "smoke", "--data", str(c.data),
             "--clinical", str(c.clinical), "--out", str(run), "--epochs", "6"]  # fmt: skip
    logged = T.CSVLogger.epoch_completed

    def killed_after_epoch_2(self, state):
        logged(self, state)
        if state.epoch == 2:
            raise KeyboardInterrupt("killed")

    with _cwd(c.root), pytest.MonkeyPatch.context() as mp:
        mp.setattr(T.CSVLogger, "epoch_completed", killed_after_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            _crlm(train, capsys)
    assert len(pd.read_csv(run / "history.csv")) == 2 and (run / "last.pt").is_file()
    assert _crlm(["model-card", "--run", str(run), "--out", str(card)], capsys)[0] == 0
    text = card.read_text()
    assert "INCOMPLETE RUN: 2 of 6 planned epochs done" in text and "NOT finished" in text
    assert "[]" not in text and "Risk-group cut points: none stored" in text
    patient = c.data / "Colorectal-Liver-Metastases" / c.ids[0]
    with _cwd(c.root):
        for argv in (["predict", "--run", str(run), "--patient", str(patient), "--out",
                      str(tmp_path / "p")],
                     ["predict", "--run", str(run), "--profile", "smoke", "--data", str(c.data),
                      "--clinical", str(c.clinical), "--out", str(tmp_path / "p.csv")]):  # fmt: skip
            rc, _, err = _crlm(argv, capsys)
            assert rc == 2 and "older version" not in err
            _one_line_user_error(err, "IncompleteRunError", "2 of 6 planned epochs done",
                                 f"crlm train --model clinical_mlp --profile smoke --seed 0 "
                                 f"--out {run} --epochs 6")  # fmt: skip
        assert _crlm(train, capsys)[0] == 0  # the command given resumes it
    assert _crlm(["model-card", "--run", str(run), "--out", str(card)], capsys)[0] == 0
    text = card.read_text()
    assert "INCOMPLETE" not in text and "planned epochs done, finished" in text
    assert "Risk-group cut points (tertiles" in text


@case(
    "two identical training runs",
    "`crlm train --model clinical_mlp --epochs 2` twice, into two folders",
    "run.json, best.pt, last.pt, history.csv, predictions.csv, metrics.json equal byte for "
    "byte; the wall-clock seconds only in timing.json",
)
def _identical_runs(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    for name in ("a", "b"):
        with _cwd(c.root):
            rc, _, err = _crlm(["train", "--model", "clinical_mlp", "--profile", "smoke",
                                "--data", str(c.data), "--clinical", str(c.clinical), "--out",
                                str(tmp_path / name), "--epochs", "2"], capsys)  # fmt: skip
        assert rc == 0, err
    for name in ("run.json", "best.pt", "last.pt", "history.csv", "predictions.csv",
                 "metrics.json"):  # fmt: skip
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (tmp_path / "a" / "timing.json").is_file()


def _crlm_process(*argv: str) -> subprocess.Popen:
    """``crlm`` in a process of its own (stdout and stderr captured as text)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "crlm_lib.cli", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _cohort_files(folder: Path) -> dict[str, bytes]:
    """Every file of a synthetic cohort folder but its lock, by relative path."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".synthetic.lock")
    }


def _serial_cohort(folder: Path, n: int) -> dict[str, bytes]:
    from crlm_lib.config import get_profile
    from crlm_lib.data.synthetic import write_cohort

    write_cohort(folder, n_patients=n, seed=0, synth=get_profile("smoke").synth, progress=False)
    return _cohort_files(folder)


@case(
    "concurrent crlm synth on one folder",
    "two `crlm synth --out X --n 4` processes started together",
    "serialised by the folder's lock (.synthetic.lock): both exit 0, no traceback, no .tmp "
    "folder left; the files equal a serial run's",
)
def _concurrent_synth(tmp_path, capsys, request):
    argv = ["synth", "--out", str(tmp_path / "x"), "--n", "4", "--profile", "smoke", "--jobs", "1"]
    procs = [_crlm_process(*argv) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0 and "Traceback" not in err, err
    root = tmp_path / "x" / "Colorectal-Liver-Metastases"
    assert not list(root.glob(".tmp-*"))
    assert _cohort_files(tmp_path / "x") == _serial_cohort(tmp_path / "serial", 4)


@case(
    "raw cohort half-written",
    "`crlm synth --n 16` killed (SIGKILL) after its first patients; then run again, and the "
    "data step's `ensure_cohort` on a cohort whose marker or a patient folder is missing",
    "detected (no cohort_complete.json, written last) and finished: the files equal a serial "
    "run's, no .tmp folder left",
)
def _half_written(tmp_path, capsys, request):
    from crlm_lib.config import get_profile
    from crlm_lib.data.synthetic import COMPLETE_MARKER, cohort_is_complete, ensure_cohort

    out, synth = tmp_path / "x", get_profile("smoke").synth
    root = out / "Colorectal-Liver-Metastases"
    proc = _crlm_process("synth", "--out", str(out), "--n", "16", "--profile", "smoke",
                         "--jobs", "1")  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(root.glob("CRLM-CT-*"))) < 2 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (out / COMPLETE_MARKER).exists() and not cohort_is_complete(out, 16)
    rc, _, err = _crlm(["synth", "--out", str(out), "--n", "16", "--profile", "smoke"], capsys)
    assert rc == 0, err
    serial = _serial_cohort(tmp_path / "serial", 16)
    assert _cohort_files(out) == serial and not list(root.glob(".tmp-*"))
    (out / COMPLETE_MARKER).unlink()  # killed before its last write
    shutil.rmtree(root / "CRLM-CT-1005")  # a patient folder lost
    (root / ".tmp-CRLM-CT-1005").mkdir()  # and a dead writer's temporary folder
    assert ensure_cohort(out, 16, 0, synth) is True and ensure_cohort(out, 16, 0, synth) is False
    assert _cohort_files(out) == serial and not list(root.glob(".tmp-*"))


@case(
    "cohort folder locked by another run",
    "`crlm synth --out X` and `crlm data --profile smoke` with `--lock-timeout 0` while "
    "another process holds the cohort folder's lock",
    "exit 2: FolderLocked in one line naming the lock file and the owner's PID",
)
def _cohort_locked(tmp_path, capsys, request):
    from crlm_lib.data.synthetic import COHORT_LOCK_NAME, cohort_lock

    repo = tmp_path / "repo"
    (repo / "crlm_lib").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    for folder, argv in (
        (tmp_path / "x", ["synth", "--out", str(tmp_path / "x")]),
        (repo / "data" / "raw" / "synthetic" / "smoke", ["data", "--profile", "smoke"]),
    ):
        with cohort_lock(folder), _cwd(repo):
            rc, _, err = _crlm([*argv, "--lock-timeout", "0"], capsys)
        assert rc == 2
        _one_line_user_error(err, "FolderLocked", str(folder / COHORT_LOCK_NAME),
                             f"owner PID {os.getpid()}")  # fmt: skip


@case(
    "crlm outside a checkout, --workdir",
    "`crlm data --data D --clinical C` run in a folder outside any checkout; the same from "
    "there with `--workdir W`; `crlm notebooks` and `crlm render` outside a checkout",
    "data: exit 0, data/processed/smoke-real made in the current folder, then in W; "
    "notebooks, render: exit 2, ArgumentError 'needs a checkout of the repository'",
)
def _outside_checkout(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    data = ["--profile", "smoke", "--data", str(c.data), "--clinical", str(c.clinical)]
    with _cwd(here):
        for argv, made in ((["data", *data], here), (["--workdir", str(there), "data", *data],
                                                     there)):  # fmt: skip
            rc, _, err = _crlm(argv, capsys)
            assert rc == 0, err
            assert (made / "data" / "processed" / "smoke-real" / "report.csv").is_file()
        for command in ("notebooks", "render"):
            rc, _, err = _crlm([command, "--profile", "smoke"], capsys)
            assert rc == 2
            _one_line_user_error(err, "ArgumentError", f"crlm {command} needs a checkout",
                                 str(here))  # fmt: skip
        rc, _, err = _crlm(["data", "--workdir", str(tmp_path / "absent"), *data], capsys)
    assert rc == 2
    _one_line_user_error(err, "ArgumentError", "--workdir", "no such folder")


@case(
    "run of the smoke profile, no --profile",
    "`crlm evaluate --run R` and `crlm predict --run R --out p.csv` on a smoke-profile run "
    "without --profile; the same with --profile cpu",
    "the run's profile (run.json) is used: exit 0; with --profile cpu: exit 2, ArgumentError "
    "naming both profiles",
)
def _profile_from_run(tmp_path, capsys, request):
    c = request.getfixturevalue("cohort")
    run = tmp_path / "run"
    data = ["--data", str(c.data), "--clinical", str(c.clinical)]
    with _cwd(c.root):
        rc, _, err = _crlm(["train", "--model", "clinical_mlp", "--profile", "smoke", *data,
                            "--out", str(run), "--epochs", "1"], capsys)  # fmt: skip
        assert rc == 0, err
        for argv in (["evaluate", "--run", str(run), *data],
                     ["predict", "--run", str(run), *data, "--out", str(tmp_path / "p.csv")]):  # fmt: skip
            rc, _, err = _crlm(argv, capsys)
            assert rc == 0, err
            rc, _, err = _crlm([*argv, "--profile", "cpu"], capsys)
            assert rc == 2
            _one_line_user_error(err, "ArgumentError", "--profile cpu", "trained with profile "
                                 "smoke", "leave --profile out")  # fmt: skip
    assert (run / "metrics_ci.csv").is_file() and len(pd.read_csv(tmp_path / "p.csv")) > 0


def _as_patient(src: Path, dest: Path, patient_id: str) -> Path:
    """A copy of the patient folder ``src`` whose DICOM files all carry ``patient_id``."""
    import pydicom

    shutil.copytree(src, dest)
    for f in dest.rglob("*.dcm"):
        ds = pydicom.dcmread(f)
        ds.PatientID = patient_id
        ds.save_as(f)
    return dest


@case(
    "training-set membership by images",
    "`crlm predict --patient`: a test patient's images under a training patient's ID; a "
    "training patient's images under a new ID; a run.json without its image record",
    "in_training_set False / True (decided by the CT's SOP instance UIDs, not the ID); "
    "without the record: empty, and the summary says membership is unknown",
)
def _membership_by_images(tmp_path, capsys, request):
    import json

    c = request.getfixturevalue("cohort")
    run = tmp_path / "run"
    with _cwd(c.root):
        rc, _, err = _crlm(["train", "--model", "clinical_mlp", "--profile", "smoke", "--data",
                            str(c.data), "--clinical", str(c.clinical), "--out", str(run),
                            "--epochs", "1"], capsys)  # fmt: skip
    assert rc == 0, err
    rec = json.loads((run / "run.json").read_text())
    trained = [*rec["train_ids"], *rec["val_ids"]]
    assert len(rec["training_images"]["fingerprints"]) == len(trained)
    source = c.data / "Colorectal-Liver-Metastases"
    new = tmp_path / "new"
    _as_patient(source / rec["test_ids"][0], new / "a", trained[0])  # same ID, other images
    _as_patient(source / trained[0], new / "b", "NEW-0001")  # training images, new ID
    argv = ["predict", "--run", str(run), "--patient", str(new), "--tta", "0", "--no-report",
            "--no-heatmaps", "--allow-missing"]  # fmt: skip

    def member() -> dict:
        rc, _, err = _crlm([*argv, "--out", str(tmp_path / "out")], capsys)
        assert rc == 0, err
        table = pd.read_csv(tmp_path / "out" / "predictions.csv").set_index("patient_id")
        return {pid: (row["in_training_set"], row["summary"]) for pid, row in table.iterrows()}

    got = member()
    assert got[trained[0]][0] == False and got["NEW-0001"][0] == True  # noqa: E712
    assert "training set" not in got[trained[0]][1] and "optimistic" in got["NEW-0001"][1]
    del rec["training_images"]
    (run / "run.json").write_text(json.dumps(rec))
    for value, summary in member().values():
        assert pd.isna(value) and "in the model's training set is unknown" in summary


@case(
    "crlm predict --patient refusals",
    "`crlm predict --patient` of a trained run: no clinical row; a table with a column `CEA`; "
    "a text file named .zip; a ZIP whose member is `../evil.dcm`; a --run folder without "
    "run.json; a clinical anchor's run (`crlm train --model cox`)",
    "exit 2, one line each: MissingPredictorError naming the patient, the missing predictors "
    "with their coding and --allow-missing; ClinicalTableError 'CEA' (did you mean "
    "'carcinoembryonic_antigen'?); PredictError neither a folder nor a ZIP archive; PredictError "
    "member '../evil.dcm' leaves the archive; MissingRunError run.json not found; PredictError "
    "clinical anchors are not saved as models",
)
def _predict_refusals(tmp_path, capsys, request):
    import zipfile

    c = request.getfixturevalue("cohort")
    run, anchor = tmp_path / "run", tmp_path / "anchor"
    data = ["--profile", "smoke", "--data", str(c.data), "--clinical", str(c.clinical)]
    with _cwd(c.root):
        for model, out in (("clinical_mlp", run), ("cox", anchor)):
            rc, _, err = _crlm(["train", "--model", model, *data, "--out", str(out),
                                "--epochs", "1"], capsys)  # fmt: skip
            assert rc == 0, err
    pid = sorted(p.name for p in (c.data / "Colorectal-Liver-Metastases").iterdir())[0]
    patient = c.data / "Colorectal-Liver-Metastases" / pid
    table = pd.read_csv(c.clinical).rename(columns={"carcinoembryonic_antigen": "CEA"})
    bad_zip, evil_zip = tmp_path / "notes.zip", tmp_path / "evil.zip"
    bad_zip.write_text("not a zip")
    with zipfile.ZipFile(evil_zip, "w") as zf:
        zf.writestr("../evil.dcm", b"DICM")
    (tmp_path / "empty").mkdir()
    cases = [
        ([run], patient, [], ("MissingPredictorError", pid, "sex (", "--allow-missing")),
        ([run], patient, ["--clinical", str(_csv(table, tmp_path / "cea.csv"))],
         ("ClinicalTableError", "'CEA' (did you mean 'carcinoembryonic_antigen'?)")),
        ([run], bad_zip, [], ("PredictError", str(bad_zip), "neither a folder nor a ZIP archive")),
        ([run], evil_zip, [], ("PredictError", "member '../evil.dcm' leaves the archive")),
        ([tmp_path / "empty"], patient, [], ("MissingRunError", "run.json not found")),
        ([anchor], patient, [], ("PredictError", "clinical anchors are not saved as models")),
    ]  # fmt: skip
    for runs, source, extra, needles in cases:
        argv = ["predict", *[a for r in runs for a in ("--run", str(r))], "--patient",
                str(source), *extra, "--out", str(tmp_path / "out"), "--no-report",
                "--no-heatmaps", "--tta", "0"]  # fmt: skip
        rc, _, err = _crlm(argv, capsys)
        assert rc == 2, (needles, err)
        _one_line_user_error(err, *needles)


# --------------------------------------------------------------------------------------------
# the test
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("item", CASES, ids=[c.name for c in CASES])
def test_corpus_case(item: Case, tmp_path, capsys, request):
    item.run(tmp_path, capsys, request)


def test_every_case_has_its_row_in_docs_inputs():
    page = (REPO / "docs" / "inputs.md").read_text(encoding="utf-8")
    section = page.split("## Inputs and faults that were once silently wrong")[1]
    for item in CASES:
        assert f"| {item.name} | {item.input} | {item.outcome} |" in section, item.name


def test_valid_tables_read_as_before(tmp_path):
    """The synthetic table (percent) and the sheet's fractions read exactly as before, in
    sizes where a percent column can hold only 0 and 1."""
    from crlm_lib.data.synthetic import simulate_cohort

    for n, seed in ((6, 3), (12, 0), (40, 3)):
        raw = simulate_cohort(n, seed=seed).clinical
        df = load_clinical(_csv(raw, tmp_path / "c.csv"))
        for col in PERCENT_COLUMNS:
            present = raw[col] != MISSING_CODE
            np.testing.assert_array_equal(df[col].to_numpy()[present], raw.loc[present, col])
