"""bench/reproduce.py: the quick grid end to end (JSON, table, plot, resuming) on conftest's character-level
TinyStories, and its arithmetic (training time from logged tokens/s, paired differences, equal wall clock) on made-up runs.
reproduce.py runs in this process (its train.py runs are processes of their own, as always)."""
import importlib.util
import json
import shutil
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("reproduce", ROOT / "bench" / "reproduce.py")
reproduce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(reproduce)


def test_quick_grid_end_to_end_and_resume(tiny_data, tmp_path, run_here):
    results = tmp_path / "results"
    quick = [f"--dataset={tiny_data}", f"--results={results}"]
    runs_dir = results / "runs" / "quick"
    # the sweep alone: both models at both rates, seed 1
    r = run_here("bench/reproduce.py", "quick", *quick, "--stage=sweep")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in runs_dir.iterdir()) == [
        "gpt-lr0.005-s1", "gpt-lr0.02-s1", "yuriiformer-lr0.005-s1", "yuriiformer-lr0.02-s1"]
    data = json.loads((results / "quick.json").read_text())
    for name, sweep in data["sweep"].items():
        losses = {float(lr): v for lr, v in sweep["final_val_loss"].items()}
        assert sweep["lrs"] == [0.005, 0.02] and sweep["best_lr"] == min(losses, key=losses.get)
        assert sweep["edge"] == ("low" if sweep["best_lr"] == 0.005 else "high")  # quick's range is not extended
    # the shortened schedule alone: YuriiFormer at its best rate, half the steps; the sweep is not rerun
    stamps = {p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in runs_dir.iterdir()}
    r = run_here("bench/reproduce.py", "quick", *quick, "--stage=short")
    assert r.returncode == 0, r.stderr
    best = {name: sweep["best_lr"] for name, sweep in data["sweep"].items()}
    assert {p.name for p in runs_dir.iterdir()} - set(stamps) == {
        f"yuriiformer-short0.5-lr{best['yuriiformer']:g}-s1"}
    # every stage: what has finished (it has a run.json) is not rerun (quick's one seed is the sweep's)
    stamps = {p.name: (p / "metrics.jsonl").stat().st_mtime_ns for p in runs_dir.iterdir()}
    r = run_here("bench/reproduce.py", "quick", *quick)
    assert r.returncode == 0, r.stderr
    assert all((runs_dir / name / "metrics.jsonl").stat().st_mtime_ns == stamp for name, stamp in stamps.items())

    data = json.loads((results / "quick.json").read_text())
    assert data["settings"]["max_iters"] == 20 and data["settings"]["tokens_per_iter"] == 4 * 32
    runs = {(x["variant"], x["lr"], x["seed"]): x for x in data["runs"]}
    assert len(runs) == len(data["runs"]) == 5 and len(list(runs_dir.iterdir())) == 5
    for (variant, lr, seed), x in runs.items():
        out_dir = runs_dir / f"{variant}-lr{lr:g}-s{seed}"
        steps = 10 if "short" in variant else 20
        assert x["status"] == "ok" and f"--seed={seed}" in x["args"] and f"--out_dir={out_dir}" in x["args"]
        assert (x["config"]["learning_rate"], x["config"]["min_lr"]) == (lr, lr / 10)
        assert x["config"]["max_iters"] == x["config"]["lr_decay_iters"] == steps and x["config"]["warmup_iters"] == 2
        # the curve is train.py's own evaluations, every 10 steps
        metrics = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
        assert x["curve"] == [[m["iter"], m["val_loss"]] for m in metrics if m["val_loss"] is not None]
        assert [i for i, _ in x["curve"]] == list(range(0, steps + 1, 10))
        assert x["final_val_loss"] == x["curve"][-1][1] and x["best_val_loss"] == min(v for _, v in x["curve"])
        assert x["curve"][-1][1] < x["curve"][0][1] < 5  # it learned something from ln(128) ~ 4.85
        times = x["curve_train_time_s"]
        assert times[0] == 0 < times[1] <= times[-1] == x["train_time_s"] < x["wall_time_s"]
        assert 0 < x["cpu_time_s"] and (x["steps"], x["tokens"]) == (steps, steps * 4 * 32)
        assert x["peak_batch_loss"] == max(m["train_loss"] for m in metrics if m["val_loss"] is None and m["iter"] > 0)
    # V_0's token and position tables and the scalars: YuriiFormer has more parameters than GPT
    gpt_params = {x["params"] for x in data["runs"] if x["variant"] == "gpt"}
    assert len(gpt_params) == 1 and runs["yuriiformer", best["yuriiformer"], 1]["params"] > gpt_params.pop() > 10_000

    rows = {row["variant"]: row for row in data["models"]}
    at_best = {v: runs[v, best[v], 1]["final_val_loss"] for v in best}
    assert rows["gpt"]["final_val_loss"] == at_best["gpt"] and rows["gpt"]["final_val_loss_std"] is None
    vs = rows["yuriiformer"]["vs"]["gpt"]
    assert vs["step_time_vs_baseline"] == pytest.approx(rows["yuriiformer"]["step_time_s"] / rows["gpt"]["step_time_s"])
    assert vs["final_val_loss"] == pytest.approx(at_best["yuriiformer"] - at_best["gpt"])
    assert vs["final_val_loss_lower"] == (at_best["yuriiformer"] < at_best["gpt"])
    [comparison] = data["comparisons"]
    assert (comparison["candidate"], comparison["baseline"], comparison["seeds"]) == ("yuriiformer", "gpt", [1])
    assert comparison["target"] == at_best["gpt"] and comparison["reached"] == \
        (min(v for _, v in runs["yuriiformer", best["yuriiformer"], 1]["curve"]) <= at_best["gpt"])
    [short] = data["short"]
    assert short["max_iters"] == 10 and short["reached_at_end"] == \
        (runs["yuriiformer-short0.5", best["yuriiformer"], 1]["final_val_loss"] <= at_best["gpt"])

    table = (results / "quick.md").read_text()
    assert "| model | 0.005 | 0.02 | best |" in table
    assert f"| gpt | {best['gpt']:g} | 1 | {rows['gpt']['params']:,} | {rows['gpt']['final_val_loss']:.4f} | — | — |" in table
    assert f"| {vs['final_val_loss']:+.4f} | {vs['final_val_loss_lower']}/1 |" in table
    for section in ("## Time to the better baseline's final val loss", "## Shortened schedules",
                    "| yuriiformer-short0.5 (vs gpt) | 10 |"):
        assert section in table
    for png in ("quick.png", "quick_sweep.png"):
        image = (results / png).read_bytes()
        assert image.startswith(b"\x89PNG\r\n\x1a\n") and len(image) > 20_000


