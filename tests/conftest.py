"""Fixtures shared by several test modules."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_tcia(tmp_path_factory) -> tuple[Path, Path]:
    """``(workdir, cohort_dir)``: 12 synthetic patients at the smoke profile's size, written in
    the TCIA layout and preprocessed as a real download (``--data cohort_dir --workdir
    workdir``: cache in ``workdir/data/processed/smoke-real``). The CV tests of the executors
    and of torchrun share it."""
    from crlm_lib.config import get_profile, resolve_paths
    from crlm_lib.data.preprocess import preprocess_cohort
    from crlm_lib.data.synthetic import write_cohort

    root = tmp_path_factory.mktemp("tiny_tcia")
    prof = get_profile("smoke")
    cohort_dir = write_cohort(
        root / "tcia", n_patients=12, seed=0, synth=prof.synth, progress=False, n_jobs=1
    )
    preprocess_cohort(resolve_paths(prof, cohort_dir, root=root), prof, n_jobs=1, progress=False)
    return root, cohort_dir
