"""
The paper's comparison of GPT and its momentum variants at CPU scale, each model at its own tuned learning rate:
a grid of models x learning rates x seeds, each run one train.py process on the same data, steps, evaluation
windows and schedule shape; only the model keys, the learning rate (min_lr a tenth of it) and the seed change.

Per grid, three stages, each choosing from the finished runs on disk (`--stage=` runs one; the default runs all
three in order, starting each model's next stage as soon as its sweep is done):
  sweep   every model at each learning rate of the grid's spec (or --lrs=...), seed 1; while a model's lowest
          final val loss is at an end of its range, one more rate a factor of 2 beyond (up to 4 each way)
  seeds   every model at its best rate, chosen on the sweep's final val loss alone, with the grid's seeds
          (seed 1 is the sweep's own run)
  short   YuriiFormer at its best rate with its whole schedule shortened (max_iters = lr_decay_iters = 0.8, 0.65,
          0.5 of the grid's steps; warmup unchanged), the grid's seeds

Runbook (a quiet machine: check `uptime` first; nothing else alongside; 2 cores, --jobs=2 runs 2 train.py
processes at once with 1 thread each; an interrupted grid resumes where it stopped, with the same command,
so commit results/ as the grids finish):
$ python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char
$ python data/openwebtext/prepare.py --sample
$ python data/tinystories/prepare.py --sample
$ python bench/reproduce.py char      # GPT (= the matched GPT at this vocabulary), Polyak-LT, YuriiFormer
$ python bench/reproduce.py owt       # GPT, matched GPT, Polyak-LT, YuriiFormer on the OpenWebText sample
$ python bench/reproduce.py ts        # the same on the TinyStories sample (GPT-2 BPE)
$ python bench/reproduce.py width     # GPT vs YuriiFormer at widths 64, 128, 256 (char, 3-rate sweep, 2 seeds)
$ python bench/reproduce.py warmup    # the main job's config at warmup 30 / 100 / 200: does the early spike go?
                                      # (--lrs=6e-3,R also runs the ts grid's best rate R, if that differs)
$ python bench/reproduce.py all       # char, owt, ts, width in that order
Estimated CPU time of a stage per grid, and hours of wall clock with --jobs=2 on a quiet 2-core machine:
  stage   char (3 models)     owt (4 models)      ts (4 models)       width (6 models)
  sweep   12 runs   38 min    16 runs   79 min    16 runs   79 min    18 runs   86 min
  seeds    6 runs   19 min     8 runs   40 min     8 runs   40 min     6 runs   29 min
  short    9 runs   19 min     9 runs   29 min     9 runs   29 min     -
  CPU             76 min             148 min             148 min             115 min   (8.1 h in all)
  wall    ~0.7 h              ~1.3 h              ~1.3 h              ~1.0 h              (~4.3 h in all)
  Each rate a sweep adds beyond its range costs one run more (char 3.2, owt/ts 5, width 1.2-10 min of CPU);
  Measured 2026-11-29/30 on a slower 2-core machine (AMD EPYC, ~1.35x the estimate's times): char 27 runs, 103.6
  min of CPU, 53.3 min of wall clock (4.1-4.4 min of CPU a full run); ts 6.3-7.0 min of CPU a full run; owt 34
  runs (one extension), 206 min of CPU, 104 min of wall clock; width 29 runs (5 extensions), 196 min of CPU,
  ~1.7 h of wall clock (width 256: 13.2 min of CPU a run).
  warmup: 9 runs (3 warmups x seeds 1-3), 103 min of CPU (11.0-11.9 a run), ~53 min of wall clock, measured.
  The table is estimated from the single-rate grids' CPU time per run
  (results/single_lr/*.json, quiet machine: char 2.8-2.9 min, owt/ts 4.1-4.5) plus the denser evaluation (+0.3
  and +0.7 min), widths 64 and 256 at 0.35x and 3.2x width 128's step time (measured in one process at load 2.9).

Other calls:
$ python bench/reproduce.py owt --lrs=2.5e-4,5e-4,1e-3,2e-3   # rates of your own instead of the grid's (give
                                                            # them to every later call of that grid too)
$ python bench/reproduce.py owt --variants=gpt,yuriiformer --seeds=1   # only these models and seeds run now
$ python bench/reproduce.py quick --dataset=DIR --results=DIR   # a tiny grid, end to end in seconds (the tests)

For each grid it writes results/<grid>.json (every run of the grid, sweep and confirmation runs alike: curve,
losses, timings, and the analysis), results/<grid>.md (the sweep; each model at its best rate, paired by seed
against each GPT; time to the better GPT's final loss; the shortened schedules), results/<grid>.png (val loss vs
step and vs training time at the best rates) and results/<grid>_sweep.png (final val loss vs learning rate);
the width grid also results/width_gap.png (difference and speedup vs width). A run's train.py output goes to
results/runs/<grid>/<variant>-lr<lr>-s<seed>/, with a run.json once it has finished (or diverged): such a run
is not rerun. Editing a grid's config file makes its runs stale: they are redone.
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
from checkpoints import read_checkpoint, read_metrics  # noqa: E402
from model import GPT, GPTConfig  # noqa: E402

SEEDS = (1, 2, 3)
SWEEP_SEED = 1  # the learning rate is chosen on this seed's runs alone, never on the confirmation seeds
EXTENSIONS = 4  # at most this many rates added beyond each end of a sweep's range
SHORT = (0.8, 0.65, 0.5)  # shortened schedules, as fractions of the grid's steps
GPT_KEYS = {"residual": "gd", "splitting": "lie_trotter"}
# GPT with YuriiFormer's parameter count: X_0 from its own token table, as V_0 has one (model.py, untied_input)
GPT_MATCHED = {**GPT_KEYS, "untied_input": True}
POLYAK = {"residual": "polyak", "splitting": "lie_trotter", "velocity_gain_init": 0.03}
# the default YuriiFormer, LN_v's gain named explicitly: a later default does not change these runs. No
# YuriiFormer-only knob is tuned per corpus; only the learning rate is, for every model alike.
YURIIFORMER = {"residual": "nesterov", "splitting": "lie_trotter", "velocity_gain_init": 0.03}
BPE_MODELS = [("gpt", GPT_KEYS), ("gpt-matched", GPT_MATCHED), ("polyak-lt", POLYAK), ("yuriiformer", YURIIFORMER)]
BPE_BASELINES = ("gpt", "gpt-matched")
WIDTHS = ((64, 2), (128, 4), (256, 8))  # (n_embd, n_head): heads of 32
# grid -> its config file, how to prepare its dataset, its models [(name, keys)] (keys are train.py settings,
# mostly GPTConfig's), which model is compared with which baselines ({candidate: baselines}: each candidate is
# measured against the baseline with the lower final loss), the sweep's learning rates, the confirmation seeds,
# and optionally the model whose schedule is shortened, and a cap on the sweep's extensions other than EXTENSIONS
GRIDS = {
    "char": dict(
        config="config/repro_char.py",
        prepare="python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char",
        # at 128 characters the matched GPT's extra table is 16k parameters (820k -> 837k, YuriiFormer 854k):
        # GPT is the matched GPT here
        models=[("gpt", GPT_KEYS), ("polyak-lt", POLYAK), ("yuriiformer", YURIIFORMER)],
        compare={"polyak-lt": ("gpt",), "yuriiformer": ("gpt",)},
        lrs=(1.5e-3, 3e-3, 6e-3, 1.2e-2), seeds=SEEDS, short="yuriiformer"),
    "owt": dict(
        config="config/repro_owt.py", prepare="python data/openwebtext/prepare.py --sample",
        models=BPE_MODELS, compare={"polyak-lt": BPE_BASELINES, "yuriiformer": BPE_BASELINES},
        lrs=(5e-4, 1e-3, 2e-3, 4e-3), seeds=SEEDS, short="yuriiformer"),
    "ts": dict(
        config="config/repro_ts.py", prepare="python data/tinystories/prepare.py --sample",
        models=BPE_MODELS, compare={"polyak-lt": BPE_BASELINES, "yuriiformer": BPE_BASELINES},
        lrs=(5e-4, 1e-3, 2e-3, 4e-3), seeds=SEEDS, short="yuriiformer"),
    # does the gap grow with width? the char grid's settings otherwise
    "width": dict(
        config="config/repro_char.py",
        prepare="python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char",
        models=[(f"{name}-w{d}", {**keys, "n_embd": d, "n_head": h})
                for d, h in WIDTHS for name, keys in (("gpt", GPT_KEYS), ("yuriiformer", YURIIFORMER))],
        compare={f"yuriiformer-w{d}": (f"gpt-w{d}",) for d, _ in WIDTHS},
        lrs=(3e-3, 6e-3, 1.2e-2), seeds=SEEDS[:2]),
    # the main job (config/tinystories_cpu_nesterov.py) at its learning rate: its batch loss climbs from 10.8 to
    # 16.8 around step 20 at warmup 30; does a longer warmup remove that at no cost in final loss?
    "warmup": dict(
        config="config/tinystories_cpu_nesterov.py", prepare="python data/tinystories/prepare.py --sample",
        models=[(f"warmup{w}", {"warmup_iters": w}) for w in (30, 100, 200)],
        compare={"warmup100": ("warmup30",), "warmup200": ("warmup30",)},
        lrs=(6e-3,), seeds=SEEDS, extensions=0),
    "quick": dict(
        config="config/repro_quick.py",
        prepare="python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char",
        models=[("gpt", GPT_KEYS), ("yuriiformer", YURIIFORMER)], compare={"yuriiformer": ("gpt",)},
        lrs=(5e-3, 2e-2), seeds=SEEDS[:1], short="yuriiformer", shorten=(0.5,), extensions=0),
}
STAGES = ("sweep", "seeds", "short")


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
    rows = read_metrics(out_dir)
    evals = [(r["iter"], r["val_loss"]) for r in rows if r["val_loss"] is not None]
    logs = [(r["iter"], tokens_per_iter / r["tokens_per_s"]) for r in rows if r["tokens_per_s"]]
    batch_losses = [r["train_loss"] for r in rows if r["val_loss"] is None and r["iter"] > 0]
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
        # the highest logged batch loss after the first step: a spike early in training shows here
        "peak_batch_loss": max(batch_losses) if batch_losses else None,
    }


def run_one(job, threads):
    """Run train.py for one (variant, lr, seed); return its record, or None if it failed for a reason other than
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
    record = {**job["key"], "status": "ok" if rc == 0 else "diverged",
              "error": None if rc == 0 else output.strip().splitlines()[-1],
              **read_run(out_dir, job["settings"]), "wall_time_s": wall,
              "cpu_time_s": usage.ru_utime + usage.ru_stime,
              "load_avg_1min": [load0, os.getloadavg()[0]],  # how busy the machine was, start and end
              "threads": threads, "args": args, "config": job["settings"]}
    with open(os.path.join(out_dir, "run.json"), "w") as f:
        json.dump(record, f, indent=1)
    return record


