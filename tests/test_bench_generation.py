"""bench/generation.py at a toy size: the JSON it writes (not the speeds) and a clean error for a bad variant."""
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOY = ["--n_layer=1", "--n_head=2", "--n_embd=16", "--block_size=32", "--vocab_size=64", "--prompt_len=4",
       "--new_tokens=6", "--repeats=3", "--device=cpu"]


def run_bench(*args, cwd=ROOT):
    return subprocess.run([sys.executable, str(ROOT / "bench" / "generation.py"), *TOY, *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120)


def test_toy_run_writes_table_and_json(tmp_path):
    out = tmp_path / "gen.json"
    result = run_bench("--variants=gd,nesterov,polyak/euler", f"--json={out}", cwd=tmp_path)  # runs from any folder
    assert result.returncode == 0, result.stderr
    assert "| variant | cached tok/s | uncached tok/s | speed-up |" in result.stdout
    data = json.loads(out.read_text())
    assert data["config"]["new_tokens"] == 6 and data["config"]["n_layer"] == 1
    assert isinstance(data["threads"], int) and data["torch"]
    rows = data["results"]
    assert [(r["variant"], r["residual"], r["splitting"]) for r in rows] == [
        ("gd", "gd", "lie_trotter"), ("nesterov", "nesterov", "lie_trotter"), ("polyak/euler", "polyak", "euler")]
    for r in rows:
        assert len(r["cached_runs"]) == len(r["uncached_runs"]) == 3
        assert all(x > 0 for x in r["cached_runs"] + r["uncached_runs"])
        assert r["cached_tok_s"] == statistics.median(r["cached_runs"])
        assert r["uncached_tok_s"] == statistics.median(r["uncached_runs"])
        assert abs(r["speedup"] - r["cached_tok_s"] / r["uncached_tok_s"]) < 1e-9
        assert f"| {r['variant']} |" in result.stdout


def test_unknown_variant_is_one_line_error():
    result = run_bench("--variants=gd,adam")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "variant 'adam'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
