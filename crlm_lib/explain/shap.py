"""SHAP values of the clinical inputs (STAR Figure 4) with each patient's own image held fixed,
their additivity and a KernelSHAP cross-check.

``shap`` is imported lazily (its import costs seconds: numba). This module's name does not
shadow the ``shap`` package: imports are absolute.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from crlm_lib.config import with_options
from crlm_lib.devices import to_device
from crlm_lib.explain._common import ExplainError, _iter_patients, _model_device, _patient_id

__all__ = [
    "KernelShapOptions",
    "ShapOptions",
    "clinical_shap",
    "kernel_shap_check",
    "risk_output",
    "shap_additivity_gap",
]

#: What SHAP explains: a name of :func:`risk_output` or a function of the model's outputs.
Output = str | Callable[[Mapping[str, Tensor]], Tensor]


# --------------------------------------------------------------------------------------------
# SHAP on the clinical inputs
# --------------------------------------------------------------------------------------------


def risk_output(outputs: Mapping[str, Tensor], output: str = "risk", year: int = 5) -> Tensor:
    """The scalar per patient that SHAP explains, from the model's outputs.

    - ``"risk"`` (default): mean predicted probability of recurrence over the 12 years,
      ``(1/12) sum_k sigmoid(r_k)`` — the area under the predicted cumulative-recurrence curve
      divided by 12 years; in [0, 1], higher = worse.
    - ``"recurrence_logit"``: ``(1/12) sum_k r_k`` (linear in the logits; additivity checks).
    - ``"recurrence_year"``: ``sigmoid(r_{year-1})``, recurrence by the end of ``year``.
    - ``"mortality_year"``: ``1 - S(year) = sum_{j < year} softmax(s)_j``, death by ``year``.
    - ``"expected_survival_years"``: ``sum_j (j + 0.5) p_j + 12 S(12)`` with ``p`` the death
      pmf of years 1..12 and ``S(12)`` the class beyond year 12 where the head has it: the
      12-year restricted mean (bin midpoints, years; higher = better, i.e. the opposite sign
      of a risk).

    Returns
    -------
    Tensor
        ``[B]``.
    """
    rec, surv = outputs["recurrence_logits"], outputs["survival_logits"]
    if output == "risk":
        return torch.sigmoid(rec).mean(dim=1)
    if output == "recurrence_logit":
        return rec.mean(dim=1)
    if not 1 <= year <= rec.shape[1]:
        raise ValueError(f"year must be in 1..{rec.shape[1]}, got {year}")
    if output == "recurrence_year":
        return torch.sigmoid(rec[:, year - 1])
    if output == "mortality_year":
        return torch.softmax(surv, dim=1)[:, :year].sum(dim=1)
    if output == "expected_survival_years":
        mid = torch.arange(surv.shape[1], device=surv.device, dtype=surv.dtype) + 0.5
        mid = mid.clamp(max=rec.shape[1])  # the class beyond year 12 counts 12 years
        return (torch.softmax(surv, dim=1) * mid).sum(dim=1)
    raise ValueError(
        "output must be 'risk', 'recurrence_logit', 'recurrence_year', 'mortality_year' or "
        f"'expected_survival_years', got {output!r}"
    )


class _ClinicalRisk(nn.Module):
    """``clinical [N, F] -> risk [N, 1]`` with one patient's image inputs held fixed.

    Every tensor of the patient's batch of one (ct, masks, lesions) is broadcast to N rows;
    the model runs in chunks of ``chunk`` rows to bound memory.
    """

    def __init__(
        self,
        model: nn.Module,
        batch: Mapping[str, Any],
        output: Output,
        year: int,
        chunk: int,
    ) -> None:
        super().__init__()
        self.model = model
        self.fixed = {k: v for k, v in batch.items() if k != "clinical"}
        self.output = output
        self.year = year
        self.chunk = chunk

    def _rows(self, n: int) -> dict[str, Any]:
        rows = {}
        for k, v in self.fixed.items():
            if isinstance(v, Tensor) and v.ndim >= 1 and v.shape[0] == 1:
                rows[k] = v.expand(n, *v.shape[1:])
            elif isinstance(v, list) and len(v) == 1:
                rows[k] = v * n
            else:
                rows[k] = v
        return rows

    def forward(self, clinical: Tensor) -> Tensor:
        parts = []
        for start in range(0, clinical.shape[0], self.chunk):
            x = clinical[start : start + self.chunk]
            out = self.model({**self._rows(x.shape[0]), "clinical": x})
            if callable(self.output):
                y = self.output(out)
            else:
                y = risk_output(out, self.output, self.year)
            parts.append(y.reshape(-1, 1))
        return torch.cat(parts, dim=0)


@dataclass(frozen=True)
class ShapOptions:
    """Settings of :func:`clinical_shap` (each also a keyword of it).

    Attributes
    ----------
    output : str or callable
        Scalar explained (:func:`risk_output`; default ``"risk"``: mean predicted recurrence
        probability), or a function of the model's outputs ``[B, ...] -> [B]``.
    year : int
        Year of the ``"recurrence_year"`` / ``"mortality_year"`` outputs.
    nsamples : int
        Expected-gradients samples per patient.
    max_background : int or None
        Random subset of the background (seeded) to bound cost; ``None`` keeps all.
    seed : int
        Seed for the background subset and the explainer's sampling (``rseed``).
    chunk : int
        Background rows per forward pass (and the explainer's batch size, at most
        ``nsamples``).
    progress : bool
        Show a progress bar over the patients.
    """

    output: Output = "risk"
    year: int = 5
    nsamples: int = 200
    max_background: int | None = 200
    seed: int = 0
    chunk: int = 64
    progress: bool = True


def _background_rows(n_rows: int, max_rows: int | None, seed: int) -> np.ndarray | None:
    """Sorted indices of a seeded random subset of ``max_rows`` background rows, or None
    when all ``n_rows`` are kept."""
    if max_rows is None or n_rows <= max_rows:
        return None
    return np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))


def clinical_shap(
    model: nn.Module,
    dataset_or_batches: Any,
    background: np.ndarray | Tensor,
    feature_names: Sequence[str],
    options: ShapOptions | None = None,
    **changes: Any,
):
    """SHAP values of the clinical inputs, each patient explained with its OWN image fixed.

    For patient ``i`` with image inputs ``I_i`` the explained function is
    ``f_i(c) = risk(model(I_i, c))`` (see :func:`risk_output` for ``output``), and SHAP
    attributes ``f_i(c_i) - E_{c ~ background}[f_i(c)]`` to the clinical features with
    ``shap.GradientExplainer`` (expected gradients: Erion et al. 2021, an approximation of
    SHAP values that converges with ``nsamples``). Holding the image at the patient's own value
    (rather than averaging images over the background) answers "given this patient's CT, what
    do the clinical factors add?" and keeps the fused model on realistic inputs; the cost is
    one explainer (``nsamples`` forward+backward passes) per patient.

    shap 0.51 returns ONE array ``(n, F, outputs)`` (not a list per output); the single
    output axis is dropped here.

    Parameters
    ----------
    model : nn.Module
        Registry model with a clinical input (``batch["clinical"]`` ``[B, F]``).
    dataset_or_batches : Dataset, batch dict or iterable of either
        Patients to explain (``ct``, ``masks``, ``clinical``, ...).
    background : array ``[M, F]``
        Training patients' encoded clinical vectors (never the explained patients' own).
    feature_names : sequence of str
        ``F`` names (from ``clinical.encode_predictors``).
    options : ShapOptions, optional
        Output explained, year, samples, background size, seed, chunk and progress bar
        (defaults when omitted).
    **changes
        Fields of :class:`ShapOptions` as keywords (``nsamples=50, progress=False``), applied
        over ``options``; a keyword that is no field raises ``TypeError`` naming the valid
        ones.

    Returns
    -------
    shap.Explanation
        ``values`` ``(n, F)``, ``base_values`` ``(n,)`` = ``E[f_i(background)]``, ``data``
        ``(n, F)``, ``feature_names``, ``instance_names`` (patient IDs).
    """
    import shap

    o = with_options(ShapOptions, options, changes)
    model.eval()
    device = _model_device(model)
    bg = torch.as_tensor(np.asarray(background), dtype=torch.float32)
    if bg.ndim != 2 or bg.shape[1] != len(feature_names):
        raise ExplainError(f"background must be [M, F={len(feature_names)}], got {tuple(bg.shape)}")
    rows = _background_rows(bg.shape[0], o.max_background, o.seed)
    bg = (bg if rows is None else bg[rows]).to(device)

    patients = list(_iter_patients(dataset_or_batches))
    values, base, data, names = [], [], [], []
    iterator: Iterable[dict[str, Any]] = patients
    if o.progress:
        from tqdm.auto import tqdm

        iterator = tqdm(patients, desc="clinical SHAP", unit="patient")
    for batch in iterator:
        pid = _patient_id(batch)
        if "clinical" not in batch:
            raise ExplainError(f"{pid}: batch has no 'clinical' input to explain")
        batch = to_device(batch, device)
        x = batch["clinical"].float()
        if x.shape[1] != bg.shape[1]:
            raise ExplainError(
                f"{pid}: clinical has {x.shape[1]} features, background {bg.shape[1]}"
            )
        f = _ClinicalRisk(model, batch, o.output, o.year, o.chunk).eval()
        explainer = shap.GradientExplainer(f, bg, batch_size=min(o.chunk, o.nsamples))
        sv = explainer.shap_values(x, nsamples=o.nsamples, rseed=o.seed)
        sv = np.asarray(sv[0] if isinstance(sv, list) else sv)  # older shap: list per output
        values.append(sv.reshape(x.shape[0], x.shape[1], -1)[..., 0])
        with torch.no_grad():
            base.append(float(f(bg).mean()))
        data.append(x.detach().cpu().numpy())
        names.append(pid)
    return shap.Explanation(
        values=np.concatenate(values).astype(float),
        base_values=np.asarray(base, dtype=float),
        data=np.concatenate(data).astype(float),
        feature_names=list(feature_names),
        instance_names=names,
    )


def shap_additivity_gap(
    expl,
    model: nn.Module,
    dataset_or_batches: Any,
    output: Output = "risk",
    year: int = 5,
) -> dict[str, float]:
    """Local accuracy check: ``sum_j phi_ij`` vs ``f_i(x_i) - E[f_i(background)]``.

    SHAP values satisfy ``f(x) = E[f(background)] + sum_j phi_j`` exactly; expected gradients
    (``GradientExplainer``) only approximately (Monte Carlo over background rows and path
    positions), so the gap is a measure of its error and is reported, not hidden.

    Returns
    -------
    dict
        ``max_abs_gap`` and ``mean_abs_gap`` (units of ``output``), and ``relative_max_gap`` =
        ``max_abs_gap / mean_i |f_i(x_i) - base_i|`` (NaN where the denominator is 0).
    """
    model.eval()
    device = _model_device(model)
    fx = []
    with torch.no_grad():
        for batch in _iter_patients(dataset_or_batches):
            batch = to_device(batch, device)
            f = _ClinicalRisk(model, batch, output, year, chunk=1)
            fx.append(float(f(batch["clinical"].float())[0, 0]))
    fx = np.asarray(fx)
    if fx.shape[0] != expl.values.shape[0]:
        raise ExplainError(f"{fx.shape[0]} patients given, explanation has {expl.values.shape[0]}")
    gap = np.abs(expl.values.sum(axis=1) + np.asarray(expl.base_values) - fx)
    spread = float(np.mean(np.abs(fx - np.asarray(expl.base_values))))
    return {
        "max_abs_gap": float(gap.max()),
        "mean_abs_gap": float(gap.mean()),
        "relative_max_gap": float(gap.max() / spread) if spread > 0 else float("nan"),
    }


@dataclass(frozen=True)
class KernelShapOptions:
    """Settings of :func:`kernel_shap_check` (each also a keyword of it).

    Attributes
    ----------
    output : str or callable
        The scalar explained, as in :class:`ShapOptions` (the one the checked values explain).
    year : int
        Year of the ``"recurrence_year"`` / ``"mortality_year"`` outputs.
    max_background : int
        Random subset of the background (seeded): Kernel SHAP costs ``nsamples`` forward
        passes per background row and patient.
    nsamples : int or "auto"
        Coalitions evaluated per patient (``>= 2**F`` enumerates them all: exact).
    seed : int
        Seed for the background subset and Kernel SHAP's sampling.
    """

    output: Output = "risk"
    year: int = 5
    max_background: int = 50
    nsamples: int | str = "auto"
    seed: int = 0


def kernel_shap_check(
    expl,
    model: nn.Module,
    dataset_or_batches: Any,
    background: np.ndarray | Tensor,
    options: KernelShapOptions | None = None,
    **changes: Any,
) -> dict[str, float]:
    """Compare the GradientExplainer values with model-agnostic Kernel SHAP, patient by patient.

    ``shap.KernelExplainer`` (Lundberg & Lee 2017, Eq. (9)) on the same per-patient function
    ``f_i(c)`` (own image fixed) and the same background; with ``nsamples >= 2**F`` it
    enumerates every coalition and is exact for the interventional SHAP values, so for a small
    number of clinical features it is the reference the approximate expected gradients are
    checked against. Costs ``nsamples * |background|`` forward passes per patient.
    ``options`` (:class:`KernelShapOptions`) or its fields as keywords (``nsamples=64``; a
    keyword that is no field raises ``TypeError`` naming the valid ones).

    Returns
    -------
    dict
        ``max_abs_diff`` and ``mean_abs_diff`` between the two sets of values, and
        ``kernel_max_abs_gap`` (Kernel SHAP's own additivity gap, ~0 by construction).
    """
    import shap

    o = with_options(KernelShapOptions, options, changes)
    model.eval()
    device = _model_device(model)
    bg = np.asarray(background, dtype=np.float32)
    rows = _background_rows(bg.shape[0], o.max_background, o.seed)
    bg = bg if rows is None else bg[rows]
    kernel_values, gaps = [], []
    for batch in _iter_patients(dataset_or_batches):
        batch = to_device(batch, device)
        f = _ClinicalRisk(model, batch, o.output, o.year, chunk=256).eval()

        def fn(c: np.ndarray, f=f) -> np.ndarray:
            with torch.no_grad():
                return f(torch.as_tensor(c, dtype=torch.float32, device=device))[:, 0].cpu().numpy()

        x = batch["clinical"].float().cpu().numpy()
        kx = shap.KernelExplainer(fn, bg)
        np.random.seed(o.seed)  # noqa: NPY002 (KernelExplainer draws from the global RNG)
        sv = np.asarray(kx.shap_values(x, nsamples=o.nsamples, silent=True)).reshape(x.shape)
        kernel_values.append(sv)
        gaps.append(abs(sv.sum() + float(np.asarray(kx.expected_value).ravel()[0]) - fn(x)[0]))
    kernel = np.concatenate(kernel_values)
    diff = np.abs(kernel - np.asarray(expl.values))
    return {
        "max_abs_diff": float(diff.max()),
        "mean_abs_diff": float(diff.mean()),
        "kernel_max_abs_gap": float(max(gaps)),
    }