# -----------------------------------------------------------------------------
# which runs a grid needs, given those finished

def run_name(variant, lr, seed):
    return f"{variant}-lr{lr:g}-s{seed}"


def best_lr(losses):
    """The learning rate with the lowest final val loss in losses ({lr: loss}; None, a diverged run, ranks last)
    and the end of the range it is at: "low", "high", or None when a rate on each side is worse."""
    best = min(sorted(losses), key=lambda lr: math.inf if losses[lr] is None else losses[lr])
    return best, "low" if best == min(losses) else "high" if best == max(losses) else None


def sweep_lrs(lrs, losses, extensions=EXTENSIONS):
    """One model's sweep: the learning rates to run, its best and whether that is still at an end of the range.
    losses: the final val loss of each finished sweep run, {lr: loss}. While the best of the range is at an end,
    the rate a factor of 2 beyond it joins the range, at most `extensions` times each way. The best is None until
    every run of the range has finished."""
    lrs, added = sorted(lrs), {"low": 0, "high": 0}
    while True:
        if any(lr not in losses for lr in lrs):
            return lrs, None, None
        best, edge = best_lr({lr: losses[lr] for lr in lrs})
        if edge is None or added[edge] == extensions:
            return lrs, best, edge
        added[edge] += 1
        lrs = [lrs[0] / 2, *lrs] if edge == "low" else [*lrs, lrs[-1] * 2]


