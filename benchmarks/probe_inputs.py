"""Run every case of the unusual-input corpora and count the outcomes.

Usage::

    python benchmarks/probe_inputs.py [--only TEXT ...] [--quiet]

The corpora are the tests ``tests/data/test_corpus_dicom.py`` (DICOM files and the cache),
``test_corpus_clinical.py`` (clinical tables and the command line) and
``test_corpus_refusals.py`` (inputs and faults that used to be silently wrong or end in a
traceback); ``docs/inputs.md`` has one row per case. Each case runs as its test runs it, outside
pytest, in a temporary folder, with its output captured, and is counted as

* ``clear error``: it passed, and its documented outcome is a refusal (an error naming file,
  patient or column, exit 2 with one line, an exclusion with its reason);
* ``correct``: it passed, and the input is used with the right values;
* ``silent``: an assertion failed: the input gave another result than the documented one (a
  wrong value, exit 0 where a refusal was due, a message without what it must name);
* ``traceback``: another exception escaped (a bug).

Prints one line per case (``--quiet``: only those not passing), then the counts; exits 1 unless
there are 0 silent and 0 traceback. ``--only`` runs the cases whose name contains one of the
texts. The whole corpus takes a few minutes on the 2-core development machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "data")]

import test_corpus_clinical as clinical  # noqa: E402
import test_corpus_dicom as dicom  # noqa: E402
import test_corpus_refusals as refusals  # noqa: E402

OUTCOMES = ("clear error", "correct", "silent", "traceback")


class Capture:
    """What a case's ``capsys`` argument offers: ``readouterr()`` -> (stdout, stderr) written
    since the last call, while :meth:`running` redirects both streams."""

    def __init__(self) -> None:
        self.out, self.err = io.StringIO(), io.StringIO()

    def readouterr(self) -> tuple[str, str]:
        said = (self.out.getvalue(), self.err.getvalue())
        for stream in (self.out, self.err):
            stream.seek(0)
            stream.truncate()
        return said

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        with contextlib.redirect_stdout(self.out), contextlib.redirect_stderr(self.err):
            yield


class Fixtures:
    """What a case's ``request`` argument offers: ``getfixturevalue("cohort")``, the on-disk
    cohort of the command-line cases, built once under ``base``."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self._cohort = None

    def getfixturevalue(self, name: str):
        if name != "cohort":
            raise KeyError(f"no fixture {name!r} outside pytest")
        if self._cohort is None:
            self._cohort = clinical.make_cohort(self.base / "cohort")
        return self._cohort


def _dicom_case(name: str) -> Callable[[Path, Capture, Fixtures], str]:
    """A DICOM case as ``test_corpus_dicom.test_corpus`` runs it; returns its documented kind
    (an excluded patient is a clear error)."""

    def run(tmp: Path, capture: Capture, fixtures: Fixtures) -> str:
        write, seen = dicom.CASES[name], {}

        def recording(paths):
            seen["expect"] = write(paths)
            return seen["expect"]

        dicom.CASES[name] = recording
        try:
            dicom.test_corpus(name, tmp)
        finally:
            dicom.CASES[name] = write
        return "clear error" if seen["expect"].status == "excluded" else "correct"

    return run


def _registry_case(item) -> Callable[[Path, Capture, Fixtures], str]:
    """A case of a ``corpus.Registry``; returns its documented kind (``Case.kind``)."""

    def run(tmp: Path, capture: Capture, fixtures: Fixtures) -> str:
        item.run(tmp, capture, fixtures)
        return item.kind

    return run


def all_cases() -> list[tuple[str, str, Callable[[Path, Capture, Fixtures], str]]]:
    """``(corpus, name, run)`` of every case, in the corpora's order."""
    cases = [("dicom", name, _dicom_case(name)) for name in dicom.CASES]
    cases += [("clinical", item.name, _registry_case(item)) for item in clinical.CASES]
    cases += [("refusals", item.name, _registry_case(item)) for item in refusals.CASES]
    return cases


def run_case(run: Callable, base: Path, fixtures: Fixtures) -> tuple[str, str]:
    """``(outcome, detail)`` of one case (see the module docstring)."""
    capture = Capture()
    tmp = Path(tempfile.mkdtemp(dir=base))
    try:
        with capture.running(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return run(tmp, capture, fixtures), ""
    except AssertionError as err:
        return "silent", (str(err) or "assertion failed").splitlines()[0][:200]
    except BaseException as err:  # noqa: BLE001 - a case's escaping exception is the finding
        if isinstance(err, KeyboardInterrupt) and not str(err):
            raise
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        return "traceback", last[:200]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=None, help="cases whose name contains")
    parser.add_argument("--quiet", action="store_true", help="print only the cases not passing")
    args = parser.parse_args(argv)
    cases = [c for c in all_cases() if args.only is None or any(t in c[1] for t in args.only)]
    counts: Counter[str] = Counter()
    with tempfile.TemporaryDirectory(prefix="probe-inputs-") as work:
        fixtures = Fixtures(Path(work))
        for corpus, name, run in cases:
            outcome, detail = run_case(run, Path(work), fixtures)
            counts[outcome] += 1
            if not args.quiet or outcome in ("silent", "traceback"):
                print(f"{corpus:<9} {outcome:<12} {name}" + (f"  -- {detail}" if detail else ""))
    print(f"\n{len(cases)} cases")
    for outcome in OUTCOMES:
        print(f"{outcome:<12} {counts[outcome]:>4}")
    return 1 if counts["silent"] or counts["traceback"] else 0


if __name__ == "__main__":
    sys.exit(main())
