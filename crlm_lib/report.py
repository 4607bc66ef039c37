"""Per-patient report of ``crlm predict``: the same A4 pages as HTML (self-contained) and PDF.

Pages, in this order in both files:

1. **Summary**: the headline caveats first (synthetic training data, missing clinical
   predictors and how they were imputed, training-set membership, no band for one model), the
   plain-language line, the 1/3/5-year table with the band, risk groups, how the clinical row
   was matched, the models' cross-validated performance (:mod:`crlm_lib.ensemble`), the band's
   method, and the provenance (software version and git commit, run identities, date, source);
2. **Survival curves** beside the training cohort's Kaplan–Meier curve, the band's meaning
   stated under the plot, the years the training follow-up does not back greyed out
   (:func:`crlm_lib.report_figures.plot_curves_page`);
3. **Grad-CAM**, year by year on one fixed colour scale with a colour bar (zero drawn), the
   slice named by its place in the original CT (instance number, z in mm), orientation
   letters and an outline legend (:func:`crlm_lib.report_figures.plot_gradcam_page`);
4. **Clinical factors** (SHAP).

One content model feeds both renderers: the summary's blocks (:func:`summary_blocks`) become
HTML text and a PDF page drawn with matplotlib in a proportional font; each figure page is one
A4 matplotlib figure whose plot area is cropped into the HTML as a PNG, with its title and
caption as HTML text. The HTML prints on A4 with a page break per page (``@page``).
"""

from __future__ import annotations

import base64
import html
import io
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crlm_lib import atomic
from crlm_lib.config import MIN_AT_RISK
from crlm_lib.report_figures import (
    A4_INCHES,
    FigurePage,
    plot_curves_page,
    plot_gradcam_page,
    plot_shap_page,
)
from crlm_lib.types import PATIENT_ID

__all__ = ["PatientReport", "membership", "summary_blocks", "write_report"]


@dataclass
class PatientReport:
    """What a report shows for one patient.

    Attributes
    ----------
    row : mapping
        The patient's line of ``predictions.csv`` (``predict.predict_patient(...).row``).
    surv, rfs : np.ndarray
        ``[3, 12]`` point, band low and band high at the end of years 1..12 (NaN: no band).
    reference : mapping
        ``run.json["training_reference"]`` (KM tables with numbers at risk, tertiles, n).
    ct, masks, heatmaps : np.ndarray or None
        Preprocessed ``[D, H, W]`` CT, ``[5, D, H, W]`` masks, ``[12, D, H, W]`` Grad-CAM.
    shap_values : mapping of str to float, optional
        SHAP value of each clinical feature for this patient (risk units).
    provenance : mapping of str to str
        Model, runs with identities, software, date, source (the summary's last block).
    headline : list of str
        The caveats shown first (``predict.headline``).
    band_method : str
        The band's meaning (``predict.band_text``: conformal or ensemble spread), stated on the
        summary and under the curves.
    performance : list of str, optional
        The models' validation numbers (``ensemble.Performance.lines``).
    slice_labels : list of str, optional
        Per preprocessed slice, its place in the original CT (``"CT instance 23, z = -120.0
        mm"``).
    orientation : tuple of 4 str
        Patient directions at the (left, right, top, bottom) edges of an axial slice.
    explained_by : str
        Which model the Grad-CAM, SHAP and training Kaplan–Meier curve come from (``"model 1
        of 5 (r0_f0)"``; ``"the model"`` for one), said on those pages: the prediction is the
        ensemble's mean, the explanations are one member's.
    followed_years : mapping
        ``{"os": t, "dfs": t}``: the last year the training follow-up backs (None: unknown),
        i.e. with at least ``min_at_risk`` training patients still followed
        (``predict.supported_years``).
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
    headline: Sequence[str] = ()
    band_method: str = ""
    performance: Sequence[str] | None = None
    slice_labels: Sequence[str] | None = None
    orientation: tuple[str, str, str, str] = ("R", "L", "A", "P")
    explained_by: str = "the model"
    followed_years: Mapping[str, int | None] = field(default_factory=dict)
    min_at_risk: int = MIN_AT_RISK


def membership(value: Any) -> str:
    """``in_training_set`` in words: yes, no, or unknown (``None``/NaN: the run does not record
    its training images)."""
    if value is True or value is np.True_:
        return "yes"
    if value is False or value is np.False_:
        return "no"
    return "unknown (the run does not record its training images)"


#: Mark of a value beyond the training follow-up in the summary table.
BEYOND_FOLLOW_UP = "†"


def _cell(row: Mapping[str, Any], head: str, year: int, followed: int | None) -> str:
    name = "os" if head == "os" else "rfs"
    v, lo, hi = row[f"{name}_{year}y"], row[f"{name}_{year}y_lo"], row[f"{name}_{year}y_hi"]
    mark = BEYOND_FOLLOW_UP if followed is not None and year > followed else ""
    if lo is None or not np.isfinite(lo):
        return f"{v:.3f}{mark} (no band)"
    return f"{v:.3f}{mark} ({lo:.3f}–{hi:.3f})"


def summary_table(report: PatientReport) -> list[tuple[str, str, str]]:
    """Header and one row per summary year: ``(years, overall survival, recurrence-free)``;
    a value beyond the training follow-up carries :data:`BEYOND_FOLLOW_UP`."""
    row, followed = report.row, report.followed_years or {}
    rows = [("Probability (band)", "Overall survival", "Recurrence-free")]
    for y in (1, 3, 5):
        cells = (_cell(row, h, y, followed.get(h)) for h in ("os", "dfs"))
        rows.append((f"{y} year{'s' if y > 1 else ''}", *cells))
    return rows


def _follow_up_line(report: PatientReport) -> list[str]:
    """The footnote of the table's marked values, or nothing when none is marked."""
    marked = any(BEYOND_FOLLOW_UP in cell for r in summary_table(report)[1:] for cell in r)
    if not marked:
        return []
    return [
        f"{BEYOND_FOLLOW_UP} Beyond the training cohort's follow-up (fewer than "
        f"{report.min_at_risk} training patients still followed): the model's extrapolation."
    ]