def test_missing_dataset_fails_clearly(tmp_path, run_here):
    r = run_here("bench/reproduce.py", "quick", f"--dataset={tmp_path / 'nothing'}", f"--results={tmp_path}")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "prepare it with `python data/tinystories/prepare.py --sample --tokenizer=char" in r.stderr
    assert not (tmp_path / "runs").exists()


def test_train_time_from_logged_pace():
    # logs every 10 iterations: at iter 0 (1 iteration), 10 (iters 1-10), 20 (11-20); 0.5 s then 1 s per iteration
    logs = [(0, 0.5), (10, 0.5), (20, 1.0)]
    times = reproduce.train_time_at([0, 10, 20, 30], logs)
    # before the eval at iter i, iterations 0..i-1 have run; past the last log, at the last pace
    assert times == pytest.approx([0.0, 0.5 + 9 * 0.5, 5.5 + 9 * 1.0, 15.5 + 9 * 1.0])


def fake_run(variant, seed, final, curve_times, status="ok", lr=1e-3):
    curve = [[0, 4.0], [10, 3.0], [20, final]]
    return {"variant": variant, "model_name": variant, "lr": lr, "seed": seed, "status": status, "params": 100,
            "tokens_per_s": 1000.0, "wall_time_s": 60.0, "cpu_time_s": 50.0, "step_time_s": curve_times[-1] / 20,
            "train_time_s": curve_times[-1], "steps": 20, "peak_batch_loss": 5.0,
            "curve": curve, "curve_train_time_s": curve_times, "final_val_loss": final, "best_val_loss": final}


