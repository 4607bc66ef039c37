r"""Synthetic CRLM cohort in the exact TCIA layout, with a known (oracle) survival model.

No machine of this project can download the real collection, so the default data is a synthetic
cohort written like the real one (see ``docs/interfaces.md``): per patient a CT series (one
DICOM file per slice, CT Image Storage, int16, intercept -1024) and one DICOM-SEG (highdicom,
BINARY, empty frames omitted) with the collection's segment labels ``Liver``, ``Liver_Remnant``,
``Hepatic``, ``Portal``, ``Tumor_1`` ..., plus ``clinical.csv`` (the real column names, -999 for
missing) and ``oracle.csv`` (the true curves; never a predictor). **Every number obtained on it is
synthetic.** Anatomy: :mod:`crlm_lib.data.phantom`.

Per patient ``i`` three independent random streams are used, ``default_rng([seed, i, s])``:
``s = 0`` clinical variables and anatomy, ``s = 1`` event times and censoring, ``s = 2`` scan
coverage and image noise. A patient is therefore the same whatever the cohort size, and has the
same clinical data and outcomes at every image resolution (profile).

What the clinical table records, and what only the images show
---------------------------------------------------------------
The table records what a clinic records, not the generator's truth (:func:`sample_patient`):
the largest tumour's size measured with a multiplicative error (log SD 0.15) and rounded to
0.5 cm; the tumour count and lobes as read, each tumour other than the largest detected with
probability ``min(1, 0.5 + 0.3 d)`` (``d`` its diameter in cm), so ``multiple_metastases`` and
``bilobar_disease`` can be wrong in one direction (a missed small tumour). The images show
the true tumour volume, count, lobes and the remnant fraction, and one quantity that no mask and
no column shows: the tumours' **attenuation phenotype** ``z ~ N(0, 1)``, drawn per patient,
which sets the tumours' portal-venous attenuation ``45 + 20 z`` HU (clipped to 0..95 HU; liver
about 110 HU; :attr:`phantom.Anatomy.tumour_hu`). A shared disease-burden latent raises the odds
of synchronous disease, of more than one tumour, CEA and the largest size together, so the Fong
criteria are correlated as in Fong 1999 (:data:`BURDEN_LOGIT`).

Generative survival model (illness-death, times in years after resection)
------------------------------------------------------------------------
Covariates: Fong criteria :math:`F_1..F_5` *as recorded* (node-positive primary; synchronous
metastases, the table's proxy of a disease-free interval < 12 months; more than one tumour
read; CEA > 200 ng/mL; largest tumour measured > 5 cm), extrahepatic disease ``E``, comorbidity
``M``, steatosis ``St``, NAS >= 4 ``N4``, chemotherapy ``Ch`` with pathological response
``resp`` (0..1), age ``a``, and the image-only quantities: true total tumour volume ``V`` (mL),
count ``n``, bilobar ``Bi``, remnant fraction ``f`` (future liver remnant / non-tumoural liver
volume) and the attenuation phenotype ``z``.

.. math::

   \eta_{clin} &= g_{F} + 0.10(\ln(1+CEA) - 2.7)
                 + 0.55E + 0.15M + 0.15St + 0.20N4 - 0.50\,Ch\,resp \\
   \eta_{img}  &= w_{img}\,[\,0.40\ln(V/20) + 0.20\ln n + 0.25Bi + 1.5\max(0, 0.40 - f)
                 - 0.90z - \bar c\,] \\
   \eta_R      &= \eta_{clin} + \eta_{img} - c_0

where :math:`F = F_1 + ... + F_5` is the recorded Fong score, :math:`g_F` its offset
(``fong_effect``, fitted), :math:`\bar c` (``img_centre``) the population mean of the bracket
and :math:`w_{img}` the **setting** (:data:`SETTINGS`): 1 in ``image_effect`` (default), 0 in
``null``, where the outcome depends on the clinical table alone (the remnant term of the
postoperative death below is scaled by :math:`w_{img}` too). Measured on 20,000 + 20,000
patients (``benchmarks/synthetic_bench.py population``: Cox models fitted on one cohort, Harrell's
C on the other), the true image quantities add {IMG_GAIN} to a Cox model of the clinical table under
``image_effect`` and {NULL_GAIN} under ``null``.

1. Recurrence (promotion-time cure model, bounded cumulative hazard, early peak):
   :math:`H_R(t) = \theta e^{\eta_R}\,(1 - \exp(-(t/\beta_R)^{k_R}))` with
   :math:`\beta_R = \beta_0 e^{-0.30\,\eta_{img}}` (clipped to [0.4, 4] y), :math:`\theta = 1`,
   :math:`c_0 = 1.15`, :math:`\beta_0 = 2.2` y, :math:`k_R = 1.5`. The hazard
   :math:`h_R = \theta e^{\eta_R} k_R/\beta_R (t/\beta_R)^{k_R-1} e^{-(t/\beta_R)^{k_R}}` peaks at
   :math:`\beta_R((k_R-1)/k_R)^{1/k_R}` (about 1 year); cure fraction
   :math:`\exp(-\theta e^{\eta_R})`. Tumour burden shortens :math:`\beta_R`, so its hazard ratio is
   largest early and falls below 1 later: the effects are **not proportional**.
2. Other-cause death (applies before and after recurrence):
   :math:`h_O(t) = h_{op}\,\mathbb 1[t < 0.25]\,e^{0.6M + 0.5N4 + 4w_{img}\max(0, 0.3 - f)}
   + \lambda_{bg} e^{0.075(a-60) + 0.4M} e^{0.08t}` (90-day postoperative + Gompertz background).
3. Cancer death after recurrence at :math:`s`: with probability :math:`p_s` (fitted) the
   recurrence is salvaged (repeat resection or ablation) and causes no death; otherwise Weibull
   :math:`H_D(u) = e^{\eta_D}(u/\beta_D)^{k_D}`, :math:`u = t - s`,
   :math:`\eta_D = 0.28\,\eta_R + 0.3E + 0.02(a - 60)`, :math:`\beta_D = 1.3` y,
   :math:`k_D = 1.3`; :math:`h_{op} = 0.06`/y, :math:`\lambda_{bg} = 0.012`/y.

Death :math:`D = \min(T_O, R + T_D)`; DFS event time :math:`\min(R, T_O)` (so DFS <= OS always).
True curves (``oracle.csv``) are exact functions of the model, not samples:
:math:`S_{DFS}(t) = e^{-H_R(t) - H_O(t)}` and
:math:`S_{OS}(t) = e^{-H_O(t)}\,[\,S_R(t) + \int_0^t h_R(s)S_R(s)K(t-s)ds\,]` with
:math:`K(u) = p_s + (1 - p_s)e^{-H_D(u)}`
(trapezoidal rule, step 0.005 y). ``os_risk`` / ``dfs_risk`` are
:math:`\log(-\log S(5))` (the model is not proportional, so a 5-year risk ranks patients); the
linear predictors are ``dfs_lp`` (:math:`\eta_R`) and ``os_lp`` (:math:`\eta_D`).

Liver recurrence: the first recurrence is intrahepatic with probability
:math:`\mathrm{expit}(0.3 + 0.5Bi + 0.3F_3 - 1.0E)`; otherwise a liver recurrence follows at
:math:`R + \mathrm{Exp}(1.5\,y)` with probability 0.4.

Censoring: administrative at :math:`U(2, A)` years (staggered accrual; :math:`A` fitted, the
real cohort's follow-up is not published) and loss to follow-up at rate 0.04/year.

Calibration (:func:`fit_outcome_model`, :func:`calibration_summary`): :data:`DEFAULT_MODEL`'s
``fong_effect``, ``p_salvage`` and ``admin_years`` were fitted on 12,000 patients of seed
:data:`FIT_SEED` to the *expected* 5-year OS of each recorded Fong score (Fong et al., Ann Surg
1999: 60, 44, 40, 20, 25, 14% for scores 0-5) and the real cohort's fractions of deaths
(107/197) and DFS events (138/197), then rounded. Every check runs on other seeds: on seeds
1-5 (4,000 patients each; ``benchmarks/synthetic_bench.py calibration``) {HELDOUT}.
Named, not fitted: Kanas et al., Clin Epidemiol 2012 (median OS after resection about 3.6
years) and 60-70% recurrence, mostly within 2 years.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from crlm_lib import atomic
from crlm_lib.config import TCIA_COLLECTION, SynthConfig
from crlm_lib.data import phantom
from crlm_lib.data.clinical import COLUMNS, MISSING_CODE
from crlm_lib.data.parallel import run_jobs, run_jobs_in_order
from crlm_lib.locks import folder_lock

N_YEARS_ORACLE = 12
#: Version of the sampling code, recorded in ``synthetic_cohort.json``: a cohort folder written
#: by another version is refused (:func:`write_cohort`) rather than silently completed with
#: patients of another generator. 2: measured clinical table, attenuation phenotype, settings.
GENERATOR_VERSION = 2
#: Horizon (years) of the oracle's risk scores ``os_risk`` / ``dfs_risk`` (log(-log S(5))).
RISK_HORIZON_YEARS = 5.0
#: Fong Y, Fortner J, Sun RL, Brennan MF, Blumgart LH. Clinical score for predicting recurrence
#: after hepatic resection for metastatic colorectal cancer: analysis of 1001 consecutive cases.
#: Ann Surg 1999;230(3):309-318: 5-year overall survival by clinical risk score 0..5.
FONG_5Y_OS = (0.60, 0.44, 0.40, 0.20, 0.25, 0.14)
#: Same source: share of the 1001 patients with each score 0..5 (about 9, 24, 30, 25, 11, 1%).
FONG_SCORE_SHARE = (0.09, 0.24, 0.30, 0.25, 0.11, 0.01)
#: Patients per score, ``round(share * 1001)``.
FONG_N = (90, 240, 300, 250, 110, 10)
#: Exact (Clopper-Pearson) 95% interval of each score's 5-year OS, a binomial proportion with
#: ``round(os * n)`` survivors among ``n = FONG_N`` (``scipy.stats.binomtest(...).proportion_ci``;
#: :func:`fong_1999_intervals` recomputes them). It ignores censoring (the paper's KM estimates
#: have wider intervals), so it is a strict target.
FONG_5Y_OS_CI = (
    (0.4913, 0.7019),
    (0.3778, 0.5070),
    (0.3441, 0.4579),
    (0.1522, 0.2550),
    (0.1763, 0.3465),
    (0.0025, 0.4450),
)
#: The real cohort (TCIA Colorectal-Liver-Metastases clinical table, Simpson et al. 2024):
#: 197 patients, 107 deaths (``vital_status``), 138 DFS events (``vital_status_DFS``).
REAL_COHORT_N, REAL_COHORT_DEATHS, REAL_COHORT_DFS_EVENTS = 197, 107, 138
#: Tolerance (absolute fraction) of the death and DFS-event fractions against the real cohort.
EVENT_FRACTION_TOLERANCE = 0.03
#: Tolerance (absolute fraction) of each Fong score's share against Fong 1999's.
SCORE_SHARE_TOLERANCE = 0.04
#: Kanas et al. 2012: median OS after resection (years).
KANAS_MEDIAN_OS_YEARS = 3.6
#: Acceptance range of the fraction of patients with a recurrence (the calibration target 0.65).
RECURRENCE_RANGE = (0.60, 0.70)


class SyntheticCohortError(RuntimeError):
    """The synthetic cohort folder is inconsistent with the request."""


@dataclass(frozen=True)
class OutcomeModel:
    """Parameters of the generative survival model (see the module docstring).

    ``fong_effect[s]`` is the log-hazard offset of recurrence for a patient whose five Fong
    criteria *as recorded* add up to ``s``; ``p_salvage`` the probability that a recurrence is
    cured by salvage treatment (no cancer death). The image-only terms (``img_*`` weights, see
    :func:`linear_predictors`) enter through ``image_weight``: 1 in the ``image_effect``
    setting, 0 in the ``null`` setting (:data:`SETTINGS`), where the outcome depends on the
    clinical table alone. ``img_centre`` is the population mean of the raw image term, so that
    both settings have about the same event rates.
    """

    setting: str = "image_effect"
    theta: float = 1.0
    c0: float = 1.15
    beta0: float = 2.2
    k_r: float = 1.5
    beta_d: float = 1.3
    k_d: float = 1.3
    h_op: float = 0.06
    lambda_bg: float = 0.012
    fong_effect: tuple[float, float, float, float, float, float] = (
        1.18,
        1.78,
        1.40,
        2.34,
        1.35,
        2.18,
    )
    eta_d_weight: float = 0.28
    image_weight: float = 1.0
    img_volume: float = 0.40
    img_count: float = 0.20
    img_bilobar: float = 0.25
    img_remnant: float = 1.5
    img_attenuation: float = 0.90
    img_centre: float = 0.76
    p_salvage: float = 0.15
    admin_years: tuple[float, float] = (2.0, 5.79)
    loss_rate: float = 0.04


@dataclass(frozen=True)
class HazardConstants:
    """The generator's fixed (not fitted, not set by a setting) coefficients and thresholds,
    named so that the code and the manuscript's formula read the same numbers
    (``evaluation.appendix.generator_formula``). Units: years, mL, ng/mL; the module
    docstring gives the equations they enter."""

    cea: float = 0.10  # per unit of ln(1 + CEA) in eta_clin
    cea_centre: float = 2.7  # ln(1 + CEA) subtracted before the CEA term
    extrahep: float = 0.55  # extrahepatic disease E, eta_clin
    comorbidity: float = 0.15  # major comorbidity M, eta_clin
    steatosis: float = 0.15  # steatosis St, eta_clin
    nash_ge4: float = 0.20  # NAS >= 4 N4, eta_clin
    chemo_response: float = 0.50  # chemotherapy x pathological response, eta_clin (minus)
    volume_ref_ml: float = 20.0  # V / 20 mL inside the log of the image term
    remnant_threshold: float = 0.40  # max(0, 0.40 - f) in the image term
    beta_r_image: float = 0.30  # beta_R = beta_0 exp(-0.30 eta_img)
    beta_r_range: tuple[float, float] = (0.4, 4.0)  # clip of beta_R, years
    death_extrahep: float = 0.3  # E in eta_D
    death_age: float = 0.02  # per year of age above the centre, eta_D
    age_centre: float = 60.0  # years
    op_window_years: float = 0.25  # postoperative hazard lasts 90 days
    op_comorbidity: float = 0.6  # M in the postoperative hazard
    op_nash: float = 0.5  # N4 in the postoperative hazard
    op_remnant: float = 4.0  # small remnant in the postoperative hazard (times w_img)
    op_remnant_threshold: float = 0.3  # max(0, 0.3 - f) in the postoperative hazard
    bg_age: float = 0.075  # per year of age above the centre, background hazard
    bg_comorbidity: float = 0.4  # M in the background hazard
    bg_gompertz: float = 0.08  # per year after resection, Gompertz background


#: The fixed coefficients every outcome model shares (:class:`HazardConstants`).
HAZARD = HazardConstants()
DEFAULT_MODEL = OutcomeModel()
#: The two documented settings of the generator: ``image_effect`` (default: image-only
#: quantities carry a stated share of the hazard) and ``null`` (image weight 0: the CT and SEG
#: add nothing to the clinical table). Same parameters otherwise.
SETTINGS: dict[str, OutcomeModel] = {
    "image_effect": DEFAULT_MODEL,
    "null": replace(DEFAULT_MODEL, setting="null", image_weight=0.0),
}


def outcome_model(setting: str | OutcomeModel = "image_effect") -> OutcomeModel:
    """The :class:`OutcomeModel` of a named setting (``image_effect`` or ``null``)."""
    if isinstance(setting, OutcomeModel):
        return setting
    try:
        return SETTINGS[setting]
    except KeyError:
        raise SyntheticCohortError(
            f"unknown generator setting {setting!r}; choose one of {sorted(SETTINGS)}"
        ) from None


#: Clinical covariates the outcome model reads, as the clinical table records them
#: (``multiple_metastases`` and ``max_diameter_cm`` are the clinic's reading; CEA is the true
#: value, which the table holds except where it is missing).
CLINICAL_COVARIATES = (
    "node_positive_primary",
    "synchronous_crlm",
    "multiple_metastases",
    "cea",
    "max_diameter_cm",
    "extrahep_disease",
    "major_comorbidity",
    "steatosis",
    "nash_ge4",
    "chemo",
    "response",
    "age",
)
#: Image-only quantities (true values of the phantom): what the CT and SEG show and the table
#: does not (the table's count, size and bilobar reading are noisy readings of the first three;
#: the attenuation phenotype is in no column and only in the CT's intensities).
IMAGE_COVARIATES = (
    "tumour_volume_ml",
    "n_tumours",
    "bilobar",
    "remnant_fraction",
    "tumour_attenuation_z",
)
#: Covariate columns the outcome model reads (no missingness).
COVARIATES = CLINICAL_COVARIATES + IMAGE_COVARIATES


# --------------------------------------------------------------------------------------------
# outcome model
# --------------------------------------------------------------------------------------------


def image_term(cov: pd.DataFrame, model: OutcomeModel = DEFAULT_MODEL) -> np.ndarray:
    r"""The raw image-only term of the recurrence predictor (before ``image_weight``, centring).

    .. math::  a_V\ln(V/20) + a_n\ln n + a_{Bi}Bi + a_f\max(0, 0.40 - f) - a_z z

    with total tumour volume ``V`` (mL), count ``n``, bilobar ``Bi``, remnant fraction ``f`` and
    the attenuation phenotype ``z`` (lower attenuation, worse prognosis).
    """
    g = {k: cov[k].to_numpy(float) for k in IMAGE_COVARIATES}
    return (
        model.img_volume * np.log(np.maximum(g["tumour_volume_ml"], 0.1) / HAZARD.volume_ref_ml)
        + model.img_count * np.log(np.maximum(g["n_tumours"], 1.0))
        + model.img_bilobar * g["bilobar"]
        + model.img_remnant * np.maximum(0.0, HAZARD.remnant_threshold - g["remnant_fraction"])
        - model.img_attenuation * g["tumour_attenuation_z"]
    )


def linear_predictors(cov: pd.DataFrame, model: OutcomeModel = DEFAULT_MODEL) -> pd.DataFrame:
    """:math:`\\eta_{clin}, \\eta_{img}, \\eta_R, \\eta_D, \beta_R` per patient (module docstring)."""
    g = {k: cov[k].to_numpy(float) for k in COVARIATES}
    score = (
        g["node_positive_primary"]
        + g["synchronous_crlm"]
        + g["multiple_metastases"]
        + (g["cea"] > 200)
        + (g["max_diameter_cm"] > 5)
    ).astype(int)
    eta_clin = (
        np.asarray(model.fong_effect, dtype=float)[score]
        + HAZARD.cea * (np.log1p(g["cea"]) - HAZARD.cea_centre)
        + HAZARD.extrahep * g["extrahep_disease"]
        + HAZARD.comorbidity * g["major_comorbidity"]
        + HAZARD.steatosis * g["steatosis"]
        + HAZARD.nash_ge4 * g["nash_ge4"]
        - HAZARD.chemo_response * g["chemo"] * g["response"]
    )
    eta_img = model.image_weight * (image_term(cov, model) - model.img_centre)
    eta_r = eta_clin + eta_img - model.c0
    h = HAZARD
    eta_d = (
        model.eta_d_weight * eta_r
        + h.death_extrahep * g["extrahep_disease"]
        + h.death_age * (g["age"] - h.age_centre)
    )
    beta_r = np.clip(model.beta0 * np.exp(-h.beta_r_image * eta_img), *h.beta_r_range)
    op = model.h_op * np.exp(
        h.op_comorbidity * g["major_comorbidity"]
        + h.op_nash * g["nash_ge4"]
        + model.image_weight
        * h.op_remnant
        * np.maximum(0.0, h.op_remnant_threshold - g["remnant_fraction"])
    )
    bg = model.lambda_bg * np.exp(
        h.bg_age * (g["age"] - h.age_centre) + h.bg_comorbidity * g["major_comorbidity"]
    )
    return pd.DataFrame(
        {
            "eta_clin": eta_clin,
            "eta_img": eta_img,
            "eta_r": eta_r,
            "eta_d": eta_d,
            "beta_r": beta_r,
            "h_op": op,
            "lambda_bg": bg,
        },
        index=cov.index,
    )


def _h_other(lp: pd.DataFrame, t: np.ndarray) -> np.ndarray:
    """Other-cause cumulative hazard H_O(t); t [T] -> [N, T]."""
    t = np.asarray(t, float)[None, :]
    op = lp["h_op"].to_numpy()[:, None] * np.minimum(t, HAZARD.op_window_years)
    rate = HAZARD.bg_gompertz
    return op + lp["lambda_bg"].to_numpy()[:, None] * (np.exp(rate * t) - 1.0) / rate


def _h_rec(lp: pd.DataFrame, t: np.ndarray, model: OutcomeModel) -> np.ndarray:
    """Recurrence cumulative hazard H_R(t) [N, T]."""
    t = np.asarray(t, float)[None, :]
    scale = model.theta * np.exp(lp["eta_r"].to_numpy())[:, None]
    return scale * (1.0 - np.exp(-((t / lp["beta_r"].to_numpy()[:, None]) ** model.k_r)))


def true_survival(
    cov: pd.DataFrame,
    times_years: np.ndarray,
    model: OutcomeModel = DEFAULT_MODEL,
    step_years: float = 0.005,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact OS and DFS survival functions of the generative model.

    Parameters
    ----------
    cov : DataFrame [N, COVARIATES]
    times_years : ndarray [T]
        Evaluation times (years, >= 0), in any order (e.g. year ends 1..12 followed by 5).

    Returns
    -------
    s_os, s_dfs : ndarray float64 [N, T]
        :math:`S_{OS}(t)` by numerical integration of the illness-death model (trapezoid, step
        ``step_years``); :math:`S_{DFS}(t)` in closed form; column ``j`` is the value at
        ``times_years[j]``. Both are non-increasing in t (the running minimum that removes
        the integration error is taken over the *sorted* times, so an unsorted request such as
        ``[1..12, 5]`` gives the 5-year value in its last column, not the 12-year one).
    """
    requested = np.asarray(times_years, float)
    times, back = np.unique(requested, return_inverse=True)
    s_os, s_dfs = _true_survival_sorted(cov, times, model, step_years)
    return s_os[:, back], s_dfs[:, back]