def short_steps(max_iters, fraction):
    """max_iters (= lr_decay_iters) of a schedule shortened to fraction of max_iters: 0.65 of 350 steps is 228."""
    return round(fraction * max_iters)


def plan(spec, lrs, max_iters, make_job, finished):
    """Every run the grid needs as far as its finished runs tell, in stage order, and each model's sweep.
    make_job(variant, model_name, keys, lr, seed, steps, stage) describes a run; finished(job) is its record or None."""
    jobs, sweeps = {}, {}
    extensions = spec.get("extensions", EXTENSIONS)
    for name, keys in spec["models"]:
        def sweep_job(lr):
            return make_job(name, name, keys, lr, SWEEP_SEED, None, "sweep")
        # every rate the sweep could reach, and the final loss of those that have finished
        candidates = [lr * 2.0 ** k for lr in lrs for k in range(-extensions, extensions + 1)]
        losses = {lr: record["final_val_loss"] for lr in candidates if (record := finished(sweep_job(lr)))}
        swept, best, edge = sweep_lrs(lrs, losses, extensions)
        # a rate not run yet is absent (None means diverged: the tables must not say that of a run never made)
        sweeps[name] = {"lrs": swept, "final_val_loss": {lr: losses[lr] for lr in swept if lr in losses},
                        "best_lr": best, "edge": edge}
        for lr in swept:
            jobs.setdefault(("sweep", name, lr), sweep_job(lr))
    for name, keys in spec["models"]:
        best = sweeps[name]["best_lr"]
        if best is None:
            continue
        for seed in spec["seeds"]:
            if seed != SWEEP_SEED:  # that one is the sweep's run at the best rate
                jobs[("seeds", name, seed)] = make_job(name, name, keys, best, seed, None, "seeds")
        if name == spec.get("short"):
            for fraction in spec.get("shorten", SHORT):
                for seed in spec["seeds"]:
                    jobs[("short", fraction, seed)] = make_job(f"{name}-short{fraction:g}", name, keys, best, seed,
                                                               short_steps(max_iters, fraction), "short")
    order = {stage: i for i, stage in enumerate(STAGES)}
    return sorted(jobs.values(), key=lambda job: order[job["stage"]]), sweeps


# -----------------------------------------------------------------------------
# the measures

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


def summarize(runs, names, base):
    """Per variant in names: mean and std over seeds, and per-seed (paired) differences to the variant base."""
    by_variant = {name: {r["seed"]: r for r in runs if r["variant"] == name} for name in names}
    base_runs = by_variant[base]
    base_step = mean_std([r["step_time_s"] for r in base_runs.values() if r["status"] == "ok"])[0]
    rows = []
    for name in names:
        seeds = by_variant[name]
        ok = [r for r in seeds.values() if r["status"] == "ok"]
        paired = [s for s, r in seeds.items()
                  if r["status"] == "ok" and s in base_runs and base_runs[s]["status"] == "ok"]
        row = {"variant": name, "seeds": sorted(seeds), "paired_seeds": paired,
               "diverged": sorted(s for s, r in seeds.items() if r["status"] != "ok")}
        for key in ("final_val_loss", "best_val_loss", "params", "tokens_per_s", "step_time_s", "wall_time_s",
                    "cpu_time_s", "peak_batch_loss"):
            row[key], row[key + "_std"] = mean_std([r.get(key) for r in ok])
        for key in ("final_val_loss", "best_val_loss"):
            diffs = [seeds[s][key] - base_runs[s][key] for s in paired]
            row[f"delta_{key}"], row[f"delta_{key}_std"] = mean_std(diffs)
            row[f"delta_{key}_lower"] = sum(d < 0 for d in diffs)  # seeds where this variant is below the baseline
        row["step_time_vs_baseline"] = row["step_time_s"] / base_step if row["step_time_s"] and base_step else None
        rows.append(row)
    return rows