def test_paired_differences():
    runs = [fake_run("gd", 1, 2.0, [0, 5, 10]), fake_run("gd", 2, 2.2, [0, 5, 10]), fake_run("gd", 3, 2.1, [0, 5, 10]),
            fake_run("slow", 1, 1.9, [0, 10, 20]), fake_run("slow", 2, 2.3, [0, 10, 20]),
            fake_run("slow", 3, 1.8, [0, 10, 20]),
            fake_run("one", 1, 2.5, [0, 2, 4])]
    gd, slow, one = reproduce.summarize(runs, ["gd", "slow", "one"], "gd")
    assert gd["final_val_loss"] == pytest.approx(2.1) and gd["final_val_loss_std"] == pytest.approx(0.1)
    assert slow["delta_final_val_loss"] == pytest.approx((-0.1 + 0.1 - 0.3) / 3)
    assert slow["delta_final_val_loss_std"] == pytest.approx(statistics.stdev([-0.1, 0.1, -0.3]))
    assert slow["delta_final_val_loss_lower"] == 2 and slow["paired_seeds"] == [1, 2, 3]
    assert slow["step_time_vs_baseline"] == pytest.approx(2.0)
    assert one["final_val_loss_std"] is None and one["delta_final_val_loss"] == pytest.approx(0.5)
    # against another baseline, the same runs
    assert reproduce.summarize(runs, ["gd", "slow"], "slow")[0]["delta_final_val_loss"] == pytest.approx(0.1)

    # a diverged seed is left out of the means and the pairs, and named
    runs[4] = fake_run("slow", 2, None, [0, 10, 20], status="diverged")
    slow = reproduce.summarize(runs, ["gd", "slow", "one"], "gd")[1]
    assert slow["diverged"] == [2] and slow["paired_seeds"] == [1, 3]
    assert slow["final_val_loss"] == pytest.approx(1.85)
    assert slow["delta_final_val_loss"] == pytest.approx(-0.2) and slow["delta_final_val_loss_lower"] == 2


def test_sweep_spec_and_run_keys():
    for grid in ("char", "owt", "ts"):
        spec = reproduce.GRIDS[grid]
        lrs = sorted(spec["lrs"])
        assert len(lrs) >= 4 and all(b == 2 * a for a, b in zip(lrs, lrs[1:])), grid
        assert spec["seeds"] == (1, 2, 3) and spec["short"] == "yuriiformer"
        names = [name for name, _ in spec["models"]]
        # the matched GPT only where V_0's token table is not tiny: at 128 characters GPT is the matched GPT
        assert names == (["gpt", "polyak-lt", "yuriiformer"] if grid == "char" else
                         ["gpt", "gpt-matched", "polyak-lt", "yuriiformer"])
        assert all(set(spec["compare"][c]) == set(names) - {"polyak-lt", "yuriiformer"} for c in ("polyak-lt", "yuriiformer"))
    keys = dict(reproduce.GRIDS["owt"]["models"])
    assert keys["yuriiformer"]["velocity_gain_init"] == keys["polyak-lt"]["velocity_gain_init"] == 0.03
    assert keys["gpt-matched"] == {**keys["gpt"], "untied_input": True}
    width = reproduce.GRIDS["width"]
    assert [(k["n_embd"], k["n_head"]) for _, k in width["models"]] == [(64, 2), (64, 2), (128, 4), (128, 4), (256, 8), (256, 8)]
    assert len(width["lrs"]) == 3 and width["seeds"] == (1, 2)
    assert reproduce.run_name("yuriiformer-short0.65", 0.003, 2) == "yuriiformer-short0.65-lr0.003-s2"
    assert [reproduce.short_steps(n, f) for n in (1000, 350) for f in reproduce.SHORT] == [800, 650, 500, 280, 228, 175]


def test_matched_gpt_has_yuriiformers_parameter_count_at_gpts_flops():
    import contextlib, io, runpy
    import torch
    from model import GPT, GPTConfig
    s = runpy.run_path(str(ROOT / "config" / "repro_owt.py"))
    shape = {k: s[k] for k in ("n_layer", "n_head", "n_embd", "block_size", "bias")}
    models = {}
    with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):
        for name, keys in reproduce.GRIDS["owt"]["models"]:
            models[name] = GPT(GPTConfig(vocab_size=50304, **shape, **keys))
    count = {name: m.get_num_params(False) for name, m in models.items()}
    assert count["gpt"] == 7_242_880 and count["yuriiformer"] == 13_699_224
    assert count["gpt-matched"] == pytest.approx(count["yuriiformer"], rel=0.002)
    assert models["gpt-matched"].flops_per_token() == models["gpt"].flops_per_token()


