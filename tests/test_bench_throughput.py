"""bench/throughput.py and bench/prepare_speed.py at toy sizes: the JSON, the table and the plot they
write, and their clean failures; not the speeds."""
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import dataprep

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--vocab_size=64", "--n_embd=32", "--n_head=2", "--n_layer=2", "--block_size=16", "--batch_size=2",
       "--repeats=1", "--warmup=1"]
RECORD_KEYS = {"variant", "tokens_per_s", "ms_per_step", "peak_mem_bytes", "params", "params_non_embedding",
               "flops_per_token", "mfu", "ratio_to_gd", "mem_ratio_to_gd", "cpu_ratio_to_gd", "oracle_calls",
               "step_times_ms"}


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """One toy run on one thread: nesterov/imex2 asked for, gd added as the baseline. OMP_WAIT_POLICY is
    left unset, to see the bench set it."""
    out = tmp_path_factory.mktemp("throughput")
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    r = subprocess.run([sys.executable, ROOT / "bench" / "throughput.py", *TOY, "--threads=1", "--gradient_accumulation_steps=2",
                        "--variants=nesterov/imex2", f"--json={out / 'tp.json'}", f"--plot={out / 'tp.png'}"],
                       env=env, cwd=out, capture_output=True, text=True, timeout=120)  # runs from any folder
    assert r.returncode == 0, r.stderr
    return r.stdout, json.loads((out / "tp.json").read_text()), out / "tp.png"


def test_json_records(toy):
    _, data, _ = toy
    machine = data["machine"]
    assert machine["peak_flops"] > 0 and machine["threads"] == 1 and machine["torch"] and machine["date"]
    assert machine["omp_wait_policy"] == "PASSIVE"
    assert 0 < machine["cpu_share"] <= 1.05  # one thread's CPU time over wall time; a little slack for timer grain
    gd, nesterov = data["results"]
    assert (gd["variant"], nesterov["variant"]) == ("gd/lie_trotter", "nesterov/imex2")
    for r in data["results"]:
        assert RECORD_KEYS <= set(r)
        assert len(r["step_times_ms"]) == 1 and r["ms_per_step"] == r["step_times_ms"][0] > 0
        assert r["tokens_per_s"] == pytest.approx(2 * 16 * 2 / (r["ms_per_step"] / 1e3))  # 2 micro-batches a step
        assert r["mfu"] == pytest.approx(r["flops_per_token"] * r["tokens_per_s"] / machine["peak_flops"])
        assert r["peak_mem_bytes"] > r["base_mem_bytes"] > 0
        assert r["cpu_ms_per_step"] > 0
        assert r["mem_ratio_to_gd"] == pytest.approx(r["peak_mem_bytes"] / gd["peak_mem_bytes"])
        assert r["ratio_to_gd"] == pytest.approx(r["tokens_per_s"] / gd["tokens_per_s"])
        assert r["cpu_ratio_to_gd"] == pytest.approx(gd["cpu_ms_per_step"] / r["cpu_ms_per_step"])
    assert gd["ratio_to_gd"] == gd["mem_ratio_to_gd"] == gd["cpu_ratio_to_gd"] == 1.0
    # the memory target: V_0's token and position tables' weights, gradient and two AdamW moments, + 10% of gd's peak
    assert (gd["v0_table_params"], nesterov["v0_table_params"]) == (0, (64 + 16) * 32)
    assert nesterov["mem_allowance_bytes"] == pytest.approx(16 * (64 + 16) * 32 + 0.1 * gd["peak_mem_bytes"])
    assert nesterov["mem_over_gd_bytes"] == nesterov["peak_mem_bytes"] - gd["peak_mem_bytes"]
    assert (gd["oracle_calls"], nesterov["oracle_calls"]) == (2, 4)
    assert nesterov["imex_iters"] == 2 and nesterov["splitting"] == "imex"
    # the same matrices, but V_0's tables (not counted as non-embedding) and two more MLP calls a layer
    assert nesterov["params_non_embedding"] - gd["params_non_embedding"] < 100  # the per-layer scalars and LN_v
    assert nesterov["params"] - nesterov["params_non_embedding"] > gd["params"] - gd["params_non_embedding"]
    assert nesterov["flops_per_token"] > gd["flops_per_token"]