def _true_survival_sorted(
    cov: pd.DataFrame, times: np.ndarray, model: OutcomeModel, step_years: float
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`true_survival` at sorted, unique ``times``."""
    lp = linear_predictors(cov, model)
    s_dfs = np.exp(-_h_rec(lp, times, model) - _h_other(lp, times))
    grid = np.arange(0.0, times.max() + step_years, step_years)
    h_r_cum = _h_rec(lp, grid, model)  # [N, S]
    s_r = np.exp(-h_r_cum)
    beta = lp["beta_r"].to_numpy()[:, None]
    scale = model.theta * np.exp(lp["eta_r"].to_numpy())[:, None]
    u = grid[None, :] / beta
    h_r = scale * model.k_r / beta * u ** (model.k_r - 1) * np.exp(-(u**model.k_r))
    f_r = h_r * s_r  # recurrence sub-density [N, S]
    e_d = np.exp(lp["eta_d"].to_numpy())[:, None]
    s_os = np.empty((len(cov), len(times)))
    for j, t in enumerate(times):
        m = grid <= t + 1e-12
        s = grid[m]
        kernel = np.exp(-e_d * ((t - s)[None, :] / model.beta_d) ** model.k_d)
        kernel = model.p_salvage + (1.0 - model.p_salvage) * kernel
        integral = np.trapezoid(f_r[:, m] * kernel, s, axis=1) if m.sum() > 1 else 0.0
        s_r_t = np.exp(-_h_rec(lp, np.array([t]), model))[:, 0]
        s_os[:, j] = np.exp(-_h_other(lp, np.array([t]))[:, 0]) * (s_r_t + integral)
    s_os = np.minimum.accumulate(np.clip(s_os, 0.0, 1.0), axis=1)
    return s_os, s_dfs


def sample_event_times(
    cov: pd.DataFrame,
    rngs: list[np.random.Generator],
    model: OutcomeModel = DEFAULT_MODEL,
) -> pd.DataFrame:
    """Draw true event times and censoring (one generator per patient).

    Each patient's generator gives 6 unit exponentials then 4 uniforms, in that order;
    :func:`event_times` turns them into times.

    Returns
    -------
    DataFrame
        ``recurrence_years`` (inf = never), ``other_death_years``, ``cancer_death_after_years``,
        ``death_years``, ``liver_recurrence_years`` (inf = never), ``censor_years``.
    """
    draws = [(rng.exponential(size=6), rng.uniform(size=4)) for rng in rngs]
    e = np.array([d[0] for d in draws]).reshape(len(rngs), 6)
    u = np.array([d[1] for d in draws]).reshape(len(rngs), 4)
    return event_times(cov, e, u, model)


def event_times(
    cov: pd.DataFrame, e: np.ndarray, u: np.ndarray, model: OutcomeModel = DEFAULT_MODEL
) -> pd.DataFrame:
    """Event times from given random draws (inverse transforms of the model's hazards).

    Parameters
    ----------
    cov : DataFrame [N, COVARIATES]
    e : ndarray [N, 6]
        Unit exponentials: recurrence, postoperative death, background death, cancer death
        after recurrence, liver recurrence delay, loss to follow-up.
    u : ndarray [N, 4]
        Uniforms: first recurrence intrahepatic, later liver recurrence, administrative
        censoring time, salvage of the recurrence.

    Returns
    -------
    DataFrame
        As :func:`sample_event_times`. The same draws give the same times for any model, so
        the fit of :func:`fit_outcome_model` compares models on common random numbers.
    """
    lp = linear_predictors(cov, model)
    scale = model.theta * np.exp(lp["eta_r"].to_numpy())
    beta_r = lp["beta_r"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(e[:, 0] < scale, e[:, 0] / scale, 0.0)
        r = np.where(e[:, 0] < scale, beta_r * (-np.log1p(-frac)) ** (1.0 / model.k_r), np.inf)
    h_op = lp["h_op"].to_numpy()
    t_op = np.where(e[:, 1] < h_op * HAZARD.op_window_years, e[:, 1] / h_op, np.inf)
    rate = HAZARD.bg_gompertz
    t_bg = np.log1p(rate * e[:, 2] / lp["lambda_bg"].to_numpy()) / rate
    t_o = np.minimum(t_op, t_bg)
    t_d = model.beta_d * (e[:, 3] * np.exp(-lp["eta_d"].to_numpy())) ** (1.0 / model.k_d)
    t_d = np.where(u[:, 3] < model.p_salvage, np.inf, t_d)  # salvaged: no cancer death
    death = np.minimum(t_o, r + t_d)
    p_liver = 1.0 / (
        1.0
        + np.exp(
            -(
                0.3
                + 0.5 * cov["bilobar"].to_numpy(float)
                + 0.3 * cov["multiple_metastases"].to_numpy(float)
                - cov["extrahep_disease"].to_numpy(float)
            )
        )
    )
    liver = np.where(
        ~np.isfinite(r),
        np.inf,
        np.where(u[:, 0] < p_liver, r, np.where(u[:, 1] < 0.4, r + 1.5 * e[:, 4], np.inf)),
    )
    admin = model.admin_years[0] + u[:, 2] * (model.admin_years[1] - model.admin_years[0])
    censor = np.minimum(admin, e[:, 5] / model.loss_rate)
    return pd.DataFrame(
        {
            "recurrence_years": r,
            "other_death_years": t_o,
            "cancer_death_after_years": t_d,
            "death_years": death,
            "liver_recurrence_years": liver,
            "censor_years": censor,
        },
        index=cov.index,
    )


def observed_outcomes(times: pd.DataFrame) -> pd.DataFrame:
    """Turn true times + censoring into the table's outcome columns (months, 0/1)."""
    r, d, c = times["recurrence_years"], times["death_years"], times["censor_years"]
    t_o, liver = times["other_death_years"], times["liver_recurrence_years"]
    dfs = np.minimum(r, t_o)
    ldfs = np.minimum(liver, d)
    out = pd.DataFrame(index=times.index)
    out["overall_survival_months"] = np.round(12 * np.minimum(d, c), 2)
    out["vital_status"] = (d <= c).astype(int)
    out["progression_or_recurrence"] = (r <= np.minimum(t_o, c)).astype(int)
    out["months_to_DFS_progression"] = np.round(12 * np.minimum(dfs, c), 2)
    out["vital_status_DFS"] = (dfs <= c).astype(int)
    out["progression_or_recurrence_liveronly"] = (liver <= np.minimum(d, c)).astype(int)
    out["months_to_liver_DFS_progression"] = np.round(12 * np.minimum(ldfs, c), 2)
    out["vital_status_liver_DFS"] = (ldfs <= c).astype(int)
    return out


# --------------------------------------------------------------------------------------------
# patients
# --------------------------------------------------------------------------------------------

#: Tumour count distribution (1..8 tumours): ``P(1 tumour)`` is 0.45 at the burden latent's
#: mean and shifts with it; 2..8 follow the rest of this table.
_N_TUMOUR_P = np.array([0.45, 0.20, 0.12, 0.08, 0.06, 0.04, 0.03, 0.02])
#: Shared disease-burden latent ``u ~ N(0, 1)``: it raises the odds of synchronous disease and of
#: more than one tumour (log-odds ``+BURDEN_LOGIT * u``), CEA (``x exp(0.5 u)``) and the largest
#: tumour's size (``x exp(0.3 u)``), so that the five Fong criteria are positively correlated, as
#: in Fong 1999 (independent criteria give a score distribution too narrow: 7/28/38/21/5/0.3 %
#: against the published 9/24/30/25/11/1 %).
BURDEN_LOGIT = 1.0
#: Median CEA (ng/mL) and the SD of log CEA; median largest tumour diameter (cm) and its log SD
#: (chosen with the latent so that CEA > 200 and size > 5 cm give the published score shares).
CEA_MEDIAN, CEA_LOG_SD = 19.0, 1.86
DMAX_MEDIAN_CM, DMAX_LOG_SD = 4.8, 0.6
#: Measurement model of the clinical table (what a clinic records, not the generator's truth):
#: the largest tumour's size is measured with a multiplicative error ``exp(N(0, SIZE_LOG_SD))``
#: and rounded to ``SIZE_ROUND_CM``; a tumour other than the largest is detected (counted, and its
#: lobe read) with probability ``min(1, DETECT_BASE + DETECT_PER_CM * diameter)``.
SIZE_LOG_SD, SIZE_ROUND_CM = 0.15, 0.5
DETECT_BASE, DETECT_PER_CM = 0.5, 0.3
#: Tumour attenuation of the phantom: ``TUMOUR_HU_MEAN + TUMOUR_HU_PER_SD * z`` HU, clipped to
#: ``TUMOUR_HU_RANGE``, with ``z ~ N(0, 1)`` the patient's attenuation phenotype (image only).
TUMOUR_HU_MEAN, TUMOUR_HU_PER_SD, TUMOUR_HU_RANGE = 45.0, 20.0, (0.0, 95.0)


@dataclass(frozen=True)
class PatientSpec:
    """One synthetic patient: id, true covariates, table row (with -999), anatomy."""

    patient_id: str
    index: int
    covariates: dict
    row: dict
    anatomy: phantom.Anatomy


def patient_id(index: int) -> str:
    """``CRLM-CT-1001`` for index 0, as in the collection."""
    return f"CRLM-CT-{1001 + index}"


def phi_markers(pid: str) -> dict[str, str]:
    """Obviously fake, unique PHI values written into the DICOM headers and the table.

    Later checks search every output for these strings to prove no PHI leaks.
    """
    num = pid.rsplit("-", 1)[-1]
    day = int(num) - 1000  # 1..: unique birth dates 1900-01-01 + (day - 1)
    birth = (np.datetime64("1900-01-01") + np.timedelta64(day - 1, "D")).astype(str)
    return {
        "PatientName": f"SYNTH^PHI-NAME-{num}",
        "PatientBirthDate": birth.replace("-", ""),
        "InstitutionName": f"PHI-INSTITUTION-{num}",
        "ReferringPhysicianName": f"PHI^REFERRER-{num}",
        "OtherPatientIDs": f"PHI-OTHER-ID-{num}",
        "De-identify Scout Name": f"PHI-SCOUT-{num}",
    }


def phi_values(out_dir: str | Path) -> list[str]:
    """Every fake PHI string of the cohort in ``out_dir`` (read from its ``clinical.csv``)."""
    ids = pd.read_csv(Path(out_dir) / "clinical.csv", usecols=["Patient-ID"])["Patient-ID"]
    vals: list[str] = []
    for pid in ids:
        m = phi_markers(str(pid))
        vals += [v for v in m.values()] + [m["PatientName"].split("^", 1)[1]]
    return sorted(set(vals))


def sample_patient(seed: int, index: int) -> PatientSpec:
    """Sample the clinical variables, anatomy and table row of patient ``index``.

    The generator's truth (``covariates``) and the table (``row``) differ where a clinic's
    record differs from the truth: the largest tumour is measured with error and rounded, small
    tumours may be missed (so ``multiple_metastases`` and ``bilobar_disease`` are as read), and
    the tumours' attenuation phenotype ``tumour_attenuation_z`` is in no column at all: only the
    CT shows it (:attr:`phantom.Anatomy.tumour_hu`). The outcome model reads the table's Fong
    criteria as recorded (see :func:`linear_predictors`).

    One generator ``default_rng([seed, index, 0])`` draws everything, in this order, which
    fixes the cohort of every seed (and the golden tests): the patient and the primary tumour
    (:func:`_draw_history`), the liver disease, its treatment and the anatomy
    (:func:`_draw_liver_disease`), the pathology and the missing entries
    (:func:`_draw_pathology`), then the tumours' attenuation and the clinic's reading of the
    CT (:func:`_draw_reading`). Each helper lists its own draws in order; the table row and the
    covariates are then computed without drawing.
    """
    rng = np.random.default_rng([seed, index, 0])
    pid = patient_id(index)
    v = _draw_history(rng)
    v |= _draw_liver_disease(rng, v)
    v |= _draw_pathology(rng, v)
    v |= _draw_reading(rng, v["anatomy"], v["iq"])
    return PatientSpec(pid, index, _covariates(v), _table_row(pid, v), v["anatomy"])


def _draw_history(rng: np.random.Generator) -> dict:
    """Draws, in order: age, sex, BMI, major comorbidity, node-positive primary, the latent
    tumour burden, synchronous metastases, extrahepatic disease, CEA (ng/mL, rounded to 0.1 as
    the table records it, so CEA > 200 is the table's criterion)."""
    age = float(np.clip(rng.normal(61, 11), 30, 88))
    sex = 1 if rng.uniform() < 0.57 else 2
    bmi = float(np.clip(rng.normal(27.5, 5.0), 16, 50))
    comorb = int(rng.uniform() < 0.30)
    node = int(rng.uniform() < 0.60)
    burden = float(rng.normal())
    sync = int(rng.uniform() < _expit(np.log(0.45 / 0.55) + BURDEN_LOGIT * burden))
    extra = int(rng.uniform() < 0.10)
    cea = float(np.exp(rng.normal(np.log(CEA_MEDIAN), CEA_LOG_SD) + 0.5 * BURDEN_LOGIT * burden))
    return {
        "age": age, "sex": sex, "bmi": bmi, "comorb": comorb, "node": node, "burden": burden,
        "sync": sync, "extra": extra, "cea": round(cea, 1),
    }  # fmt: skip


def _draw_liver_disease(rng: np.random.Generator, v: dict) -> dict:
    """Draws, in order: the number of tumours, the largest diameter (cm), the others'
    diameters and every tumour's lobe, chemotherapy, steatosis, the NAS score, sinusoidal
    dilatation, the response to chemotherapy, the phantom's fat attenuation and its anatomy
    (:func:`phantom.sample_anatomy`), portal vein embolisation (likelier with a small remnant,
    read from the anatomy's image quantities ``iq``)."""
    burden = v["burden"]
    p_single = _expit(np.log(_N_TUMOUR_P[0] / (1 - _N_TUMOUR_P[0])) - BURDEN_LOGIT * burden)
    rest = _N_TUMOUR_P[1:] / _N_TUMOUR_P[1:].sum()
    n_t = 1 if rng.uniform() < p_single else int(rng.choice(len(rest), p=rest)) + 2
    d_max = float(
        np.clip(
            np.exp(rng.normal(np.log(DMAX_MEDIAN_CM), DMAX_LOG_SD) + 0.3 * BURDEN_LOGIT * burden),
            1.0,
            9.0,
        )
    )
    diam = [d_max] + [max(0.8, d_max * float(rng.uniform(0.3, 1.0))) for _ in range(n_t - 1)]
    lobes = ["right" if rng.uniform() < 0.72 else "left" for _ in range(n_t)]
    chemo = int(rng.uniform() < (0.45 + 0.25 * v["sync"] + 0.15 * (n_t > 1)))
    steat = int(rng.uniform() < 1 / (1 + np.exp(-(-0.9 + 0.12 * (v["bmi"] - 27.5) + 0.6 * chemo))))
    nas = int(1 + rng.binomial(5, 0.35)) if steat else int(rng.binomial(2, 0.2))
    sinus = int(rng.uniform() < 0.15 + 0.30 * chemo)
    response = float(rng.beta(2, 3)) if chemo else 0.0
    anat = phantom.sample_anatomy(rng, diam, lobes, bool(steat), float(rng.uniform(-400, -100)))
    iq = phantom.image_quantities(anat)
    pve = int(rng.uniform() < (0.5 if iq["remnant_fraction"] < 0.3 else 0.03))
    return {
        "chemo": chemo, "steat": steat, "nas": nas, "sinus": sinus, "response": response,
        "anatomy": anat, "iq": iq, "pve": pve,
    }  # fmt: skip


def _draw_pathology(rng: np.random.Generator, v: dict) -> dict:
    """Draws, in order: fibrosis (%, after chemotherapy only), necrosis (%), mucin (%), and
    whether CEA, BMI and the NAS score are missing from the table (realistic missingness in
    non-outcome predictors; the Fong score goes missing with CEA)."""
    chemo = v["chemo"]
    fibrosis = float(np.clip(100 * v["response"] * rng.uniform(0.5, 1.0), 0, 100)) if chemo else -1
    necrosis = round(100 * float(rng.beta(2, 3)))
    mucin = round(100 * float(rng.beta(0.3, 4)))
    miss_cea, miss_bmi, miss_nas = (bool(rng.uniform() < p) for p in (0.05, 0.04, 0.05))
    return {
        "fibrosis": fibrosis, "necrosis": necrosis, "mucin": mucin, "miss_cea": miss_cea,
        "miss_bmi": miss_bmi, "miss_nas": miss_nas,
    }  # fmt: skip


def _draw_reading(rng: np.random.Generator, anat: phantom.Anatomy, iq: dict) -> dict:
    """Draws, in order: the image-only attenuation phenotype ``z`` (the anatomy's
    ``tumour_hu``), the size measurement's error, and whether each tumour other than the
    largest is detected. Returns the anatomy with its tumour attenuation, ``z_att`` and the
    clinic's reading: the largest size measured and rounded (cm), multiple and bilobar disease
    as read."""
    z_att = float(rng.normal())
    anat = replace(
        anat,
        tumour_hu=float(np.clip(TUMOUR_HU_MEAN + TUMOUR_HU_PER_SD * z_att, *TUMOUR_HU_RANGE)),
    )
    size_error = float(rng.normal(0.0, SIZE_LOG_SD))
    detect_u = rng.uniform(size=len(anat.tumours))
    by_size = sorted(anat.tumours, key=lambda t: -t.radius_mm)
    seen = [
        t
        for k, t in enumerate(by_size)
        if k == 0 or detect_u[k] < DETECT_BASE + DETECT_PER_CM * t.diameter_cm
    ]
    max_d = max(
        SIZE_ROUND_CM,
        SIZE_ROUND_CM * round(iq["max_diameter_cm"] * np.exp(size_error) / SIZE_ROUND_CM),
    )
    return {
        "anatomy": anat, "z_att": z_att, "max_d": max_d, "multiple": int(len(seen) > 1),
        "bilobar_read": int(len({t.lobe for t in seen}) > 1),
    }  # fmt: skip


def _covariates(v: dict) -> dict:
    """The generator's truth of one patient (what the outcome model reads) from its draws."""
    iq = v["iq"]
    return {
        "node_positive_primary": v["node"],
        "synchronous_crlm": v["sync"],
        "multiple_metastases": v["multiple"],
        "cea": v["cea"],
        "max_diameter_cm": v["max_d"],
        "extrahep_disease": v["extra"],
        "major_comorbidity": v["comorb"],
        "steatosis": v["steat"],
        "nash_ge4": int(v["nas"] >= 4),
        "chemo": v["chemo"],
        "response": v["response"],
        "age": v["age"],
        **{k: iq[k] for k in ("tumour_volume_ml", "n_tumours", "bilobar", "remnant_fraction")},
        "tumour_attenuation_z": v["z_att"],
    }


def _table_row(pid: str, v: dict) -> dict:
    """The clinical table's row of one patient from its draws: the clinic's record, with
    ``MISSING_CODE`` (-999) where it is missing."""
    chemo, nas, fibrosis = v["chemo"], v["nas"], v["fibrosis"]
    fong = v["node"] + v["sync"] + v["multiple"] + int(v["cea"] > 200) + int(v["max_d"] > 5)
    row: dict = {
        "Patient-ID": pid,
        "De-identify Scout Name": phi_markers(pid)["De-identify Scout Name"],
        "age": round(v["age"]),
        "sex": v["sex"],
        "major_comorbidity": v["comorb"],
        "body_mass_index": round(v["bmi"], 1),
        "node_positive_primary": v["node"],
        "synchronous_crlm": v["sync"],
        "multiple_metastases": v["multiple"],
        "clinrisk_score": fong,
        "clinrisk_stratified": int(fong >= 3),
        "carcinoembryonic_antigen": v["cea"],
        "max_tumor_size": v["max_d"],
        "bilobar_disease": v["bilobar_read"],
        "extrahep_disease": v["extra"],
        "chemo_before_liver_resection": chemo,
        "preoperative_pve": v["pve"],
        "steatosis_yesno": v["steat"],
        "presence_sinusoidal_dilata": v["sinus"],
        "NASH_score": nas,
        "NASH_yesno": int(nas >= 3),
        "NASH_greater_4": int(nas >= 4),
        "total_response_percent": round(100 * v["response"]) if chemo else MISSING_CODE,
        "necrosis_percent": v["necrosis"],
        "fibrosis_percent": round(fibrosis) if chemo else MISSING_CODE,
        "fibrosis_greater_40_percent": int(fibrosis > 40) if chemo else MISSING_CODE,
        "mucin_percent": v["mucin"],
        "relevant_notes": "synthetic patient",
    }
    if v["miss_cea"]:
        row["carcinoembryonic_antigen"] = MISSING_CODE
        row["clinrisk_score"] = MISSING_CODE
        row["clinrisk_stratified"] = MISSING_CODE
    if v["miss_bmi"]:
        row["body_mass_index"] = MISSING_CODE
    if v["miss_nas"]:
        row["NASH_score"] = MISSING_CODE
    return row


def _expit(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


@dataclass
class SimulatedCohort:
    """Clinical table (real columns, -999 coded), oracle table and patient specs."""

    clinical: pd.DataFrame
    oracle: pd.DataFrame
    specs: list[PatientSpec]


def simulate_cohort(
    n_patients: int,
    seed: int,
    model: OutcomeModel | str = DEFAULT_MODEL,
    oracle_curves: bool = True,
) -> SimulatedCohort:
    """Sample ``n_patients`` patients and their outcomes without rendering or writing images.

    Fast (about 1 ms per patient): the outcome model only uses the analytic geometry of the
    phantom. ``write_cohort`` writes exactly these tables. ``oracle_curves=False`` skips the
    numerical integration of the true curves (half the time; for calibration checks): the
    oracle table then lacks ``os_risk``, ``dfs_risk`` and the ``*_surv_y*`` columns.

    Returns
    -------
    SimulatedCohort
        ``clinical``: columns :data:`crlm_lib.data.clinical.COLUMNS` with -999 for missing;
        ``oracle``: ``Patient-ID``, ``os_risk``, ``dfs_risk``, ``os_lp``, ``dfs_lp``,
        ``os_surv_y1..12``, ``dfs_surv_y1..12``, true event times (years), image quantities and
        ``portal_bifurcation_z_mm``.
    """
    model = outcome_model(model)
    specs = [sample_patient(seed, i) for i in range(n_patients)]
    ids = [s.patient_id for s in specs]
    cov = pd.DataFrame([s.covariates for s in specs], index=ids)
    rngs = [np.random.default_rng([seed, s.index, 1]) for s in specs]
    times = sample_event_times(cov, rngs, model)
    obs = observed_outcomes(times)
    clin = pd.DataFrame([s.row for s in specs], index=ids)
    for col in obs.columns:
        clin[col] = obs[col]
    clin = clin[list(COLUMNS)].reset_index(drop=True)

    lp = linear_predictors(cov, model)
    oracle = pd.DataFrame({"Patient-ID": ids})
    if oracle_curves:
        years = np.arange(1, N_YEARS_ORACLE + 1, dtype=float)
        # times in any order: true_survival sorts them (the last column is S(5), not S(12))
        s_os, s_dfs = true_survival(cov, np.concatenate([years, [RISK_HORIZON_YEARS]]), model)
        oracle["os_risk"] = np.log(-np.log(np.clip(s_os[:, -1], 1e-12, 1 - 1e-12)))
        oracle["dfs_risk"] = np.log(-np.log(np.clip(s_dfs[:, -1], 1e-12, 1 - 1e-12)))
    oracle["os_lp"] = lp["eta_d"].to_numpy()
    oracle["dfs_lp"] = lp["eta_r"].to_numpy()
    if oracle_curves:
        for k in range(N_YEARS_ORACLE):
            oracle[f"os_surv_y{k + 1}"] = s_os[:, k]
        for k in range(N_YEARS_ORACLE):
            oracle[f"dfs_surv_y{k + 1}"] = s_dfs[:, k]
    oracle["true_os_years"] = times["death_years"].to_numpy()
    oracle["true_dfs_years"] = np.minimum(
        times["recurrence_years"].to_numpy(), times["other_death_years"].to_numpy()
    )
    oracle["true_recurrence_years"] = times["recurrence_years"].to_numpy()
    oracle["censor_years"] = times["censor_years"].to_numpy()
    for k in IMAGE_COVARIATES:
        oracle[k] = cov[k].to_numpy()
    oracle["eta_img"] = lp["eta_img"].to_numpy()
    oracle["portal_bifurcation_z_mm"] = [s.anatomy.bifurcation_z_mm for s in specs]
    return SimulatedCohort(clin, oracle, specs)


# --------------------------------------------------------------------------------------------
# calibration
# --------------------------------------------------------------------------------------------


#: Seed of the generator fit (:func:`fit_outcome_model`); cohorts of the notebooks, tests and
#: benchmarks use other seeds, so every calibration check is out of sample.
FIT_SEED = 1_000_003


def _fit_targets(model: OutcomeModel, cov: pd.DataFrame, score: np.ndarray, e, u) -> np.ndarray:
    """Expected 5-year OS per recorded Fong score 0..5 (mean of the true curves), then the
    fractions of deaths and DFS events under the model's censoring (common random numbers)."""
    s_os, _ = _true_survival_sorted(cov, np.array([RISK_HORIZON_YEARS]), model, 0.01)
    by_score = [float(s_os[score == k, 0].mean()) for k in range(6)]
    t = event_times(cov, e, u, model)
    c = t["censor_years"].to_numpy()
    deaths = float((t["death_years"].to_numpy() <= c).mean())
    dfs = np.minimum(t["recurrence_years"], t["other_death_years"]).to_numpy()
    return np.array([*by_score, deaths, float((dfs <= c).mean())])


def fit_outcome_model(
    n_patients: int = 20_000,
    seed: int = FIT_SEED,
    start: OutcomeModel = DEFAULT_MODEL,
    maxiter: int = 600,
) -> tuple[OutcomeModel, pd.DataFrame]:
    """Fit the Fong offsets and the salvage probability to the published targets.

    On ``n_patients`` patients of ``seed`` (their covariates drawn once), Nelder-Mead moves
    ``fong_effect`` (6 values), ``p_salvage`` and the longest follow-up ``admin_years[1]`` (the
    real cohort's follow-up is not published; it sets how many deaths are observed for given
    curves) so that the *expected* 5-year OS of each
    recorded Fong score (the mean of the true curves, not a Kaplan-Meier estimate: smooth in
    the parameters) matches Fong 1999 (:data:`FONG_5Y_OS`, each weighted by the inverse square
    of its 95% half-width) and the fractions of deaths and DFS events under the model's
    censoring match the real cohort's 107/197 and 138/197 (weight ``1 / 0.015^2``; common random
    numbers). ``img_centre`` is set first to the mean raw image term of these patients. The
    result is rounded to two decimals (what :data:`DEFAULT_MODEL` holds) and checked out of
    sample by :func:`calibration_summary` on other seeds (``tests/data/test_synthetic.py``,
    ``benchmarks/synthetic_bench.py``).

    Returns
    -------
    model : OutcomeModel
        ``start`` with the fitted (rounded) ``fong_effect``, ``p_salvage``, ``admin_years`` and
        ``img_centre``.
    report : DataFrame
        ``target``, ``fitted`` (expected values of the rounded model) per target.
    """
    from scipy.optimize import minimize

    specs = [sample_patient(seed, i) for i in range(n_patients)]
    cov = pd.DataFrame([sp.covariates for sp in specs])
    score = (
        cov["node_positive_primary"]
        + cov["synchronous_crlm"]
        + cov["multiple_metastases"]
        + (cov["cea"] > 200)
        + (cov["max_diameter_cm"] > 5)
    ).to_numpy(int)
    rng = np.random.default_rng([seed, 1])
    e, u = rng.exponential(size=(n_patients, 6)), rng.uniform(size=(n_patients, 4))
    base = replace(start, img_centre=round(float(image_term(cov, start).mean()), 3))
    target = np.array(
        [
            *FONG_5Y_OS,
            REAL_COHORT_DEATHS / REAL_COHORT_N,
            REAL_COHORT_DFS_EVENTS / REAL_COHORT_N,
        ]
    )
    half = [(hi - lo) / 2 for lo, hi in FONG_5Y_OS_CI] + [0.015, 0.015]
    weight = 1.0 / np.square(half)

    def model_of(x: np.ndarray) -> OutcomeModel:
        return replace(
            base,
            fong_effect=tuple(float(v) for v in x[:6]),
            p_salvage=float(np.clip(x[6], 0.0, 0.9)),
            admin_years=(base.admin_years[0], float(np.clip(x[7], 4.0, 12.0))),
        )

    def loss(x: np.ndarray) -> float:
        got = _fit_targets(model_of(x), cov, score, e, u)
        return float(np.sum(weight * (got - target) ** 2))

    x0 = np.array([*start.fong_effect, start.p_salvage, start.admin_years[1]])
    # scipy's default simplex steps 5% of each value (0.00025 for a zero): steps of 0.25 (0.05
    # for the probability, half a year for the follow-up) let every parameter move
    simplex = np.vstack([x0, x0 + np.diag([0.25] * 6 + [0.05, 0.5])])
    res = minimize(
        loss,
        x0,
        method="Nelder-Mead",
        options={"maxiter": maxiter, "xatol": 1e-3, "fatol": 1e-3, "initial_simplex": simplex},
    )
    fitted = model_of(np.round(res.x, 2))
    names = [f"expected 5-year OS, Fong score {k}" for k in range(6)]
    report = pd.DataFrame(
        {"target": target, "fitted": _fit_targets(fitted, cov, score, e, u)},
        index=[*names, "death fraction", "DFS event fraction"],
    )
    return fitted, report


def fong_1999_intervals() -> list[tuple[float, float]]:
    """Exact 95% binomial intervals of Fong 1999's 5-year OS per score (:data:`FONG_5Y_OS_CI`).

    ``binomtest(round(os * n), n).proportion_ci(0.95, "exact")`` with ``n = FONG_N``.
    """
    from scipy.stats import binomtest

    out = []
    for os5, n in zip(FONG_5Y_OS, FONG_N, strict=True):
        ci = binomtest(int(round(os5 * n)), n).proportion_ci(0.95, method="exact")
        out.append((float(ci.low), float(ci.high)))
    return out


def calibration_summary(clinical_df: pd.DataFrame) -> pd.DataFrame:
    """Compare a (synthetic) clinical table with the published targets.

    Kaplan-Meier (lifelines) 5-year OS per ``clinrisk_score`` vs Fong et al. 1999 (acceptance
    range: the exact 95% interval :data:`FONG_5Y_OS_CI`), the share of each score vs Fong's
    (+- :data:`SCORE_SHARE_TOLERANCE`), the fractions of deaths and of DFS
    events vs the real cohort (107/197 and 138/197, +- :data:`EVENT_FRACTION_TOLERANCE`), KM
    median OS vs Kanas et al. 2012 (3.6 years), the observed recurrence fraction vs 60-70%, and
    the fraction of observed recurrences within 2 years.

    Parameters
    ----------
    clinical_df : DataFrame
        Raw (-999 coded) or loaded table with the real column names.

    Returns
    -------
    DataFrame
        Columns ``metric``, ``n``, ``synthetic``, ``target``, ``low``, ``high`` (acceptance
        range; NaN where there is none) and ``within`` (``low <= synthetic <= high``; None
        where there is no range).
    """
    from lifelines import KaplanMeierFitter

    nan = float("nan")
    df = clinical_df.replace(MISSING_CODE, np.nan)
    t = df["overall_survival_months"] / 12.0
    e = df["vital_status"]
    rows = []
    for k in range(6):
        m = df["clinrisk_score"] == k
        val = np.nan
        if m.sum() >= 2:
            kmf = KaplanMeierFitter().fit(t[m], e[m])
            val = float(kmf.survival_function_at_times(5.0).iloc[0])
        low, high = FONG_5Y_OS_CI[k]
        rows.append((f"5-year OS, Fong score {k}", int(m.sum()), val, FONG_5Y_OS[k], low, high))
    known = df["clinrisk_score"].notna()
    for k in range(6):
        share = float((df.loc[known, "clinrisk_score"] == k).mean()) if known.any() else np.nan
        target = FONG_SCORE_SHARE[k]
        tol_s = SCORE_SHARE_TOLERANCE
        rows.append(
            (f"share with Fong score {k}", int(known.sum()), share, target,
             max(target - tol_s, 0.0), target + tol_s)
        )  # fmt: skip
    tol = EVENT_FRACTION_TOLERANCE
    for name, col, count in (
        ("death fraction", "vital_status", REAL_COHORT_DEATHS),
        ("DFS event fraction", "vital_status_DFS", REAL_COHORT_DFS_EVENTS),
    ):
        target = count / REAL_COHORT_N
        rows.append((name, len(df), float(df[col].mean()), target, target - tol, target + tol))
    kmf = KaplanMeierFitter().fit(t, e)
    median = float(kmf.median_survival_time_)
    rows.append(("median OS (years)", len(df), median, KANAS_MEDIAN_OS_YEARS, nan, nan))
    rec = df["progression_or_recurrence"] == 1
    rows.append(("recurrence fraction", len(df), float(rec.mean()), 0.65, *RECURRENCE_RANGE))
    early = (df.loc[rec, "months_to_DFS_progression"] <= 24).mean() if rec.any() else np.nan
    rows.append(("recurrences within 2 years", int(rec.sum()), float(early), 0.75, nan, nan))
    out = pd.DataFrame(rows, columns=["metric", "n", "synthetic", "target", "low", "high"])
    inside = (out["synthetic"] >= out["low"]) & (out["synthetic"] <= out["high"])
    out["within"] = inside.astype(object).where(out["low"].notna(), None)
    return out


def simulate_many(fn: Callable, jobs: list[tuple], n_jobs: int = 1) -> list:
    """``[fn(*args) for args in jobs]``, computed in ``n_jobs`` processes
    (``data.parallel.run_jobs_in_order``; ``fn`` at module level, its result picklable). Each
    job seeds its own generator, so the results do not depend on ``n_jobs``."""
    results, broken = run_jobs_in_order(fn, jobs, n_jobs, desc="simulate", leave=False)
    if broken is not None:
        raise SyntheticCohortError(f"a simulation worker process died: {broken}")
    return results


def _calibration_of_seed(n_patients: int, seed: int, model: OutcomeModel | str) -> pd.DataFrame:
    return calibration_summary(
        simulate_cohort(n_patients, seed, model, oracle_curves=False).clinical
    )


def heldout_calibration(
    seeds: tuple[int, ...] = (1, 2, 3, 4, 5),
    n_patients: int = 4000,
    model: OutcomeModel | str = DEFAULT_MODEL,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """:func:`calibration_summary` on cohorts of seeds the fit never saw, summarised (the
    cohorts simulated in ``n_jobs`` processes; the same numbers for any ``n_jobs``).

    Returns
    -------
    DataFrame
        One row per metric: ``target``, ``low``, ``high`` (acceptance range), ``mean``, ``min``,
        ``max`` over the seeds, ``within`` (in range on every seed; None without a range),
        ``seeds`` and ``n`` (patients per seed).
    """
    if FIT_SEED in seeds:
        raise SyntheticCohortError(f"seed {FIT_SEED} is the fit's: choose held-out seeds")
    tables = simulate_many(_calibration_of_seed, [(n_patients, s, model) for s in seeds], n_jobs)
    long = pd.concat(tables, keys=range(len(seeds)), names=["seed_index"]).reset_index()
    order = list(dict.fromkeys(long["metric"]))
    g = long.groupby("metric", sort=False)
    out = g[["target", "low", "high"]].first()
    out["mean"], out["min"], out["max"] = (
        g["synthetic"].mean(),
        g["synthetic"].min(),
        g["synthetic"].max(),
    )
    within = long.assign(w=long["within"].astype(object)).groupby("metric", sort=False)["w"]
    out["within"] = [
        None if out.loc[m, "low"] != out.loc[m, "low"] else bool(all(within.get_group(m)))
        for m in out.index
    ]
    out["seeds"] = ", ".join(map(str, seeds))
    out["n"] = n_patients
    return out.loc[order]


# --------------------------------------------------------------------------------------------
# DICOM writing
# --------------------------------------------------------------------------------------------


def _uid(seed: int, pid: str, what: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[f"crlm-synth-{seed}", pid, what])


def _short(uid: str) -> str:
    return str(int(hashlib.sha1(uid.encode()).hexdigest(), 16) % 100000).zfill(5)


def _ct_datasets(spec: PatientSpec, seed: int, img: phantom.Rendered, synth: SynthConfig):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    pid = spec.patient_id
    phi = phi_markers(pid)
    study, series = _uid(seed, pid, "study"), _uid(seed, pid, "ct-series")
    frame = _uid(seed, pid, "frame")
    n = img.hu.shape[0]
    out = []
    for k in range(n):
        sop = _uid(seed, pid, f"ct-{k}")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20000101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "crlm_lib synthetic phantom"
        ds.InstitutionName = phi["InstitutionName"]
        ds.ReferringPhysicianName = phi["ReferringPhysicianName"]
        ds.StudyDescription = "SYNTHETIC CT ABDOMEN"
        ds.SeriesDescription = "SYNTHETIC PORTAL VENOUS"
        ds.PatientName = phi["PatientName"]
        ds.PatientID = pid
        ds.PatientBirthDate = phi["PatientBirthDate"]
        ds.PatientSex = "M" if spec.row["sex"] == 1 else "F"
        # Other Patient IDs Sequence: the flat OtherPatientIDs (0010,1000) is retired
        other = Dataset()
        other.PatientID, other.TypeOfPatientID = phi["OtherPatientIDs"], "TEXT"
        ds.OtherPatientIDsSequence = [other]
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = f"{synth.slice_thickness_mm:g}"
        ds.KVP = "120"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyID, ds.SeriesNumber = "1", 2
        ds.InstanceNumber = n - k  # head-first numbering: 1 = most superior
        ds.AcquisitionNumber = 1
        ds.PatientPosition = "HFS"  # head first, supine (Type 2C in the General Series)
        ds.ImagePositionPatient = [f"{img.x0_mm:.3f}", f"{img.y0_mm:.3f}", f"{img.z_mm[k]:.3f}"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.FrameOfReferenceUID = frame
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = f"{img.z_mm[k]:.3f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = img.hu.shape[1:]
        ds.PixelSpacing = [f"{synth.pixel_spacing_mm:g}", f"{synth.pixel_spacing_mm:g}"]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "-1024", "1", "HU"
        ds.PixelData = (img.hu[k].astype(np.int32) + 1024).astype("<i2").tobytes()
        out.append(ds)
    return out


def _segmentation(spec: PatientSpec, seed: int, cts: list, img: phantom.Rendered):
    import highdicom as hd
    from pydicom.sr.codedict import codes

    anat = hd.sr.CodedConcept(*_code(codes.SCT.AnatomicalStructure))
    abnormal = hd.sr.CodedConcept(*_code(codes.SCT.MorphologicallyAbnormalStructure))
    algo = hd.AlgorithmIdentificationSequence(
        name="crlm_lib.data.synthetic",
        version="1",
        # DCM 123104 (CID 7162): the masks are set operations on the phantom's rendered
        # shapes (liver minus tumours, vessels inside the liver); a standard code keeps
        # dciodvfy free of the private-scheme warnings a "99..." designator gives
        family=hd.sr.CodedConcept(*_code(codes.cid7162.MorphologicalOperations)),
    )
    spec_list = [
        ("Liver", anat, codes.SCT.Liver),
        ("Liver_Remnant", anat, codes.SCT.Liver),
        ("Hepatic", anat, codes.SCT.HepaticVein),
        ("Portal", anat, codes.SCT.PortalVein),
    ] + [(f"Tumor_{i + 1}", abnormal, codes.SCT.Neoplasm) for i in range(len(img.lesions))]
    descs = [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=label,
            segmented_property_category=cat,
            segmented_property_type=hd.sr.CodedConcept(*_code(typ)),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algo,
        )
        for i, (label, cat, typ) in enumerate(spec_list)
    ]
    arrays = [img.masks[k] for k in ("liver", "remnant", "hepatic", "portal")] + img.lesions
    pixels = np.stack(arrays, axis=-1).astype(np.uint8)  # [Z, Y, X, S]
    seg = hd.seg.Segmentation(
        source_images=cts,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descs,
        series_instance_uid=_uid(seed, spec.patient_id, "seg-series"),
        series_number=300,
        sop_instance_uid=_uid(seed, spec.patient_id, "seg"),
        instance_number=1,
        manufacturer="crlm_lib synthetic phantom",
        manufacturer_model_name="phantom",
        software_versions="1",
        device_serial_number="0",
        series_description="Segmentation",
        omit_empty_frames=True,
    )
    # highdicom stamps the wall clock and a random dimension-organisation UID: fix them so that
    # the same seed gives byte-identical files
    for item in seg.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = "20000101120000"
    dim_uid = _uid(seed, spec.patient_id, "seg-dimension")
    for seq in ("DimensionOrganizationSequence", "DimensionIndexSequence"):
        for item in seg.get(seq, []):
            if "DimensionOrganizationUID" in item:
                item.DimensionOrganizationUID = dim_uid
    for tag in ("ContentDate", "SeriesDate", "InstanceCreationDate"):
        if tag in seg:
            setattr(seg, tag, "20000101")
    for tag in ("ContentTime", "SeriesTime", "InstanceCreationTime"):
        if tag in seg:
            setattr(seg, tag, "120000")
    return seg


def _code(c) -> tuple[str, str, str]:
    return (c.value, c.scheme_designator, c.meaning)


def render_patient(spec: PatientSpec, seed: int, synth: SynthConfig) -> phantom.Rendered:
    """Render patient ``spec`` on the grid of ``synth`` (scan coverage drawn from stream 2).

    The scan covers ``n`` slices (``synth.slices``) with the portal bifurcation at a random
    fraction 0.3-0.7 of the coverage from the bottom.
    """
    rng = np.random.default_rng([seed, spec.index, 2])
    n = int(rng.integers(synth.slices[0], synth.slices[1] + 1))
    dz = synth.slice_thickness_mm
    bottom = spec.anatomy.bifurcation_z_mm - float(rng.uniform(0.3, 0.7)) * (n - 1) * dz
    z = np.round(bottom + dz * np.arange(n), 3)
    return phantom.render(spec.anatomy, synth.matrix, synth.pixel_spacing_mm, z, rng)


def _write_patient(spec: PatientSpec, seed: int, synth: SynthConfig, root: Path) -> None:
    pid = spec.patient_id
    final = root / pid
    tmp = root / f".tmp-{pid}"
    if tmp.exists():
        shutil.rmtree(tmp)
    img = render_patient(spec, seed, synth)
    cts = _ct_datasets(spec, seed, img, synth)
    study_uid, ct_uid = cts[0].StudyInstanceUID, cts[0].SeriesInstanceUID
    study_dir = tmp / f"01-01-2000-NA-CT ABDOMEN-{_short(study_uid)}"
    ct_dir = study_dir / f"2.000000-PORTAL VENOUS SYNTH-{_short(ct_uid)}"
    ct_dir.mkdir(parents=True)
    # file names deliberately unrelated to slice order: a seeded permutation
    perm = np.random.default_rng([seed, spec.index, 3]).permutation(len(cts))
    for ds, p in zip(cts, perm, strict=True):
        ds.save_as(ct_dir / f"1-{p + 1:03d}.dcm", enforce_file_format=True)
    seg = _segmentation(spec, seed, cts, img)
    seg_dir = study_dir / f"300.000000-Segmentation-{_short(seg.SeriesInstanceUID)}"
    seg_dir.mkdir()
    seg.save_as(seg_dir / "1-1.dcm", enforce_file_format=True)
    os.replace(tmp, final)


def cohort_meta(seed: int, synth: SynthConfig, model: OutcomeModel) -> dict:
    """What ``synthetic_cohort.json`` records of a cohort: seed, image grid, outcome model and
    :data:`GENERATOR_VERSION` (JSON-normalised, so it compares equal to the file's content)."""
    grid = {k: v for k, v in asdict(synth).items() if k != "heldout_patients"}  # no effect here
    meta = {
        "seed": int(seed),
        "synth": grid,
        "model": asdict(model),
        "generator_version": GENERATOR_VERSION,
    }
    return json.loads(json.dumps(meta))


def cohort_is_current(out_dir: str | Path, seed: int, synth: SynthConfig) -> bool:
    """Whether ``out_dir`` holds a cohort of this seed, grid, setting and generator version
    (its ``synthetic_cohort.json``); False when the file is missing."""
    path = Path(out_dir) / "synthetic_cohort.json"
    if not path.is_file():
        return False
    meta = cohort_meta(seed, synth, outcome_model(synth.setting))
    return json.loads(path.read_text()) == meta


#: Lock file inside a synthetic cohort folder: one writer at a time (:func:`cohort_lock`).
COHORT_LOCK_NAME = ".synthetic.lock"
#: Written last by :func:`write_cohort`: the cohort's patients, all written
#: (:func:`cohort_is_complete`).
COMPLETE_MARKER = "cohort_complete.json"


def cohort_lock(out_dir: str | Path, timeout_s: float | None = None):
    """The lock of a synthetic cohort folder (created if missing): ``crlm synth`` and
    ``crlm data`` writing one folder run one after the other (:func:`crlm_lib.locks.folder_lock`;
    :class:`~crlm_lib.locks.FolderLocked` after ``timeout_s`` seconds)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return folder_lock(out, COHORT_LOCK_NAME, "run writing this synthetic cohort", timeout_s)


def cohort_is_complete(out_dir: str | Path, n_patients: int) -> bool:
    """Whether ``out_dir`` holds a finished cohort of ``n_patients``: its :data:`COMPLETE_MARKER`
    (written last) lists them, each patient folder is there, and so are ``clinical.csv`` and
    ``oracle.csv``. A writer killed half-way leaves no marker, so its cohort is resumed."""
    out = Path(out_dir)
    try:
        ids = json.loads((out / COMPLETE_MARKER).read_text())["patients"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    root = out / TCIA_COLLECTION
    return (
        len(ids) == n_patients
        and all((root / str(pid)).is_dir() for pid in ids)
        and (out / "clinical.csv").is_file()
        and (out / "oracle.csv").is_file()
    )


def write_cohort(
    out_dir: str | Path,
    n_patients: int,
    seed: int,
    synth: SynthConfig,
    progress: bool = True,
    n_jobs: int = 1,
    lock_timeout_s: float | None = None,
) -> Path:
    """Write a synthetic cohort in the TCIA layout.

    ``out_dir/Colorectal-Liver-Metastases/CRLM-CT-1001/<study>/<CT series>/1-0xx.dcm`` (one
    file per slice; names are a seeded permutation, not the slice order),
    ``.../<SEG series>/1-1.dcm``, ``out_dir/clinical.csv``, ``out_dir/oracle.csv`` and, last,
    ``out_dir/cohort_complete.json`` (:func:`cohort_is_complete`).

    Resumable and atomic per patient: each patient is written to a hidden temporary folder and
    renamed into place; patients already present are skipped. The same ``seed`` and ``synth``
    give byte-identical files. A ``synthetic_cohort.json`` records the request; asking for a
    different seed or grid in a folder that holds another cohort raises. Writers of one folder
    are serialised by its lock (:func:`cohort_lock`): a second one waits, then finds the
    patients written; leftover temporary folders of a killed writer are removed.

    Parameters
    ----------
    out_dir : path
        Cohort root (``Paths.cohort_dir``).
    n_patients : int
        Patients ``CRLM-CT-1001`` .. ``CRLM-CT-{1000 + n}``.
    seed : int
        Master seed.
    synth : SynthConfig
        Image grid (matrix, pixel spacing, slice range, slice thickness) and the outcome
        model's setting (``synth.setting``, :func:`outcome_model`).
    progress : bool
        tqdm progress bar over the patients.
    n_jobs : int
        Patients written in parallel by ``n_jobs`` processes (``spawn``); each patient's files
        depend only on its spec, ``seed`` and ``synth``, so the files are byte-identical to a
        serial run (tested). ``<= 1``: in this process.
    lock_timeout_s : float, optional
        Longest wait for another writer of the folder (``None``: until it finishes).

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    SyntheticCohortError
        If ``out_dir`` holds a cohort written with another seed or grid.
    FolderLocked
        When ``lock_timeout_s`` passed while another writer held the folder.
    """
    model = outcome_model(synth.setting)
    with cohort_lock(out_dir, lock_timeout_s):
        return _write_cohort_locked(Path(out_dir), n_patients, seed, synth, model, progress, n_jobs)


def _write_cohort_locked(
    out: Path,
    n_patients: int,
    seed: int,
    synth: SynthConfig,
    model: OutcomeModel,
    progress: bool,
    n_jobs: int,
) -> Path:
    """The body of :func:`write_cohort`, run with the folder's lock held."""
    root = out / TCIA_COLLECTION
    root.mkdir(parents=True, exist_ok=True)
    meta = cohort_meta(seed, synth, model)
    meta_path = out / "synthetic_cohort.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            raise SyntheticCohortError(
                f"{out}: holds a synthetic cohort written with {old}, not {meta}; "
                "delete the folder or choose another"
            )
    else:
        atomic.write_json(meta_path, meta, indent=2, sort_keys=True)
    for tmp in root.glob(".tmp-*"):  # a killed writer's (the lock is ours: none is alive)
        shutil.rmtree(tmp, ignore_errors=True)
    cohort = simulate_cohort(n_patients, seed, model)
    todo = [
        (spec, seed, synth, root) for spec in cohort.specs if not (root / spec.patient_id).is_dir()
    ]
    _, broken = run_jobs(
        _write_patient,
        todo,
        n_jobs,
        desc="synthetic cohort",
        progress=progress,
        already_done=len(cohort.specs) - len(todo),
    )
    if broken is not None:  # a worker died; the patients it did not finish stay missing
        raise SyntheticCohortError(f"{out}: a writer process died ({broken}); run again to resume")
    atomic.write_csv(out / "clinical.csv", cohort.clinical, index=False, float_format="%.6g")
    atomic.write_csv(out / "oracle.csv", cohort.oracle, index=False, float_format="%.6g")
    ids = [spec.patient_id for spec in cohort.specs]
    atomic.write_json(out / COMPLETE_MARKER, {"patients": ids}, indent=1)
    return out


def ensure_cohort(
    out_dir: str | Path,
    n_patients: int,
    seed: int,
    synth: SynthConfig,
    n_jobs: int = 1,
    lock_timeout_s: float | None = None,
    announce: Callable[[str], None] | None = None,
) -> bool:
    """Make ``out_dir`` hold the complete cohort of ``seed``, ``synth`` and ``n_patients``
    (the data step of ``crlm data`` and the notebooks); returns whether anything was written.

    Under the folder's lock (:func:`cohort_lock`), so that concurrent runs neither write one
    patient twice nor see each other's half-written folders: a cohort of another seed, setting
    or generator version is cleared (derived data is rebuilt, never mixed); an incomplete one (a
    writer killed half-way: no :data:`COMPLETE_MARKER`, or a patient folder missing) is resumed
    by :func:`write_cohort`. ``announce`` is told what is done (``print`` for the command line).
    """
    out = Path(out_dir)
    say = announce or (lambda _: None)
    with cohort_lock(out, lock_timeout_s):
        held = {COHORT_LOCK_NAME, f"{COHORT_LOCK_NAME}.pid"}
        content = [p for p in out.iterdir() if p.name not in held]
        if content and not cohort_is_current(out, seed, synth):
            say(
                f"the synthetic cohort in {out} was written by another seed, setting or "
                "generator version: rewriting it"
            )
            for p in content:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink()
        if cohort_is_complete(out, n_patients):
            return False
        say(f"writing the synthetic cohort ({n_patients} patients) to {out}")
        model = outcome_model(synth.setting)
        _write_cohort_locked(out, n_patients, seed, synth, model, progress=True, n_jobs=n_jobs)
        return True
