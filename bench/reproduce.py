"""
The paper's comparison of GPT and its momentum variants, at CPU scale and with seeds: a grid of
variants x seeds, each run one train.py process on the same data, steps, evaluation windows and
hyperparameters; only the model keys and the seed (the training-batch stream) change.

$ python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char
$ python data/openwebtext/prepare.py --sample
$ python bench/reproduce.py all      # both grids below, one after the other (63 min measured on 2 quiet cores)
$ python bench/reproduce.py char     # char-level TinyStories: 11 variants, 23 runs (config/repro_char.py)
$ python bench/reproduce.py owt      # GPT-2 BPE OpenWebText sample: gd vs nesterov, 6 runs (config/repro_owt.py)
$ python bench/reproduce.py ts       # GPT-2 BPE TinyStories sample, the owt grid's settings (config/repro_ts.py)
$ python bench/reproduce.py owt --variants=nesterov-lt-gain   # only these variants (and the baseline) run now
$ python bench/reproduce.py quick --dataset=DIR --results=DIR   # a tiny grid, end to end in seconds (the tests)

For each grid it writes results/<grid>.json (every run: curve, losses, timings), results/<grid>.md
(mean +- std over seeds, paired differences to gd, and losses at gd's training time) and
results/<grid>.png (val loss vs step and vs training time). A run's train.py output goes to
results/runs/<grid>/<variant>-s<seed>/, with a run.json once it has finished (or diverged): such a
run is not rerun, so an interrupted grid continues where it stopped. --jobs runs that many train.py
processes at once, each with cpu_count/jobs threads.
"""
import argparse
import contextlib
import io
import json
import math
import os
import runpy
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed

import numpy as np
import torch
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the repo root, from anywhere
from checkpoints import read_checkpoint  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

SEEDS = (1, 2, 3)
GD = {"residual": "gd", "splitting": "lie_trotter"}
# the paper's YuriiFormer, LN_v's gain starting at 1 named explicitly, so a later default does not change these runs
NESTEROV = {"residual": "nesterov", "splitting": "lie_trotter", "velocity_gain_init": 1.0}
# candidate fixes of YuriiFormer's early lag, GPTConfig options the paper leaves open: the velocity at X's
# scale (LN_v's gain starting at 0.03, about X_0's RMS of 0.02 * sqrt(2)) on three seeds; V_0 from the tied
# token table on one (it lagged GPT more than the paper's model on the OpenWebText sample)
EARLY = [
    ("nesterov-lt-gain", {**NESTEROV, "velocity_gain_init": 0.03}, SEEDS),
    ("nesterov-lt-v0wte", {**NESTEROV, "v0": "wte"}, SEEDS[:1]),
]
# grid -> (config file, how to prepare its dataset, [(variant, model keys, seeds)]); the first variant is
# the baseline the others are compared with
GRIDS = {
    "char": ("config/repro_char.py",
             "python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char", [
                 ("gd-lt", GD, SEEDS),
                 ("gd-euler", {"residual": "gd", "splitting": "euler"}, SEEDS),
                 ("polyak-lt", {"residual": "polyak", "splitting": "lie_trotter"}, SEEDS),
                 ("polyak-euler", {"residual": "polyak", "splitting": "euler"}, SEEDS),
                 ("nesterov-lt", NESTEROV, SEEDS),
                 ("nesterov-euler", {"residual": "nesterov", "splitting": "euler"}, SEEDS),
                 # ablation and the schemes that call the oracles more often: one seed each
                 ("nesterov-lt-v0zero", {**NESTEROV, "v0": "zero"}, SEEDS[:1]),
                 ("nesterov-verlet", {"residual": "nesterov", "splitting": "verlet"}, SEEDS[:1]),
                 ("nesterov-imex1", {"residual": "nesterov", "splitting": "imex", "imex_iters": 1}, SEEDS[:1]),
                 ("nesterov-imex2", {"residual": "nesterov", "splitting": "imex", "imex_iters": 2}, SEEDS[:1]),
                 ("nesterov-imex1-noLNv", {"residual": "nesterov", "splitting": "imex", "imex_iters": 1,
                                           "velocity_norm": False}, SEEDS[:1]),
                 *EARLY,
             ]),
    "owt": ("config/repro_owt.py", "python data/openwebtext/prepare.py --sample", [
        ("gd-lt", GD, SEEDS),
        ("nesterov-lt", NESTEROV, SEEDS),
        *EARLY,
    ]),
    "ts": ("config/repro_ts.py", "python data/tinystories/prepare.py --sample", [
        ("gd-lt", GD, SEEDS),
        ("nesterov-lt", NESTEROV, SEEDS),
        *EARLY,
    ]),
    "quick": ("config/repro_quick.py",
              "python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char", [
                  ("gd-lt", GD, SEEDS[:2]),
                  ("nesterov-euler", {"residual": "nesterov", "splitting": "euler"}, SEEDS[:2]),
              ]),
}


