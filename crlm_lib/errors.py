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

import errno


class CRLMUserError(Exception):
    """Base of every error caused by the user's input; ``crlm`` prints it in one line, exit 2."""


class EmptyCohortError(CRLMUserError):
    """The data folder holds no patient that could be loaded (empty, or no CT series)."""


class RunMismatchError(CRLMUserError):
    """A run folder holds a run made on another cohort, split or configuration."""


class ArgumentError(CRLMUserError):
    """A command-line or function argument is out of its allowed range."""


class TooFewPatientsError(CRLMUserError):
    """The cohort has fewer patients than a split needs (names the count and the minimum)."""


class MissingRunError(CRLMUserError):
    """A run folder, or a file a command reads from it, does not exist."""


class IncompleteRunError(CRLMUserError):
    """A run folder whose training stopped before it ended (killed after some epochs)."""


class PredictError(CRLMUserError):
    """A new patient cannot be scored (bad archive, run without stored training reference);
    ``crlm_lib.predict`` and ``crlm_lib.data.new_patients`` raise it."""


class FileAccessError(CRLMUserError):
    """A file or folder could not be written or read: read-only folder or file system, no
    space left, no permission (:func:`file_access_error`)."""


class ExplainError(RuntimeError):
    """An explanation cannot be computed for this patient / model / file (a state of the
    program, not the user's input: derives from ``RuntimeError``); ``crlm_lib.explain`` and
    ``crlm_lib.plots`` raise it."""


class GradCamLayerError(ExplainError):
    """The model has no usable ``gradcam_layer`` (``None``, or an output Grad-CAM cannot use)."""


#: ``errno`` values of an :class:`OSError` that the user fixes (the place written to or read
#: from), as opposed to a bug: read-only file system, no space left, disk quota, no permission.
ACCESS_ERRNOS: frozenset[int] = frozenset(
    {errno.EROFS, errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM}
)


def file_access_error(err: OSError) -> FileAccessError | None:
    """The :class:`FileAccessError` an :class:`OSError` of :data:`ACCESS_ERRNOS` stands for,
    naming the path and what to do; ``None`` for any other ``OSError`` (a bug, or an error
    handled elsewhere).

    ``crlm`` maps these at its top level (``cli.main``) rather than around each write: every
    file goes through ``crlm_lib.atomic``, whose temporary file sits in the destination
    folder, so the path in the error names that folder.
    """
    if err.errno not in ACCESS_ERRNOS:
        return None
    path = err.filename if err.filename is not None else "a file"
    reason = err.strerror or str(err)
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        todo = "free space (or quota) on that disk, or write the outputs to another folder"
        return FileAccessError(f"cannot write {path}: {reason}; {todo}")
    if err.errno == errno.EROFS:
        todo = "make the folder writable, or write the outputs to another folder"
        return FileAccessError(f"cannot write {path}: {reason}; {todo}")
    todo = "give this user access to it, or use another folder"
    return FileAccessError(f"cannot access {path}: {reason}; {todo}")
