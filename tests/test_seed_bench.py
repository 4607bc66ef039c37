"""The seed benchmark's rows as notebook 06 reads them (``evaluation.seeds``)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from crlm_lib.config import find_repo_root
from crlm_lib.evaluation import seeds as S


def _rows() -> pd.DataFrame:
    rows = []
    # image_effect: 3 seeds, permutation intervals above 0 on seeds 0 and 2
    for seed, (est, low, high) in enumerate(
        [(0.03, 0.01, 0.05), (0.02, -0.01, 0.05), (0.05, 0.02, 0.08)]
    ):
        rows.append(("image_effect", seed, "acfnet", "permutation_os_c_harrell", est, low, high))
        rows.append(("image_effect", seed, "acfnet", "os_c_harrell", 0.6 + est, 0.5, 0.7))
        rows.append(("image_effect", seed, "acfnet", "dfs_c_harrell", 0.6, 0.5, 0.7))
        rows.append(("image_effect", seed, "acfnet@step0", "os_c_harrell", 0.61, 0.5, 0.7))
        rows.append(("image_effect", seed, "acfnet@step0", "dfs_c_harrell", 0.6, 0.5, 0.7))
    # null: one seed whose interval lies below 0
    rows.append(("null", 0, "acfnet", "permutation_os_c_harrell", -0.04, -0.07, -0.01))
    rows.append(("null", 0, "acfnet", "os_c_harrell", 0.55, 0.45, 0.65))
    rows.append(("null", 0, "acfnet", "dfs_c_harrell", 0.55, 0.45, 0.65))
    return pd.DataFrame(rows, columns=list(S.SEED_COLUMNS))


def test_summary_counts_seeds_with_an_interval_above_and_below_zero():
    out = S.seed_summary(_rows())
    perm = out.loc[("image_effect", "acfnet", "permutation_os_c_harrell")]
    assert (perm["count"], perm["above0"], perm["below0"]) == (3, 2, 0)
    assert abs(perm["mean"] - 0.1 / 3) < 1e-12
    assert out.loc[("null", "acfnet", "permutation_os_c_harrell"), "below0"] == 1
    # a model's own C is not a difference: no interval count
    assert pd.isna(out.loc[("image_effect", "acfnet", "os_c_harrell"), "above0"])


def test_rank_of_a_seed_among_the_seeds():
    ranks = S.seed_rank(_rows(), seed=2)
    r = ranks.loc[("image_effect", "acfnet", "os_c_harrell")]
    assert (r["estimate"], r["rank"], r["n_seeds"]) == (pytest.approx(0.65), 3, 3)
    assert ("null", "acfnet", "os_c_harrell") not in ranks.index  # seed 2 not run under null


def test_table_and_values_say_where_the_seed_sits():
    tab = S.seed_table(_rows(), seed=0)
    assert list(tab.index.get_level_values("Setting")) == ["image_effect", "image_effect", "null"]
    first = tab.iloc[0]
    assert first["Seeds"] == 3 and first["OS C − CT-permuted"] == "+0.033 (2/3 above 0)"
    assert first["Seed 0: OS C (rank)"] == "0.630 (2 of 3)"
    vals = S.seed_values(_rows(), {"profile": "cpu", "repeats": 1}, seed=0)
    assert vals["seeds-image-effect-acfnet-perm-os-above"] == "2 of 3"
    assert vals["seeds-null-acfnet-perm-os-excl0"] == "1 of 1"
    assert vals["seeds-acfnet-minus-start-os"] == f"{(0.63 + 0.62 + 0.65) / 3 - 0.61:+.3f}"
    assert vals["seeds-seed-acfnet-c-os-rank"] == "2 of 3"
    assert vals["seeds-per-setting"] == "image_effect: 3; null: 1"


def test_read_back_keeps_the_null_setting_and_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="synthetic_bench.py cv"):
        S.read_seed_bench(tmp_path)
    path = tmp_path / S.SEED_BENCH_FILE
    path.parent.mkdir(parents=True)
    _rows().to_csv(path, index=False)
    (tmp_path / S.SEED_BENCH_META).write_text(json.dumps({"profile": "cpu"}))
    rows, meta = S.read_seed_bench(tmp_path)
    assert set(rows["setting"]) == {"image_effect", "null"} and meta == {"profile": "cpu"}
    _rows().drop(columns="low").to_csv(path, index=False)
    with pytest.raises(ValueError, match="low"):
        S.read_seed_bench(tmp_path)


def test_the_committed_rows_cover_five_seeds_in_both_settings():
    """What the manuscript's tbl-seeds shows: at least 5 generator seeds per setting, the image
    models with their permutation controls, made by the training code of this revision."""
    from crlm_lib.evaluation.runs import RUN_REVISION

    rows, meta = S.read_seed_bench(find_repo_root())
    per_setting = rows.groupby("setting")["seed"].nunique()
    assert set(per_setting.index) == {"image_effect", "null"}
    assert (per_setting >= 5).all(), per_setting.to_dict()
    for model in ("acfnet", "cnn3d", "aminn"):
        perm = rows[(rows["model"] == model) & (rows["metric"] == "permutation_os_c_harrell")]
        assert perm.groupby("setting")["seed"].nunique().min() >= 5, model
    assert meta["profile"] == "cpu" and meta["run_revision"] == RUN_REVISION
