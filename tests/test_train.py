"""train.py end to end on real TinyStories tokens, with tiny models (2 layers, width 32, context 32)."""
import json
import shutil
import struct
import sys
from pathlib import Path

import pytest
import torch

import plot
from conftest import REPO, TINY
from model import GPT, GPTConfig
from plot import plot_runs

KEYS = {"iter", "train_loss", "val_loss", "lr", "tokens_per_s", "mfu", "time"}


def metrics(out_dir):
    with open(out_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def losses(out_dir):
    """What must not depend on how a run was split up: the losses and learning rate at each logged iter."""
    return [(r["iter"], r["train_loss"], r["val_loss"], r["lr"]) for r in metrics(out_dir)]


def one_sentence_error(r, *needles):
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and all(n in last for n in needles), r.stderr


@pytest.mark.parametrize("residual", ["gd", "nesterov"])
def test_training_lowers_loss(trained, residual):
    out, stdout = trained(residual, bpe=True)  # the main job's tokenizer
    rows = metrics(out)
    assert all(set(r) >= KEYS for r in rows)
    evals = [r for r in rows if r["val_loss"] is not None]
    logs = [r for r in rows if r["val_loss"] is None]
    assert [r["iter"] for r in evals] == [0, 15, 30]
    assert [r["iter"] for r in logs] == list(range(30))
    assert all(r["tokens_per_s"] > 0 and r["mfu"] > 0 for r in logs)
    times = [r["time"] for r in rows]  # training seconds, for plots against time
    assert times == sorted(times) and times[-1] > 0
    # from ~ln(50304) = 10.8 at init, real text is learnt quickly (unigram statistics first)
    assert evals[0]["val_loss"] > 10.5
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 2.0
    assert logs[-1]["train_loss"] < logs[0]["train_loss"] - 2.0
    # the momentum scalars are logged at eval time, for momentum variants only
    if residual == "nesterov":
        assert {"layer0.attn.mu", "layer1.mlp.beta", "layer1.attn.gamma"} <= set(evals[-1])
        assert evals[0]["layer0.attn.mu"] == pytest.approx(0.5) and evals[-1]["layer0.attn.mu"] != evals[0]["layer0.attn.mu"]
        assert "layer0: attn.mu " in stdout
    else:
        assert not set(evals[-1]) - KEYS
    assert (out / "loss.png").stat().st_size > 1000
    summary = stdout.strip().splitlines()[-1]
    assert summary.startswith("done: 30 iters") and "tokens/s" in summary


def test_checkpoint_contents(trained):
    out, _ = trained("nesterov", bpe=True)
    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == 30
    assert ckpt["model_args"]["residual"] == "nesterov" and ckpt["model_args"]["n_embd"] == 32
    assert ckpt["model_args"]["vocab_size"] == 50304  # meta.json's 50257 padded to a multiple of 64
    assert ckpt["config"]["learning_rate"] == 1e-2 and ckpt["config"]["max_iters"] == 30
    assert ckpt["best_val_loss"] == min(r["val_loss"] for r in metrics(out) if r["val_loss"] is not None)
    # plain parameter names (no _orig_mod./module. prefixes): loads straight into a fresh model
    model = GPT(GPTConfig(**ckpt["model_args"]))
    assert list(ckpt["model"]) == list(model.state_dict())
    model.load_state_dict(ckpt["model"])
    assert len(ckpt["optimizer"]) == 1 and len(ckpt["optimizer"][0]["state"]) == len(list(model.parameters()))
    assert len(ckpt["rng"]) == 1 and {"data", "torch"} <= set(ckpt["rng"][0])
    assert ckpt["torch_version"] == str(torch.__version__)
    assert ckpt["git_commit"] is None or len(ckpt["git_commit"]) == 40
    assert not list(out.glob("*.tmp"))


def test_resume_matches_uninterrupted_run(trained, tiny_data, tmp_path, run_here):
    """In this process (a resumed run in a process of its own: test_reliability.py's signal tests)."""
    full, _ = trained("nesterov")
    common = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--residual=nesterov", "--eval_interval=15"]
    r = run_here("train.py", *common, "--max_iters=15")
    assert r.returncode == 0, r.stderr
    r = run_here("train.py", *common, "--max_iters=30", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert "resuming from" in r.stdout
    assert "it/s]" not in r.stderr and "%|" not in r.stderr  # stdout is not a terminal: no progress bar
    # same data stream, optimizer state and schedule: bit-identical losses
    assert losses(tmp_path) == losses(full)
    times = [r["time"] for r in metrics(tmp_path)]  # the resumed run's training time goes on from the first's
    assert times == sorted(times)


def test_paper_recipe_lowers_loss_and_resumes_exactly(tiny_data, tmp_path, run_here):
    """The paper's optimizer and data order: Muon for the block matrices and AdamW for the rest, over shuffled
    epochs; both optimizers' states and the position in the epochs go into the checkpoint. (The runs are compared
    with each other only, so they all run in this process.)"""
    common = [*TINY, f"--dataset={tiny_data}", "--residual=nesterov", "--optimizer=muon", "--muon_lr=0.02",
              "--data_order=epoch", "--eval_interval=10"]
    r = run_here("train.py", *common, f"--out_dir={tmp_path / 'full'}", "--max_iters=20")
    assert r.returncode == 0, r.stderr
    evals = [r["val_loss"] for r in metrics(tmp_path / "full") if r["val_loss"] is not None]
    assert evals[-1] < evals[0] - 1.0  # from ln(128) = 4.85 at init
    ckpt = torch.load(tmp_path / "full" / "ckpt.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["optimizer"]) == 2  # Muon's momentum buffers and AdamW's moments
    assert ckpt["rng"][0]["epoch_order"] == {"epoch": 0, "position": 20 * 2 * 4}  # 20 iters of 2 micro-batches of 4
    r = run_here("train.py", *common, f"--out_dir={tmp_path / 'split'}", "--max_iters=10")
    assert r.returncode == 0, r.stderr
    r = run_here("train.py", *common, f"--out_dir={tmp_path / 'split'}", "--max_iters=20", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert losses(tmp_path / "split") == losses(tmp_path / "full")
    # an AdamW checkpoint cannot silently resume under Muon
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'split'}",
                   "--init_from=resume", "--max_iters=21")
    one_sentence_error(r, "optimizer")


def test_eval_windows_do_not_depend_on_seed(trained, tiny_data, tmp_path, run_here):
    """Re-evaluating the final checkpoint under another seed scores the same windows: the same losses."""
    out, _ = trained("nesterov")
    final = [r for r in metrics(out) if r["val_loss"] is not None][-1]
    shutil.copytree(out, tmp_path / "run")
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'run'}", "--init_from=resume",
                 "--eval_only=True", "--seed=1")
    assert r.returncode == 0, r.stderr
    row = metrics(tmp_path / "run")[-1]
    assert (row["iter"], row["val_loss"], row["train_loss"]) == (30, final["val_loss"], final["train_loss"])


