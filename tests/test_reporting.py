"""reporting.save_table / save_figure: the notebooks' tables and figures, written atomically."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from crlm_lib import reporting  # noqa: E402


def test_save_table_and_figure_write_whole_files_and_no_temporaries(tmp_path: Path):
    table = pd.DataFrame({"c_index": [0.61, 0.55]}, index=pd.Index(["acfnet", "cox"], name="model"))
    csv = reporting.save_table(table, tmp_path / "results", "tbl-demo")
    assert csv == tmp_path / "results" / "tbl-demo.csv"
    assert csv.read_text() == "model,c_index\nacfnet,0.61\ncox,0.55\n"
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    png = reporting.save_figure(fig, tmp_path / "results", "fig-demo", dpi=50)
    plt.close(fig)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # format taken from the .png name
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "fig-demo.png",
        "tbl-demo.csv",
    ]


def _html(sty) -> str:
    return sty.to_html()


def test_display_frame_drops_row_numbers_and_moves_named_index_into_columns():
    numbered = pd.DataFrame({"variable": ["Patients", "Deaths"], "value": [30, 12]})
    out = reporting.display_frame(numbered)
    assert list(out.columns) == ["variable", "value"] and list(out.index) == [0, 1]
    html = _html(reporting.styled(numbered))
    assert ">0<" not in html and ">1<" not in html  # no leftover row numbers
    assert "index_name" not in html and "row_heading" not in html
    grouped = pd.DataFrame(
        {"patients": [3, 2, 1]},
        index=pd.MultiIndex.from_tuples(
            [("cached", "portal_skeleton"), ("cached", "fallback"), ("failed", "none")],
            names=["status", "centre_method"],
        ),
    )
    out = reporting.display_frame(grouped)
    assert list(out.columns) == ["status", "window centred by", "patients"]
    assert list(out["status"]) == ["cached", "", "failed"]  # a repeated group label is blank
    assert out.iloc[0, 1] == "portal-vein skeleton"


def test_display_frame_joins_multiindex_columns_and_labels_raw_keys():
    wide = pd.DataFrame(
        [[0.71, 0.69]],
        columns=pd.MultiIndex.from_tuples([("ours", "os_c_harrell"), ("ours", "taa")]),
    )
    assert list(reporting.display_frame(wide).columns) == [
        "ours, C-index OS (Harrell)",
        "ours, TAA",
    ]
    assert reporting.display_label("kappa_quadratic") == "Cohen's kappa, quadratic weights"
    assert reporting.display_label("some_new_key") == "some new key"


def test_styled_prints_integers_as_integers_and_booleans_as_words():
    mixed = pd.Series({"n": 186, "n_missing": 11, "kappa": 0.91234}, dtype=object).to_frame("value")
    html = _html(reporting.styled(mixed))
    assert ">186<" in html and ">11<" in html and ">0.912<" in html and "186.000" not in html
    flags = pd.DataFrame({"metric": ["a"], "within": [True], "n": [17215147], "x": [-0.0001]})
    html = _html(reporting.styled(flags))
    assert ">yes<" in html and ">17,215,147<" in html and "within range" in html
    assert ">0.000<" in html  # a value that rounds to zero carries no sign


class _Study:
    label = "synthetic"
    ids = list(range(30))

    class profile:  # noqa: N801 - stands in for a Profile
        name = "smoke"


def test_caption_gives_the_tables_own_patients():
    tidy = pd.DataFrame({"model": ["acfnet"], "n_test": [3]})
    sty = reporting.styled(
        pd.DataFrame({"x": [1]}), _Study(), patients=reporting.test_patients(tidy)
    )
    assert "synthetic cohort, profile smoke, n = 3 test patients (papers' split)" in _html(sty)
    assert "n = 30 patients" in _html(reporting.styled(pd.DataFrame({"x": [1]}), _Study()))
