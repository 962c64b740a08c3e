"""
nanoGPT-style configuration for the scripts here:

    python train.py config/tinystories_cpu_nesterov.py --batch_size=32 --compile=False

Arguments are applied left to right. A config file is plain Python whose global assignments are
taken as settings; --key=value overrides one setting, its value read as a Python literal (a bare
word for a string setting is taken as that string). Every key must already exist in the script's
defaults and every value must have the default's type (an int is fine where a float is expected; a
default of None accepts anything), so a typo fails at once instead of being silently ignored.
"""
import ast
import difflib
import os
import sys
import types


def _fail(msg):
    # a usage error: one line on stderr, no traceback, exit status 2 (as argparse does)
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def _check(key, value, defaults, source):
    """Return value converted to the type of defaults[key], or fail with one sentence."""
    if key not in defaults:
        close = difflib.get_close_matches(key, defaults, n=1)
        hint = f"did you mean '{close[0]}'?" if close else "run with --help to list the known keys."
        _fail(f"unknown config key '{key}' in {source}; {hint}")
    default = defaults[key]
    if default is None:
        return value
    expected = type(default)
    if expected is float and type(value) is int:
        return float(value)
    if type(value) is not expected:
        _fail(f"config key '{key}' in {source} expects {expected.__name__} (like its default {default!r}), "
              f"but got {value!r} ({type(value).__name__}).")
    return value


def _parse(key, text, defaults):
    """Read a command line value as a Python literal; a string setting takes the text itself if it is not one."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(defaults.get(key), str) and not isinstance(value, str):
        return text  # e.g. --wandb_run_name=2024 or --dataset=123 stay strings
    return value


def _read_file(path):
    """The settings a config file assigns: its public globals that are not imported modules."""
    if not os.path.isfile(path):
        _fail(f"config file '{path}' does not exist.")
    namespace = {}
    try:
        with open(path) as f:
            exec(compile(f.read(), path, "exec"), namespace)
    except Exception as e:
        _fail(f"config file '{path}' could not be run: {type(e).__name__}: {e}")
    return {k: v for k, v in namespace.items() if not k.startswith("_") and not isinstance(v, types.ModuleType)}


def apply_config(defaults, argv):
    """Return a copy of defaults with the config files and --key=value overrides in argv applied in order."""
    config = dict(defaults)
    for arg in argv:
        if arg in ("-h", "--help"):
            print("usage: python SCRIPT [config/FILE.py ...] [--key=value ...]\nkeys and defaults:")
            for k, v in defaults.items():
                print(f"  --{k}={v!r}")
            sys.exit(0)
        if arg.startswith("--"):
            key, sep, text = arg[2:].partition("=")
            if not sep:
                _fail(f"argument '{arg}' must have the form --key=value.")
            config[key] = _check(key, _parse(key, text, defaults), defaults, f"'{arg}'")
        else:
            for key, value in _read_file(arg).items():
                config[key] = _check(key, value, defaults, f"config file '{arg}'")
    return config
