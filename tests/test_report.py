"""Tests of crlm_lib.report: the per-patient HTML/PDF report, checked in a real browser."""

from __future__ import annotations

import shutil
import subprocess
import tempfile

import numpy as np
import pytest

from crlm_lib.report import PatientReport, write_report


def _report() -> PatientReport:
    rng = np.random.default_rng(0)
    years = np.arange(1, 13)
    surv = np.exp(-0.12 * years)
    rfs = np.exp(-0.3 * years)
    band = lambda c: np.stack([c, np.clip(c - 0.05, 0, 1), np.clip(c + 0.05, 0, 1)])  # noqa: E731
    d, h, w = 8, 32, 32
    zz, yy, xx = np.mgrid[:d, :h, :w]
    liver = ((yy - 16) ** 2 + (xx - 16) ** 2 < 100).astype(np.uint8)
    tumour = ((yy - 14) ** 2 + (xx - 18) ** 2 < 9) & (zz == 4)
    masks = np.stack([liver, liver, 0 * liver, 0 * liver, tumour.astype(np.uint8)])
    heat = np.stack([np.exp(-((yy - 14) ** 2 + (xx - 18) ** 2) / (10.0 + k)) for k in range(12)])
    km = {
        "years": list(range(13)),
        "estimate": list(np.r_[1, surv * 0.9]),
        "lower": list(np.r_[1, surv * 0.8]),
        "upper": list(np.r_[1, surv]),
    }
    row = {
        "patient_id": "CRLM-NEW-0001",
        **{f"os_{y}y": surv[y - 1] for y in (1, 3, 5)},
        **{f"os_{y}y_lo": surv[y - 1] - 0.05 for y in (1, 3, 5)},
        **{f"os_{y}y_hi": surv[y - 1] + 0.05 for y in (1, 3, 5)},
        **{f"rfs_{y}y": rfs[y - 1] for y in (1, 3, 5)},
        **{f"rfs_{y}y_lo": rfs[y - 1] - 0.05 for y in (1, 3, 5)},
        **{f"rfs_{y}y_hi": rfs[y - 1] + 0.05 for y in (1, 3, 5)},
        "os_risk_group": "high",
        "rfs_risk_group": "low",
        "in_training_set": False,
        "n_training": 157,
        "n_models": 5,
        "clinical_row": "folder name",
        "missing_predictors": "body_mass_index",
        "summary": "Predicted 5-year overall survival 55% <b>not bold</b>.",
    }
    return PatientReport(
        row=row,
        surv=band(surv),
        rfs=band(rfs),
        reference={"n": 157, "km": {"os": km, "dfs": km}},
        ct=rng.uniform(-1, 1, (d, h, w)).astype(np.float32),
        masks=masks,
        heatmaps=heat.astype(np.float32),
        shap_values={"age": 0.02, "carcinoembryonic_antigen": -0.05, "sex_female": 0.01},
        provenance={"software": "crlm_lib 0.1.0 (git 0123456789ab)", "runs": "runs/cv/acfnet"},
        headline=[
            "Research model trained on SYNTHETIC data: not for clinical use.",
            "INCOMPLETE CLINICAL DATA: 1 predictor(s) missing (body_mass_index).",
        ],
        band_method="ensemble spread: 5th-95th percentile of the 5 models' predictions",
        performance=["Harrell's C, overall survival: 0.61 (95% CI 0.55-0.67)"],
        slice_labels=[f"CT instance {40 - z}, z = {-100.0 + 5 * z:.1f} mm" for z in range(d)],
        followed_years={"os": 8, "dfs": 6},
    )


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict:
    """The report written once for the module (figures cost a few seconds)."""
    return write_report(_report(), tmp_path_factory.mktemp("report"))


def test_report_html_and_pdf_hold_the_numbers_and_figures(paths):
    html = paths["html"].read_text()
    assert "CRLM-NEW-0001" in html and "0.549 (0.499–0.599)" in html  # 5-year OS, 3 decimals
    assert html.count("data:image/png;base64,") == 3
    assert "&lt;b&gt;not bold&lt;/b&gt;" in html  # text is escaped
    assert "@page { size: A4" in html and html.count('<section class="page">') == 4
    pdf = paths["pdf"].read_bytes()
    assert pdf[:5] == b"%PDF-" and pdf.count(b"/Type /Page\n") + pdf.count(b"/Type /Page ") == 4
    assert b"Mono" not in pdf  # no monospace text page: proportional fonts only


