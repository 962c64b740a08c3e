"""bench/compiled_cost.py at a tiny size: Inductor's counts of a compiled CPU training step, per layer and per substep."""
import json

import torch

from conftest import REPO


def test_compiled_cost_counts_the_update(tmp_path, run_script):
    out = tmp_path / "cost.json"
    r = run_script(REPO / "bench" / "compiled_cost.py", "--variants=gd,nesterov", "--n_head=2", "--n_embd=32",
                   "--block_size=32", "--batch_size=2", "--vocab_size=128", f"--json={out}")
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    assert data["torch"] == torch.__version__
    gd, nesterov = data["results"]
    assert [gd["variant"], nesterov["variant"]] == ["gd/lie_trotter", "nesterov/lie_trotter"]
    for row in (gd, nesterov):  # the CUDA code path compiles to one graph, on every torch we support
        assert (row["graphs"], row["graph_breaks"], row["break_reasons"]) == (1, 0, {}), row
        assert row["kernels_per_layer"] > 10 and row["bytes_per_element_per_layer"] > 50
    # the velocity stream costs traffic: at least reading V and writing V+ in fp32 forward (8 B per element)
    assert nesterov["extra_bytes_per_element_per_substep"] == \
        (nesterov["bytes_per_element_per_layer"] - gd["bytes_per_element_per_layer"]) / 2 > 8
    assert nesterov["extra_kernels_per_substep"] > 0
    assert "| nesterov/lie_trotter | 1 | 0 |" in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("2 variants, 0 graph breaks in all")
