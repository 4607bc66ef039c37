"""Beyond one draw: the cross-validation repeated on several generator seeds.

``benchmarks/synthetic_bench.py cv`` runs notebook 06's cross-validation (the profile's folds
and epochs, the anchors Fong, Cox and the radiomics Cox, the image-permutation controls) on
several seeds of the synthetic generator, under its ``image_effect`` and ``null`` settings
(``data.synthetic.SETTINGS``). It takes hours on a 2-core CPU, so ``make paper`` does not run
it: the script writes its rows to :data:`SEED_BENCH_FILE` (committed) with a provenance file
beside it (:data:`SEED_BENCH_META`: profile, repeats, seeds, settings, code revision, date), and
notebook 06 reads them back with :func:`read_seed_bench` to say where this build's seed sits
among the others (:func:`seed_table`, :func:`seed_values`).

Rows (tidy): ``setting, seed, model, metric, estimate, low, high``, where ``metric`` is
``os_c_harrell`` / ``dfs_c_harrell`` (Harrell's C of the model), ``permutation_<head>_c_harrell``
(the model minus its own predictions on images permuted among the test patients) or
``minus_cox_<head>_c_harrell`` (the paired difference with the clinical Cox model), and
``low``/``high`` are the protocol's 95% corrected repeated-CV t interval of that seed's
cross-validation. Every number is about the synthetic generator, not patients.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from crlm_lib.evaluation.specs import model_label

#: The committed rows of ``benchmarks/synthetic_bench.py cv``, relative to the repository root.
SEED_BENCH_FILE = Path("benchmarks") / "results" / "synthetic_bench_cv.csv"
#: Its provenance (JSON: profile, repeats, seeds, settings, models, run revision, commit, date).
SEED_BENCH_META = SEED_BENCH_FILE.with_suffix(".json")
#: Columns of the rows.
SEED_COLUMNS = ("setting", "seed", "model", "metric", "estimate", "low", "high")
#: Rows of :func:`seed_table`, in order (those present in the rows are shown).
SEED_TABLE_MODELS = (
    "fong",
    "cox",
    "cox_clinrad",
    "acfnet",
    "acfnet@step0",
    "cnn3d",
    "aminn",
    "cox_trueimg",
    "oracle",
)


def read_seed_bench(root: str | Path | None = None) -> tuple[pd.DataFrame, dict]:
    """The committed rows and provenance of the seed benchmark (``root``: the repository root;
    default: found from the working directory, ``config.find_repo_root``). The provenance is
    ``{}`` when its JSON file is missing.

    Raises
    ------
    FileNotFoundError
        When the checkout has no rows, with the command that makes them.
    ValueError
        When the file lacks one of :data:`SEED_COLUMNS` (naming the file).
    """
    from crlm_lib.config import find_repo_root

    base = Path(root) if root is not None else find_repo_root()
    path, meta_path = base / SEED_BENCH_FILE, base / SEED_BENCH_META
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no seed benchmark rows; make them with "
            "`python benchmarks/synthetic_bench.py cv --seeds 0 1 2 3 4` (hours on a 2-core CPU)"
        )
    # "null" is a generator setting, not a missing value
    rows = pd.read_csv(path, keep_default_na=False, na_values=[""])
    missing = [c for c in SEED_COLUMNS if c not in rows.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return rows, meta


def seed_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per ``(setting, model, metric)``: mean, SD, min and max of the estimate over seeds, the
    number of seeds (``count``) and, for the differences (permutation, minus Cox), the number
    of seeds whose 95% interval lies above 0 (``above0``) and below 0 (``below0``)."""
    keys = ["setting", "model", "metric"]
    g = rows.groupby(keys, sort=False)
    out = g["estimate"].agg(["mean", "std", "min", "max", "count"])
    is_diff = ~rows["metric"].isin(["os_c_harrell", "dfs_c_harrell"])
    for name, hit in (("above0", rows["low"] > 0), ("below0", rows["high"] < 0)):
        flag = hit.where(is_diff).astype(float)
        out[name] = flag.groupby([rows[k] for k in keys], sort=False).sum(min_count=1)
    return out