def test_wandb_missing(tiny_data, tmp_path, run_here, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as on a machine without it
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--wandb_log=True")
    one_sentence_error(r, "wandb", "pip install wandb")


def wandb_history(wandb_dir):
    """The history rows ({key: value} per step) of the one offline run under wandb_dir, read from its .wandb file:
    wandb's own Record protobufs in a LevelDB-style log (a 7-byte file header, then 32 KiB blocks of chunks, each
    with a 7-byte header: CRC-32, length, type 1 full / 2 first / 3 middle / 4 last)."""
    from wandb.proto import wandb_internal_pb2
    [path] = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, chunk, rows = path.read_bytes(), 7, b"", []
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a header is padding
            pos += 32768 - pos % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = chunk + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record.FromString(chunk)
            chunk = b""
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
    return rows


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_ddp_two_processes_and_wandb(tiny_data, tmp_path, run_script, run_here, monkeypatch):
    """Two DDP processes on CPU (gloo), logging to wandb offline: rank 0 alone writes files and makes the wandb
    run. With the epoch data order, 2 ranks x 1 micro-batch see the same windows per iteration as 1 process x 2,
    so they train like it."""
    common = [*TINY, f"--dataset={tiny_data}", "--residual=nesterov", "--data_order=epoch", "--max_iters=8",
              "--eval_interval=4", "--gradient_accumulation_steps=2", "--plot=True"]
    out, wandb_dir = tmp_path / "ddp", tmp_path / "wandb"
    wandb_dir.mkdir()
    r = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *common,
                   f"--out_dir={out}", "--wandb_log=True", WANDB_MODE="offline", WANDB_DIR=str(wandb_dir))
    assert r.returncode == 0, r.stderr
    # rank 0 alone writes and reports: one metrics line per log/eval step, one log line per iteration
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "ckpt.pt", "loss.png", "metrics.jsonl", "train.lock"]
    rows = metrics(out)
    assert [r["iter"] for r in rows if r["val_loss"] is None] == list(range(8))
    assert [r["iter"] for r in rows if r["val_loss"] is not None] == [0, 4, 8]
    assert r.stdout.count("iter 0: loss") == 1 and r.stdout.count("step 8:") == 1
    assert r.stdout.count("saving checkpoint") == 3  # best.pt at iter 0, both at 4, ckpt.pt at 8
    assert "tokens per iteration will be: 256" in r.stdout  # 4 x 32 tokens x 1 micro-step x 2 processes
    ckpt = torch.load(out / "ckpt.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["rng"]) == 2 and not torch.equal(ckpt["rng"][0]["data"], ckpt["rng"][1]["data"])
    # one wandb run (wandb_history finds exactly one), whose history holds what metrics.jsonl holds, per step
    history = {row["_step"]: row for row in wandb_history(wandb_dir)}
    assert sorted(history) == list(range(9))
    for row in rows:
        logged = history[row["iter"]]
        if row["val_loss"] is None:
            assert (logged["train/batch_loss"], logged["tokens_per_s"], logged["mfu"], logged["lr"]) == \
                pytest.approx((row["train_loss"], row["tokens_per_s"], row["mfu"], row["lr"]))
        else:
            assert (logged["train/loss"], logged["val/loss"], logged["lr"]) == \
                pytest.approx((row["train_loss"], row["val_loss"], row["lr"]))
            scalars = {k: v for k, v in row.items() if k.startswith("layer")}
            assert len(scalars) == 2 * 2 * 3  # every layer's mu, beta, gamma of both substeps
            assert {k: logged[f"scalars/{k}"] for k in scalars} == pytest.approx(scalars)
    # one process with twice the accumulation: the same losses (in this process; compared to a tolerance)
    r = run_here("train.py", *common, f"--out_dir={tmp_path / 'one'}")
    assert r.returncode == 0, r.stderr
    one = metrics(tmp_path / "one")
    assert [row["iter"] for row in rows] == [row["iter"] for row in one]
    for a, b in zip(rows, one):
        for key in ("train_loss", "val_loss"):
            assert (a[key] is None) == (b[key] is None)
            if a[key] is not None:
                assert a[key] == pytest.approx(b[key], rel=1e-4), (a, b)
    assert one[-1]["val_loss"] < one[0]["val_loss"] - 1.0  # it trained
    # the processes must not change gradient_accumulation_steps if it does not divide (checked before they
    # connect, so rank 0's view, in this process, is enough)
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        monkeypatch.setenv(key, value)
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={out}", "--gradient_accumulation_steps=3")
    one_sentence_error(r, "gradient_accumulation_steps=3 must be divisible by the 2 processes")


def test_every_config_trains_two_steps_when_shrunk(tiny_data, tmp_path, run_here, monkeypatch):
    """Each config/*.py, shrunk to a 1-layer model on the tiny dataset, trains 2 steps: its keys, its choice of
    variant, optimizer and data order all run (in this process: train.py as a script, one config after another).
    train.py's loss.png is drawn for the first run of each set of logged keys only (the variants log different
    scalars; 7 sets for 27 configs, at 0.5 s a drawing)."""
    configs = sorted((REPO / "config").glob("*.py"))
    layouts = set()

    def plot_new_layouts(run_dirs, out_path, labels):
        [run_dir] = run_dirs
        keys = frozenset(key for row in metrics(Path(run_dir)) for key in row)
        if keys not in layouts:
            layouts.add(keys)
            plot_runs(run_dirs, out_path, labels)
    monkeypatch.setattr(plot, "plot_runs", plot_new_layouts)
    shrink = ["--n_layer=1", "--n_embd=32", "--n_head=2", "--block_size=32", "--batch_size=2",
              "--gradient_accumulation_steps=1", "--max_iters=2", "--eval_iters=1", "--eval_interval=2",
              "--log_interval=1", f"--dataset={tiny_data}", "--device=cpu", "--compile=False", "--dtype=float32",
              "--wandb_log=False", "--init_from=scratch", "--eval_downstream=False"]
    failed = []
    for c in configs:
        r = run_here("train.py", c, *shrink, f"--out_dir={tmp_path / c.stem}")
        if r.returncode != 0:
            failed.append(f"{c.name}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    assert not failed, "\n".join(failed)
    assert all(len(metrics(tmp_path / c.stem)) == 4 for c in configs)  # 2 log lines, 2 evals
    # the paper-scale runs keep a recent ckpt.pt (at every eval): a hard crash loses one eval interval, not all since
    # the last improvement
    paper = [c for c in configs if c.stem.startswith(("tinystories_", "openwebtext_")) and "_cpu_" not in c.stem]
    assert len(paper) > 10 and all(torch.load(tmp_path / c.stem / "ckpt.pt", weights_only=True)["config"][
        "always_save_checkpoint"] for c in paper)
    assert len(list(tmp_path.glob("*/loss.png"))) == len(layouts) > 1
