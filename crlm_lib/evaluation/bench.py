"""What the synthetic test bench can show: how much the images add at population size.

:func:`image_increment` fits Cox models on one large simulated cohort and scores them on
another (no images rendered: the phantom's geometry gives the image quantities exactly), for the
generator's ``image_effect`` and ``null`` settings (``data.synthetic.SETTINGS``):

- the full oracle: the true 5-year risk (``data.synthetic.true_survival``);
- Cox on the clinical table (``data.clinical.encode_predictors``, ridge 0.01): the clinical
  model at population size;
- Cox on the clinical table plus the true image-only quantities (log total tumour volume,
  count, bilobar, remnant fraction, attenuation phenotype);
- Cox on SEG-style volumetrics (log total tumour volume, count, largest diameter, remnant
  fraction, Sasaki's tumour burden score) with and without the clinical table.

The image increment is the third row minus the second: what a model that reads the image
perfectly adds to the table, the effect an image model's CT-permutation control can detect.
Every number is about the synthetic generator, not patients.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from crlm_lib.data import synthetic as S
from crlm_lib.data.clinical import encode_predictors, outcomes, validate_clinical

#: Row names of :func:`image_increment`.
ORACLE_ROW = "oracle (true 5-year risk)"
CLINICAL_ROW = "Cox, clinical table"
IMAGE_ROW = "Cox, clinical + true image quantities"


def _concordance(time_years, event, risk) -> float:
    from lifelines.utils import concordance_index

    return float(concordance_index(time_years, -np.asarray(risk), event))


def _volumetrics(cov: pd.DataFrame) -> np.ndarray:
    d_max, n = cov["true_max_diameter_cm"], cov["n_tumours"]
    return np.column_stack(
        [
            np.log(np.maximum(cov["tumour_volume_ml"], 0.1)),
            n,
            d_max,
            cov["remnant_fraction"],
            np.sqrt(d_max**2 + n**2),
        ]
    )


def _cohort(n: int, seed: int, setting: str):
    """``(clinical, outcomes, covariates, true 5-year OS risk, true 5-year DFS risk)`` of a
    simulated cohort."""
    model = S.outcome_model(setting)
    sim = S.simulate_cohort(n, seed, model, oracle_curves=False)
    cov = pd.DataFrame([sp.covariates for sp in sim.specs])
    cov["true_max_diameter_cm"] = [
        max(t.diameter_cm for t in sp.anatomy.tumours) for sp in sim.specs
    ]
    clin = validate_clinical(sim.clinical)
    s_os, s_dfs = S.true_survival(cov, np.array([S.RISK_HORIZON_YEARS]), model)
    return clin, outcomes(clin), cov, 1 - s_os[:, 0], 1 - s_dfs[:, 0]


def _cox_scores(x_tr, out_tr, x_te, head: str) -> np.ndarray:
    from lifelines import CoxPHFitter

    cols = [f"x{j}" for j in range(x_tr.shape[1])]
    df = pd.DataFrame(x_tr, columns=cols)
    df["T"], df["E"] = out_tr[f"{head}_years"].to_numpy(), out_tr[f"{head}_event"].to_numpy()
    keep = [c for c in cols if df[c].std() > 0]
    cph = CoxPHFitter(penalizer=0.01).fit(df[[*keep, "T", "E"]], "T", "E")
    return cph.predict_log_partial_hazard(pd.DataFrame(x_te, columns=cols)[keep]).to_numpy()


def image_increment(
    n_patients: int = 20_000,
    fit_seed: int = 101,
    score_seed: int = 102,
    settings: tuple[str, ...] = tuple(S.SETTINGS),
    n_jobs: int = 1,
) -> pd.DataFrame:
    """Harrell's C (OS, DFS) of the oracle and four Cox models, fitted on ``n_patients`` of
    ``fit_seed`` and scored on ``n_patients`` of ``score_seed``, per generator setting.
    ``n_jobs`` processes simulate the cohorts (the same numbers for any ``n_jobs``).

    Returns
    -------
    DataFrame
        Index ``(setting, model)``, columns ``os``, ``dfs``; then one row per setting
        ``image increment`` (:data:`IMAGE_ROW` minus :data:`CLINICAL_ROW`).
    """
    rows = []
    jobs = [(n_patients, sd, st) for st in settings for sd in (fit_seed, score_seed)]
    cohorts = dict(zip(jobs, S.simulate_many(_cohort, jobs, n_jobs), strict=True))
    for setting in settings:
        clin_a, out_a, cov_a, _, _ = cohorts[(n_patients, fit_seed, setting)]
        clin_b, out_b, cov_b, r_os, r_dfs = cohorts[(n_patients, score_seed, setting)]
        x_a, _ = encode_predictors(clin_a, reference=clin_a)
        x_b, _ = encode_predictors(clin_b, reference=clin_a)
        img_a = cov_a[list(S.IMAGE_COVARIATES)].to_numpy(float)
        img_b = cov_b[list(S.IMAGE_COVARIATES)].to_numpy(float)
        img_a[:, 0], img_b[:, 0] = np.log(img_a[:, 0]), np.log(img_b[:, 0])
        vol_a, vol_b = _volumetrics(cov_a), _volumetrics(cov_b)
        mu, sd = vol_a.mean(0), vol_a.std(0)
        vol_a, vol_b = (vol_a - mu) / sd, (vol_b - mu) / sd
        designs = {
            CLINICAL_ROW: (x_a, x_b),
            IMAGE_ROW: (np.hstack([x_a, img_a]), np.hstack([x_b, img_b])),
            "Cox, SEG volumetrics": (vol_a, vol_b),
            "Cox, clinical + SEG volumetrics": (np.hstack([x_a, vol_a]), np.hstack([x_b, vol_b])),
        }
        for head, oracle_risk in (("os", r_os), ("dfs", r_dfs)):
            t, e = out_b[f"{head}_years"].to_numpy(), out_b[f"{head}_event"].to_numpy()
            rows.append((setting, ORACLE_ROW, head, _concordance(t, e, oracle_risk)))
            for name, (xa, xb) in designs.items():
                c = _concordance(t, e, _cox_scores(xa, out_a, xb, head))
                rows.append((setting, name, head, c))
    tab = pd.DataFrame(rows, columns=["setting", "model", "head", "harrell_c"])
    wide = tab.pivot_table(
        index=["setting", "model"], columns="head", values="harrell_c", sort=False
    )[["os", "dfs"]]
    gains = [
        (wide.loc[(s, IMAGE_ROW)] - wide.loc[(s, CLINICAL_ROW)]).rename((s, "image increment"))
        for s in settings
    ]
    out = pd.concat([wide, pd.DataFrame(gains)])
    out.index = pd.MultiIndex.from_tuples(out.index, names=["setting", "model"])
    out.columns.name = None
    return out.sort_index(level="setting", sort_remaining=False)
