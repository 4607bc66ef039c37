"""The tables the notebooks show: wide (estimate + interval per cell), ablation and comparison
tables beside the published numbers, parameters, paired differences, environment and the
TRIPOD+AI checklist.

Published numbers and the TRIPOD+AI items are data files (``crlm_lib/resources/published.csv``
and ``tripod_ai.csv``, read by :mod:`crlm_lib.resources`); the registry-name -> published-row
mappings below are names, not numbers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from crlm_lib import resources
from crlm_lib.config import Paths, Profile
from crlm_lib.evaluation.cohort import Cohort, as_cohort, cohort_profile
from crlm_lib.evaluation.specs import ABLATION_ROWS, LABELS, NOANCHOR, model_label
from crlm_lib.labels import DISPLAY_LABELS
from crlm_lib.model_registry import (
    ANCHORED_MODELS,
    LESION_MODELS,
    MODEL_NAMES,
    REGISTRY,
    published_rows,
)

#: Metric columns of the pretty tables, in order (OS head unless prefixed ``dfs_``).
HEADLINE_METRICS: tuple[str, ...] = (
    "os_taa",
    "os_mae",
    "os_mse",
    "os_obs_taa",
    "os_obs_mae",
    "os_c_harrell",
    "os_c_uno",
    "os_ibs",
    "os_auc_1y",
    "os_auc_3y",
    "os_auc_5y",
    "dfs_c_harrell",
)
#: Metrics where lower is better (used for the direction of paired differences in captions).
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae", "mse", "ibs"})

#: Readable names of the metric keys of :func:`head_metrics`, for tables meant for people.
METRIC_LABELS: dict[str, str] = {
    "os_taa": "TAA (OS year)",
    "os_mae": "MAE (years)",
    "os_mse": "MSE (years²)",
    "os_obs_taa": "TAA, deaths observed",
    "os_obs_mae": "MAE, deaths observed (years)",
    "os_c_harrell": "C-index OS (Harrell)",
    "os_c_uno": "C-index OS (Uno)",
    "os_c_antolini": "C-index OS (Antolini, time-dependent)",
    "os_ibs": "IBS OS",
    "os_auc_1y": "AUC OS 1 y",
    "os_auc_3y": "AUC OS 3 y",
    "os_auc_5y": "AUC OS 5 y",
    "dfs_c_harrell": "C-index DFS (Harrell)",
    "dfs_c_uno": "C-index DFS (Uno)",
    "dfs_c_antolini": "C-index DFS (Antolini, time-dependent)",
    "dfs_taa": "TAA (DFS year)",
    "dfs_mae": "MAE DFS (years)",
    # evaluation.point_metric_table (OS head): the papers' metrics named as theirs
    "os_ipcw_taa": "TAA, IPCW",
    "os_ipcw_mae": "MAE, IPCW (years)",
    "os_hinge_mae": "MAE, hinge (years)",
    "os_dcal_p": "D-calibration p",
    # evaluation.tie_sensitivity_table
    "os_c_uno_months_g_t": "Uno C OS, months, G(T)",
    "os_c_uno_months_g_t_minus": "Uno C OS, months, G(T−)",
    "dfs_c_uno_months_g_t": "Uno C DFS, months, G(T)",
    "dfs_c_uno_months_g_t_minus": "Uno C DFS, months, G(T−)",
}
#: Column names of the point-metric table, where the papers' metrics are labelled as theirs.
POINT_LABELS: dict[str, str] = {
    "os_taa": "TAA, papers' protocol",
    "os_mae": "MAE, papers' protocol (years)",
    "os_mse": "MSE, papers' protocol (years²)",
    "os_obs_taa": "TAA, deaths observed",
    "os_obs_mae": "MAE, deaths observed (years)",
}


def pretty(table: pd.DataFrame, labels: dict[str, str] | None = None) -> pd.DataFrame:
    """Rename metric keys (columns) and model keys (index, named ``model`` when unnamed) of a
    wide table for people (``labels`` first, e.g. :data:`POINT_LABELS`, then
    :data:`METRIC_LABELS`)."""
    names = {**METRIC_LABELS, **(labels or {})}
    out = table.rename(columns=lambda c: names.get(c, c))
    out = out.rename(index=lambda k: model_label(k) if isinstance(k, str) else k)
    if out.index.nlevels == 1 and out.index.name is None:
        out = out.rename_axis("model")
    return out


def wide_table(
    tidy: pd.DataFrame,
    metrics: Sequence[str] = HEADLINE_METRICS,
    digits: int = 3,
    row: str = "model",
) -> pd.DataFrame:
    """Pretty table: one row per model, one column per metric, cells ``"0.712 (0.65–0.77)"``.

    Row order follows the first appearance in ``tidy`` (the oracle stays last). The interval
    is printed with two decimals to keep the tables narrow.
    """
    order = list(dict.fromkeys(tidy[row]))
    sub = tidy[tidy["metric"].isin(metrics)]

    def cell(r) -> str:
        if not np.isfinite(r["estimate"]):
            return "–"
        s = f"{r['estimate']:.{digits}f}"
        if np.isfinite(r.get("low", np.nan)) and np.isfinite(r.get("high", np.nan)):
            ci = max(digits - 1, 1)
            s += f" ({r['low']:.{ci}f}–{r['high']:.{ci}f})"
        return s

    sub = sub.assign(cell=sub.apply(cell, axis=1))
    wide = sub.pivot_table(index=row, columns="metric", values="cell", aggfunc="first")
    cols = [m for m in metrics if m in wide.columns]
    wide = wide.reindex(index=order)[cols]
    wide.columns.name = None
    return wide


def _load_published() -> tuple[
    dict[str, list[dict[str, Any]]], dict[str, str], dict[tuple[str, str, str], str]
]:
    """``resources/published.csv`` (long form) -> table -> rows ``{"model", metric: value}`` in
    the file's order, table -> source, and (table, model, metric) -> the value as printed."""
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    sources: dict[str, str] = {}
    printed: dict[tuple[str, str, str], str] = {}
    for rec in resources.read_rows("published.csv"):
        key = rec["table"]
        sources.setdefault(key, rec["source"])
        row = tables.setdefault(key, {}).setdefault(rec["model"], {"model": rec["model"]})
        row[rec["metric"]] = float(rec["value"])
        printed[(key, rec["model"], rec["metric"])] = rec["value"]
    return {key: list(rows.values()) for key, rows in tables.items()}, sources, printed


