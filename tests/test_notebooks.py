"""The notebook runner's proof that every cell executed."""

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from crlm_lib import notebooks


@pytest.fixture
def fake_repo(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "crlm_lib").mkdir()
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "language": "python",
        "display_name": "Python 3",
    }
    nb.metadata["language_info"] = {"name": "python"}
    params = nbformat.v4.new_code_cell('profile = "smoke"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        params,
        nbformat.v4.new_code_cell("from crlm_lib import notebooks"),
        nbformat.v4.new_markdown_cell("# t"),
        nbformat.v4.new_code_cell("y = 2"),
        nbformat.v4.new_code_cell("   "),
        nbformat.v4.new_code_cell('notebooks.mark_done("01_demo", profile)'),
    ]
    nbformat.write(nb, nbdir / "01_demo.ipynb")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_counts_only_non_empty_code_cells_after_the_parameters(fake_repo: Path):
    assert notebooks.count_code_cells(fake_repo / "notebooks/01_demo.ipynb") == 3


def test_check_fails_without_marker_and_with_too_few_cells(fake_repo: Path):
    nb = fake_repo / "notebooks/01_demo.ipynb"
    assert "never reached its last cell" in notebooks.check("smoke", [nb])[0]
    marker = fake_repo / "results/smoke/.done/01_demo.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"executed_cells": 1}))
    assert "1 cells executed of 3" in notebooks.check("smoke", [nb])[0]
    marker.write_text(json.dumps({"executed_cells": 3, "failed_cells": 1}))
    assert "1 cells raised an error" in notebooks.check("smoke", [nb])[0]
    marker.write_text(json.dumps({"executed_cells": 3}))
    assert notebooks.check("smoke", [nb]) == []
    notebooks.clear("smoke")
    assert not marker.exists()


def test_mark_done_outside_ipython_records_minus_one(fake_repo: Path):
    path = notebooks.mark_done("01_demo", "smoke")
    assert json.loads(path.read_text())["executed_cells"] == -1
    assert notebooks.check("smoke", [fake_repo / "notebooks/01_demo.ipynb"])


def test_command_line_takes_options_before_the_notebooks(fake_repo: Path, capsys):
    nb = str(fake_repo / "notebooks/01_demo.ipynb")
    assert notebooks.main(["check", "--profile", "smoke", nb]) == 1
    assert "0 passed, 1 failed" in capsys.readouterr().out
    assert notebooks.main(["clear", "--profile", "smoke"]) == 0


def _nbval(notebook: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--nbval-lax",
            "-p",
            "no:cacheprovider",
            "--rootdir",
            str(notebook.parent),
            str(notebook),
        ],
        cwd=notebook.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_nbval_run_is_counted_although_it_keeps_no_history(fake_repo: Path):
    """nbval executes with store_history=False (execution_count stays 1): the hook still counts."""
    nb = fake_repo / "notebooks/01_demo.ipynb"
    result = _nbval(nb)
    assert result.returncode == 0, result.stdout + result.stderr
    record = json.loads((fake_repo / "results/smoke/.done/01_demo.json").read_text())
    assert (record["executed_cells"], record["failed_cells"]) == (3, 0)
    assert notebooks.check("smoke", [nb]) == []


def test_cell_skipped_by_nbval_fails_the_check(fake_repo: Path):
    path = fake_repo / "notebooks/01_demo.ipynb"
    nb = nbformat.read(path, as_version=4)
    nb.cells[3].metadata["tags"] = ["nbval-skip"]
    nbformat.write(nb, path)
    assert _nbval(path).returncode == 0  # nbval itself is satisfied
    assert "2 cells executed of 3" in notebooks.check("smoke", [path])[0]


def test_papermill_run_is_counted(fake_repo: Path):
    import papermill as pm

    nb = fake_repo / "notebooks/01_demo.ipynb"
    pm.execute_notebook(
        str(nb),
        str(fake_repo / "out.ipynb"),
        cwd=str(nb.parent),
        progress_bar=False,
        kernel_name="python3",
        parameters={"profile": "smoke"},
    )
    record = json.loads((fake_repo / "results/smoke/.done/01_demo.json").read_text())
    assert record["executed_cells"] == 3
    assert notebooks.check("smoke", [nb]) == []


def test_notebooks_that_train_declare_the_executor_parameter():
    """``crlm notebooks --executor`` reaches every notebook that runs a protocol: papermill
    reads ``executor`` in its parameters cell (default None: the profile's executor), and each
    protocol call passes it on."""
    import papermill as pm

    repo = Path(__file__).resolve().parents[1]
    training = []
    for nb in sorted((repo / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        calls = [
            line
            for cell in nbformat.read(nb, as_version=4).cells
            for line in cell.source.splitlines()
            if cell.cell_type == "code" and re.search(r"run_(cv|paper)_protocol\(", line)
        ]
        if calls and not nb.name.startswith("05"):  # 05 trains only when 02 did not run
            training.append(nb.name)
            assert pm.inspect_notebook(str(nb))["executor"]["default"] == "None", nb.name
            assert all("executor=executor" in line for line in calls), nb.name
    assert training == [
        "02_train_4d_acfnet.ipynb", "03_ablations.ipynb", "04_comparisons.ipynb",
        "06_evaluation.ipynb",
    ]  # fmt: skip
