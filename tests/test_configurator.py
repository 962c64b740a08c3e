import pytest

from configurator import apply_config
from conftest import REPO

DEFAULTS = dict(max_iters=100, learning_rate=6e-4, compile=True, dataset='openwebtext', vocab_size=None)


def fails(capsys, argv, code=2):
    """apply_config must exit with `code` and print exactly one line on stderr; returns that line."""
    with pytest.raises(SystemExit) as exc:
        apply_config(DEFAULTS, argv)
    assert exc.value.code == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


def test_overrides_and_files_apply_in_order(tmp_path):
    cfg = tmp_path / "c.py"
    cfg.write_text("import math\nmax_iters = 7\nlearning_rate = 1e-3 * math.sqrt(4)\n_private = 1\n")
    out = apply_config(DEFAULTS, ["--max_iters=3", str(cfg), "--compile=False"])
    # the file comes after --max_iters=3, so it wins; modules and _names in the file are not settings
    assert out == dict(DEFAULTS, max_iters=7, learning_rate=2e-3, compile=False)
    assert apply_config(DEFAULTS, [str(cfg), "--max_iters=3"])["max_iters"] == 3
    assert DEFAULTS["max_iters"] == 100  # the defaults are not modified


def test_value_parsing():
    out = apply_config(DEFAULTS, ["--learning_rate=1", "--dataset=tinystories", "--vocab_size=65"])
    assert out["learning_rate"] == 1.0 and type(out["learning_rate"]) is float  # int accepted for a float
    assert out["dataset"] == "tinystories"  # a bare word for a str key
    assert out["vocab_size"] == 65  # a None default accepts any type
    assert apply_config(DEFAULTS, ["--dataset=123"])["dataset"] == "123"  # a str key keeps digits as text
    assert apply_config(DEFAULTS, ["--dataset='a b'"])["dataset"] == "a b"
    assert apply_config(DEFAULTS, ["--vocab_size=abc"])["vocab_size"] == "abc"


def test_unknown_key_suggests_closest(capsys):
    err = fails(capsys, ["--max_iter=5"])
    assert "'max_iter'" in err and "did you mean 'max_iters'" in err
    err = fails(capsys, ["--zzzzzz=1"])
    assert "'zzzzzz'" in err and "--help" in err


def test_unknown_key_in_file(tmp_path, capsys):
    cfg = tmp_path / "c.py"
    cfg.write_text("learning_rat = 1e-3\n")
    err = fails(capsys, [str(cfg)])
    assert str(cfg) in err and "did you mean 'learning_rate'" in err


@pytest.mark.parametrize("arg, expected, given", [
    ("--max_iters=abc", "int", "str"),
    ("--max_iters=1.5", "int", "float"),
    ("--max_iters=True", "int", "bool"),
    ("--learning_rate=True", "float", "bool"),
    ("--compile=1", "bool", "int"),
])
def test_wrong_type(capsys, arg, expected, given):
    err = fails(capsys, [arg])
    assert f"expects {expected}" in err and f"({given})" in err


def test_wrong_type_in_file(tmp_path, capsys):
    cfg = tmp_path / "c.py"
    cfg.write_text("dataset = 5\n")
    assert "expects str" in fails(capsys, [str(cfg)])


def test_missing_file_and_bad_argument(tmp_path, capsys):
    assert "does not exist" in fails(capsys, [str(tmp_path / "nope.py")])
    assert "--key=value" in fails(capsys, ["--compile"])
    cfg = tmp_path / "broken.py"
    cfg.write_text("max_iters = (\n")
    assert "could not be run" in fails(capsys, [str(cfg)])


def test_help_lists_keys(capsys):
    with pytest.raises(SystemExit) as exc:
        apply_config(DEFAULTS, ["--help"])
    assert exc.value.code == 0
    assert "--max_iters=100" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train.py", "--max_itres=5"], "did you mean 'max_iters'"),
    (["train.py", "--batch_size=big"], "expects int"),
    (["train.py", "config/no_such_config.py"], "does not exist"),
    (["sample.py", "--tempreature=0.5"], "did you mean 'temperature'"),
    (["sample.py", "--top_k=1.5"], "expects int"),
])
def test_scripts_report_usage_errors(run_script, run_here, argv, message):
    # the first in a process of its own (its real exit status and stderr), the others in this one
    r = run_script(*argv) if argv == ["train.py", "--max_itres=5"] else run_here(*argv)
    assert r.returncode == 2
    assert message in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr


def test_config_files_are_valid(run_script):
    """Every config/*.py only sets train.py keys with the right types: train.py reads them all, in one
    process, then --help exits 0."""
    configs = sorted((REPO / "config").glob("*.py"))
    assert len(configs) >= 8
    r = run_script("train.py", *configs, "--help")
    assert r.returncode == 0, r.stderr