#: Published reference numbers, read from ``crlm_lib/resources/published.csv``: table key ->
#: rows ``{"model": ..., metric: value}`` (values as the papers print them).
PUBLISHED: dict[str, list[dict[str, Any]]]
PUBLISHED, _SOURCES, _PRINTED = _load_published()


def published_text(key: str, model: str, metric: str) -> str | None:
    """A published number as the paper prints it (``"1.0625"``, ``"0.7000"``: the precision of
    the source, trailing zeros kept), or ``None`` when the paper does not report it."""
    return _PRINTED.get((key, model, metric))


def published_table(key: str) -> pd.DataFrame:
    """One published table as a DataFrame with a ``source`` column (numbers as printed).

    Keys: ``acfnet_table1``, ``acfnet_table2``, ``star_table1``, ``star_table2``, ``stg``,
    ``dypro``. Published TAA/MSE/MAE come from one 20-patient test split and
    ignore censoring; they are shown beside, never inside, our tables.
    """
    if key not in PUBLISHED:
        raise KeyError(f"unknown published table {key!r}; choose one of {sorted(PUBLISHED)}")
    frame = pd.DataFrame(PUBLISHED[key])
    frame.insert(0, "source", _SOURCES[key])
    return frame


def published_all() -> pd.DataFrame:
    """Every published number in long form: ``source, table, model, metric, value``
    (:func:`published_text` gives each one as printed)."""
    rows = []
    for key in PUBLISHED:
        t = published_table(key)
        for _, r in t.iterrows():
            for m in t.columns:
                if m in ("source", "model") or pd.isna(r[m]):
                    continue
                rows.append(
                    {
                        "source": r["source"],
                        "table": key,
                        "model": r["model"],
                        "metric": m,
                        "value": float(r[m]),
                    }
                )
    return pd.DataFrame(rows)