def test_table_and_header(toy):
    stdout, data, _ = toy
    assert re.search(r"^measured matmul peak: [\d,.]+ GFLOP/s on 1 threads", stdout, re.M)
    assert re.search(r"^machine: .+, cpu, 1 threads, torch ", stdout, re.M)
    assert ("| variant | oracle calls | params | non-emb params | tok/s | ms/step | peak mem | FLOPs/token | MFU "
            "| tok/s vs gd | CPU time vs gd | mem vs gd | mem over gd / allowance |") in stdout
    assert "batch 2 x 2 micro-batches" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == ["| gd/lie_trotter", "| nesterov/imex2"]
    assert rows[0].endswith("| 1.00x | 1.00x | 1.00x | 0 / " + f"{0.1 * data['results'][0]['peak_mem_bytes'] / 2 ** 20:,.0f} MiB |")
    assert f"{data['results'][1]['ratio_to_gd']:.2f}x" in rows[1]
    assert re.search(r"^CPU time vs gd: .* got \d+% of their threads' time", stdout, re.M)
    assert "slowest" in stdout.splitlines()[-3]  # the summary line, then the two "wrote" lines


def test_plot_is_png(toy):
    _, _, png = toy
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 400 and height > 200


def test_unknown_variant_is_one_line_error(run_script):
    r = run_script("bench/throughput.py", *TOY, "--variants=gd,adam/euler", timeout=60)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "variant 'adam/euler'" in r.stderr and len(r.stderr.strip().splitlines()) == 1


DOCS = [f"Story {i}. Tom saw a red ball. “Look!” he said. 🎈" * (i + 1) for i in range(12)]


def test_prepare_speed_counts_every_token(run_script, tmp_path):
    corpus = tmp_path / "corpus" / "stories"
    corpus.mkdir(parents=True)
    (corpus / "a.txt").write_text("".join(d + "<|endoftext|>" for d in DOCS))
    out = tmp_path / "prep.json"
    r = run_script("bench/prepare_speed.py", f"--data_dir={corpus.parent}", "--max_docs=10", "--num_proc=2",
                   "--repeats=1", f"--json={out}", timeout=60)
    assert r.returncode == 0, r.stderr
    rows = json.loads(out.read_text())["results"]
    tokens = sum(len(ids) for ids in dataprep.tokenize_documents(DOCS[:10]))
    assert [(x["dataset"], x["num_proc"], x["docs"], x["tokens"]) for x in rows] == [
        ("stories", 1, 10, tokens), ("stories", 2, 10, tokens)]
    for x in rows:
        assert x["prepare_tokens_per_s"] == pytest.approx(tokens / x["prepare_s"][0])
        assert x["tokenize_tokens_per_s"] == pytest.approx(tokens / x["tokenize_s"][0])
        assert f"| {x['num_proc']} | {x['tokenize_tokens_per_s']:,.0f} |" in r.stdout
    assert "| stories | 10 | " in r.stdout and rows[0]["speedup_vs_1"] == 1.0


@pytest.mark.skipif(not dataprep.SHARED_DATA.is_dir(), reason=f"{dataprep.SHARED_DATA} not found")
def test_prepare_speed_on_shared_data_slice(run_script):
    r = run_script("bench/prepare_speed.py", "--max_docs=20", "--num_proc=2", "--repeats=1", timeout=60)
    assert r.returncode == 0, r.stderr
    for dataset in sorted(p.name for p in dataprep.SHARED_DATA.iterdir() if p.is_dir()):
        assert re.search(rf"^\| {dataset} \| 20 \| [\d.]+ \| [\d,]+ \| 1 \|", r.stdout, re.M)
        assert re.search(rf"^\| {dataset} \| 20 \| [\d.]+ \| [\d,]+ \| 2 \|", r.stdout, re.M)


def test_prepare_speed_without_data_says_so(run_script, tmp_path):
    r = run_script("bench/prepare_speed.py", f"--data_dir={tmp_path / 'absent'}", timeout=60)
    assert r.returncode == 0 and "no data to measure" in r.stdout and "skipped" in r.stdout