def test_best_lr_with_edges_and_extension():
    # inside the range: no extension
    assert reproduce.sweep_lrs([1, 2, 4, 8], {1: 3.0, 2: 2.5, 4: 2.4, 8: 2.6}) == ([1, 2, 4, 8], 4, None)
    # a run missing: no best yet
    assert reproduce.sweep_lrs([1, 2, 4, 8], {1: 3.0, 2: 2.5, 4: 2.4}) == ([1, 2, 4, 8], None, None)
    # best at the high end: one more rate above, then a best (and no further rate) once that has run
    assert reproduce.sweep_lrs([1, 2, 4, 8], {1: 3.0, 2: 2.5, 4: 2.4, 8: 2.3}) == ([1, 2, 4, 8, 16], None, None)
    assert reproduce.sweep_lrs([1, 2, 4, 8], {1: 3.0, 2: 2.5, 4: 2.4, 8: 2.3, 16: 2.35}) == ([1, 2, 4, 8, 16], 8, None)
    # at the low end, twice; a diverged run (None) ranks last
    losses = {1: 2.2, 2: 2.5, 4: 2.6, 8: None, 0.5: 2.1, 0.25: 2.15}
    assert reproduce.sweep_lrs([1, 2, 4, 8], losses) == ([0.25, 0.5, 1, 2, 4, 8], 0.5, None)
    assert reproduce.best_lr({1: None, 2: None}) == (1, "low")  # all diverged: lower rates next
    # the extensions run out: the best stays at the end, and says so
    falling = {2.0 ** -k: 2.0 - k for k in range(-3, 10)}  # the lower the rate, the lower the loss
    assert reproduce.sweep_lrs([1, 2], falling, extensions=2) == ([0.25, 0.5, 1, 2], 0.25, "low")
    assert reproduce.sweep_lrs([1, 2], falling, extensions=0) == ([1, 2], 1, "low")


def test_plan_stages_from_the_finished_runs():
    spec = {"models": [("gpt", {"residual": "gd"}), ("yuriiformer", {"residual": "nesterov"})], "seeds": (1, 2, 3),
            "short": "yuriiformer", "compare": {"yuriiformer": ("gpt",)}}
    losses = {}  # (variant, lr, seed) -> final val loss of the finished runs

    def make_job(variant, model_name, keys, lr, seed, steps, stage):
        return {"key": (variant, lr, seed), "model_name": model_name, "steps": steps, "stage": stage}

    def finished(job):
        return {"final_val_loss": losses[job["key"]]} if job["key"] in losses else None

    def plan():
        jobs, sweeps = reproduce.plan(spec, [1e-3, 2e-3, 4e-3, 8e-3], 1000, make_job, finished)
        return {(j["stage"], *j["key"], j["steps"]) for j in jobs}, sweeps

    jobs, sweeps = plan()
    assert jobs == {("sweep", m, lr, 1, None) for m in ("gpt", "yuriiformer") for lr in (1e-3, 2e-3, 4e-3, 8e-3)}
    assert sweeps["gpt"]["best_lr"] is None and sweeps["gpt"]["final_val_loss"] == {}  # not run is not diverged
    # GPT's best inside, YuriiFormer's at the low end: GPT's seeds, YuriiFormer one more rate
    losses.update({("gpt", lr, 1): v for lr, v in zip((1e-3, 2e-3, 4e-3, 8e-3), (2.0, 1.9, 1.95, 2.1))})
    losses.update({("yuriiformer", lr, 1): v for lr, v in zip((1e-3, 2e-3, 4e-3, 8e-3), (1.7, 1.8, 1.9, 2.0))})
    jobs, sweeps = plan()
    assert sweeps["gpt"]["best_lr"] == 2e-3 and sweeps["yuriiformer"]["lrs"][0] == 5e-4
    assert {j for j in jobs if j[0] != "sweep"} == {("seeds", "gpt", 2e-3, s, None) for s in (2, 3)}
    assert ("sweep", "yuriiformer", 5e-4, 1, None) in jobs
    # the extension is worse: YuriiFormer's best is 1e-3, inside now; its seeds and shortened schedules follow
    losses["yuriiformer", 5e-4, 1] = 1.75
    jobs, sweeps = plan()
    assert sweeps["yuriiformer"]["best_lr"] == 1e-3 and sweeps["yuriiformer"]["edge"] is None
    assert {j for j in jobs if j[0] == "seeds" and j[1] == "yuriiformer"} == {("seeds", "yuriiformer", 1e-3, s, None)
                                                                           for s in (2, 3)}
    assert {j for j in jobs if j[0] == "short"} == {("short", f"yuriiformer-short{f:g}", 1e-3, s, n)
                                                   for f, n in ((0.8, 800), (0.65, 650), (0.5, 500)) for s in (1, 2, 3)}


