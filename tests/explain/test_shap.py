"""crlm_lib.explain.shap: clinical SHAP, additivity, KernelSHAP check, risk outputs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from toys import LinearFused, make_patient  # noqa: E402

from crlm_lib import explain  # noqa: E402
from crlm_lib.config import N_YEARS  # noqa: E402


def test_clinical_shap_linear_model_is_additive_with_own_image_fixed():
    n_feat = 4
    model = LinearFused(n_feat)
    rng = np.random.default_rng(0)
    background = rng.normal(size=(30, n_feat)).astype(np.float32)
    patients = []
    for i in range(3):
        p = make_patient(f"CRLM-CT-90{i:02d}", shift=0.5 * i)
        p["clinical"] = torch.tensor(rng.normal(size=(1, n_feat)), dtype=torch.float32)
        patients.append(p)
    names = [f"f{j}" for j in range(n_feat)]
    expl = explain.clinical_shap(
        model, patients, background, names, output="recurrence_logit", nsamples=400, progress=False
    )
    assert expl.values.shape == (3, n_feat)
    assert list(expl.instance_names) == ["CRLM-CT-9000", "CRLM-CT-9001", "CRLM-CT-9002"]
    # exact (interventional) SHAP of a linear function: w_j (x_j - mean background_j)
    w = model.w.mean(dim=1).numpy()
    x = np.concatenate([p["clinical"].numpy() for p in patients])
    exact = w * (x - background.mean(axis=0))
    np.testing.assert_allclose(expl.values, exact, atol=0.1 * np.abs(exact).max())
    # base value carries each patient's own image term (image held fixed, not averaged)
    img = np.array([p["ct"].mean().item() for p in patients])
    expected_base = float(background.mean(0) @ w) + img * model.v.mean().item()
    np.testing.assert_allclose(expl.base_values, expected_base, rtol=1e-4, atol=1e-5)
    gap = explain.shap_additivity_gap(expl, model, patients, output="recurrence_logit")
    assert gap["relative_max_gap"] < 0.1
    # Kernel SHAP (all 2**4 coalitions enumerated) agrees with expected gradients here
    check = explain.kernel_shap_check(
        expl, model, patients, background, output="recurrence_logit", nsamples=64
    )
    assert check["kernel_max_abs_gap"] < 1e-4
    assert check["max_abs_diff"] < 0.1 * np.abs(exact).max()
    # a nonlinear output is explained too; its gap is reported (finite), not hidden
    expl_risk = explain.clinical_shap(
        model, patients, background, names, nsamples=50, progress=False
    )
    gap_risk = explain.shap_additivity_gap(expl_risk, model, patients)
    assert np.isfinite(gap_risk["max_abs_gap"])
    # figures
    for fig in (explain.plot_shap_beeswarm(expl), explain.plot_shap_bar(expl)):
        assert len(fig.axes) >= 1
        plt.close(fig)


def test_risk_output_definitions():
    rec = torch.zeros(2, N_YEARS)
    surv = torch.zeros(2, N_YEARS)
    out = {"recurrence_logits": rec, "survival_logits": surv}
    np.testing.assert_allclose(explain.risk_output(out, "risk"), [0.5, 0.5])
    np.testing.assert_allclose(explain.risk_output(out, "mortality_year", year=3), [0.25, 0.25])
    np.testing.assert_allclose(explain.risk_output(out, "expected_survival_years"), [6.0, 6.0])
    # with the class beyond year 12 (1/13 each): it counts 12 years, the restricted mean's cap
    out13 = {"recurrence_logits": rec, "survival_logits": torch.zeros(2, N_YEARS + 1)}
    np.testing.assert_allclose(explain.risk_output(out13, "expected_survival_years"), [84 / 13] * 2)
    np.testing.assert_allclose(explain.risk_output(out13, "mortality_year", year=3), [3 / 13] * 2)
    with pytest.raises(ValueError):
        explain.risk_output(out, "nonsense")
