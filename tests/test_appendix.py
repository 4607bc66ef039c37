"""The methods' reference tables (evaluation.appendix) say what the code does."""

from __future__ import annotations

import pandas as pd

from crlm_lib import evaluation as ev
from crlm_lib.config import PROFILES
from crlm_lib.data import clinical as C
from crlm_lib.data.synthetic import SETTINGS
from crlm_lib.types import RISK_HORIZON_YEARS
from tests.test_evaluate import simulate_cohort


def test_profile_table_reads_every_profile():
    table = ev.profile_table()
    assert list(table.columns) == [
        "papers (where stated)", "paper profile", "cpu profile", "smoke profile",
    ]  # fmt: skip
    for name, prof in PROFILES.items():
        col = table[f"{name} profile"]
        grid = f"{prof.preprocess.depth} × {prof.preprocess.size} × {prof.preprocess.size}"
        assert col["CT grid (slices × rows × columns)"] == grid
        assert col["Bootstrap replicates"] == str(prof.eval.bootstrap)
        assert col["CV of clinical models (repeats × folds)"] == (
            f"{prof.eval.cv_repeats} × {prof.eval.cv_folds}"
        )
        acts = prof.train.early_stopping_patience > prof.train.plateau_patience
        acts = acts and prof.train.epochs > prof.train.plateau_patience + 1
        assert col["Scheduler can act before early stopping"] == ("yes" if acts else "no")
    # the cpu profile stops (patience 4) before the plateau scheduler (patience 5) can act
    assert table.loc["Scheduler can act before early stopping", "cpu profile"] == "no"
    assert "4D-ACFNet §4.2" in table.loc["Batch size", "papers (where stated)"]


def test_generator_table_is_the_outcome_model():
    for setting, model in SETTINGS.items():
        table = ev.generator_table(setting)
        assert table.loc["c0", "value"] == f"{model.c0:g}"
        assert table.loc["image_weight", "value"] == f"{model.image_weight:g}"
        assert (table["meaning"] != "").all()
    assert ev.generator_table("null").loc["image_weight", "value"] == "0"


def test_predictor_table_lists_every_predictor_with_its_encoding():
    table = ev.predictor_table()
    assert list(table.index) == list(C.PREDICTORS)
    assert table.loc["carcinoembryonic_antigen", "encoding"].startswith("log(1 + x)")
    assert table.loc["sex", "encoding"].startswith("sex_female")
    assert table.loc["body_mass_index", "in v1 table"] == "no"
    assert set(table.loc[list(C.PATHOLOGY_PREDICTORS), "known"]) == {"pathology"}


def test_hyperparameters_name_the_risk_horizons():
    table = ev.hyperparameter_table()["value"]
    assert table["Cox PH (clinical)", "penalty (lifelines penalizer)"] == "0.1"
    os_score = table["every model", "risk score of the OS C-index"]
    assert os_score.endswith(f"{RISK_HORIZON_YEARS['os']} years")


def test_events_table_counts_add_up():
    cohort = simulate_cohort(60, seed=7)
    table = ev.events_table(cohort, "smoke", seed=0)
    deaths = int(cohort.outcomes["os_event"].sum())
    split = table.loc[["8:1:1 training", "8:1:1 validation", "8:1:1 test"]].astype(int)
    assert split["patients"].sum() == 60 and split["deaths"].sum() == deaths
    folds = table.loc[[i for i in table.index if i.startswith("CV repeat 1")]].astype(int)
    assert len(folds) == PROFILES["smoke"].eval.cv_folds
    assert folds["patients"].sum() == 60 and folds["DFS events"].sum() == int(
        cohort.outcomes["dfs_event"].sum()
    )
    lo, hi = (int(x) for x in table.loc["CV, every test fold (2)", "patients"].split("–"))
    assert lo <= hi and lo + hi == 60
    assert isinstance(table, pd.DataFrame)


def test_generator_formula_reads_the_codes_fixed_coefficients(monkeypatch):
    from dataclasses import replace

    import numpy as np
    import pandas as pd

    from crlm_lib.data import synthetic
    from crlm_lib.evaluation.appendix import generator_formula

    text = generator_formula()
    assert "+ 0.55E + 0.15M" in text and "e^{0.08t}" in text and "0.02(a - 60)" in text
    other = replace(synthetic.HAZARD, extrahep=0.77, bg_gompertz=0.09)
    changed = generator_formula(other)
    assert "+ 0.77E" in changed and "e^{0.09t}" in changed and "0.55E" not in changed
    # the code reads the same constants: changing one moves the linear predictor by its term
    cov = pd.DataFrame({k: [1.0, 0.0] for k in synthetic.COVARIATES})
    cov["age"], cov["cea"], cov["n_tumours"], cov["tumour_volume_ml"] = 60.0, 5.0, 1.0, 20.0
    before = synthetic.linear_predictors(cov)["eta_clin"].to_numpy()
    monkeypatch.setattr(synthetic, "HAZARD", other)
    after = synthetic.linear_predictors(cov)["eta_clin"].to_numpy()
    np.testing.assert_allclose(after - before, [0.77 - 0.55, 0.0])
