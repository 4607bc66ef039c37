"""Small display helpers for the notebooks: tables that carry their provenance.

Quarto cell captions (``#| tbl-cap:``) are static text, so a caption cannot say whether the
numbers under it come from the synthetic or the real cohort. Every table therefore carries an
inner caption, set here, naming the data and profile it was computed on; figures do the same in
their titles via :func:`provenance`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.labels import DISPLAY_LABELS as DISPLAY_LABELS  # re-exported


def display_label(key: object) -> str:
    """The label people read for a column key or a categorical cell: :data:`DISPLAY_LABELS`,
    then the evaluation tables' metric labels, else the key with underscores as spaces."""
    from crlm_lib.evaluation.tables import METRIC_LABELS

    text = str(key)
    label = DISPLAY_LABELS.get(text) or METRIC_LABELS.get(text)
    return label if label else text.replace("_", " ")


def provenance(study, patients: str | None = None) -> str:
    """``"synthetic cohort, profile cpu, n = 197 patients"`` for a :class:`crlm_lib.pipeline.Study`.

    ``patients`` replaces the default ``"n = <cohort size> patients"`` when a table is computed
    on fewer patients (e.g. :func:`test_patients` for the papers' split).
    """
    who = patients if patients is not None else f"n = {len(study.ids)} patients"
    return ", ".join(
        x for x in (f"{study.label} cohort", f"profile {study.profile.name}", who) if x
    )


def test_patients(tidy: pd.DataFrame) -> str:
    """``"n = 20 test patients (papers' split)"`` from a papers'-split tidy frame (``n_test``)."""
    n = int(pd.to_numeric(tidy["n_test"]).max())
    return f"n = {n} test patients (papers' split)"


def _is_row_number(index: pd.Index) -> bool:
    """True for an unnamed integer index (pandas' 0..N-1 row numbers, possibly filtered)."""
    return index.nlevels == 1 and index.name is None and pd.api.types.is_integer_dtype(index)