def time_to_loss(run, target):
    """(training seconds, steps) at which the run's val loss first reaches target, linear between evals;
    (None, None) if it never does."""
    points = [(i, t, v) for (i, v), t in zip(run["curve"], run["curve_train_time_s"])]
    if points and points[0][2] <= target:
        return points[0][1], points[0][0]
    for (i0, t0, v0), (i1, t1, v1) in zip(points, points[1:]):
        if v1 <= target:
            f = (v0 - target) / (v0 - v1)
            return t0 + f * (t1 - t0), i0 + f * (i1 - i0)
    return None, None


def reach(runs, base_runs):
    """Per seed both have, when each run first reaches the baseline run's final val loss, and the speedup:
    the baseline's training time (steps) over that time (those steps). A seed that never reaches it has no
    speedup and is counted apart ("reached k/n"); the means are over the seeds that reach it."""
    seeds = sorted(s for s in runs if s in base_runs and base_runs[s]["final_val_loss"] is not None
                   and runs[s]["status"] == "ok")
    per_seed = []
    for s in seeds:
        run, base = runs[s], base_runs[s]
        seconds, steps = time_to_loss(run, base["final_val_loss"])
        per_seed.append({
            "seed": s, "target": base["final_val_loss"], "final_val_loss": run["final_val_loss"],
            "reached_at_end": run["final_val_loss"] is not None and run["final_val_loss"] <= base["final_val_loss"],
            "time_s": seconds, "steps": steps,
            "speedup": base["train_time_s"] / seconds if seconds else None,
            "speedup_steps": base["steps"] / steps if steps else None,
            # a shortened run that ends at or below the target: the baseline's time over its whole run's
            "speedup_at_end": base["train_time_s"] / run["train_time_s"]
            if run["final_val_loss"] is not None and run["final_val_loss"] <= base["final_val_loss"] else None,
        })
    out = {"seeds": seeds, "reached": sum(p["time_s"] is not None for p in per_seed),
           "reached_at_end": sum(p["reached_at_end"] for p in per_seed), "per_seed": per_seed}
    for key in ("target", "final_val_loss", "time_s", "steps", "speedup", "speedup_steps", "speedup_at_end"):
        out[key], out[key + "_std"] = mean_std([p[key] for p in per_seed])
    out["delta_to_target"], out["delta_to_target_std"] = mean_std(
        [p["final_val_loss"] - p["target"] for p in per_seed if p["final_val_loss"] is not None])
    return out


def analyse(spec, runs, sweeps):
    """The grid's measures: each model at its best rate (paired by seed against each baseline), each candidate's
    time to its better baseline's final loss, and the shortened schedules."""
    best = {name: sweeps[name]["best_lr"] for name, _ in spec["models"]}
    at_best = [r for r in runs if r["variant"] == r["model_name"] and r["lr"] == best[r["model_name"]]
               and r["seed"] in spec["seeds"]]
    names = [name for name, _ in spec["models"] if any(r["variant"] == name for r in at_best)]
    if not names:
        return {"models": [], "comparisons": [], "short": []}
    runs_of = {name: {r["seed"]: r for r in at_best if r["variant"] == name} for name in names}
    baselines = sorted({b for bs in spec["compare"].values() for b in bs if b in names})
    by_base = {b: {row["variant"]: row for row in summarize(at_best, names, b)} for b in baselines or names[:1]}
    # which pairs are compared: a candidate with its baselines, and those baselines with each other
    related = {name: set() for name in names}
    for candidate, bases in spec["compare"].items():
        for name in (candidate, *bases):
            related.setdefault(name, set()).update(set(bases) - {name})
    rows = []
    for row in next(iter(by_base.values())).values():
        row = {**row, "best_lr": best[row["variant"]], "edge": sweeps[row["variant"]]["edge"],
               "vs": {b: {k.replace("delta_", ""): v for k, v in by_base[b][row["variant"]].items()
                          if k.startswith("delta_") or k == "step_time_vs_baseline"}
                      for b in baselines if b in related[row["variant"]]}}
        rows.append({k: v for k, v in row.items() if not k.startswith("delta_") and k != "step_time_vs_baseline"})
    final = {row["variant"]: row["final_val_loss"] for row in rows}
    comparisons, short = [], []
    for candidate, bases in spec["compare"].items():
        bases = [b for b in bases if final.get(b) is not None]
        if candidate not in names or not bases:
            continue
        better = min(bases, key=lambda b: final[b])  # the baseline with the lower mean final loss
        comparisons.append({"candidate": candidate, "baseline": better, **reach(runs_of[candidate], runs_of[better])})
        if candidate == spec.get("short"):
            for fraction in spec.get("shorten", SHORT):
                variant = f"{candidate}-short{fraction:g}"
                runs_short = {r["seed"]: r for r in runs if r["variant"] == variant and r["lr"] == best[candidate]}
                if runs_short:
                    short.append({"variant": variant, "fraction": fraction, "baseline": better,
                                  "max_iters": next(iter(runs_short.values()))["steps"],
                                  **reach(runs_short, runs_of[better])})
    return {"models": rows, "comparisons": comparisons, "short": short}


