"""Shared fixtures: a small real dataset made by data/tinystories/prepare.py, and runners for the repo's scripts:
in a subprocess (where the process boundary itself is under test) or in this process (quicker)."""
import contextlib
import io
import os
import runpy
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINYSTORIES = SHARED / "data" / "tinystories" / "tinystories_10Msubset_a.txt"
# one thread in this process too, as in the scripts' runs: tiny ops on two threads crawl when another process holds
# a core (test_model.py's generation tests took 10-19 s each instead of 0.05 s)
torch.set_num_threads(1)
# a tiny model and schedule for train.py runs in tests
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--eval_iters=4", "--log_interval=1", "--learning_rate=1e-2",
        "--warmup_iters=5", "--lr_decay_iters=30", "--min_lr=1e-3", "--device=cpu",
        "--plot=False"]  # loss.png costs ~1 s a run; the tests that check it say --plot=True


def _run(*args, timeout=300, **env):
    """Run python with args (a script path first) in the repo root, with this venv's python and one
    thread per process, so tests stay quick and alike on a busy 2-core machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **env}
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _run_here(script, *args):
    """Run a script of the repo (train.py, sample.py, eval.py, ...) in this process as `python script args` would,
    with one thread, and return what _run returns: no interpreter start and no torch import, ~2 s less a run.
    An uncaught exception is exit status 1 with its traceback on stderr, and sys.exit("message") prints the message
    to stderr with status 1, as in a process of its own. What the script does to os.environ and sys.path is undone
    after it."""
    saved = sys.argv, os.getcwd(), torch.get_num_threads(), signal.getsignal(signal.SIGTERM), \
        signal.getsignal(signal.SIGINT), dict(os.environ), list(sys.path)
    out, err, status = io.StringIO(), io.StringIO(), 0
    sys.argv = [str(script), *map(str, args)]
    os.chdir(REPO)
    torch.set_num_threads(1)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(str(REPO / script), run_name="__main__")
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if e.code is not None and not isinstance(e.code, int):
                    print(e.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                status = 1
    finally:
        sys.argv = saved[0]
        os.chdir(saved[1])
        torch.set_num_threads(saved[2])
        signal.signal(signal.SIGTERM, saved[3])  # train.py installs its own
        signal.signal(signal.SIGINT, saved[4])
        os.environ.clear()  # train.py sets TQDM_DISABLE, which would reach the subprocesses of later tests
        os.environ.update(saved[5])
        sys.path[:] = saved[6]  # the bench scripts put the repo root first
        if "checkpoints" in sys.modules:  # train.py's out_dir lock, which its process would drop on exiting
            sys.modules["checkpoints"].unlock_out_dir()
    return subprocess.CompletedProcess([script, *args], status, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def run_script():
    return _run


@pytest.fixture(scope="session")
def run_here():
    return _run_here


def _prepare(tmp_path_factory, tokenizer):
    if not TINYSTORIES.exists():
        pytest.skip(f"{TINYSTORIES} is absent (shared/ data not available)")
    out = tmp_path_factory.mktemp(f"tinystories-{tokenizer}")
    r = _run(REPO / "data" / "tinystories" / "prepare.py", "--data-files", TINYSTORIES, "--out-dir", out,
             "--val-fraction", "0.1", "--num-proc", "1", "--tokenizer", tokenizer)
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """TinyStories as characters, ~2.5M of them, 10% of the stories for val; the model's vocabulary is 128.
    What most tests train on: at GPT-2's vocabulary the head is ~70% of a TINY step and tests of resuming,
    signals or checkpoints gain nothing from it."""
    return _prepare(tmp_path_factory, "char")


@pytest.fixture(scope="session")
def bpe_data(tmp_path_factory):
    """The same stories in GPT-2 BPE (~0.6M tokens; the model's vocabulary 50304): the main job's tokenizer."""
    return _prepare(tmp_path_factory, "gpt2")


@pytest.fixture(scope="session")
def trained(tiny_data, bpe_data, tmp_path_factory):
    """A 30-iteration run per residual and dataset, evaluated every 15 iterations: trained("nesterov") -> (out_dir,
    stdout) on tiny_data, trained("nesterov", bpe=True) on bpe_data. Runs once per session, in this process (tests
    that resume or interrupt a run of their own in a subprocess compare it with these, bit for bit); tests that
    change a run work on a copy."""
    runs = {}

    def get(residual, bpe=False):
        if (residual, bpe) not in runs:
            out = tmp_path_factory.mktemp(f"run-{residual}-{'bpe' if bpe else 'char'}")
            r = _run_here("train.py", *TINY, f"--dataset={bpe_data if bpe else tiny_data}", f"--out_dir={out}",
                          f"--residual={residual}", "--max_iters=30", "--eval_interval=15", "--plot=True")
            assert r.returncode == 0, r.stderr
            runs[residual, bpe] = out, r.stdout
        return runs[residual, bpe]
    return get

