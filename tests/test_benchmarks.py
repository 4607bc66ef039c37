"""The benchmark scripts still run (tiny sizes, CPU): they reach into the library's internals
(the loader's private stages, the training step of ``train.fit``), and the GPU session that
finally runs ``benchmarks/gpu_step.py`` must not find it broken. Numbers are not checked."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_gpu_step_on_cpu_prints_every_model_and_the_ratios():
    out = _run(
        "benchmarks/gpu_step.py", "--device", "cpu", "--size", "8", "8", "8",
        "--profile", "smoke", "--batch-size", "2", "--steps", "1", "--rounds", "1",
        "--threads", "1", "--models", "acfnet", "acfnet_no_recon", "cnn3d", "resnet18_3d",
    )  # fmt: skip
    for name in ("acfnet", "acfnet_no_recon", "cnn3d", "resnet18_3d"):
        assert re.search(rf"^\s*{name}: +[\d.]+ ms/step", out, re.M), out
    for name in ("acfnet", "acfnet_no_recon"):
        for other in ("cnn3d", "resnet18_3d"):
            assert re.search(rf"^{name} / {other} step time: [\d.]+x", out, re.M), out
    assert "acfnet / acfnet_no_recon" not in out  # variants are not compared with each other


def test_preprocess_benchmark_prints_the_stage_table_and_the_lower_bound():
    out = _run("benchmarks/preprocess.py", "--profile", "smoke", "--n", "2", "--repeats", "1")
    assert re.search(r"ratio preprocessing / DICOM read: [\d.]+x", out), out
    for stage in ("load CT + SEG", "of which SEG per-frame", "of which CT slices", "cubic resize"):
        assert re.search(rf"{re.escape(stage)}: +[\d.]+$", out, re.M), out
    assert re.search(r"the whole is >= [\d.]+x", out), out


def test_synthetic_bench_calibration_and_population_run_small():
    out = _run("benchmarks/synthetic_bench.py", "calibration", "--seeds", "1", "--n", "200")
    assert "5-year OS, Fong score 0" in out and re.search(r"within range: \d+ of \d+", out), out
    out = _run("benchmarks/synthetic_bench.py", "population", "--n", "300")
    assert out.count("image increment") == 2 and "null" in out and "image_effect" in out, out


def test_probe_inputs_counts_outcomes():
    """The probe runs the chosen corpus cases and prints one line each and the counts."""
    out = _run("benchmarks/probe_inputs.py", "--only", "PNG named", "v2 xlsx", "missing slice")
    assert re.search(r"^refusals\s+clear error\s+PNG named \.csv$", out, re.M), out
    assert re.search(r"^clinical\s+correct\s+v2 xlsx$", out, re.M), out
    assert re.search(r"^dicom\s+clear error\s+missing slice$", out, re.M), out
    assert "3 cases" in out and re.search(r"^silent\s+0$", out, re.M), out


def test_probe_inputs_names_a_wrong_result_and_a_bug(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import probe_inputs
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))

    def wrong(tmp, capture, fixtures):
        assert 1 == 2, "exit 0 where exit 2 was due"

    def bug(tmp, capture, fixtures):
        raise KeyError("patient_id")

    def fine(tmp, capture, fixtures):
        print("noise")  # captured, not shown
        return "correct"

    base = tmp_path
    fixtures = probe_inputs.Fixtures(base)
    assert probe_inputs.run_case(wrong, base, fixtures) == ("silent", "exit 0 where exit 2 was due")
    assert probe_inputs.run_case(bug, base, fixtures) == ("traceback", "KeyError: 'patient_id'")
    assert probe_inputs.run_case(fine, base, fixtures) == ("correct", "")


def test_prediction_honesty_and_speed_run_small(tmp_path):
    """The band-coverage benchmark on a tiny ensemble: the coverage of the oracle's survival is
    a share, written for the model card; the speed benchmark then times that ensemble."""
    import json

    out = _run("benchmarks/prediction_honesty.py", "--n", "12", "--folds", "2", "--epochs",
               "1", "--heldout", "3", "--root", str(tmp_path))  # fmt: skip
    assert re.search(r"coverage of the true overall survival \(nominal 90%\): [\d.]+%", out), out
    assert re.search(r"without the row, draws \(--allow-missing\): mean \|change\| [\d.]+", out)
    cv = tmp_path / "runs" / "cv" / "acfnet"
    summary = json.loads((cv / "band_coverage.json").read_text())
    assert summary["n_models"] == 2 and summary["n_values"] == 9 and summary["nominal"] == 0.9
    assert 0.0 <= summary["coverage"] <= 1.0
    # the cross-validation calibrated the conformal band (12 patients); the spread beside it
    assert (cv / "conformal.json").is_file() and summary["calibration_patients"] == 12
    assert "split-conformal 90% band" in summary["method"]
    assert "5th-95th percentile of the 2 models" in summary["ensemble_spread"]["method"]
    assert set(summary["outcome_calibrated_half_width_os"]) == {"1", "3", "5"}
    from crlm_lib.model_card import build_model_card

    card = build_model_card(cv / "r0_f0")  # the fold run's card quotes the measured coverage
    share = f"{summary['coverage']:.0%} of 9 values (3 held-out synthetic patients, 2 models)"
    assert share in card and "against a nominal 90%" in card
    assert "- Band: split-conformal 90% band for the true survival probability" in card
    out = _run("benchmarks/predict_speed.py", "--run", str(cv), "--cohort",
               str(tmp_path / "heldout" / "Colorectal-Liver-Metastases"), "--clinical",
               str(tmp_path / "heldout" / "clinical.csv"), "--patients", "2")  # fmt: skip
    assert re.search(r"start-up \(imports \+ 2 models loaded\): [\d.]+ s wall", out), out
    assert re.search(r"warm patients: median [\d.]+ s wall", out), out


def test_synthetic_bench_summary_counts_seeds_with_an_interval_above_zero():
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import synthetic_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = []
    for seed, (est, low) in enumerate([(0.03, 0.01), (0.02, -0.01), (0.05, 0.02)]):
        rows.append(("image_effect", seed, "acfnet", "permutation_os_c_harrell", est, low, 0.1))
        rows.append(("image_effect", seed, "acfnet", "os_c_harrell", 0.6 + est, 0.5, 0.7))
    tidy = pd.DataFrame(
        rows, columns=["setting", "seed", "model", "metric", "estimate", "low", "high"]
    )
    out = synthetic_bench.summarise_cv(tidy)
    perm = out.loc[("image_effect", "acfnet", "permutation_os_c_harrell")]
    assert perm["above0"] == 2 and perm["count"] == 3 and perm["seed0_rank"] == 2
    assert abs(perm["mean"] - 0.1 / 3) < 1e-12
    assert pd.isna(out.loc[("image_effect", "acfnet", "os_c_harrell"), "above0"])


def test_synthetic_bench_reads_back_the_null_setting_as_a_name(tmp_path: Path):
    """A (setting, seed) already run is read back from its ``cv_rows.csv``; the setting
    ``null`` stays a name (pandas reads the bare word as a missing value by default)."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import synthetic_bench
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    where = tmp_path / "cpu-null-seed7"
    where.mkdir()
    pd.DataFrame(
        [("acfnet", "os_c_harrell", 0.55, float("nan"), 0.6, "null", 7)],
        columns=["model", "metric", "estimate", "low", "high", "setting", "seed"],
    ).to_csv(where / "cv_rows.csv", index=False)
    rows = synthetic_bench.cv_over_seeds([7], ["acfnet"], "cpu", tmp_path, settings=("null",))
    assert rows["setting"].tolist() == ["null"] and rows["low"].isna().all()
    assert synthetic_bench.summarise_cv(rows).index[0][0] == "null"