def _prediction_line(report: PatientReport) -> str:
    """The plain-language line without the caveats the headline already shows."""
    text = str(report.row["summary"])
    for line in report.headline:
        text = text.replace(line, "")
    return " ".join(text.split())


def summary_blocks(report: PatientReport) -> list[tuple[str, list[str]]]:
    """The summary page as ``(heading, lines)`` blocks, in order (the table sits after the
    first block); the HTML and the PDF render exactly these."""
    row = report.row
    groups = [
        f"Risk group: overall survival {row['os_risk_group']}, recurrence "
        f"{row['rfs_risk_group']}; cut points: "
        f"{row.get('risk_cut_points') or 'tertiles of the training patients'}.",
        f"In the model's training set: {membership(row.get('in_training_set'))}.",
        f"Clinical row matched by: {row.get('clinical_row', 'not recorded')}; missing "
        f"predictors: {row.get('missing_predictors') or 'none'}.",
    ]
    perf = list(report.performance or ["Not recorded in the run folder(s)."])
    prov = [f"{k}: {v}" for k, v in (report.provenance or {}).items()]
    return [
        ("Read this first", list(report.headline)),
        ("Prediction", [_prediction_line(report), *_follow_up_line(report)]),
        ("Risk group and inputs", groups),
        ("How well the models did in their own validation", perf),
        ("The band", [report.band_method or "not stated"]),
        ("Provenance", prov),
    ]


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
@page { size: A4; margin: 12mm; }
body { font-family: sans-serif; margin: 1.5em auto; max-width: 190mm; color: #222; }
section.page { page-break-after: always; break-after: page; margin-bottom: 2em; }
.warn { background: #fdecea; border-left: 6px solid #c0392b; padding: 0.5em 1em; }
.warn li { font-weight: bold; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #bbb; padding: 0.3em 0.8em; }
th { background: #eee; }
img { max-width: 100%; }
p.caption { font-size: 0.95em; }
"""


def _png_b64(page: FigurePage) -> str:
    buf = io.BytesIO()
    page.figure.savefig(buf, format="png", dpi=110, bbox_inches=page.plot_box)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _html_summary(report: PatientReport) -> str:
    esc = html.escape
    blocks = summary_blocks(report)
    head, *table = summary_table(report)
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in table)
    parts = [f"<h2>{esc(blocks[0][0])}</h2><ul class='warn'>"]
    parts += [f"<li>{esc(line)}</li>" for line in blocks[0][1]]
    parts.append("</ul>")
    parts.append(
        "<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in head) + f"</tr>{rows}</table>"
    )
    for title, lines in blocks[1:]:
        parts.append(f"<h2>{esc(title)}</h2>")
        parts += [f"<p>{esc(line)}</p>" for line in lines]
    return "".join(parts)


def render_html(report: PatientReport, pages: Sequence[FigurePage]) -> str:
    """The report as one self-contained HTML page (figures as base64 PNG), one ``<section
    class="page">`` per PDF page."""
    esc = html.escape
    pid = esc(str(report.row[PATIENT_ID]))
    title = f"Prognosis after resection of colorectal liver metastases: patient {pid}"
    sections = [f'<section class="page"><h1>{title}</h1>{_html_summary(report)}</section>']
    for page in pages:
        caption = "".join(f'<p class="caption">{esc(c)}</p>' for c in page.caption)
        sections.append(
            f'<section class="page"><h2>{esc(page.title)}</h2>'
            f'<img alt="{esc(page.title)}" src="data:image/png;base64,{_png_b64(page)}">'
            f"{caption}</section>"
        )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
        f"<title>CRLM prognosis report: {pid}</title>\n<style>{_CSS}</style></head><body>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )


# --------------------------------------------------------------------------------------------
# PDF
# --------------------------------------------------------------------------------------------


class _TextPage:
    """A4 pages of wrapped text drawn with matplotlib (proportional font), page after page."""

    WIDTH_CHARS = 100
    TOP, BOTTOM, LEFT = 0.95, 0.05, 0.07

    def __init__(self, new_figure: Callable[[], Any]) -> None:
        self.new_figure = new_figure
        self.pages: list[Any] = []
        self._start()

    def _start(self) -> None:
        self.fig = self.new_figure()
        self.pages.append(self.fig)
        self.y = self.TOP

    def text(self, text: str, size: float = 9.0, **style: Any) -> None:
        """Wrapped text at the cursor; a new page when it runs out."""
        step = size * 1.45 / 72 / A4_INCHES[1]
        width = int(self.WIDTH_CHARS * 9.0 / size)
        for line in textwrap.wrap(text, width) or [""]:
            if self.y - step < self.BOTTOM:
                self._start()
            self.fig.text(self.LEFT, self.y, line, fontsize=size, va="top", **style)
            self.y -= step

    def table(self, rows: Sequence[Sequence[str]]) -> None:
        """A table of cells at the cursor (first row bold)."""
        height = 0.022 * len(rows)
        if self.y - height < self.BOTTOM:
            self._start()
        ax = self.fig.add_axes((self.LEFT, self.y - height, 0.86, height))
        ax.axis("off")
        tab = ax.table(cellText=[list(r) for r in rows], loc="upper left", cellLoc="left")
        tab.auto_set_font_size(False)
        tab.set_fontsize(9)
        tab.scale(1, 1.3)
        for (r, _), cell in tab.get_celld().items():
            if r == 0:
                cell.set_text_props(weight="bold")
        self.y -= height + 0.015


def _pdf_summary(report: PatientReport, new_figure: Callable[[], Any]) -> list[Any]:
    page = _TextPage(new_figure)
    pid = report.row[PATIENT_ID]
    page.text(f"Prognosis after resection of colorectal liver metastases: patient {pid}", 14,
              weight="bold")  # fmt: skip
    page.y -= 0.01
    for i, (title, lines) in enumerate(summary_blocks(report)):
        page.text(title, 12, weight="bold")
        for line in lines:
            page.text(line, 9.5, **({"color": "#b03a2e", "weight": "bold"} if i == 0 else {}))
        if i == 0:
            page.table(summary_table(report))
        page.y -= 0.012
    return page.pages


def _figure_pages(report: PatientReport) -> list[FigurePage]:
    pages = [plot_curves_page(report)]
    if report.heatmaps is not None and report.ct is not None:
        pages.append(plot_gradcam_page(report))
    if report.shap_values:
        pages.append(plot_shap_page(report))
    return pages


def write_report(report: PatientReport, out_dir: str | Path, stem: str = "report") -> dict:
    """Write ``<stem>.html`` and ``<stem>.pdf`` (the same A4 pages) into ``out_dir``; return
    their paths."""
    import matplotlib.pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    out_dir = Path(out_dir)
    pages = _figure_pages(report)
    html_path = out_dir / f"{stem}.html"
    atomic.write_bytes(html_path, render_html(report, pages).encode("utf-8"))
    buf = io.BytesIO()
    summary = _pdf_summary(report, lambda: plt.figure(figsize=A4_INCHES))
    with PdfPages(
        buf, metadata={"Title": f"CRLM prognosis report {report.row[PATIENT_ID]}"}
    ) as pdf:
        for fig in [*summary, *(p.figure for p in pages)]:
            pdf.savefig(fig)
    for fig in [*summary, *(p.figure for p in pages)]:
        plt.close(fig)
    pdf_path = out_dir / f"{stem}.pdf"
    atomic.write_bytes(pdf_path, buf.getvalue())
    return {"html": html_path, "pdf": pdf_path}
