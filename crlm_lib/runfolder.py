"""A run folder: the one owner of the files a torch run (or an anchor's ``crlm train`` run)
keeps, and of reading them back.

One writer per file: ``run.json`` is written by :meth:`RunFolder.write_record` (the record at
the start of training) and :meth:`RunFolder.update_record` (what the end of training adds:
the training reference, the lesion statistics, how training ended), ``history.csv`` by
:meth:`RunFolder.write_history`, ``timing.json`` by :meth:`RunFolder.write_timing`, the
checkpoints by :meth:`RunFolder.save_best` / :meth:`RunFolder.save_last`, the prediction tables
by :meth:`RunFolder.write_predictions`, the scores by :meth:`RunFolder.write_metrics` and
:meth:`RunFolder.write_metrics_ci`. One loader: :meth:`RunFolder.load_model` builds the
registry model a ``run.json`` names and loads its best (else last) checkpoint, for
``evaluation.load_run`` and ``crlm predict`` alike.

The folder's layout::

    run.json                       model, options, profile, seed, split IDs, identity, encoder,
                                   training reference, software, how training ended
    best.pt, last.pt               checkpoints (crlm_lib.checkpoints)
    history.csv, timing.json       one row per epoch; wall-clock seconds per epoch
    predictions.csv                the test patients' Predictions frame
    predictions_step0.csv          an anchored model's test predictions before any step
    predictions_ct_permuted.csv    the image-permutation control
    metrics.json, metrics_ci.csv   scores (crlm train, crlm evaluate, the protocols)

Every file is written atomically (:mod:`crlm_lib.atomic`); the checkpoints and ``history.csv``
are byte-reproducible on the CPU, ``timing.json`` is the one file that differs between
identical runs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.types import PATIENT_ID

if TYPE_CHECKING:
    import torch

    from crlm_lib.config import ModelConfig

__all__ = [
    "BEST_FILE",
    "HISTORY_FILE",
    "LAST_FILE",
    "METRICS_CI_FILE",
    "METRICS_FILE",
    "PERMUTED_FILE",
    "PREDICTIONS_FILE",
    "RECORD_FILE",
    "RUN_FILES",
    "STEP0_FILE",
    "TIMING_FILE",
    "RunFolder",
]

RECORD_FILE = "run.json"
BEST_FILE = "best.pt"
LAST_FILE = "last.pt"
HISTORY_FILE = "history.csv"
#: The wall-clock seconds of each epoch (``handlers.TimingLog``).
TIMING_FILE = "timing.json"
PREDICTIONS_FILE = "predictions.csv"
#: Test-set predictions of a run with the images permuted among its test patients
#: (``evaluation.permuted_predictions``), one block per permutation (column ``permutation``).
PERMUTED_FILE = "predictions_ct_permuted.csv"
#: An anchored model's test predictions before its first optimiser step (written by
#: ``evaluation.fit_predict_torch``): the untrained-start control.
STEP0_FILE = "predictions_step0.csv"
#: Point scores of the run's test predictions (``crlm train``, the papers' split protocol).
METRICS_FILE = "metrics.json"
#: Scores with 95% intervals, tidy (``crlm evaluate``: ``evaluation.bootstrap_scores``).
METRICS_CI_FILE = "metrics_ci.csv"

#: Files of a run folder that belong to one (cohort, split, configuration): removed together
#: when a run is discarded (:meth:`RunFolder.clear`).
RUN_FILES: tuple[str, ...] = (
    BEST_FILE,
    LAST_FILE,
    HISTORY_FILE,
    TIMING_FILE,
    PREDICTIONS_FILE,
    METRICS_FILE,
    METRICS_CI_FILE,
    PERMUTED_FILE,
    RECORD_FILE,
)


class RunFolder:
    """The files of one run folder (see the module docstring for the layout).

    Parameters
    ----------
    path : path
        The folder; nothing is created until something is written.

    Examples
    --------
    >>> run = RunFolder(tmp_path / "acfnet")  # doctest: +SKIP
    >>> run.write_record({"model": "acfnet", "seed": 0})  # doctest: +SKIP
    >>> run.update_record({"best_epoch": 3})["best_epoch"]  # doctest: +SKIP
    3
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def file(self, name: str) -> Path:
        """The path of the folder's file ``name``."""
        return self.path / name

    @property
    def record_path(self) -> Path:
        return self.path / RECORD_FILE

    @property
    def best_path(self) -> Path:
        return self.path / BEST_FILE

    @property
    def last_path(self) -> Path:
        return self.path / LAST_FILE

    @property
    def history_path(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def timing_path(self) -> Path:
        return self.path / TIMING_FILE

    # ---- run.json -----------------------------------------------------------------------------

    def has_record(self) -> bool:
        """Whether the folder holds a ``run.json`` (is a run folder)."""
        return self.record_path.is_file()

    def read_record(self) -> dict[str, Any]:
        """``run.json`` as a dict (``FileNotFoundError`` without one; callers that must name
        the command to run check :meth:`has_record` first)."""
        return json.loads(self.record_path.read_text())

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Write ``run.json`` whole (indented JSON, atomically); creates the folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        atomic.write_json(self.record_path, dict(record), indent=2)

    def update_record(self, entries: Mapping[str, Any]) -> dict[str, Any]:
        """Add ``entries`` to ``run.json`` (existing keys replaced, order kept) and return the
        record written."""
        record = self.read_record()
        record.update(entries)
        self.write_record(record)
        return record

    # ---- history.csv and timing.json ------------------------------------------------------------

    def write_history(self, frame: pd.DataFrame) -> None:
        """``history.csv``: one row per epoch (``handlers.History.to_frame()``)."""
        atomic.write_csv(self.history_path, frame, index=False)

    def read_history(self) -> pd.DataFrame | None:
        """``history.csv`` (an empty frame for a file without rows), ``None`` without one."""
        if not self.history_path.is_file():
            return None
        try:
            return pd.read_csv(self.history_path)
        except pd.errors.EmptyDataError:
            return pd.DataFrame()

    def epochs_done(self) -> int:
        """The epochs recorded in ``history.csv`` (0 without one)."""
        history = self.read_history()
        return 0 if history is None else len(history)

    def read_timing(self) -> list[dict[str, float]]:
        """The rows of ``timing.json`` (``[]`` when absent or unreadable: times are
        informative only)."""
        try:
            return json.loads(self.timing_path.read_text()).get("epochs", [])
        except (OSError, ValueError):
            return []

    def write_timing(self, rows: Sequence[Mapping[str, float]]) -> None:
        """``timing.json``: ``{"epochs": [{"epoch": 1, "seconds": ...}, ...]}``."""
        atomic.write_json(self.timing_path, {"epochs": list(rows)}, indent=1)

    # ---- checkpoints ----------------------------------------------------------------------------

    def save_best(self, weights: Mapping[str, Any], epoch: int, val_loss: float) -> None:
        """``best.pt``: ``{"model": weights, "epoch", "val_loss"}`` (byte-reproducible)."""
        atomic.torch_save(
            self.best_path, {"model": weights, "epoch": epoch, "val_loss": float(val_loss)}
        )

    def save_last(self, checkpoint: Mapping[str, Any]) -> None:
        """``last.pt``: everything an exact resume needs (``handlers.LastCheckpoint``)."""
        atomic.torch_save(self.last_path, dict(checkpoint))

    def read_last(self, map_location: str | torch.device = "cpu") -> Any | None:
        """The content of ``last.pt``, ``None`` without one."""
        import torch

        if not self.last_path.is_file():
            return None
        return torch.load(self.last_path, map_location=map_location, weights_only=False)

    def checkpoint_path(self) -> Path | None:
        """``best.pt`` when present, else ``last.pt`` when present, else ``None``."""
        for path in (self.best_path, self.last_path):
            if path.is_file():
                return path
        return None

    def load_model(
        self, model_config: ModelConfig, record: Mapping[str, Any] | None = None
    ) -> torch.nn.Module:
        """The registry model ``run.json`` names (``model``, ``n_clinical``, ``options``) with
        the weights of :meth:`checkpoint_path`, in eval mode.

        ``model_config`` gives the network sizes (the run's profile's ``model``); ``record``
        avoids reading ``run.json`` again.

        Raises
        ------
        FileNotFoundError
            No ``best.pt`` or ``last.pt`` in the folder.
        checkpoints.TrainingError
            The weights do not fit the network (trained by another version of it).
        """
        from crlm_lib.checkpoints import load_checkpoint  # torch: only when a model is loaded
        from crlm_lib.models import build_model

        rec = self.read_record() if record is None else record
        model = build_model(rec["model"], int(rec["n_clinical"]), model_config, **rec["options"])
        ckpt = self.checkpoint_path()
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint (best.pt / last.pt) in {self.path}")
        load_checkpoint(model, ckpt)
        model.eval()
        return model

    @staticmethod
    def lesion_stats(record: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
        """The lesion-feature statistics a ``run.json`` stores (``lesion_feature_stats``,
        float64 arrays), ``None`` for a run without them."""
        stats = record.get("lesion_feature_stats")
        if stats is None:
            return None
        return {k: np.asarray(v, dtype=np.float64) for k, v in stats.items()}

    # ---- prediction tables ----------------------------------------------------------------------

    def write_predictions(self, frame: pd.DataFrame, name: str = PREDICTIONS_FILE) -> None:
        """A Predictions frame as ``name`` (``predictions.csv`` by default), atomically."""
        atomic.write_csv(self.file(name), frame, index=False)

    def read_predictions(self, name: str = PREDICTIONS_FILE) -> pd.DataFrame | None:
        """The frame :meth:`write_predictions` wrote (patient IDs as strings), ``None``
        without the file."""
        path = self.file(name)
        if not path.is_file():
            return None
        return pd.read_csv(path, dtype={PATIENT_ID: str})

    def has_predictions(self, name: str = PREDICTIONS_FILE) -> bool:
        return self.file(name).is_file()

    # ---- scores ---------------------------------------------------------------------------------

    def write_metrics(self, metrics: Mapping[str, Any]) -> None:
        """Point scores as ``metrics.json`` (atomically; strict JSON, a non-finite score is
        ``null``)."""
        atomic.write_json(self.file(METRICS_FILE), dict(metrics), indent=2)

    def read_metrics(self) -> dict[str, Any] | None:
        """The scores :meth:`write_metrics` wrote, ``None`` without the file."""
        path = self.file(METRICS_FILE)
        return json.loads(path.read_text()) if path.is_file() else None

    def write_metrics_ci(self, tidy: pd.DataFrame) -> None:
        """Scores with intervals (columns ``metric, estimate, low, high, ...``) as
        ``metrics_ci.csv``, atomically."""
        atomic.write_csv(self.file(METRICS_CI_FILE), tidy, index=False)

    def read_metrics_ci(self) -> pd.DataFrame | None:
        """The frame :meth:`write_metrics_ci` wrote, indexed by ``metric``; ``None`` without
        the file."""
        path = self.file(METRICS_CI_FILE)
        return pd.read_csv(path).set_index("metric") if path.is_file() else None

    # ---- the whole folder -----------------------------------------------------------------------

    def present_files(self) -> list[str]:
        """The :data:`RUN_FILES` the folder holds."""
        return [name for name in RUN_FILES if self.file(name).exists()]

    def clear(self) -> None:
        """Remove the :data:`RUN_FILES` (the folder and anything else in it stay)."""
        for name in RUN_FILES:
            self.file(name).unlink(missing_ok=True)
