"""Shared fixtures: a small real dataset made by data/tinystories/prepare.py, and a runner for the repo's scripts."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TINYSTORIES = SHARED / "data" / "tinystories" / "tinystories_10Msubset_a.txt"
# a tiny model and schedule for train.py runs in tests
TINY = ["--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=4",
        "--gradient_accumulation_steps=2", "--eval_iters=4", "--log_interval=1", "--learning_rate=1e-2",
        "--warmup_iters=5", "--lr_decay_iters=30", "--min_lr=1e-3", "--device=cpu"]


def _run(*args, timeout=300, **env):
    """Run python with args (a script path first) in the repo root, with this venv's python and one
    thread per process, so tests stay quick and alike on a busy 2-core machine."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", **env}
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def run_script():
    return _run


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """~0.6M GPT-2 tokens of TinyStories in train.bin/val.bin/meta.json (10% of the stories for val)."""
    if not TINYSTORIES.exists():
        pytest.skip(f"{TINYSTORIES} is absent (shared/ data not available)")
    out = tmp_path_factory.mktemp("tinystories")
    r = _run(REPO / "data" / "tinystories" / "prepare.py", "--data-files", TINYSTORIES, "--out-dir", out,
             "--val-fraction", "0.1", "--num-proc", "1")
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture(scope="session")
def trained(tiny_data, tmp_path_factory):
    """A 30-iteration run per residual, evaluated every 15 iterations: trained("nesterov") -> (out_dir, stdout).
    Runs once per session; tests that change a run work on a copy."""
    runs = {}

    def get(residual):
        if residual not in runs:
            out = tmp_path_factory.mktemp(f"run-{residual}")
            r = _run("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={out}", f"--residual={residual}",
                     "--max_iters=30", "--eval_interval=15")
            assert r.returncode == 0, r.stderr
            runs[residual] = out, r.stdout
        return runs[residual]
    return get
