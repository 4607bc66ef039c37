"""Tests of the manuscript's named inline values: ``values-*`` cells -> ``{{< value name >}}``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from crlm_lib import manuscript
from crlm_lib.manuscript import EmbedError, ManuscriptError, collect_values, render_offline
from crlm_lib.reporting import headline_values

QMD = """---
title: "Values"
author:
  - name: Ada Example
abstract: |
  The C-index was {{< value acfnet-c-os >}} against {{< value cox-c-os >}}.
---

# Results {#sec-results}

On {{< value n-patients >}} patients, the oracle reached {{< value oracle-c-os >}}.
"""

QUARTO_YML = """project:
  type: manuscript
manuscript:
  article: paper/index.qmd
  notebooks:
    - notebook: notebooks/06_evaluation.ipynb
execute:
  enabled: false
"""


def _notebook(values: dict | None, label: str = "values-headline") -> dict:
    """An executed notebook as papermill leaves it (no kernel needed)."""
    outputs = []
    if values is not None:
        outputs.append(
            {
                "output_type": "display_data",
                "data": {"application/json": values, "text/plain": ["<JSON object>"]},
                "metadata": {"application/json": {"expanded": False, "root": "root"}},
            }
        )
    cell = {
        "cell_type": "code",
        "execution_count": 1,
        "id": "v",
        "metadata": {},
        "outputs": outputs,
        "source": [f"#| label: {label}\n", "reporting.show_values(values)"],
    }
    return {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _tidy() -> pd.DataFrame:
    rows = []
    for model, c in (("acfnet", 0.61), ("cox", 0.64), ("oracle", 0.78)):
        for head in ("os", "dfs"):
            rows.append(
                {
                    "model": model,
                    "metric": f"{head}_c_harrell",
                    "estimate": c,
                    "low": c - 0.05,
                    "high": c + 0.04,
                }
            )
    return pd.DataFrame(rows)


def test_headline_values_format_estimates_with_intervals():
    values = headline_values(_tidy())
    assert values["acfnet-c-os"] == "0.61 (95% CI 0.56–0.65)"
    assert values["oracle-c-dfs"] == "0.78 (95% CI 0.73–0.82)"
    no_oracle = headline_values(_tidy().query("model != 'oracle'"))
    assert no_oracle["oracle-c-os"] == "not applicable"


@pytest.fixture
def project(tmp_path) -> Path:
    (tmp_path / "paper").mkdir()
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "_quarto.yml").write_text(QUARTO_YML)
    (tmp_path / "paper" / "index.qmd").write_text(QMD)
    values = {**headline_values(_tidy()), "n-patients": "197"}
    (tmp_path / "notebooks" / "06_evaluation.ipynb").write_text(json.dumps(_notebook(values)))
    return tmp_path


def test_offline_render_puts_the_build_numbers_in_abstract_and_body(project, tmp_path):
    index = render_offline(project, tmp_path / "site")
    page = index.read_text()
    assert "The C-index was 0.61 (95% CI 0.56–0.65) against 0.64 (95% CI 0.59–0.68)." in page
    assert "On 197 patients, the oracle reached 0.78 (95% CI 0.73–0.82)." in page
    assert "{{&lt;" not in page and "{{<" not in page


def test_unknown_value_names_the_name(project, tmp_path):
    article = project / "paper" / "index.qmd"
    article.write_text(QMD.replace("acfnet-c-os", "acfnet-c-index"))
    with pytest.raises(EmbedError, match="acfnet-c-index"):
        render_offline(project, tmp_path / "site")


def test_values_cells_must_hold_json_and_names_are_unique(tmp_path):
    a, b, c = tmp_path / "a.ipynb", tmp_path / "b.ipynb", tmp_path / "c.ipynb"
    a.write_text(json.dumps(_notebook({"x": "1"})))
    b.write_text(json.dumps(_notebook({"x": "2"}, label="values-other")))
    c.write_text(json.dumps(_notebook(None)))
    assert collect_values([a]) == {"x": "1"}
    with pytest.raises(ManuscriptError, match="defined twice"):
        collect_values([a, b])
    with pytest.raises(ManuscriptError, match="no JSON object output"):
        collect_values([c])


def test_stage_writes_values_json_and_the_quarto_extension(tmp_path):
    (tmp_path / "crlm_lib").mkdir()
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "index.qmd").write_text(QMD)
    (tmp_path / "_quarto.yml").write_text(QUARTO_YML)
    ext = tmp_path / "_extensions" / "value"
    ext.mkdir(parents=True)
    repo_ext = Path(manuscript.__file__).resolve().parent.parent / "_extensions" / "value"
    for name in ("_extension.yml", "value.lua"):
        (ext / name).write_text((repo_ext / name).read_text())
    executed = tmp_path / "notebooks" / "executed" / "smoke"
    executed.mkdir(parents=True)
    for name in manuscript.NOTEBOOKS:
        values = {"n-patients": "30"} if name.startswith("06") else None
        nb = _notebook(values) if values else _notebook({}, label="values-empty")
        (executed / name).write_text(json.dumps(nb))
    dest = manuscript.stage("smoke", root=tmp_path)
    assert json.loads((dest / "values.json").read_text()) == {"n-patients": "30"}
    assert "value.lua" in (dest / "_extensions" / "value" / "_extension.yml").read_text()