def seed_rank(rows: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per ``(setting, model, metric)``: the estimate on ``seed`` and its rank among the seeds
    (1 = lowest; average rank for ties), with the number of seeds; empty when ``seed`` was not
    run."""
    keys = ["setting", "model", "metric"]
    ranked = rows.assign(rank=rows.groupby(keys, sort=False)["estimate"].rank())
    n = rows.groupby(keys, sort=False)["estimate"].count().rename("n_seeds")
    mine = ranked[ranked["seed"] == seed].set_index(keys)[["estimate", "rank"]]
    return mine.join(n)


def _mean_sd(s: pd.Series) -> str:
    sd = 0.0 if pd.isna(s["std"]) else s["std"]
    return f"{s['mean']:.3f} ± {sd:.3f} ({s['min']:.3f}–{s['max']:.3f})"


def _diff(s: pd.Series | None) -> str:
    if s is None:
        return "–"
    return f"{s['mean']:+.3f} ({int(s['above0'])}/{int(s['count'])} above 0)"


def seed_table(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The manuscript's table of the seed benchmark, indexed by (``Setting``, ``Model``), with OS and
    DFS Harrell's C (mean ± SD over seeds, range), the OS and DFS permutation differences and
    the OS difference with Cox (mean; seeds whose interval lies above 0), and ``seed``'s OS C
    with its rank among the seeds."""
    summ = seed_summary(rows)
    ranks = seed_rank(rows, seed)
    out = []
    for setting in dict.fromkeys(rows["setting"]):
        for model in SEED_TABLE_MODELS:
            if (setting, model, "os_c_harrell") not in summ.index:
                continue

            def get(metric, model=model, setting=setting):
                key = (setting, model, metric)
                return summ.loc[key] if key in summ.index else None

            mine = (
                ranks.loc[(setting, model, "os_c_harrell")]
                if ((setting, model, "os_c_harrell") in ranks.index)
                else None
            )
            out.append(
                {
                    "Setting": setting,
                    "Model": model_label(model),
                    "Seeds": int(get("os_c_harrell")["count"]),
                    "OS C": _mean_sd(get("os_c_harrell")),
                    "DFS C": _mean_sd(get("dfs_c_harrell")),
                    "OS C − CT-permuted": _diff(get("permutation_os_c_harrell")),
                    "DFS C − CT-permuted": _diff(get("permutation_dfs_c_harrell")),
                    "OS C − Cox": _diff(get("minus_cox_os_c_harrell")),
                    f"Seed {seed}: OS C (rank)": "–"
                    if mine is None
                    else f"{mine['estimate']:.3f} ({mine['rank']:g} of {int(mine['n_seeds'])})",
                }
            )
    return pd.DataFrame(out).set_index(["Setting", "Model"])


def seed_values(rows: pd.DataFrame, meta: dict, seed: int = 0) -> dict[str, str]:
    """The numbers the manuscript's prose quotes from the seed benchmark (``seeds-*`` values):
    the design (seeds, repeats, profile), the image models' OS C and permutation differences
    under ``image_effect`` and ``null`` (mean over seeds; seeds with an interval above 0 or
    excluding 0), 4D-ACFNet and the oracle on ``seed`` with their rank, and 4D-ACFNet's
    trained-minus-start difference averaged over seeds."""
    summ = seed_summary(rows)
    ranks = seed_rank(rows, seed)
    vals: dict[str, str] = {
        "seeds-n": str(rows["seed"].nunique()),
        "seeds-list": ", ".join(str(s) for s in sorted(rows["seed"].unique())),
        "seeds-profile": str(meta.get("profile", "unknown")),
        "seeds-repeats": str(meta.get("repeats", "unknown")),
    }
    per_setting = rows.groupby("setting")["seed"].nunique()
    vals["seeds-per-setting"] = "; ".join(f"{s}: {n}" for s, n in per_setting.items())
    for setting in ("image_effect", "null"):
        for model in ("acfnet", "cnn3d", "aminn"):
            for head in ("os", "dfs"):
                key = (setting, model, f"permutation_{head}_c_harrell")
                if key not in summ.index:
                    continue
                s = summ.loc[key]
                n = int(s["count"])
                tag = f"seeds-{setting.replace('_', '-')}-{model}-perm-{head}"
                vals[tag] = f"{s['mean']:+.3f}"
                vals[f"{tag}-above"] = f"{int(s['above0'])} of {n}"
                vals[f"{tag}-excl0"] = f"{int(s['above0'] + s['below0'])} of {n}"
            key = (setting, model, "os_c_harrell")
            if key in summ.index:
                tag = f"seeds-{setting.replace('_', '-')}-{model}-c-os"
                vals[tag] = f"{summ.loc[key]['mean']:.3f} ± {summ.loc[key]['std']:.3f}"
            key = (setting, model, "minus_cox_os_c_harrell")
            if key in summ.index:
                s = summ.loc[key]
                tag = f"seeds-{setting.replace('_', '-')}-{model}-minus-cox-os"
                vals[tag] = f"{s['mean']:+.3f}"
                vals[f"{tag}-above"] = f"{int(s['above0'])} of {int(s['count'])}"
                vals[f"{tag}-excl0"] = f"{int(s['above0'] + s['below0'])} of {int(s['count'])}"
        for model in ("cox", "cox_clinrad", "oracle"):
            key = (setting, model, "os_c_harrell")
            if key in summ.index:
                tag = f"seeds-{setting.replace('_', '-')}-{model.replace('_', '-')}-c-os"
                vals[tag] = f"{summ.loc[key]['mean']:.3f}"
    ie = rows[rows["setting"] == "image_effect"]
    trained = ie[(ie["model"] == "acfnet") & (ie["metric"] == "os_c_harrell")]
    start = ie[(ie["model"] == "acfnet@step0") & (ie["metric"] == "os_c_harrell")]
    both = trained.merge(start, on="seed", suffixes=("", "_start"))
    if len(both):
        diff = both["estimate"] - both["estimate_start"]
        vals["seeds-acfnet-minus-start-os"] = f"{diff.mean():+.3f}"
        vals["seeds-acfnet-minus-start-range"] = f"{diff.min():+.3f} to {diff.max():+.3f}"
    for model in ("acfnet", "oracle"):
        key = ("image_effect", model, "os_c_harrell")
        if key in ranks.index:
            r = ranks.loc[key]
            tag = f"seeds-seed-{model}-c-os"
            vals[tag] = f"{r['estimate']:.3f}"
            vals[f"{tag}-rank"] = f"{r['rank']:g} of {int(r['n_seeds'])}"
    vals["seeds-seed"] = str(seed)
    return vals


def seed_bench_caption_note(meta: dict) -> str:
    """A one-line provenance of the benchmark rows for a table's inner caption."""
    parts = [
        f"benchmarks/synthetic_bench.py cv, {meta.get('profile', '?')} profile",
        f"{meta.get('repeats', '?')} repeat(s) of the image models",
    ]
    if meta.get("commit"):
        parts.append(f"code {str(meta['commit'])[:10]}")
    if meta.get("run_revision") is not None:
        parts.append(f"run revision {meta['run_revision']}")
    if meta.get("date"):
        parts.append(str(meta["date"]))
    return "; ".join(parts) + "; synthetic generator, not patients"


def provenance_record(
    profile: str,
    repeats: int | None,
    seeds: list[int],
    settings: list[str],
    models: list[str],
    executor: str | None = None,
) -> dict:
    """The provenance :data:`SEED_BENCH_META` holds: the bench's arguments (``executor``: where
    the fits ran, None for the profile's), the current ``RUN_REVISION`` (what trained the runs)
    and git commit, and the date."""
    import datetime

    from crlm_lib.config import get_profile
    from crlm_lib.evaluation.runs import RUN_REVISION
    from crlm_lib.provenance import software_record

    return {
        "profile": profile,
        "repeats": repeats,
        "seeds": [int(s) for s in seeds],
        "settings": list(settings),
        "models": list(models),
        "executor": executor or get_profile(profile).executor,
        "run_revision": RUN_REVISION,
        "commit": software_record()["git_commit"],
        "software": software_record(),
        "date": datetime.date.today().isoformat(),
    }


__all__ = [
    "SEED_BENCH_FILE",
    "SEED_BENCH_META",
    "SEED_COLUMNS",
    "SEED_TABLE_MODELS",
    "provenance_record",
    "read_seed_bench",
    "seed_bench_caption_note",
    "seed_rank",
    "seed_summary",
    "seed_table",
    "seed_values",
]
