"""The `crlm` command line parses every documented sub-command."""

import pytest

from crlm_lib.cli import build_parser


@pytest.mark.parametrize(
    "argv",
    [
        ["synth", "--out", "x", "--n", "3"],
        ["preprocess", "--profile", "smoke", "--jobs", "1"],
        ["data", "--profile", "smoke", "--data", "/d", "--clinical", "/c.csv"],
        ["train", "--model", "acfnet", "--profile", "smoke", "--out", "r", "--epochs", "1"],
        ["cv", "--profile", "smoke", "--models", "cnn3d", "--executor", "dask:workers=2"],
        ["evaluate", "--run", "r"],
        ["predict", "--run", "r", "--out", "p.csv"],
        ["notebooks", "--profile", "smoke", "--only", "01"],
        ["render", "--profile", "smoke", "--renderer", "offline"],
    ],
)
def test_sub_commands_parse(argv):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0] and callable(args.func)


def test_help_describes_the_command_and_every_sub_command(capsys, monkeypatch):
    """``crlm --help``: a whole description, then one line per sub-command with its help."""
    monkeypatch.setenv("COLUMNS", "100")
    parser = build_parser()
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    said = " ".join(out.split())
    assert "--workdir (default: the repository root when run inside a checkout, else the " \
        "current directory)" in said and "``" not in out  # fmt: skip
    sub = parser._subparsers._group_actions[0]
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert set(helps) == set(sub.choices) and len(helps) == 10
    lines = out.split("\ncommands:")[1].splitlines()  # not the description's wrapped lines
    for name, help_text in helps.items():
        line = next(x for x in lines if x.strip().startswith(name + " "))
        assert line.split(None, 1)[1].strip() == help_text, (name, line)


def test_train_requires_a_model():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "r"])


def test_missing_data_dir_is_one_clear_line(tmp_path, capsys):
    from crlm_lib.cli import main

    assert main(["data", "--profile", "smoke", "--data", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err


def test_lock_timeout_parses_and_refuses_negative():
    args = build_parser().parse_args(["preprocess", "--lock-timeout", "2.5"])
    assert args.lock_timeout == 2.5
    assert build_parser().parse_args(["data"]).lock_timeout is None  # default: wait
    with pytest.raises(SystemExit):
        build_parser().parse_args(["data", "--lock-timeout", "-1"])


@pytest.mark.parametrize("command", ["preprocess", "data"])
def test_lock_timeout_names_lock_file_and_owner(tmp_path, monkeypatch, capsys, command):
    """A held cache lock: after --lock-timeout, one line naming the lock file and owner PID."""
    import os

    from crlm_lib.cli import main
    from crlm_lib.config import PROFILES, resolve_paths
    from crlm_lib.data.preprocess import LOCK_NAME, cache_lock
    from crlm_lib.data.synthetic import write_cohort

    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "crlm_lib").mkdir()
    monkeypatch.chdir(tmp_path)
    paths = resolve_paths("smoke", root=tmp_path)
    write_cohort(paths.cohort_dir, n_patients=2, seed=0, synth=PROFILES["smoke"].synth)
    paths.processed_dir.mkdir(parents=True)
    with cache_lock(paths.processed_dir):
        rc = main([command, "--profile", "smoke", "--lock-timeout", "0.2"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "PreprocessLocked" in err and str(paths.processed_dir / LOCK_NAME) in err
    assert f"owner PID {os.getpid()}" in err
    assert not list(paths.processed_dir.glob("*.npz"))  # nothing was preprocessed


def test_parser_imports_no_torch_until_a_model_is_checked():
    """`--model` choices come from the registry, read only when a `--model` value is checked."""
    import subprocess
    import sys

    code = (
        "import sys; from crlm_lib.cli import build_parser; p = build_parser(); "
        "p.parse_args(['data', '--profile', 'smoke']); print('torch' in sys.modules); "
        "p.parse_args(['train', '--model', 'cox', '--out', 'r']); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_cv_refuses_an_unknown_executor_before_the_data_step(tmp_path, capsys):
    """``crlm cv --executor ray``: one line, exit 2, nothing written to the work folder."""
    from crlm_lib.cli import main

    assert main(["cv", "--profile", "smoke", "--executor", "ray", "--workdir", str(tmp_path)]) == 2
    assert "unknown executor 'ray'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