# -----------------------------------------------------------------------------
# tables and plots

def lr_text(lr):
    return f"{lr:g}"


def seconds(mean, std):
    return fmt(mean, std, digits=1) + " s" if mean is not None else "never"


def markdown(grid, info, sweeps, analysis):
    s, meta = info["settings"], info["meta"]
    per_model = any("warmup_iters" in keys for _, keys in GRIDS[grid]["models"])
    warmup = "as each model sets it" if per_model else f"{s['warmup_iters']} steps"
    lines = [
        f"# `{grid}` grid: {info['config']} on {info['dataset']}",
        "",
        f"{s['max_iters']} steps of {s['tokens_per_iter']:,} tokens ({s['max_iters'] * s['tokens_per_iter']:,} tokens "
        f"per run), warmup {warmup}, cosine decay to min_lr = a tenth of the learning rate; val loss "
        f"in nats/token on the same {s['eval_windows']} windows of {s['block_size']} tokens for every run, every "
        f"{s['eval_interval']} steps. Dataset: {meta.get('tokenizer')} tokenizer, vocab {meta.get('vocab_size')}, "
        f"{meta.get('train_tokens', 0):,} train / {meta.get('val_tokens', 0):,} val tokens. Seeds set the "
        f"initialisation and the training-batch stream; a seed's batches are the same for every model, so "
        f"differences are paired by seed.",
        "",
        f"## Learning-rate sweep: final val loss, seed {SWEEP_SEED}",
        "",
        "Each model's best rate (bold) is chosen on these runs alone"
        + (f"; a rate a factor of 2 beyond the range joins it while the best is at an end (at most "
           f"{info['extensions']} times each way)." if info["extensions"] else "; this grid does not extend its range."),
        "",
    ]
    all_lrs = sorted({lr for sw in sweeps.values() for lr in sw["lrs"]})
    lines += ["| model | " + " | ".join(lr_text(lr) for lr in all_lrs) + " | best |",
              "|---|" + "---:|" * (len(all_lrs) + 1)]
    for name, sw in sweeps.items():
        cells = []
        for lr in all_lrs:
            loss = sw["final_val_loss"].get(lr, "")
            text = "" if loss == "" else "diverged" if loss is None else f"{loss:.4f}"
            cells.append(f"**{text}**" if lr == sw["best_lr"] else text)
        best = "sweep not finished" if sw["best_lr"] is None else lr_text(sw["best_lr"]) + (
            f" (still at the {sw['edge']} end)" if sw["edge"] else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {best} |")

    rows = analysis["models"]
    baselines = sorted({b for row in rows for b in row["vs"]})
    lines += ["", "## Each model at its best learning rate", "",
              "| model | lr | seeds | params | final val | " + " | ".join(f"Δ vs {b} | lower in" for b in baselines)
              + " | step time | CPU time per run | peak batch loss after step 0 |",
              "|---|---:|---|---:|---:|" + "---:|---:|" * len(baselines) + "---:|---:|---:|"]
    for row in rows:
        seeds = ",".join(map(str, row["seeds"])) + (f" (diverged: {','.join(map(str, row['diverged']))})"
                                                   if row["diverged"] else "")
        cells = [row["variant"], lr_text(row["best_lr"]), seeds, f"{row['params']:,.0f}" if row["params"] else "—",
                 fmt(row["final_val_loss"], row["final_val_loss_std"])]
        for b in baselines:
            vs = row["vs"].get(b)
            cells += [fmt(vs["final_val_loss"], vs["final_val_loss_std"], signed=True),
                      f"{vs['final_val_loss_lower']}/{len(row['paired_seeds'])}"] if vs else ["—", "—"]
        cells += [f"{row['step_time_s'] * 1000:.0f} ms" if row["step_time_s"] else "—",
                  f"{row['cpu_time_s'] / 60:.1f} min" if row["cpu_time_s"] else "—",
                  fmt(row["peak_batch_loss"], digits=2)]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Δ: the mean ± std over seeds of (model − baseline) for the same seed, each at its own best rate; "
              "\"lower in k/n\": below the baseline in k of the n seeds both ran. Seed 1 is the sweep's run at that "
              "rate, so it took part in choosing it, for every model alike. Params count every parameter, V_0's "
              "and the matched GPT's extra tables included. Step time: training only (evaluation excluded), from "
              "train.py's logged tokens/s; CPU time: whole train.py runs."]

    lines += ["", "## Time to the better baseline's final val loss", "",
              "Per seed, the training time (and step) at which the model's val-loss curve first reaches the final "
              "val loss of its better baseline (the one with the lower mean final loss) of the same seed, linear "
              "between evals; speedup: the baseline's training time (steps) over that. A seed whose curve never "
              "reaches it has no speedup: it counts in \"reached\" only, and the means are over the seeds that "
              "reach it. The decaying learning rate favours the end of a run, so a point on a curve part-way "
              "through its schedule understates what a schedule of that length would reach: the shortened "
              "schedules below check it.", "",
              "| model | baseline | target (baseline's final) | reached | at step | training time | speedup (time) "
              "| speedup (steps) |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for c in analysis["comparisons"]:
        lines.append(f"| {c['candidate']} | {c['baseline']} | {fmt(c['target'], c['target_std'])} | "
                     f"{c['reached']}/{len(c['seeds'])} | {fmt(c['steps'], c['steps_std'], digits=0)} | "
                     f"{seconds(c['time_s'], c['time_s_std'])} | {fmt(c['speedup'], c['speedup_std'], digits=2)} | "
                     f"{fmt(c['speedup_steps'], c['speedup_steps_std'], digits=2)} |")
    if analysis["short"]:
        lines += ["", "## Shortened schedules", "",
                  "The model at its best rate with max_iters = lr_decay_iters a fraction of the grid's steps (warmup "
                  "unchanged). \"ends below\": its final val loss is at or below the baseline's final loss of the "
                  "same seed; speedup at the end: the baseline's training time over the shortened run's whole "
                  "training time, for those seeds; first reached: where its curve first gets there.", "",
                  "| run | steps | final val | Δ vs baseline's final | ends below | speedup at the end | "
                  "first reached at | speedup there |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in analysis["short"]:
            lines.append(f"| {r['variant']} (vs {r['baseline']}) | {r['max_iters']} | "
                         f"{fmt(r['final_val_loss'], r['final_val_loss_std'])} | "
                         f"{fmt(r['delta_to_target'], r['delta_to_target_std'], signed=True)} | "
                         f"{r['reached_at_end']}/{len(r['seeds'])} | "
                         f"{fmt(r['speedup_at_end'], r['speedup_at_end_std'], digits=2)} | "
                         f"{seconds(r['time_s'], r['time_s_std'])} | {fmt(r['speedup'], r['speedup_std'], digits=2)} |")
    m = info["machine"]
    lines += [
        "",
        f"Machine: {m['cpus']} CPUs, {m['jobs']} train.py processes at once with {m['threads']} thread(s) each, "
        f"torch {m['torch']}; 1-minute load average {m['load_avg_min']:.1f} to {m['load_avg_max']:.1f} over the runs "
        f"(above {m['cpus']} means other work shared the machine and slowed the timings). "
        f"Summed over the {m['runs']} runs: {m['total_wall_time_s'] / 60:.1f} min of train.py wall time, "
        f"{m['total_cpu_time_s'] / 60:.1f} min of CPU time.",
        "",
    ]
    return "\n".join(lines)


def plot_curves(grid, runs, rows, path):
    """Val loss vs step and vs training time, each model at its best rate: mean over seeds, band min-max."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_iter, ax_time) = plt.subplots(1, 2, figsize=(14, 5.5), sharey=True)
    colors = plt.get_cmap("tab10").colors
    tops, bottoms = [], []
    for color, row in zip(colors * 2, rows):
        curves = [r for r in runs if r["variant"] == row["variant"] and r["lr"] == row["best_lr"]
                  and r["seed"] in row["seeds"]]
        n = min(len(r["curve"]) for r in curves)  # a diverged seed stops early
        iters = [i for i, _ in curves[0]["curve"][:n]]
        losses = np.array([[v for _, v in r["curve"][:n]] for r in curves])
        times = np.array([r["curve_train_time_s"][:n] for r in curves]).mean(0)
        mean = losses.mean(0)
        label = f"{row['variant']}, lr {lr_text(row['best_lr'])} ({len(curves)} seed{'s' if len(curves) > 1 else ''})"
        for ax, x in ((ax_iter, iters), (ax_time, times)):
            ax.plot(x, mean, color=color, label=label, lw=1.5)
            if len(curves) > 1:
                ax.fill_between(x, losses.min(0), losses.max(0), color=color, alpha=0.2)
        later = mean[len(mean) // 4:] if len(mean) > 4 else mean
        tops.append(later.max())
        bottoms.append(losses.min())
    span = max(tops) - min(bottoms)
    ax_iter.set_ylim(min(bottoms) - 0.05 * span, max(tops) + 0.05 * span)  # the first quarter's steep drop is cut off
    ax_iter.set(xlabel="step", ylabel="val loss (nats/token)",
                title=f"{grid}: val loss vs step at each model's best lr (mean over seeds, band: min-max)")
    ax_time.set(xlabel="training time (s, evaluation excluded)", title="val loss vs training time")
    for ax in (ax_iter, ax_time):
        ax.grid(alpha=0.3)
    ax_time.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sweep(grid, sweeps, path):
    """Final val loss vs learning rate per model (seed 1), the best rate marked; diverged runs are left out."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    for color, (name, sw) in zip(plt.get_cmap("tab10").colors * 2, sweeps.items()):
        points = [(lr, loss) for lr, loss in sw["final_val_loss"].items() if loss is not None]
        if points:
            ax.plot(*zip(*points), "o-", color=color, label=name)
        if sw["best_lr"] is not None and sw["final_val_loss"][sw["best_lr"]] is not None:
            ax.plot(sw["best_lr"], sw["final_val_loss"][sw["best_lr"]], "*", ms=14, color=color)
    ax.set_xscale("log", base=2)
    lrs = sorted({lr for sw in sweeps.values() for lr in sw["lrs"]})
    ax.set_xticks(lrs, [lr_text(lr) for lr in lrs])
    ax.minorticks_off()
    ax.set(xlabel="learning rate (min_lr a tenth of it)", ylabel="final val loss (nats/token)",
           title=f"{grid}: learning-rate sweep, seed {SWEEP_SEED} (star: best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_width(spec, rows, comparisons, path):
    """Δ final val loss and speedup in time of each candidate vs its baseline, against the width (n_embd)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    width = {name: keys["n_embd"] for name, keys in spec["models"]}
    row_of = {row["variant"]: row for row in rows}
    points = sorted((width[c["candidate"]], row_of[c["candidate"]]["vs"][c["baseline"]], c) for c in comparisons)
    fig, (ax_delta, ax_speed) = plt.subplots(1, 2, figsize=(12, 4.5))
    x = [w for w, _, _ in points]
    ax_delta.errorbar(x, [vs["final_val_loss"] for _, vs, _ in points],
                      yerr=[vs["final_val_loss_std"] or 0 for _, vs, _ in points], fmt="o-", capsize=4)
    ax_delta.axhline(0, color="gray", lw=1)
    ax_delta.set(xlabel="width (n_embd)", ylabel="Δ final val loss vs GPT (nats/token)",
                 title="YuriiFormer − GPT, each at its best lr (mean ± std)")
    ax_speed.errorbar(x, [c["speedup"] if c["speedup"] else np.nan for _, _, c in points],
                      yerr=[c["speedup_std"] or 0 for _, _, c in points], fmt="o-", capsize=4)
    ax_speed.axhline(1, color="gray", lw=1)
    ax_speed.set(xlabel="width (n_embd)", ylabel="GPT's time / time to GPT's final loss",
                 title="time-to-loss speedup (mean ± std, seeds that reach it)")
    for ax in (ax_delta, ax_speed):
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, [str(w) for w in x])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -----------------------------------------------------------------------------

def run_grid(grid, dataset, results, jobs, stages=STAGES, lrs=None, only_variants=None, only_seeds=None):
    spec = GRIDS[grid]
    config = spec["config"]
    # the config file's settings: they go into each run.json, so editing the file makes its runs stale
    settings = {k: v for k, v in runpy.run_path(os.path.join(REPO, config)).items() if not k.startswith("_")}
    dataset = dataset or settings["dataset"]
    data_dir = dataset if os.path.isdir(dataset) else os.path.join(REPO, "data", dataset)
    if not os.path.exists(os.path.join(data_dir, "train.bin")):
        sys.exit(f"error: no dataset at {data_dir} for the {grid} grid; prepare it with `{spec['prepare']}` "
                 f"or pass --dataset=DIR")
    with open(os.path.join(data_dir, "meta.json")) as f:
        meta = {k: v for k, v in json.load(f).items() if k != "chars"}

    def make_job(variant, model_name, keys, lr, seed, steps, stage):
        out_dir = os.path.abspath(os.path.join(results, "runs", grid, run_name(variant, lr, seed)))
        schedule = {"learning_rate": lr, "min_lr": lr / 10, **({"max_iters": steps, "lr_decay_iters": steps}
                                                                if steps else {})}
        args = [config, f"--out_dir={out_dir}", f"--seed={seed}", f"--dataset={os.path.abspath(data_dir)}",
                *(f"--{k}={v}" for k, v in {**schedule, **keys}.items())]
        return {"key": {"variant": variant, "model_name": model_name, "lr": lr, "seed": seed, "model": keys,
                        "schedule_fraction": steps / settings["max_iters"] if steps else 1.0},
                "stage": stage, "out_dir": out_dir, "args": args, "settings": {**settings, **schedule, **keys}}

    records = {}

    def finished(job):
        """The run's record if it has finished with these very arguments and settings (else it is stale)."""
        if job["out_dir"] not in records:
            path = os.path.join(job["out_dir"], "run.json")
            if os.path.exists(path):
                with open(path) as f:
                    records[job["out_dir"]] = json.load(f)
        record = records.get(job["out_dir"])
        return record if record and (record["args"], record["config"]) == (job["args"], job["settings"]) else None

    threads = max(1, (os.cpu_count() or 1) // jobs)
    failed, ran, t0 = [], 0, time.time()
    lrs = sorted(lrs or spec["lrs"])
    while True:  # a round: what the finished runs call for; a sweep's extension or next stage waits for the next
        planned, sweeps = plan(spec, lrs, settings["max_iters"], make_job, finished)
        todo = [job for job in planned if job["stage"] in stages and not finished(job)
                and (not only_variants or job["key"]["model_name"] in only_variants)
                and (not only_seeds or job["key"]["seed"] in only_seeds)]
        if not todo or failed:
            break
        with tqdm(total=len(todo), desc=grid, unit="run", dynamic_ncols=True) as pbar, \
                ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(run_one, job, threads): job for job in todo}
            for future in as_completed(futures):
                job, record = futures[future], future.result()
                name = f"{job['key']['variant']} lr {lr_text(job['key']['lr'])} seed {job['key']['seed']}"
                if record is None:
                    failed.append(job)
                    tqdm.write(f"{grid}: {name} failed; see {job['out_dir']}/train.log")
                else:
                    records[job["out_dir"]] = record
                    ran += 1
                    tqdm.write(f"{grid}: {name}: {record['status']}, final val {fmt(record['final_val_loss'])}, "
                               f"{record['wall_time_s'] / 60:.1f} min")
                pbar.update()
    runs = [record for job in planned if (record := finished(job))]
    if not runs:
        sys.exit(f"error: no run of the {grid} grid has finished; see the train.log files in {results}/runs/{grid}")

    analysis = analyse(spec, runs, sweeps)
    loads = [x for r in runs for x in r["load_avg_1min"]]
    info = {
        "grid": grid, "config": config, "dataset": os.path.abspath(data_dir), "meta": meta,
        "settings": {**settings, "eval_windows": settings["eval_iters"] * settings["batch_size"],
                     "tokens_per_iter": settings["batch_size"] * settings["gradient_accumulation_steps"]
                     * settings["block_size"]},
        "extensions": spec.get("extensions", EXTENSIONS),
        "machine": {"cpus": os.cpu_count(), "jobs": jobs, "threads": threads, "torch": torch.__version__,
                    "load_avg_min": min(loads), "load_avg_max": max(loads), "runs": len(runs),
                    "total_wall_time_s": sum(r["wall_time_s"] for r in runs),
                    "total_cpu_time_s": sum(r["cpu_time_s"] for r in runs)},
    }
    os.makedirs(results, exist_ok=True)
    # lrs as text keys: JSON has no float keys
    sweep_json = {name: {**sw, "final_val_loss": {lr_text(lr): v for lr, v in sw["final_val_loss"].items()}}
                  for name, sw in sweeps.items()}
    with open(os.path.join(results, f"{grid}.json"), "w") as f:
        json.dump({**info, "sweep": sweep_json, **analysis, "runs": runs}, f, indent=1)
    with open(os.path.join(results, f"{grid}.md"), "w") as f:
        f.write(markdown(grid, info, sweeps, analysis))
    plot_sweep(grid, sweeps, os.path.join(results, f"{grid}_sweep.png"))
    if analysis["models"]:
        plot_curves(grid, runs, analysis["models"], os.path.join(results, f"{grid}.png"))
    if analysis["comparisons"] and all("n_embd" in keys for _, keys in spec["models"]):
        plot_width(spec, analysis["models"], analysis["comparisons"], os.path.join(results, f"{grid}_gap.png"))

    waiting = [name for name, sw in sweeps.items() if sw["best_lr"] is None]
    bests = ", ".join(f"{name} {lr_text(sw['best_lr'])}" + (f" ({sw['edge']} end)" if sw["edge"] else "")
                      for name, sw in sweeps.items() if sw["best_lr"] is not None)
    print(f"{grid}: {len(runs)}/{len(planned)} planned runs finished ({ran} run now in {(time.time() - t0) / 60:.1f} "
          f"min, {len(failed)} failed); best lr: {bests or 'none yet'}"
          + (f"; sweep not finished: {', '.join(waiting)}" if waiting else "")
          + f"; wrote {os.path.join(results, grid)}.json, .md, .png")
    return not failed


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("grid", choices=[*GRIDS, "all"], help="all: char, owt, ts, then width")
    parser.add_argument("--stage", choices=STAGES, help="run only this stage (default: all three, in order)")
    parser.add_argument("--lrs", help="comma-separated learning rates to sweep instead of the grid's")
    parser.add_argument("--variants", help="comma-separated model names: run only these now")
    parser.add_argument("--seeds", help="comma-separated seeds: run only these now")
    parser.add_argument("--dataset", help="dataset folder instead of the grid config's")
    parser.add_argument("--results", default=os.path.join(REPO, "results"), help="output folder (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="train.py processes at once (default: %(default)s)")
    args = parser.parse_args()
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    if args.grid == "all" and (args.dataset or args.lrs):
        parser.error("--dataset and --lrs need a single grid: the grids train on different data at different rates")
    grids = ["char", "owt", "ts", "width"] if args.grid == "all" else [args.grid]
    only_variants = set(args.variants.split(",")) if args.variants else None
    unknown = only_variants - {name for g in grids for name, _ in GRIDS[g]["models"]} if only_variants else None
    if unknown:
        parser.error(f"--variants: no model {', '.join(sorted(unknown))} in {', '.join(grids)}")
    try:
        lrs = [float(x) for x in args.lrs.split(",")] if args.lrs else None
        only_seeds = {int(s) for s in args.seeds.split(",")} if args.seeds else None
    except ValueError as e:
        parser.error(f"--lrs takes numbers and --seeds integers, separated by commas ({e})")
    if lrs and min(lrs) <= 0:
        parser.error("--lrs: every learning rate must be positive")
    stages = [args.stage] if args.stage else STAGES
    ok = [run_grid(g, args.dataset, args.results, args.jobs, stages, lrs, only_variants, only_seeds) for g in grids]
    sys.exit(0 if all(ok) else 1)


if __name__ == "__main__":
    main()