# -----------------------------------------------------------------------------
# one run

def train_time_at(curve_iters, logs):
    """Training seconds spent before each eval in curve_iters, from train.py's logged tokens/s.
    logs: (iter, seconds per iteration) of the log lines; a log at iter k times the iterations since the
    previous log, through k. Evaluation time is not training time: train.py keeps it out of tokens/s."""
    its, done = [-1], [0.0]  # cumulative seconds after iteration its[j]
    for k, dt in logs:
        done.append(done[-1] + (k - its[-1]) * dt)
        its.append(k)
    # the eval at iter i follows iterations 0..i-1; past the last log, the last log's pace
    return [float(np.interp(i - 1, its, done)) if i - 1 <= its[-1] else done[-1] + (i - 1 - its[-1]) * logs[-1][1]
            for i in curve_iters]


def read_run(out_dir, settings):
    """The curve, losses and timings of a finished (or diverged) train.py run in out_dir."""
    tokens_per_iter = settings["batch_size"] * settings["gradient_accumulation_steps"] * settings["block_size"]
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    evals = [(r["iter"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    logs = [(r["iter"], tokens_per_iter / r["tokens_per_s"]) for r in rows if r["tokens_per_s"]]
    iters = max(r["iter"] for r in rows)  # the last eval is at the last iteration
    times = train_time_at([i for i, _ in evals], logs) if logs else [0.0] * len(evals)
    train_time = train_time_at([iters], logs)[0] if logs else 0.0
    params = None
    ckpt_path = os.path.join(out_dir, "ckpt.pt")
    if os.path.exists(ckpt_path):  # written at the first eval that improved the val loss
        model_args = read_checkpoint(ckpt_path, mmap=True)["model_args"]
        with torch.device("meta"), contextlib.redirect_stdout(io.StringIO()):  # no memory, no printed count
            params = sum(p.numel() for p in GPT(GPTConfig(**model_args)).parameters())
    return {
        "params": params,  # all of them, V_0's tables included; the tied head counted once
        "steps": iters,
        "tokens": iters * tokens_per_iter,
        "train_time_s": train_time,
        "tokens_per_s": iters * tokens_per_iter / train_time if train_time else None,
        "step_time_s": train_time / iters if iters else None,
        "curve": [[i, v] for i, v in evals],
        "curve_train_time_s": times,
        "final_val_loss": evals[-1][1] if evals and evals[-1][0] == settings["max_iters"] else None,
        "best_val_loss": min(v for _, v in evals) if evals else None,
    }


def run_one(job, threads):
    """Run train.py for one (variant, seed); return its record, or None if it failed for a reason other than
    divergence (then it leaves no run.json and is tried again next time)."""
    out_dir, args = job["out_dir"], job["args"]
    os.makedirs(out_dir, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    load0, t0 = os.getloadavg()[0], time.time()
    with open(os.path.join(out_dir, "train.log"), "w") as log:
        # a run without its run.json is redone from the start: what an earlier try left in out_dir goes
        proc = subprocess.Popen([sys.executable, "train.py", *args, "--overwrite=True"], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
        # wait4 also gives the CPU time the run used: unlike wall time, other work on the machine hardly changes it
        _, status, usage = os.wait4(proc.pid, 0)
        rc = proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.time() - t0
    with open(os.path.join(out_dir, "train.log")) as f:
        output = f.read()
    if rc != 0 and "training diverged" not in output:
        return None
    record = {"variant": job["variant"], "seed": job["seed"], "model": job["model"],
              "status": "ok" if rc == 0 else "diverged",
              "error": None if rc == 0 else output.strip().splitlines()[-1],
              **read_run(out_dir, job["settings"]), "wall_time_s": wall,
              "cpu_time_s": usage.ru_utime + usage.ru_stime,
              "load_avg_1min": [load0, os.getloadavg()[0]],  # how busy the machine was, start and end
              "threads": threads, "args": args, "config": job["settings"]}
    with open(os.path.join(out_dir, "run.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


# -----------------------------------------------------------------------------
# tables and plot

def mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else None


def fmt(mean, std=None, signed=False, digits=4):
    if mean is None:
        return "—"
    text = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return text + (f" ± {std:.{digits}f}" if std is not None else "")


def loss_at_time(run, t):
    """Val loss the run had after t seconds of training, linear between evals; None past its end."""
    times, losses = run["curve_train_time_s"], [v for _, v in run["curve"]]
    return float(np.interp(t, times, losses)) if times and t <= times[-1] else None


EARLY_STEP = 100  # the first eval that "ahead of the baseline from the start" counts


def summarize(runs, variants):
    """Per variant: mean and std over seeds, and per-seed (paired) differences to the baseline, variants[0]."""
    by_variant = {name: {r["seed"]: r for r in runs if r["variant"] == name} for name, _, _ in variants}
    base = by_variant[variants[0][0]]
    rows = []
    for name, model, _ in variants:
        seeds = by_variant[name]
        ok = [r for r in seeds.values() if r["status"] == "ok"]
        paired = [s for s, r in seeds.items() if r["status"] == "ok" and s in base and base[s]["status"] == "ok"]
        row = {"variant": name, "model": model, "seeds": sorted(seeds), "diverged": sorted(
            s for s, r in seeds.items() if r["status"] != "ok"), "paired_seeds": paired}
        for key in ("final_val_loss", "best_val_loss", "params", "tokens_per_s", "step_time_s", "wall_time_s",
                    "cpu_time_s"):
            row[key], row[key + "_std"] = mean_std([r[key] for r in ok])
        for key in ("final_val_loss", "best_val_loss"):
            diffs = [seeds[s][key] - base[s][key] for s in paired]
            row[f"delta_{key}"], row[f"delta_{key}_std"] = mean_std(diffs)
            row[f"delta_{key}_lower"] = sum(d < 0 for d in diffs)  # seeds where this variant is below the baseline
        base_step = mean_std([base[s]["step_time_s"] for s in base if base[s]["status"] == "ok"])[0]
        row["step_time_vs_baseline"] = row["step_time_s"] / base_step if row["step_time_s"] and base_step else None
        # equal wall clock: the loss each seed had when the baseline's run of that seed finished training
        at_time = {s: loss_at_time(seeds[s], base[s]["train_time_s"]) for s in paired}
        done_sooner = [s for s, v in at_time.items() if v is None]  # finished before the baseline: its final loss
        values = {s: seeds[s]["final_val_loss"] if v is None else v for s, v in at_time.items()}
        row["val_loss_at_baseline_time"], row["val_loss_at_baseline_time_std"] = mean_std(list(values.values()))
        diffs = [values[s] - base[s]["final_val_loss"] for s in paired]
        row["delta_at_baseline_time"], row["delta_at_baseline_time_std"] = mean_std(diffs)
        row["delta_at_baseline_time_lower"] = sum(d < 0 for d in diffs)
        row["finished_before_baseline"] = done_sooner
        # no early lag: below the baseline at every eval from step EARLY_STEP on, per seed
        gaps = {s: [v - b for (i, v), (_, b) in zip(seeds[s]["curve"], base[s]["curve"]) if i >= EARLY_STEP]
                for s in paired}
        row["ahead_from_early_step"] = sum(bool(g) and max(g) < 0 for g in gaps.values())
        row["worst_gap_from_early_step"] = max((max(g) for g in gaps.values() if g), default=None)
        rows.append(row)
    return rows


def paired(row, base, key):
    """Table cells: the mean ± std of the per-seed differences to the baseline, and in how many seeds it is lower."""
    n = len(row["paired_seeds"])
    if row["variant"] == base or not n:
        return ["—", "—"]
    return [fmt(row[key], row[key + "_std"], signed=True), f"{row[key + '_lower']}/{n}"]


def markdown(grid, info, rows):
    base = rows[0]["variant"]
    s = info["settings"]
    lines = [
        f"# `{grid}` grid: {info['config']} on {info['dataset']}",
        "",
        f"{s['max_iters']} steps of {s['tokens_per_iter']:,} tokens ({s['max_iters'] * s['tokens_per_iter']:,} tokens "
        f"per run); val loss in nats/token on the same {s['eval_windows']} windows of {s['block_size']} tokens for "
        f"every run, every {s['eval_interval']} steps. Dataset: {info['meta'].get('tokenizer')} tokenizer, "
        f"vocab {info['meta'].get('vocab_size')}, {info['meta'].get('train_tokens', 0):,} train / "
        f"{info['meta'].get('val_tokens', 0):,} val tokens. Seeds set the initialisation and the training-batch "
        f"stream; a seed's batches are the same for every variant, so differences are paired by seed.",
        "",
        f"## Loss after {s['max_iters']} steps (mean ± std over seeds)",
        "",
        f"| variant | seeds | params | final val | best val | Δ final vs {base} | lower in | Δ best vs {base} "
        f"| lower in | tokens/s | step time vs {base} | wall time per run | CPU time per run |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        seeds = ",".join(map(str, r["seeds"]))
        if r["diverged"]:
            seeds += f" (diverged: {','.join(map(str, r['diverged']))})"
        params = f"{r['params']:,.0f}" if r["params"] else "—"
        wall, cpu = (f"{r[k] / 60:.1f} min" if r[k] else "—" for k in ("wall_time_s", "cpu_time_s"))
        cells = [r["variant"], seeds, params, fmt(r["final_val_loss"], r["final_val_loss_std"]),
                 fmt(r["best_val_loss"], r["best_val_loss_std"])]
        for key in ("final_val_loss", "best_val_loss"):
            cells += paired(r, base, f"delta_{key}")
        cells += [f"{r['tokens_per_s']:,.0f}" if r["tokens_per_s"] else "—",
                  f"{r['step_time_vs_baseline']:.2f}×" if r["step_time_vs_baseline"] else "—", wall, cpu]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Δ: the mean ± std over seeds of (variant − {base}) for the same seed; \"lower in k/n\": the variant's "
        f"loss is below {base}'s in k of the n seeds both ran. Params count every parameter, V_0's tables included. "
        f"tokens/s and step time are training only (evaluation excluded), from train.py's logged tokens/s; wall "
        f"and CPU time are whole train.py runs (start-up and evaluation included); CPU time barely depends on how "
        f"busy the machine was.",
        "",
        f"## Equal wall clock: val loss at {base}'s training time",
        "",
        f"Each run's val loss when the {base} run of the same seed had finished its {s['max_iters']} steps, read off "
        f"the run's own curve (linear between evals). A slower variant is then part-way through its learning-rate "
        f"schedule, which favours {base} somewhat; a seed that finished sooner counts with its final loss (marked *).",
        "",
        f"| variant | val loss at {base}'s time | Δ vs {base} final | lower in |",
        "|---|---:|---:|---:|",
    ]
    for r in rows:
        star = " *" if r["finished_before_baseline"] and r["variant"] != base else ""
        cells = [r["variant"], fmt(r["val_loss_at_baseline_time"], r["val_loss_at_baseline_time_std"]) + star,
                 *paired(r, base, "delta_at_baseline_time")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        f"## Early lag: below {base} at every eval from step {EARLY_STEP} on",
        "",
        f"Per seed, whether the variant's val loss is below {base}'s at every eval from step {EARLY_STEP} to the end, "
        f"and the largest (variant − {base}) over those evals and seeds: negative means ahead throughout.",
        "",
        f"| variant | seeds below {base} throughout | largest Δ from step {EARLY_STEP} on |",
        "|---|---:|---:|",
    ]
    for r in rows[1:]:
        lines.append(f"| {r['variant']} | {r['ahead_from_early_step']}/{len(r['paired_seeds'])} | "
                     f"{fmt(r['worst_gap_from_early_step'], signed=True)} |")
    m = info["machine"]
    lines += [
        "",
        f"Machine: {m['cpus']} CPUs, {m['jobs']} train.py processes at once with {m['threads']} thread(s) each, "
        f"torch {m['torch']}; 1-minute load average {m['load_avg_min']:.1f} to {m['load_avg_max']:.1f} over the runs "
        f"(above {m['cpus']} means other work shared the machine and slowed the timings). "
        f"Summed over the runs: {m['total_wall_time_s'] / 60:.1f} min of train.py wall time, "
        f"{m['total_cpu_time_s'] / 60:.1f} min of CPU time.",
        "",
    ]
    return "\n".join(lines)


def plot(grid, runs, rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_iter, ax_time) = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    colors = plt.get_cmap("tab20" if len(rows) > 10 else "tab10").colors
    tops, bottoms = [], []
    for color, row in zip(colors, rows):
        curves = [r for r in runs if r["variant"] == row["variant"]]
        n = min(len(r["curve"]) for r in curves)  # a diverged seed stops early
        iters = [i for i, _ in curves[0]["curve"][:n]]
        losses = np.array([[v for _, v in r["curve"][:n]] for r in curves])
        times = np.array([r["curve_train_time_s"][:n] for r in curves]).mean(0)
        mean = losses.mean(0)
        label = f"{row['variant']} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        for ax, x in ((ax_iter, iters), (ax_time, times)):
            ax.plot(x, mean, color=color, label=label, lw=2 if row is rows[0] else 1.2)
            if len(curves) > 1:
                ax.fill_between(x, losses.min(0), losses.max(0), color=color, alpha=0.2)
        later = mean[len(mean) // 4:] if len(mean) > 4 else mean
        tops.append(later.max())
        bottoms.append(losses.min())
    base_time = statistics.mean(r["train_time_s"] for r in runs if r["variant"] == rows[0]["variant"])
    ax_time.axvline(base_time, color="gray", ls="--", lw=1, label=f"end of {rows[0]['variant']} (equal wall clock)")
    span = max(tops) - min(bottoms)
    ax_iter.set_ylim(min(bottoms) - 0.05 * span, max(tops) + 0.05 * span)  # the first quarter's steep drop is cut off
    ax_iter.set_xlabel("step")
    ax_time.set_xlabel("training time (s, evaluation excluded)")
    ax_iter.set_ylabel("val loss (nats/token)")
    ax_iter.set_title(f"{grid}: val loss vs step (mean over seeds, band: min-max)")
    ax_time.set_title("val loss vs training wall-clock time")
    for ax in (ax_iter, ax_time):
        ax.grid(alpha=0.3)
    ax_time.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -----------------------------------------------------------------------------

def run_grid(grid, dataset, results, jobs, only_variants=None, only_seeds=None):
    config, prepare_hint, variants = GRIDS[grid]
    # the config file's settings: they go into each run.json, so editing the file makes its runs stale
    settings = {k: v for k, v in runpy.run_path(os.path.join(REPO, config)).items() if not k.startswith("_")}
    dataset = dataset or settings["dataset"]
    data_dir = dataset if os.path.isdir(dataset) else os.path.join(REPO, "data", dataset)
    if not os.path.exists(os.path.join(data_dir, "train.bin")):
        sys.exit(f"error: no dataset at {data_dir} for the {grid} grid; prepare it with `{prepare_hint}` "
                 f"or pass --dataset=DIR")
    with open(os.path.join(data_dir, "meta.json")) as f:
        meta = {k: v for k, v in json.load(f).items() if k != "chars"}

    # seed-major, so an interrupted grid has whole seeds of every variant
    grid_jobs = []
    for seed in SEEDS:
        for name, model, seeds in variants:
            if seed in seeds:
                out_dir = os.path.abspath(os.path.join(results, "runs", grid, f"{name}-s{seed}"))
                args = [config, f"--out_dir={out_dir}", f"--seed={seed}", f"--dataset={os.path.abspath(data_dir)}",
                        *(f"--{k}={v}" for k, v in model.items())]
                grid_jobs.append({"variant": name, "seed": seed, "model": model, "out_dir": out_dir,
                                  "args": args, "settings": settings})
    runs, todo = {}, []
    for job in grid_jobs:
        done_path = os.path.join(job["out_dir"], "run.json")
        if os.path.exists(done_path):
            with open(done_path) as f:
                record = json.load(f)
            if (record["args"], record["config"]) == (job["args"], settings):  # else it is stale and is redone
                runs[job["out_dir"]] = record
                continue
        # a filtered call runs only what it names (the baseline always); the tables show every finished run
        if (not only_variants or job["variant"] in only_variants or job["variant"] == variants[0][0]) \
                and (not only_seeds or job["seed"] in only_seeds):
            todo.append(job)

    threads = max(1, (os.cpu_count() or 1) // jobs)
    failed = []
    t0 = time.time()
    with tqdm(total=len(grid_jobs), initial=len(runs), desc=grid, unit="run", dynamic_ncols=True) as pbar, \
            ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_one, job, threads): job for job in todo}
        for future in as_completed(futures):
            job = futures[future]
            record = future.result()
            if record is None:
                failed.append(job)
                tqdm.write(f"{grid}: {job['variant']} seed {job['seed']} failed; see {job['out_dir']}/train.log")
            else:
                runs[job["out_dir"]] = record
                tqdm.write(f"{grid}: {job['variant']} seed {job['seed']}: {record['status']}, final val "
                           f"{fmt(record['final_val_loss'])}, {record['wall_time_s'] / 60:.1f} min")
            pbar.update()
    runs = [runs[job["out_dir"]] for job in grid_jobs if job["out_dir"] in runs]  # grid order
    if not runs:
        sys.exit(f"error: every run of the {grid} grid failed; see the train.log files in {results}/runs/{grid}")

    rows = summarize(runs, [v for v in variants if any(r["variant"] == v[0] for r in runs)])
    loads = [x for r in runs for x in r["load_avg_1min"]]
    info = {
        "grid": grid, "config": config, "dataset": os.path.abspath(data_dir), "meta": meta,
        "settings": {**settings, "eval_windows": settings["eval_iters"] * settings["batch_size"],
                     "tokens_per_iter": settings["batch_size"] * settings["gradient_accumulation_steps"]
                     * settings["block_size"]},
        "machine": {"cpus": os.cpu_count(), "jobs": jobs, "threads": threads, "torch": torch.__version__,
                    "load_avg_min": min(loads), "load_avg_max": max(loads),
                    "total_wall_time_s": sum(r["wall_time_s"] for r in runs),
                    "total_cpu_time_s": sum(r["cpu_time_s"] for r in runs)},
    }
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, f"{grid}.json"), "w") as f:
        json.dump({**info, "variants": rows, "runs": runs}, f, indent=1)
    with open(os.path.join(results, f"{grid}.md"), "w") as f:
        f.write(markdown(grid, info, rows))
    plot(grid, runs, rows, os.path.join(results, f"{grid}.png"))

    finished = [r for r in rows if r["final_val_loss"] is not None]
    best = min(finished, key=lambda r: r["final_val_loss"]) if finished else {"variant": "none", "final_val_loss": None}
    print(f"{grid}: {len(runs)}/{len(grid_jobs)} runs ({len(todo) - len(failed)} run now in "
          f"{(time.time() - t0) / 60:.1f} min, {len(failed)} failed); lowest final val loss: {best['variant']} "
          f"{fmt(best['final_val_loss'])} vs {rows[0]['variant']} {fmt(rows[0]['final_val_loss'])}; "
          f"wrote {os.path.join(results, grid)}.json, .md, .png")
    return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("grid", choices=[*GRIDS, "all"], help="all: char, owt, then ts")
    parser.add_argument("--variants", help="comma-separated variant names: run only these (and the baseline) now")
    parser.add_argument("--seeds", help="comma-separated seeds: run only these now")
    parser.add_argument("--dataset", help="dataset folder instead of the grid config's")
    parser.add_argument("--results", default=os.path.join(REPO, "results"), help="output folder (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="train.py processes at once (default: %(default)s)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.dataset and args.grid == "all":
        parser.error("--dataset needs a single grid: the char and owt grids train on different datasets")
    grids = ["char", "owt", "ts"] if args.grid == "all" else [args.grid]
    only_variants = set(args.variants.split(",")) if args.variants else None
    unknown = only_variants - {name for g in grids for name, _, _ in GRIDS[g][2]} if only_variants else None
    if unknown:
        parser.error(f"--variants: no variant {', '.join(sorted(unknown))} in {', '.join(grids)}")
    only_seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    ok = [run_grid(g, args.dataset, args.results, args.jobs, only_variants, only_seeds) for g in grids]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
