"""Published numbers and the TRIPOD+AI checklist are data files, read by one loader.

``resources/published_snapshot.json`` was captured from ``crlm_lib.evaluate`` while the numbers
were still Python literals; the tables built from the CSV files must equal it exactly (less the
unsourced CT-radiomics row, removed since). The TRIPOD+AI checklist is tested in
``tests/test_paper.py`` against the article.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from crlm_lib import evaluation as ev
from crlm_lib import resources
from crlm_lib.evaluation import tables

SNAPSHOT = json.loads(
    (Path(__file__).parent / "resources" / "published_snapshot.json").read_text(encoding="utf-8")
)


def _frame(spec: dict) -> pd.DataFrame:
    frame = pd.DataFrame(spec["rows"], columns=spec["columns"])
    return frame.astype(dict(zip(spec["columns"], spec["dtypes"], strict=True)))


@pytest.mark.parametrize("key", sorted(SNAPSHOT["tables"]))
def test_published_table_equals_the_literal_it_replaced(key):
    pd.testing.assert_frame_equal(ev.published_table(key), _frame(SNAPSHOT["tables"][key]))


def test_published_all_and_cells_equal_the_literals_they_replaced():
    assert sorted(ev.PUBLISHED) == sorted(SNAPSHOT["tables"])
    pd.testing.assert_frame_equal(ev.published_all(), _frame(SNAPSHOT["all"]))
    for cell, text in SNAPSHOT["cells"].items():
        table, row = cell.split("|")
        assert tables._published_cell(table, row) == text, cell


def test_published_has_dypro_row():
    dypro = ev.published_table("dypro").iloc[0]
    assert (dypro["c_index_os"], dypro["c_index_dfs"], dypro["ibs"]) == (0.755, 0.714, 0.143)


def test_published_text_keeps_the_printed_precision():
    assert ev.published_text("acfnet_table1", "3D CNN + LSTM", "mse") == "1.0625"
    assert ev.published_text("acfnet_table1", "3D CNN only", "taa") == "0.7000"
    assert ev.published_text("star_table1", "STAR", "mse") is None
    wide = ev.published_wide()
    assert wide.loc[("4D-ACFNet (MM'25), Table 2", "3D-CNN"), "MSE (years²)"] == "25.5875"
    assert not any("radiomics" in s.lower() for s, _ in wide.index)


def test_read_rows_keeps_order_and_strings():
    rows = resources.read_rows("tripod_ai.csv")
    assert rows[0] == {
        "item": "1",
        **{k: rows[0][k] for k in ("topic", "where met / why not", "section")},
    }
    assert all(isinstance(v, str) for r in rows for v in r.values())
    with pytest.raises(FileNotFoundError):
        resources.read_rows("nope.csv")


def test_resources_are_package_data():
    import tomllib

    pyproject = tomllib.loads((Path(ev.__file__).parents[2] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["crlm_lib.resources"]
    assert "*.csv" in shipped