#: Row key -> published row name, per published table (the registry's ``published``): both
#: forms of an anchored network, with and without our Cox anchor (``<name>-noanchor``), sit
#: beside the published row of the network.
PUBLISHED_ROWS: dict[str, dict[str, str]] = {
    table: {
        **rows,
        **{f"{name}-{NOANCHOR}": row for name, row in rows.items() if name in ANCHORED_MODELS},
    }
    for table, rows in published_rows().items()
}


def comparison_models(published_key: str, as_published: Sequence[str] = ()) -> list[str]:
    """The registry models of the comparison with published table ``published_key``
    (``"acfnet_table1"``, ``"star_table1"``: notebook 04), in the paper's row order, then those
    the table does not report (STG, STG-lite) in registry order. Each anchored model named in
    ``as_published`` is followed by its network as published (``<name>_noanchor``).

    Raises
    ------
    KeyError
        For a key that no registry model's comparison names.
    """
    members = [r for r in REGISTRY if r.comparison == published_key]
    if not members:
        known = sorted({r.comparison for r in REGISTRY if r.comparison})
        raise KeyError(f"no comparison {published_key!r}; choose one of {known}")
    order = {row["model"]: i for i, row in enumerate(PUBLISHED.get(published_key, []))}

    def position(r) -> int:
        in_table = r.published is not None and r.published[0] == published_key
        return order[r.published[1]] if in_table else len(order)

    names = []
    for r in sorted(members, key=position):  # sorted() is stable
        names.append(r.name)
        if r.name in as_published:
            if not r.anchored:
                raise ValueError(f"{r.name} has no Cox anchor, so no published variant")
            names.append(f"{r.name}_{NOANCHOR}")
    return names


