"""Small display helpers for the notebooks: tables that carry their provenance.

Quarto cell captions (``#| tbl-cap:``) are static text, so a caption cannot say whether the
numbers under it come from the synthetic or the real cohort. Every table therefore carries an
inner caption, set here, naming the data and profile it was computed on; figures do the same in
their titles via :func:`provenance`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from crlm_lib import atomic


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
