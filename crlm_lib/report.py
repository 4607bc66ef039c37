"""Per-patient report of ``crlm predict --report``: HTML (self-contained) and PDF.

Figures (:mod:`crlm_lib.plots`, matplotlib with the seaborn theme):

1. predicted overall survival and recurrence-free probability by year with the 95% band of
   :mod:`crlm_lib.predict`, beside the training cohort's Kaplan–Meier curve and its band;
2. the year-by-year Grad-CAM maps over the CT slice with the most tumour, liver outline in
   cyan and tumour outline in lime (``plots.plot_yearly_montage``);
3. the SHAP contributions of the clinical factors (``explain.clinical_shap``), largest first.

The HTML embeds the PNGs (base64), so one file can be mailed or archived; the PDF is
matplotlib's ``PdfPages`` of a text page and the same figures.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crlm_lib import atomic
from crlm_lib.plots import plot_curves_vs_cohort, plot_gradcam, plot_shap
from crlm_lib.types import PATIENT_ID

__all__ = ["PatientReport", "plot_curves_vs_cohort", "plot_gradcam", "plot_shap", "write_report"]


@dataclass
class PatientReport:
    """What a report shows for one patient.

    Attributes
    ----------
    row : mapping
        The patient's line of ``predictions.csv`` (``predict.predict_patient(...).row``).
    surv, rfs : np.ndarray
        ``[3, 12]`` point, 2.5% and 97.5% band at the end of years 1..12.
    reference : mapping
        ``run.json["training_reference"]`` (KM tables, tertiles, n).
    ct, masks, heatmaps : np.ndarray or None
        Preprocessed ``[D, H, W]`` CT, ``[5, D, H, W]`` masks, ``[12, D, H, W]`` Grad-CAM.
    shap_values : mapping of str to float, optional
        SHAP value of each clinical feature for this patient (risk units).
    provenance : mapping of str to str
        Model, run folder, date, data kind (shown in the header).
    """

    row: Mapping[str, Any]
    surv: np.ndarray
    rfs: np.ndarray
    reference: Mapping[str, Any]
    ct: np.ndarray | None = None
    masks: np.ndarray | None = None
    heatmaps: np.ndarray | None = None
    shap_values: Mapping[str, float] | None = None
    shap_output: str = "mean predicted recurrence probability over 12 years"
    provenance: Mapping[str, str] | None = None


def _png_b64(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(report: PatientReport) -> list[tuple[str, Any]]:
    figs = [("Predicted survival beside the training cohort", plot_curves_vs_cohort(report))]
    if report.heatmaps is not None and report.ct is not None:
        figs.append(("Where the model looked, year by year (Grad-CAM)", plot_gradcam(report)))
    if report.shap_values:
        figs.append(("Contributions of the clinical factors (SHAP)", plot_shap(report)))
    return figs


def membership(value: Any) -> str:
    """``in_training_set`` in words: yes, no, or unknown (``None``/NaN: the run does not record
    its training images)."""
    if value is True or value is np.True_:
        return "yes"
    if value is False or value is np.False_:
        return "no"
    return "unknown (the run does not record its training images)"


def _summary_table(row: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    out = []
    for y in (1, 3, 5):
        cells = []
        for head in ("os", "rfs"):
            v, lo, hi = row[f"{head}_{y}y"], row[f"{head}_{y}y_lo"], row[f"{head}_{y}y_hi"]
            cells.append(f"{v:.3f} ({lo:.3f}–{hi:.3f})")
        out.append((f"{y} year{'s' if y > 1 else ''}", *cells))
    return out


def _text_lines(report: PatientReport) -> list[str]:
    row = report.row
    lines = [f"Patient {row[PATIENT_ID]}", ""]
    lines += [f"{k}: {v}" for k, v in (report.provenance or {}).items()]
    lines += ["", "Probability (95% band)      overall survival       recurrence-free"]
    lines += [f"{a:<28}{b:<23}{c}" for a, b, c in _summary_table(row)]
    lines += [
        "",
        f"Risk group (overall survival): {row['os_risk_group']}",
        f"Risk group (recurrence): {row['rfs_risk_group']}",
        f"In the model's training set: {membership(row.get('in_training_set'))}",
        f"Missing clinical predictors: {row.get('missing_predictors') or 'none'}",
        "",
    ]
    import textwrap

    lines += textwrap.wrap(str(row["summary"]), 95)
    return lines


def render_html(report: PatientReport, figures: Sequence[tuple[str, Any]]) -> str:
    """The report as one self-contained HTML page (figures as base64 PNG)."""
    row = report.row
    esc = html.escape
    prov = "".join(
        f"<li><b>{esc(str(k))}</b>: {esc(str(v))}</li>"
        for k, v in (report.provenance or {}).items()
    )
    table = "".join(
        f"<tr><td>{esc(a)}</td><td>{esc(b)}</td><td>{esc(c)}</td></tr>"
        for a, b, c in _summary_table(row)
    )
    figs = "".join(
        f'<figure><img alt="{esc(title)}" src="data:image/png;base64,{_png_b64(fig)}">'
        f"<figcaption>{esc(title)}</figcaption></figure>"
        for title, fig in figures
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>CRLM prognosis report: {esc(str(row[PATIENT_ID]))}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 1100px; color: #222; }}
.summary {{ background: #fff4e5; border-left: 6px solid #e67e22; padding: 0.8em 1em; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #bbb; padding: 0.3em 0.8em; }}
th {{ background: #eee; }}
figure {{ margin: 1.5em 0; }} img {{ max-width: 100%; }}
.risk {{ font-weight: bold; }}
</style></head><body>
<h1>Prognosis after resection of colorectal liver metastases</h1>
<h2>Patient {esc(str(row[PATIENT_ID]))}</h2>
<p class="summary">{esc(str(row["summary"]))}</p>
<table><tr><th>Probability (95% band)</th><th>Overall survival</th>
<th>Recurrence-free</th></tr>{table}</table>
<p>Risk group against the tertiles of the {row["n_training"]} training patients:
overall survival <span class="risk">{esc(str(row["os_risk_group"]))}</span>, recurrence
<span class="risk">{esc(str(row["rfs_risk_group"]))}</span>. In the model's training set:
<b>{esc(membership(row.get("in_training_set")))}</b>. Missing clinical predictors (filled with the
training means): {esc(str(row.get("missing_predictors") or "none"))}.</p>
<ul>{prov}</ul>
{figs}
<p><small>Bands: 2.5–97.5 percentiles over {row["n_members"]} ensemble members (runs x
test-time augmentations); they are not calibrated confidence intervals.</small></p>
</body></html>
"""


def write_report(report: PatientReport, out_dir: str | Path, stem: str = "report") -> dict:
    """Write ``<stem>.html`` and ``<stem>.pdf`` into ``out_dir``; return their paths."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    out_dir = Path(out_dir)
    figures = _figures(report)
    html_path = out_dir / f"{stem}.html"
    atomic.write_bytes(html_path, render_html(report, figures).encode("utf-8"))
    buf = io.BytesIO()
    with PdfPages(buf) as pdf:
        page = plt.figure(figsize=(8.27, 11.69))
        page.text(0.06, 0.96, "\n".join(_text_lines(report)), va="top", family="monospace",
                  fontsize=9)  # fmt: skip
        pdf.savefig(page)
        plt.close(page)
        for title, fig in figures:
            fig.suptitle(title, fontsize=11, y=1.0)
            pdf.savefig(fig, bbox_inches="tight")
    for _, fig in figures:
        plt.close(fig)
    pdf_path = out_dir / f"{stem}.pdf"
    atomic.write_bytes(pdf_path, buf.getvalue())
    return {"html": html_path, "pdf": pdf_path}