@pytest.mark.skipif(shutil.which("pdftotext") is None, reason="pdftotext (poppler) absent")
def test_pdf_and_html_show_the_same_pages_and_statements(paths):
    """Page by page, the PDF holds the HTML's headings and the statements a reader needs:
    the headline, the band's meaning under the curves, the slice's place in the CT."""
    pdf_pages = subprocess.run(
        ["pdftotext", "-layout", str(paths["pdf"]), "-"], capture_output=True, text=True,
        check=True,
    ).stdout.split("\f")  # fmt: skip
    pages = [" ".join(p.split()) for p in pdf_pages if p.strip()]
    html = paths["html"].read_text()
    sections = html.split('<section class="page">')[1:]
    assert len(pages) == len(sections) == 4
    expected = [
        ("Read this first", "INCOMPLETE CLINICAL DATA", "Provenance", "crlm_lib 0.1.0"),
        ("Predicted survival beside the training cohort", "Band: ensemble spread",
         "follow-up is too short"),
        ("Where the model looked", "CT instance 36, z = -80.0 mm"),
        ("Contributions of the clinical factors",),
    ]  # fmt: skip
    for page, section, needles in zip(pages, sections, expected, strict=True):
        for needle in needles:
            assert needle in page and needle in section, needle


def test_heatmap_zero_is_drawn_on_the_fixed_scale():
    """An all-zero year shows the bottom colour of the one shared scale inside the liver,
    not the CT grey; outside the liver the CT shows."""
    from crlm_lib.report_figures import plot_gradcam_page

    report = _report()
    report.heatmaps[4] = 0.0  # year 5: no contribution
    page = plot_gradcam_page(report)
    ax = next(a for a in page.figure.axes if a.get_title().startswith("Year 5"))
    image = ax.get_images()[1]  # [0] is the CT
    z = 4
    shown = image.get_array()
    liver = report.masks[0, z] > 0
    assert not np.ma.getmaskarray(shown)[liver].any() and np.all(shown[liver] == 0)
    assert np.ma.getmaskarray(shown)[~liver].all()
    assert image.get_clim() == (0.0, float(report.heatmaps.max()))
    assert image.get_cmap().name == "viridis" and ax.get_title() == "Year 5 (max 0.00)"
    letters = sorted(t.get_text() for t in ax.texts)
    assert letters == ["A", "L", "P", "R"]
    import matplotlib.pyplot as plt

    plt.close(page.figure)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no chromium binary on PATH (CI installs it)")
def test_report_renders_non_blank_in_headless_chromium(paths, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    with tempfile.TemporaryDirectory() as profile_dir:
        subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={profile_dir}",
                f"--screenshot={shot}",
                "--window-size=1200,2000",
                paths["html"].as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    img = imread(shot)[..., :3]
    assert img.shape[:2] == (2000, 1200)
    non_white = (img < 0.95).any(axis=2)
    assert non_white.mean() > 0.10  # text, table and figures, not an empty page
    # the patient's red survival curve (tab:red) is drawn, i.e. the embedded figure loaded
    red = (img[..., 0] > 0.7) & (img[..., 1] < 0.3) & (img[..., 2] < 0.3)
    assert red.sum() > 200
    # the lower half holds the Grad-CAM montage (dark CT slices), not blank space
    assert non_white[1000:].mean() > 0.05


def test_years_beyond_the_training_follow_up_are_said_not_drawn(tmp_path):
    from crlm_lib.report_figures import plot_curves_page

    report = _report()
    report.followed_years = {"os": 2, "dfs": None}
    page = plot_curves_page(report)
    os_ax = next(a for a in page.figure.axes if a.get_title() == "Overall survival")
    patient = os_ax.lines[0]  # the patient's curve stops at the last followed year
    assert max(patient.get_xdata()) == 2
    assert any("too short to say" in t.get_text() for t in os_ax.texts)
    rfs_ax = next(a for a in page.figure.axes if a.get_title() == "Recurrence-free survival")
    assert max(rfs_ax.lines[0].get_xdata()) == 12  # unknown follow-up: drawn, said in caption
    html = write_report(report, tmp_path)["html"].read_text()
    assert "0.698† (0.648–0.748)" in html and "0.887 (0.837–0.937)" in html
    assert "† Beyond the training cohort&#x27;s follow-up" in html


def test_survival_past_year_12_is_the_models_own_class_not_a_fall_to_0():
    from crlm_lib.report_figures import plot_curves_page

    report = _report()
    report.row = {**report.row, "os_beyond_class": True}
    report.followed_years = {"os": 12, "dfs": 6}
    s12 = float(report.surv[0, -1])
    page = plot_curves_page(report)
    note = next(c for c in page.caption if "past year 12" in c)
    assert f"{100 * s12:.0f}% for this patient" in note and "reaches year 12" in note
    os_ax = next(a for a in page.figure.axes if a.get_title() == "Overall survival")
    assert os_ax.lines[0].get_ydata()[-1] == pytest.approx(s12)  # drawn at S(12) > 0
    report.followed_years = {"os": 8, "dfs": 6}
    assert "does not reach year 12" in " ".join(plot_curves_page(report).caption)
    # the papers' 12-class head: survival 0 at 12 years, said to be by construction
    report.row = {**report.row, "os_beyond_class": False}
    report.surv = report.surv.copy()
    report.surv[0, -1] = 0.0
    assert "by construction" in " ".join(plot_curves_page(report).caption)
