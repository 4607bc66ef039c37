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
        ["evaluate", "--run", "r"],
        ["predict", "--run", "r", "--out", "p.csv"],
        ["notebooks", "--profile", "smoke", "--only", "01"],
        ["render", "--profile", "smoke", "--renderer", "offline"],
    ],
)
def test_sub_commands_parse(argv):
    args = build_parser().parse_args(argv)
    assert args.command == argv[0] and callable(args.func)


def test_train_requires_a_model():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--out", "r"])


def test_missing_data_dir_is_one_clear_line(tmp_path, capsys):
    from crlm_lib.cli import main

    assert main(["data", "--profile", "smoke", "--data", str(tmp_path / "absent")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
