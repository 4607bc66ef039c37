"""Profiles and paths."""

from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from crlm_lib import config


def test_profiles_are_frozen_and_named():
    assert set(config.PROFILES) == {"smoke", "cpu", "paper"}
    prof = config.get_profile("smoke")
    with pytest.raises(FrozenInstanceError):
        prof.seed = 3  # type: ignore[misc]
    assert prof.with_(seed=3).seed == 3 and prof.seed == 0


def test_paper_profile_uses_the_papers_sizes():
    p = config.get_profile("paper")
    assert (p.preprocess.depth, p.preprocess.size) == (40, 128)
    assert p.preprocess.pad_hu == -1024
    assert (p.train.lr, p.train.batch_size, p.train.plateau_factor, p.train.plateau_patience) == (
        1e-4,
        1,
        0.5,
        5,
    )


def test_model_grids_divide_by_eight():
    for p in config.PROFILES.values():
        assert p.preprocess.size % 8 == 0 and p.preprocess.depth % 8 == 0, p.name


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(KeyError, match="smoke"):
        config.get_profile("laptop")


def test_resolve_paths_synthetic_and_real(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "crlm_lib").mkdir()
    syn = config.resolve_paths("smoke", root=tmp_path)
    assert syn.synthetic and syn.cohort_dir == tmp_path / "data/raw/synthetic/smoke"
    assert syn.oracle_csv == syn.cohort_dir / "oracle.csv"
    real = config.resolve_paths(
        "cpu", data_dir=tmp_path / "tcia", clinical=tmp_path / "c.xlsx", root=tmp_path
    )
    assert not real.synthetic and real.oracle_csv is None
    assert real.processed_dir.name == "cpu-real" and real.results_dir.name == "cpu-real"
    assert real.clinical_csv == (tmp_path / "c.xlsx").resolve()


def test_find_repo_root_from_a_subfolder(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "crlm_lib").mkdir()
    sub = tmp_path / "notebooks" / "deep"
    sub.mkdir(parents=True)
    assert config.find_repo_root(sub) == tmp_path.resolve()
    with pytest.raises(FileNotFoundError):
        config.find_repo_root(Path("/"))


def test_run_tag_is_the_one_rule_for_synthetic_and_real_folders(tmp_path: Path):
    assert config.run_tag("cpu", real=False) == "cpu"
    assert config.run_tag(config.get_profile("smoke").name, real=True) == "smoke-real"
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "crlm_lib").mkdir()
    real = config.resolve_paths("cpu", data_dir=tmp_path / "tcia", root=tmp_path)
    assert real.results_dir.name == real.processed_dir.name == "cpu-real"
    assert config.resolve_paths("cpu", root=tmp_path).runs_dir.name == "cpu"


def test_with_options_applies_keywords_and_names_the_valid_ones():
    synth = config.SynthConfig(n_patients=7)
    assert config.with_options(config.SynthConfig, None, {}) == config.SynthConfig()
    assert config.with_options(config.SynthConfig, synth, {}) is synth
    changed = config.with_options(config.SynthConfig, synth, {"matrix": 32})
    assert (changed.n_patients, changed.matrix, synth.matrix) == (
        7,
        32,
        config.SynthConfig().matrix,
    )
    with pytest.raises(TypeError, match=r"'n_patient'.*SynthConfig.*valid: n_patients"):
        config.with_options(config.SynthConfig, None, {"n_patient": 3})
    with pytest.raises(TypeError, match="options must be a SynthConfig, not EvalConfig"):
        config.with_options(config.SynthConfig, config.EvalConfig(), {})


def _options_functions():
    """Every public function that takes ``options`` plus its fields as keywords."""
    import crlm_lib.evaluation as ev
    from crlm_lib import explain, metrics, pipeline
    from crlm_lib.data import preprocess

    return {
        "run_paper_protocol": lambda **kw: ev.run_paper_protocol([], None, **kw),
        "run_cv_protocol": lambda **kw: ev.run_cv_protocol([], None, **kw),
        "bootstrap_scores": lambda **kw: ev.bootstrap_scores(None, **kw),
        "paired_difference": lambda **kw: ev.paired_difference(None, None, **kw),
        "preprocess_cohort": lambda **kw: preprocess.preprocess_cohort(None, None, **kw),
        "ensure_data": lambda **kw: pipeline.ensure_data("smoke", **kw),
        "clinical_shap": lambda **kw: explain.clinical_shap(None, [], None, [], **kw),
        "kernel_shap_check": lambda **kw: explain.kernel_shap_check(None, None, [], None, **kw),
        "survival_metrics": lambda **kw: metrics.survival_metrics(*[None] * 6, **kw),
    }


@pytest.mark.parametrize("name", sorted(_options_functions()))
def test_options_keywords_are_checked_before_any_work(name):
    """A misspelt setting is refused by name, with the valid ones, before the function reads
    its inputs (here: none at all); so is an options object of another type."""
    call = _options_functions()[name]
    with pytest.raises(TypeError, match=r"'sed': not a field of \w+Options \(valid: \w+, "):
        call(sed=1)
    with pytest.raises(TypeError, match="options must be a"):
        call(options=config.SynthConfig())
