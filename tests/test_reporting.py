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
