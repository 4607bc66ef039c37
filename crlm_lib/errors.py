"""The errors a user of ``crlm`` can cause and fix: one base class, :class:`CRLMUserError`.

Every problem with the *input* (a clinical table that breaks the schema, a DICOM series that
cannot be read, a data folder without patients, an argument out of range, a run folder made for
another cohort) raises a subclass of :class:`CRLMUserError` whose message names the patient and
the file. The ``crlm`` command prints such an error as one line and exits with status 2, without
a traceback; every other exception is a bug and keeps its traceback.

Subclasses live beside the code that raises them (``data.clinical.ClinicalTableError``,
``data.tcia.CohortDataError`` and its ``DicomSeriesError``-style children) and derive from this
base; the ones below have no better home.
"""

from __future__ import annotations


class CRLMUserError(Exception):
    """Base of every error caused by the user's input; ``crlm`` prints it in one line, exit 2."""


class EmptyCohortError(CRLMUserError):
    """The data folder holds no patient that could be loaded (empty, or no CT series)."""


class RunMismatchError(CRLMUserError):
    """A run folder holds a run made on another cohort, split or configuration."""


class ArgumentError(CRLMUserError):
    """A command-line or function argument is out of its allowed range."""