def _ours(tidy: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    return wide_table(tidy, metrics=metrics).rename(
        columns={m: f"ours: {METRIC_LABELS.get(m, m)}" for m in metrics}
    )


def _published_cell(key: str, row: str) -> str | None:
    """``"0.7000 / 2.5750 / 1.1250"`` (TAA / MSE / MAE as the paper prints them, "–" where not
    reported)."""
    if key not in PUBLISHED or not any(r["model"] == row for r in PUBLISHED[key]):
        return None
    return " / ".join(published_text(key, row, m) or "–" for m in ("taa", "mse", "mae"))


def published_wide() -> pd.DataFrame:
    """Every published number, one row per (source, model), one column per metric (labelled
    for people), each cell as the paper prints it ("–" where not reported)."""
    rows = []
    for key, table_rows in PUBLISHED.items():
        for r in table_rows:
            cells = {m: published_text(key, r["model"], m) for m in r if m != "model"}
            rows.append({"source": _SOURCES[key], "model": r["model"], **cells})
    frame = pd.DataFrame(rows).set_index(["source", "model"]).fillna("–")
    return frame.rename(columns=lambda c: DISPLAY_LABELS.get(c, c))


_PUBLISHED_COLUMN = "published on the real cohort: TAA / MSE / MAE"


def ablation_table(
    tidy: pd.DataFrame, metrics: Sequence[str] = ("os_taa", "os_mse", "os_mae", "os_c_harrell")
) -> pd.DataFrame:
    """Our ablation rows (95% CIs) beside both papers' Table 2 (published, real cohort)."""
    ours = _ours(tidy, metrics)
    rows = []
    for key, name, _, published in ABLATION_ROWS:
        if key not in ours.index:
            continue
        row = {"configuration": name, **ours.loc[key].to_dict()}
        for table, pub_row in published.items():
            paper = "4D-ACFNet" if table.startswith("acfnet") else "STAR"
            row[f"published, {paper} Table 2: TAA / MSE / MAE"] = _published_cell(table, pub_row)
        rows.append(row)
    for key in ours.index:
        if key == "oracle":
            rows.append({"configuration": LABELS["oracle"], **ours.loc[key].to_dict()})
    return pd.DataFrame(rows).set_index("configuration").fillna("–")


def comparison_table(
    tidy: pd.DataFrame,
    published_key: str,
    metrics: Sequence[str] = ("os_taa", "os_mse", "os_mae", "os_c_harrell"),
) -> pd.DataFrame:
    """One comparison table: our rows (95% CIs) with the published numbers of ``published_key``
    (and of STG for its rows) in their own columns, never mixed into ours."""
    ours = _ours(tidy, metrics)
    out = []
    for key in ours.index:
        row = {"model": model_label(key)}
        row.update(ours.loc[key].to_dict())
        for table in (published_key, "stg"):
            pub_row = PUBLISHED_ROWS.get(table, {}).get(key)
            if pub_row:
                row[_PUBLISHED_COLUMN] = _published_cell(table, pub_row)
        out.append(row)
    return pd.DataFrame(out).set_index("model").fillna("–")


def parameter_table(source: Cohort | Paths, profile: str | Profile | None = None) -> pd.DataFrame:
    """Trainable parameters of every registered model at the profile's widths (the cohort's;
    ``profile`` only for a cohort that carries none, ``evaluation.cohort_profile``).

    Input widths (clinical features, per-lesion features) are read from the cohort's first
    patient, so the counts are those of the models the notebooks train.
    """
    from crlm_lib.data.dataset import CRLMDataset
    from crlm_lib.models import build_model, count_parameters

    cohort = as_cohort(source)
    prof = cohort_profile(cohort, profile)
    ds = CRLMDataset(cohort.paths.processed_dir, cohort.clinical, cohort.ids[:1], prof)
    item = ds[0]
    n_clin = int(np.asarray(item["clinical"]).shape[-1])
    n_les = int(np.asarray(item["lesion_features"]).shape[-1])
    from crlm_lib.models.common import separable_param_counts

    c = 2 * prof.model.width
    block = separable_param_counts(c, c)
    sep, full, two = block["separable"], block["full_4d"], block["two_3d"]
    rows = [
        {
            "what": f"one block, {c}→{c} channels",
            "model": "separable: 3x3x3 spatial + 3 temporal",
            "parameters": sep,
            "note": f"{100 * (1 - sep / full):.1f}% fewer than a full 4D kernel, "
            f"{100 * (1 - sep / two):.1f}% fewer than 3x3x3 + 3x3x3 (paper: 41%)",
        },
        {"what": f"one block, {c}→{c} channels", "model": "full 3x3x3x3 kernel",
         "parameters": full, "note": ""},
        {"what": f"one block, {c}→{c} channels", "model": "3x3x3 + 3x3x3",
         "parameters": two, "note": ""},
    ]  # fmt: skip
    for name in MODEL_NAMES:
        opts = {"n_lesion_features": n_les} if name in LESION_MODELS else {}
        model = build_model(name, n_clin, prof.model, **opts)
        rows.append(
            {"what": "whole model", "model": LABELS.get(name, name),
             "parameters": count_parameters(model), "note": ""}
        )  # fmt: skip
    table = pd.DataFrame(rows).set_index(["what", "model"])
    whole = table.xs("whole model")
    stg, lite = whole.loc[LABELS["stg"], "parameters"], whole.loc[LABELS["stg_lite"], "parameters"]
    table.loc[("whole model", LABELS["stg_lite"]), "note"] = (
        f"{100 * (1 - lite / stg):.2f}% fewer than STG (paper: 78.55%)"
    )
    return table


def paired_table(
    differences: pd.DataFrame,
    metrics: Sequence[str] = ("os_c_harrell", "os_c_uno", "dfs_c_harrell"),
    digits: int = 3,
) -> pd.DataFrame:
    """Pretty paired differences: one row per (model, anchor), cells ``"+0.041 (−0.010 to
    +0.090)"``, columns labelled ``"Δ C-index OS (Harrell)"``. A pair already shown the other
    way round (anchor B − A after A − B) is left out: it is the same difference, negated."""
    if differences.empty:
        return pd.DataFrame()
    sub = differences[differences["metric"].isin(metrics)].copy()
    seen: set[tuple[str, str]] = set()
    keep = []
    for m, b in zip(sub["model"], sub["baseline"], strict=True):
        keep.append((b, m) not in seen)
        seen.add((m, b))
    sub = sub[keep]
    sub["cell"] = [
        "–"
        if not np.isfinite(e)
        else f"{e:+.{digits}f} ({lo:+.{digits}f} to {hi:+.{digits}f})".replace("-", "−")
        for e, lo, hi in zip(sub["estimate"], sub["low"], sub["high"], strict=True)
    ]
    sub["comparison"] = [
        f"{model_label(m)} − {LABELS.get(b) or model_label(b)}"
        for m, b in zip(sub["model"], sub["baseline"], strict=True)
    ]
    order = list(dict.fromkeys(sub["comparison"]))
    wide = sub.pivot_table(index="comparison", columns="metric", values="cell", aggfunc="first")
    wide = wide.reindex(index=order)[[m for m in metrics if m in wide.columns]]
    wide.columns = [f"Δ {METRIC_LABELS.get(m, m)}" for m in wide.columns]
    return wide


def control_table(
    differences: pd.DataFrame,
    metrics: Sequence[str] = ("os_c_harrell", "dfs_c_harrell"),
    digits: int = 3,
) -> pd.DataFrame:
    """The controls of every image model, with the paired 95% interval: its C minus the C of
    its own predictions with the images permuted among the test patients (baseline
    ``ct-permuted``: above 0, the model uses the image; around 0, it ranks patients as well
    without it) and, for an anchored model, minus the C of its untrained start (baseline
    ``step-0``: what training added to the Cox anchor)."""
    keep = ("ct-permuted", "step-0")
    sub = differences[differences["baseline"].isin(keep)] if len(differences) else differences
    if sub.empty:
        return pd.DataFrame()
    what = {"ct-permuted": "trained − CT permuted", "step-0": "trained − untrained start"}
    rows = []
    for model in dict.fromkeys(sub["model"]):
        for baseline, text in what.items():
            one = sub[(sub["model"] == model) & (sub["baseline"] == baseline)]
            if len(one):
                table = paired_table(one, metrics=metrics, digits=digits)
                table.index = [f"{model_label(model)}: {text}"]
                rows.append(table)
    table = pd.concat(rows)
    table.index.name = "model: comparison"
    return table


def environment_table(source: Cohort | Paths) -> pd.DataFrame:
    """Software versions, hardware, profile, seed and notebook timings of this build."""
    import platform

    import torch

    rows: dict[str, str] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "processor cores": str(os.cpu_count()),
        "GPU": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU run)",
    }
    for pkg in (
        "torch",
        "monai",
        "torchio",
        "torch_geometric",
        "pydicom",
        "highdicom",
        "SimpleITK",
        "lifelines",
        "sksurv",
        "shap",
        "captum",
        "numpy",
        "pandas",
    ):
        try:
            mod = __import__(pkg)
            rows[pkg] = str(getattr(mod, "__version__", "?"))
        except ImportError:
            rows[pkg] = "not installed"
    cohort = as_cohort(source)
    if cohort.paths is not None:
        rows["data"] = "synthetic cohort" if cohort.synthetic else "real TCIA cohort"
        rows["profile"] = cohort.paths.profile
        times = cohort.paths.results_dir / "notebook_times.csv"
        if times.is_file():
            for r in pd.read_csv(times).itertuples():
                rows[f"time: {r.notebook}"] = f"{r.seconds / 60:.1f} min"
    return pd.DataFrame({"value": rows})


#: TRIPOD+AI (Collins et al., BMJ 2024) items with their official numbers (``1``, ``3a`` ...
#: ``27c``: the 27 items and 52 sub-items), where this manuscript meets them (or why not) and
#: the article section that holds the text (``sec-...`` id, empty where the row says why not),
#: read from ``crlm_lib/resources/tripod_ai.csv``.
TRIPOD_AI: tuple[tuple[str, str, str, str], ...] = tuple(
    (r["item"], r["topic"], r["where met / why not"], r["section"])
    for r in resources.read_rows("tripod_ai.csv")
)


def tripod_checklist() -> pd.DataFrame:
    """The TRIPOD+AI checklist: ``item`` (index, official numbering), ``topic``, ``where met /
    why not`` and ``section`` (a cross-reference ``@sec-...`` that the renderer turns into
    "Section N", empty where the item is not met)."""
    rows = [(item, topic, where, f"@{sec}" if sec else "") for item, topic, where, sec in TRIPOD_AI]
    frame = pd.DataFrame(rows, columns=["item", "topic", "where met / why not", "section"])
    return frame.set_index("item")
