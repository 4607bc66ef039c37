"""Small display helpers for the notebooks: tables that carry their provenance.

Quarto cell captions (``#| tbl-cap:``) are static text, so a caption cannot say whether the
numbers under it come from the synthetic or the real cohort. Every table therefore carries an
inner caption, set here, naming the data and profile it was computed on; figures do the same in
their titles via :func:`provenance`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def provenance(study) -> str:
    """``"synthetic cohort, profile cpu, n = 197"`` for a :class:`crlm_lib.pipeline.Study`."""
    return f"{study.label} cohort, profile {study.profile.name}, n = {len(study.ids)}"


def styled(df: pd.DataFrame, study=None, note: str | None = None, precision: int = 3):
    """A pandas Styler with numbers rounded and the provenance as the table's inner caption."""
    caption = " · ".join(x for x in (provenance(study) if study is not None else None, note) if x)
    sty = df.style.format(precision=precision, na_rep="–")
    if caption:
        sty = sty.set_caption(caption)
    return sty


def save_table(df: pd.DataFrame, results_dir: str | Path, name: str) -> Path:
    """Write ``df`` to ``results_dir/name.csv`` atomically and return the path."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.csv"
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp)
    os.replace(tmp, path)
    return path


def save_figure(fig, results_dir: str | Path, name: str, dpi: int = 150) -> Path:
    """Write a matplotlib figure to ``results_dir/name.png`` (atomically) and return the path."""
    folder = Path(results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    tmp = folder / f".{name}.tmp.png"
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    os.replace(tmp, path)
    return path