def test_time_to_loss_interpolates_between_evals():
    run = fake_run("y", 1, 2.0, [0, 5, 15])  # val loss 4.0, 3.0, 2.0 at steps 0, 10, 20 and 0, 5, 15 s
    # 2.5 is halfway from 3.0 (step 10, 5 s) to 2.0 (step 20, 15 s)
    assert reproduce.time_to_loss(run, 2.5) == pytest.approx((10.0, 15.0))
    assert reproduce.time_to_loss(run, 3.75) == pytest.approx((1.25, 2.5))
    assert reproduce.time_to_loss(run, 5.0) == (0, 0)
    assert reproduce.time_to_loss(run, 1.9) == (None, None)  # never reached
    # paired by seed: GPT's final loss of that seed is the target; speedup = GPT's time (steps) / that
    gpt = {1: fake_run("gpt", 1, 2.5, [0, 6, 12]), 2: fake_run("gpt", 2, 1.9, [0, 6, 12])}
    out = reproduce.reach({1: run, 2: fake_run("y", 2, 2.0, [0, 5, 15])}, gpt)
    assert out["reached"] == 1 and out["seeds"] == [1, 2] and out["reached_at_end"] == 1
    assert (out["time_s"], out["steps"]) == pytest.approx((10.0, 15.0))
    assert out["speedup"] == pytest.approx(12 / 10) and out["speedup_steps"] == pytest.approx(20 / 15)
    assert out["per_seed"][1]["speedup"] is None and out["per_seed"][1]["time_s"] is None
    assert out["delta_to_target"] == pytest.approx(statistics.mean([2.0 - 2.5, 2.0 - 1.9]))
    assert out["speedup_at_end"] == pytest.approx(12 / 15)  # seed 1 ends below GPT's final, after 15 s


def test_width_grid_report_and_plot(tmp_path):
    """The width grid's measures, table and gap plot, on made-up runs: two widths, GPT and YuriiFormer, 2 seeds."""
    spec = {**reproduce.GRIDS["width"], "models": reproduce.GRIDS["width"]["models"][:4],
            "compare": {"yuriiformer-w64": ("gpt-w64",), "yuriiformer-w128": ("gpt-w128",)}}
    runs, sweeps = [], {}
    for name, _ in spec["models"]:
        final = {"gpt-w64": 2.0, "yuriiformer-w64": 1.9, "gpt-w128": 1.8, "yuriiformer-w128": 1.6}[name]
        for lr in (3e-3, 6e-3):
            runs.append(fake_run(name, 1, final + (lr == 6e-3) * 0.1, [0, 5, 10], lr=lr))
        runs.append(fake_run(name, 2, final + 0.01, [0, 5, 10], lr=3e-3))
        sweeps[name] = {"lrs": [3e-3, 6e-3], "final_val_loss": {3e-3: final, 6e-3: final + 0.1}, "best_lr": 3e-3,
                        "edge": "low"}
    analysis = reproduce.analyse(spec, runs, sweeps)
    rows = {row["variant"]: row for row in analysis["models"]}
    assert rows["yuriiformer-w128"]["vs"]["gpt-w128"]["final_val_loss"] == pytest.approx(-0.2)
    assert set(rows["yuriiformer-w64"]["vs"]) == {"gpt-w64"} and rows["gpt-w64"]["vs"] == {}  # only the pairs compared
    assert [(c["candidate"], c["baseline"], c["reached"]) for c in analysis["comparisons"]] == \
        [("yuriiformer-w64", "gpt-w64", 2), ("yuriiformer-w128", "gpt-w128", 2)]
    info = {"config": "c.py", "dataset": "d", "meta": {}, "extensions": 4,
            "settings": {"max_iters": 20, "tokens_per_iter": 128, "warmup_iters": 2, "eval_windows": 8,
                         "block_size": 32, "eval_interval": 10},
            "machine": {"cpus": 2, "jobs": 2, "threads": 1, "torch": "x", "load_avg_min": 1.0, "load_avg_max": 2.0,
                        "runs": len(runs), "total_wall_time_s": 60.0, "total_cpu_time_s": 50.0}}
    table = reproduce.markdown("width", info, sweeps, analysis)
    assert "| gpt-w64 | **2.0000** | 2.1000 | 0.003 (still at the low end) |" in table
    assert "| yuriiformer-w128 | gpt-w128 | 1.8050 ± 0.0071 | 2/2 |" in table
    reproduce.plot_width(spec, analysis["models"], analysis["comparisons"], tmp_path / "gap.png")
    assert (tmp_path / "gap.png").read_bytes().startswith(b"\x89PNG")


def test_a_run_with_a_torn_last_metrics_line_is_read(trained, tmp_path):
    out, _ = trained("gd")
    run = tmp_path / "run"
    shutil.copytree(out, run)
    whole = reproduce.read_run(run, {"batch_size": 4, "gradient_accumulation_steps": 2, "block_size": 32,
                                     "max_iters": 30})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"iter": 31, "tra')
    torn = reproduce.read_run(run, {"batch_size": 4, "gradient_accumulation_steps": 2, "block_size": 32,
                                    "max_iters": 30})
    assert torn == whole and len(whole["curve"]) == 3