def display_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` laid out for a rendered table: one header row of human labels, no index.

    Row labels (the index, every level) become leading columns named by their level names
    (a value repeated from the row above is left blank, as a grouped row label); an unnamed
    integer index (row numbers) is dropped; MultiIndex columns are joined into one header
    (``"level 0, level 1"``); headers and categorical cells go through :func:`display_label`;
    booleans become ``yes`` / ``no``.
    """
    out = df.copy()
    if isinstance(out.columns, pd.MultiIndex):
        out.columns = [
            ", ".join(display_label(x) for x in col if str(x) not in ("", "nan"))
            for col in out.columns
        ]
    out.columns.name = None
    if _is_row_number(out.index):
        out = out.reset_index(drop=True)
    else:
        names = [n if n is not None else " " * (i + 1) for i, n in enumerate(out.index.names)]
        out.index.names = names
        out = out.reset_index()
        for level in names[:-1]:  # blank a group label repeated from the row above
            repeated = out[level].eq(out[level].shift())
            out[level] = out[level].astype(object).where(~repeated, "")
    out = out.rename(columns=lambda c: display_label(c) if str(c).strip() else c)
    for col in out.columns:
        if out[col].dtype == bool:
            out[col] = out[col].map({True: "yes", False: "no"})
        elif out[col].dtype == object:  # cell by cell: Series.map would turn ints to floats
            out[col] = pd.Series(
                [_display_cell(v) for v in out[col]], index=out.index, dtype=object
            )
    return out


def _display_cell(value: object) -> object:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, str) and value in DISPLAY_LABELS:
        return DISPLAY_LABELS[value]
    return value


def _number_formatter(precision: int):
    """Integers as integers (thousands separated from 10,000), other numbers at ``precision``."""

    def fmt(value: object) -> str:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return "–"
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "no"
        if isinstance(value, (int, np.integer)):
            return f"{value:,d}" if abs(value) >= 10_000 else f"{value:d}"
        if isinstance(value, (float, np.floating)):
            if np.isinf(value):
                return "not reached" if value > 0 else "−∞"
            text = f"{value:.{precision}f}"
            return text.lstrip("-") if float(text) == 0 else text.replace("-", "−")
        return str(value)

    return fmt


def styled(
    df: pd.DataFrame,
    study=None,
    note: str | None = None,
    precision: int = 3,
    patients: str | None = None,
):
    """A pandas Styler for the manuscript: :func:`display_frame` (labels, no index column),
    integers as integers, other numbers at ``precision`` decimals, missing values as "–", and
    the provenance (data, profile, the table's own ``patients``) as its inner caption."""
    frame = display_frame(df)
    prov = provenance(study, patients) if study is not None else None
    caption = " · ".join(x for x in (prov, note) if x)
    fmt = _number_formatter(precision)
    sty = frame.style.format(fmt, na_rep="–").hide(axis="index")
    if caption:
        sty = sty.set_caption(caption)
    return sty


def save_table(df: pd.DataFrame, results_dir: str | Path, name: str) -> Path:
    """Write ``df`` to ``results_dir/name.csv`` atomically and return the path."""
    path = Path(results_dir) / f"{name}.csv"
    atomic.write_csv(path, df)
    return path


def save_figure(fig, results_dir: str | Path, name: str, dpi: int = 150) -> Path:
    """Write a matplotlib figure to ``results_dir/name.png`` (atomically) and return the path."""
    path = Path(results_dir) / f"{name}.png"
    with atomic.atomic_path(path, keep_extension=True) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    return path


def _ci_text(tidy: pd.DataFrame, model: str, metric: str, digits: int = 2) -> str | None:
    rows = tidy[(tidy["model"] == model) & (tidy["metric"] == metric)]
    if rows.empty or pd.isna(rows["estimate"].iloc[0]):
        return None
    r = rows.iloc[0]
    text = f"{r['estimate']:.{digits}f}"
    if pd.notna(r.get("low")) and pd.notna(r.get("high")):
        text += f" (95% CI {r['low']:.{digits}f}–{r['high']:.{digits}f})"
    return text


#: Models whose cross-validated C-index the abstract quotes: value-name prefix -> model key.
HEADLINE_MODELS: dict[str, str] = {
    "acfnet": "acfnet",
    "acfnet-noanchor": "acfnet-noanchor",
    "cnn3d": "cnn3d",
    "aminn": "aminn",
    "cox": "cox",
    "cox-vol": "cox_vol",
    "cox-clinvol": "cox_clinvol",
    "cox-clinrad": "cox_clinrad",
    "cox-trueimg": "cox_trueimg",
    "oracle": "oracle",
}
#: Image models whose CT-permutation difference the abstract quotes (``<prefix>-perm-os``).
PERMUTATION_MODELS: dict[str, str] = {"acfnet": "acfnet", "cnn3d": "cnn3d", "aminn": "aminn"}


def _diff_text(differences: pd.DataFrame, model: str, baseline: str, metric: str) -> str | None:
    if differences is None or differences.empty:
        return None
    rows = differences[
        (differences["model"] == model)
        & (differences["baseline"] == baseline)
        & (differences["metric"] == metric)
    ]
    if rows.empty or pd.isna(rows["estimate"].iloc[0]):
        return None
    r = rows.iloc[0]
    return f"{r['estimate']:+.3f} (95% CI {r['low']:+.3f} to {r['high']:+.3f})"


def headline_values(
    cv_tidy: pd.DataFrame, study=None, differences: pd.DataFrame | None = None
) -> dict[str, str]:
    """The numbers the abstract quotes, as text, from the cross-validation's tidy scores.

    Names: ``<model>-c-os`` and ``<model>-c-dfs`` (Harrell's C, overall / disease-free
    survival, mean over repeats with the 95% bootstrap interval) for the models of
    :data:`HEADLINE_MODELS` (``"not applicable"`` where a model has no row, e.g. the oracle on
    real data); with ``differences`` (``CVResult.differences``), ``<model>-perm-os`` /
    ``-perm-dfs``: the image-permutation control of :data:`PERMUTATION_MODELS` (the model's C
    minus that with the images permuted among test patients, paired 95% interval) and
    ``<model>-step0-os`` / ``-step0-dfs``: trained minus its untrained anchored start;
    ``data-label`` and ``n-patients`` when ``study`` is given. Rendered into the manuscript by
    ``{{< value name >}}`` (see :mod:`crlm_lib.manuscript`).
    """
    values: dict[str, str] = {}
    for prefix, model in HEADLINE_MODELS.items():
        for head in ("os", "dfs"):
            text = _ci_text(cv_tidy, model, f"{head}_c_harrell")
            values[f"{prefix}-c-{head}"] = text if text is not None else "not applicable"
    if differences is not None:
        for prefix, model in PERMUTATION_MODELS.items():
            for head in ("os", "dfs"):
                text = _diff_text(differences, model, "ct-permuted", f"{head}_c_harrell")
                values[f"{prefix}-perm-{head}"] = text if text is not None else "not applicable"
                text = _diff_text(differences, model, "step-0", f"{head}_c_harrell")
                values[f"{prefix}-step0-{head}"] = text if text is not None else "not applicable"
    if study is not None:
        values["data-label"] = str(study.label)
        values["n-patients"] = str(len(study.ids))
    return values


def show_values(values: dict[str, str]):
    """Display ``values`` as a JSON output (the ``values-*`` cells the manuscript reads)."""
    from IPython.display import JSON, display

    display(JSON({k: str(v) for k, v in values.items()}))
    return None
