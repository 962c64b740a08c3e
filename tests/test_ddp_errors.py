"""Checks that rank 0 alone makes (out_dir writable, wandb importable, the checkpoint saved) stop every DDP rank by
itself: two gloo processes started as srun or mpirun would start them, with no torchrun agent to kill the rest."""
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY

pytestmark = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                                reason="torch.distributed with gloo is not available")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_two_ranks(patch, args, timeout=30):
    """Start train.py as ranks 0 and 1 of a 2-process gloo group, each after some Python (patch); return their
    (status, stderr), or fail if either is still running after timeout seconds."""
    code = f"import runpy, sys\n{patch}\nsys.argv = ['train.py', *sys.argv[1:]]\nrunpy.run_path('train.py', " \
           f"run_name='__main__')"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port())}
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)})
             for rank in (0, 1)]
    deadline = time.time() + timeout
    results = []
    try:
        for p in procs:
            _, stderr = p.communicate(timeout=max(deadline - time.time(), 0.1))
            results.append((p.returncode, stderr))
    except subprocess.TimeoutExpired:
        pytest.fail(f"a rank was still running after {timeout} s (statuses {[p.poll() for p in procs]})")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


NO_WANDB = "sys.modules['wandb'] = None  # import wandb fails as if it were not installed"
# a full disk shows when the file is flushed to it (torch.save itself also serves the object collectives)
DISK_FULL = "import errno, os\ndef fsync(fd):\n    raise OSError(errno.ENOSPC, 'No space left on device')\nos.fsync = fsync"


@pytest.mark.parametrize("case", ["out_dir_not_writable", "wandb_missing", "save_fails"])
def test_rank0_error_stops_every_rank(case, tiny_data, tmp_path):
    args = [*TINY, f"--dataset={tiny_data}", "--max_iters=2", "--eval_interval=2", "--gradient_accumulation_steps=2"]
    out_dir, patch = tmp_path / "out", ""
    if case == "out_dir_not_writable":
        (tmp_path / "file").write_text("a file, not a folder")
        out_dir, needle = tmp_path / "file" / "out", "cannot write to out_dir"
    elif case == "wandb_missing":
        patch, needle = NO_WANDB, "wandb_log=True but wandb is not installed"
        args.append("--wandb_log=True")
    else:
        patch, needle = DISK_FULL, "could not save a checkpoint"
    (status0, stderr0), (status1, stderr1) = run_two_ranks(patch, [*args, f"--out_dir={out_dir}"])
    assert status0 == 1 and status1 == 1, (stderr0, stderr1)
    assert stderr0.strip().splitlines()[-1].startswith(f"error: {needle}"), stderr0
    assert "Traceback" not in stderr0 + stderr1 and "error:" not in stderr1, (stderr0, stderr1)


def test_torchrun_report_names_the_error(tiny_data, tmp_path, run_script):
    """Under torchrun the agent prints its failure report after the workers' output: its root cause is the sentence
    (every rank writes it to the agent's error file: the root cause is whichever rank the agent saw fail first, which
    was rank 1 in one run of the suite on 2 workers), not "<N/A>"."""
    (tmp_path / "file").write_text("a file, not a folder")
    r = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *TINY,
                   f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'file' / 'out'}", timeout=30)
    assert r.returncode == 1
    root_cause = r.stderr.split("Root Cause (first observed failure):")[1]
    assert "traceback : error: cannot write to out_dir=" in root_cause and "error_file: <N/A>" not in r.stderr, r.stderr
