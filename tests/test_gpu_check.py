"""bench/gpu_check.py at a tiny size on CPU: the tests step, the single-process and DDP runs of gd and nesterov, and
the JSON and markdown it writes; not the speeds. gpu_check.py runs in this process (its pytest and train.py runs
are processes of their own, as always)."""
import json

import pytest
import torch

from conftest import REPO

TINY_CHECK = ["--device=cpu", "--n_layer=2", "--n_head=2", "--n_embd=32", "--block_size=32", "--batch_size=2",
              "--max_iters=4", "--dtype=float32", "--compile=False", "--dataset=random", "--tests=tests/test_peak_flops.py"]


@pytest.mark.skipif(not torch.distributed.is_gloo_available(), reason="torch.distributed with gloo is not available")
def test_gpu_check_writes_its_tables(tmp_path, run_here):
    # nesterov with train.py switches of its own, as a candidate fix would be measured: compiled, full logits
    nesterov = "nesterov:compile=True:chunked_head=False"
    r = run_here("bench/gpu_check.py", *TINY_CHECK, "--ddp_procs=2", f"--out={tmp_path}", f"--variants=gd,{nesterov}")
    assert r.returncode == 0, r.stderr
    data = json.loads((tmp_path / "gpu_cpu.json").read_text())
    assert data["data"] == "random tokens"
    assert data["tests"]["status"] == 0 and "passed" in data["tests"]["summary"]
    assert data["machine"]["peak_source"] == "measured with float32 matmuls on cpu"
    runs = {(row["variant"], row["mode"]): row for row in data["runs"]}
    assert list(runs) == [("gd", "single"), (nesterov, "single"), ("gd", "ddp"), (nesterov, "ddp")]
    for (variant, mode), row in runs.items():
        assert row["status"] == 0 and row["processes"] == (2 if mode == "ddp" else 1)
        assert row["tokens_per_s"] > 0 and row["step_ms"] > 0 and 0 < row["mfu"] < 2 and row["compile_s"] >= 0
        assert 10 < row["final_val_loss"] < 11.5  # ~ln(50304) after 4 steps on random tokens
        assert row["tokens_per_s_vs_gd"] == pytest.approx(row["tokens_per_s"] / runs["gd", mode]["tokens_per_s"])
        assert row["peak_mem_gib"] is None  # CUDA memory only
        if variant == nesterov:  # train.py's compile.json: Dynamo on the first training step
            assert (row["graphs"], row["graph_breaks"], row["break_reasons"]) == (1, 0, {}), row
            assert row["torch"] == torch.__version__
        else:
            assert "graph_breaks" not in row  # not compiled
    table = (tmp_path / "gpu_cpu.md").read_text()
    assert f"| {nesterov} | ddp (2) |" in table and "| gd | single (1) |" in table and "19 passed" in table
    assert r.stdout.strip().splitlines()[-1].startswith(f"wrote {tmp_path / 'gpu_cpu.json'}")


def test_gpu_check_without_gpu(run_script):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    r = run_script(REPO / "bench" / "gpu_check.py", "--device=cuda")
    assert r.returncode == 1 and r.stderr.strip() == \
        "error: device='cuda' but PyTorch sees no CUDA GPU here; use --device=cpu for a trial run."
