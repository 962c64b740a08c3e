"""Failures cost little: preemption saves and resumes exactly, bad steps are skipped, and every bad input in the
README's catalogue stops with one sentence and leaves existing files alone. (Two DDP processes training as one:
test_train.py::test_ddp_two_processes_and_wandb.)"""
import argparse
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import REPO, TINY, _run_here
from test_train import losses, metrics, one_sentence_error


# -----------------------------------------------------------------------------
# preemption and resume

def interrupt(args, out_dir, sig, rank=None):
    """Start python with args as run_script does, send it sig once it has logged a few iterations to out_dir,
    and return (status, stdout, stderr). With rank, args start torchrun and only that rank's worker gets sig."""
    p = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if (out_dir / "metrics.jsonl").exists() and len(metrics(out_dir)) >= 4:
            break
        time.sleep(0.01)
    os.kill(p.pid if rank is None else worker_pid(p.pid, rank), sig)
    stdout, stderr = p.communicate(timeout=120)
    return p.returncode, stdout, stderr


def worker_pid(agent_pid, rank):
    """The pid of torchrun's worker process of this rank (Linux /proc)."""
    for child in open(f"/proc/{agent_pid}/task/{agent_pid}/children").read().split():
        with open(f"/proc/{child}/environ", "rb") as f:
            if f"RANK={rank}".encode() in f.read().split(b"\0"):
                return int(child)
    raise LookupError(f"torchrun (pid {agent_pid}) has no worker of rank {rank}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_and_resume_is_bit_exact(sig, trained, tiny_data, tmp_path, run_here):
    """SIGTERM or Ctrl-C mid-run: a checkpoint of that iteration, exit 128 + signal, and a resumed run whose
    losses equal, bit for bit, those of the uninterrupted run (trained's 30 iterations). The run that is signalled
    is a process of its own; the resumed run and trained's run in this process."""
    full, _ = trained("nesterov")
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--residual=nesterov", "--eval_interval=15"]
    status, stdout, stderr = interrupt(["train.py", *args, "--max_iters=30"], tmp_path, sig)
    assert status == 128 + sig, stderr
    assert "Traceback" not in stderr
    stopped_at = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True)["iter_num"]
    assert 0 < stopped_at < 30
    assert f"stopped by {sig.name} at iter {stopped_at}; continue with the same command and --init_from=resume" \
        in stdout
    r = run_here("train.py", *args, "--max_iters=30", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert losses(tmp_path) == losses(full)


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="torch.distributed with gloo is not available")
def test_sigterm_to_one_rank_stops_all_and_resumes_exactly(tiny_data, tmp_path, run_script):
    """SIGTERM to rank 1 alone (torchrun, when signalled, passes it to every worker): the ranks agree to stop at
    the same iteration, rank 0 saves both ranks' data streams, and a resumed run continues as if never stopped."""
    ddp = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py", *TINY,
           f"--dataset={tiny_data}", "--residual=nesterov", "--max_iters=30", "--eval_interval=15"]
    r = run_script(*ddp, f"--out_dir={tmp_path / 'full'}")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run"
    _, stdout, stderr = interrupt([*ddp, f"--out_dir={run}"], run, signal.SIGTERM, rank=1)
    ckpt = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    assert 0 < ckpt["iter_num"] < 30 and len(ckpt["rng"]) == 2
    assert stdout.count(f"stopped by SIGTERM at iter {ckpt['iter_num']}") == 1, stderr
    r = run_script(*ddp, f"--out_dir={run}", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert losses(run) == losses(tmp_path / "full")


def test_keep_last_checkpoints(tiny_data, tmp_path, run_here):
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--eval_interval=5", "--keep_checkpoints=2"]
    r = run_here("train.py", *args, "--max_iters=20")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("ckpt*.pt")) == ["ckpt-00000015.pt", "ckpt-00000020.pt", "ckpt.pt"]
    kept = torch.load(tmp_path / "ckpt-00000015.pt", map_location="cpu", weights_only=True)
    assert kept["iter_num"] == 15
    assert (tmp_path / "ckpt-00000020.pt").read_bytes() == (tmp_path / "ckpt.pt").read_bytes()
    # back to iter 15 and on to 18: only this line of runs' copies count, not ckpt-00000020.pt, which sorts last
    shutil.copyfile(tmp_path / "ckpt-00000015.pt", tmp_path / "ckpt.pt")
    r = run_here("train.py", *args, "--max_iters=18", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.pt")) == ["ckpt-00000015.pt", "ckpt-00000018.pt",
                                                                 "ckpt-00000020.pt"]


def test_one_run_per_out_dir(tiny_data, tmp_path, run_here):
    """A live run holds its out_dir (here a process that took the lock as train.py does): another is refused,
    naming it. Killed with SIGKILL, it leaves no stale lock: the kernel dropped it, and a new run starts."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time, checkpoints; checkpoints.lock_out_dir("
                               "sys.argv[1]); print('locked', flush=True); time.sleep(120)", str(tmp_path)],
                              cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--max_iters=0", "--eval_iters=1"]
        r = run_here("train.py", *args)
        one_sentence_error(r, f"out_dir='{tmp_path}' is in use by another train.py run (process {holder.pid})")
        assert not list(tmp_path.glob("*.pt"))
    finally:
        holder.kill()
        holder.wait()
    assert holder.returncode == -signal.SIGKILL
    r = run_here("train.py", *args)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "train.lock").read_text() == f"{os.getpid()}\n"  # in this process: run_here


def test_overwrite_starts_over(trained, tiny_data, tmp_path, run_here):
    """--overwrite=True deletes the earlier run's files (its kept copies, eval.json and a stale *.pt.tmp too, which the
    new run would not rewrite) and nothing else: a user's ckpt-final.pt and notes.txt stay, and a run file that is a
    link goes as a link, not what it points to. Without it, a folder holding only metrics.jsonl and loss.png (no
    checkpoint yet) is no run."""
    run = copy_run(trained, tmp_path)
    (run / "ckpt-00000030.pt").write_bytes(b"a kept copy")
    (run / "eval.json").write_text("[]")
    (run / "ckpt.pt.tmp").write_bytes(b"half a checkpoint")
    for mine in ("ckpt-final.pt", "notes.txt"):
        (run / mine).write_text("the user's")
    elsewhere = tmp_path / "elsewhere.pt"  # best.pt, linked to a file outside the folder
    shutil.move(run / "best.pt", elsewhere)
    (run / "best.pt").symlink_to(elsewhere)
    before = elsewhere.read_bytes()
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={run}", "--eval_iters=1", "--max_iters=2", "--eval_interval=2"]
    r = run_here("train.py", *args, "--overwrite=True")
    assert r.returncode == 0, r.stderr
    # the earlier run's loss.png went too (this run, --plot=False, draws none)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "ckpt-final.pt", "ckpt.pt", "metrics.jsonl",
                                                     "notes.txt", "train.lock"]
    assert elsewhere.read_bytes() == before and not (run / "best.pt").is_symlink()
    assert (run / "notes.txt").read_text() == (run / "ckpt-final.pt").read_text() == "the user's"
    assert torch.load(run / "ckpt.pt", weights_only=True)["iter_num"] == 2
    assert [row["iter"] for row in metrics(run) if row["val_loss"] is not None] == [0, 2]
    for name in ("ckpt.pt", "best.pt"):
        (run / name).unlink()
    r = run_here("train.py", *args)
    assert r.returncode == 0, r.stderr


def test_overwrite_through_a_linked_out_dir(trained, tiny_data, tmp_path, run_here):
    """out_dir a link to scratch space, as on clusters: --overwrite replaces the run there, and a fine-tune from the
    run it would delete is refused, whether named by the link or by the real folder."""
    scratch = copy_run(trained, tmp_path)
    (tmp_path / "out").symlink_to(scratch)
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'out'}", "--eval_iters=1", "--max_iters=2",
            "--eval_interval=2", "--overwrite=True"]
    r = run_here("train.py", *args, f"--init_from={scratch}")
    one_sentence_error(r, "lies in out_dir", "whose run overwrite=True deletes")
    assert torch.load(scratch / "ckpt.pt", weights_only=True)["iter_num"] == 30
    r = run_here("train.py", *args)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out").is_symlink() and torch.load(scratch / "ckpt.pt", weights_only=True)["iter_num"] == 2


def test_a_torn_last_metrics_line_is_dropped_on_resume(trained, tiny_data, tmp_path, run_here):
    """A run killed while writing metrics.jsonl leaves half a line: the resume says so, drops it and goes on, and the
    rewritten file equals the uninterrupted run's."""
    full, _ = trained("nesterov")
    common = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--residual=nesterov", "--eval_interval=15"]
    r = run_here("train.py", *common, "--max_iters=15")
    assert r.returncode == 0, r.stderr
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"iter": 16, "train_loss": 3.')
    r = run_here("train.py", *common, "--max_iters=30", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert "metrics.jsonl is cut short (a run killed while writing it); it is left out" in r.stdout
    assert losses(tmp_path) == losses(full)
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_on_another_process_count_continues_the_epoch(tiny_data, tmp_path, run_here):
    """A checkpoint of two processes (the same position in the epoch in each, as train.py saves them) resumed by
    one: the epoch order goes on where it stopped, so the losses are those of a run that was never stopped (dropout
    is 0 here: only the data order is random)."""
    common = [*TINY, f"--dataset={tiny_data}", "--data_order=epoch", "--eval_interval=10"]
    r = run_here("train.py", *common, f"--out_dir={tmp_path / 'full'}", "--max_iters=20")
    assert r.returncode == 0, r.stderr
    run = tmp_path / "split"
    r = run_here("train.py", *common, f"--out_dir={run}", "--max_iters=10")
    assert r.returncode == 0, r.stderr
    ckpt = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    ckpt["rng"] = [ckpt["rng"][0], {**ckpt["rng"][0]}]
    torch.save(ckpt, run / "ckpt.pt")
    r = run_here("train.py", *common, f"--out_dir={run}", "--max_iters=20", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert "the data streams of 2 processes, not 1: the epoch order goes on where it stopped" in r.stdout
    assert losses(run) == losses(tmp_path / "full")
    assert torch.load(run / "ckpt.pt", weights_only=True)["rng"][0]["epoch_order"]["position"] == 20 * 2 * 4


def test_a_decay_as_long_as_the_warmup(tiny_data, tmp_path, run_here):
    """lr_decay_iters == warmup_iters: no cosine part; the rate warms up, then stays at min_lr."""
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--warmup_iters=3",
                 "--lr_decay_iters=3", "--max_iters=5", "--eval_interval=5")
    assert r.returncode == 0, r.stderr
    lrs = [row["lr"] for row in metrics(tmp_path) if row["val_loss"] is None]
    assert lrs == pytest.approx([1e-2 / 4, 2e-2 / 4, 3e-2 / 4, 1e-3, 1e-3])


# -----------------------------------------------------------------------------
# numerical faults

def nan_at(monkeypatch, condition):
    """Make a training forward's loss NaN at the micro-batch calls (counted from 1; TINY has 2 per iteration)
    for which condition(call) holds."""
    import model
    forward, calls = model.GPT.forward, [0]

    def patched(self, idx, targets=None, **kw):
        logits, loss = forward(self, idx, targets, **kw)
        if self.training:
            calls[0] += 1
            if condition(calls[0]):
                loss = loss * float('nan')
        return logits, loss
    monkeypatch.setattr(model.GPT, "forward", patched)


def test_a_non_finite_step_is_skipped(tiny_data, tmp_path, run_here, monkeypatch):
    nan_at(monkeypatch, lambda call: call == 7)
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--max_iters=10",
                 "--eval_interval=10")
    assert r.returncode == 0, r.stderr
    assert "warning: iter 3: the loss or gradient is not finite, so this update is skipped (1 in a row" in r.stdout
    rows = metrics(tmp_path)
    assert [row["iter"] for row in rows if row["val_loss"] is None] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    # the NaN gradient never reached the weights: training went on, with finite losses
    assert rows[-1]["iter"] == 10 and rows[-1]["val_loss"] < rows[0]["val_loss"]


def test_bad_steps_in_a_row_stop_the_run(trained, tiny_data, tmp_path, run_here, monkeypatch):
    out, _ = trained("gd")
    shutil.copytree(out, tmp_path / "run")
    before = (tmp_path / "run" / "ckpt.pt").read_bytes()
    nan_at(monkeypatch, lambda call: call >= 5)
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'run'}", "--init_from=resume",
                 "--max_iters=60", "--max_bad_steps=3")
    one_sentence_error(r, "3 steps in a row", "at iter 34", "diverged", "learning_rate")
    assert r.stdout.count("update is skipped") == 3
    assert (tmp_path / "run" / "ckpt.pt").read_bytes() == before


# -----------------------------------------------------------------------------
# the catalogue of bad inputs (README, "When something goes wrong"): each stops with one sentence ("error: ..."),
# a non-zero exit and no traceback, and leaves an existing out_dir byte for byte as it was

def copy_run(trained, tmp_path, residual="gd"):
    out, _ = trained(residual)
    shutil.copytree(out, tmp_path / "run")
    return tmp_path / "run"


def data_dir(tmp_path, tokens, meta=None):
    d = tmp_path / "data"
    d.mkdir()
    for split in ("train", "val"):
        (d / f"{split}.bin").write_bytes(tokens)
    if meta:
        (d / "meta.json").write_text(json.dumps(meta))
    return d


def char_meta(n):
    return {"vocab_size": n, "tokenizer": "char", "chars": [chr(32 + i) for i in range(n)]}


def case_unknown_key(c):
    return ["train.py", "--n_layers=2"], ["unknown config key 'n_layers'", "did you mean 'n_layer'?"]


def case_wrong_type(c):
    return ["train.py", "--batch_size=big"], ["'batch_size'", "expects int"]


def case_config_file_not_found(c):
    return ["train.py", "config/no_such_config.py"], ["config file 'config/no_such_config.py' does not exist"]


def case_unknown_variant(c):
    return ["train.py", *c.tiny, "--residual=nesterof"], ["residual='nesterof' is not known", "nesterov"]


def case_n_embd_not_divisible(c):
    return ["train.py", *c.tiny, "--n_embd=30", "--n_head=4"], ["n_embd=30 must be divisible by n_head=4"]


def case_interval_zero(c):
    return ["train.py", *c.tiny, "--eval_interval=0"], ["eval_interval=0 must be at least 1"]


def case_block_size_larger_than_data(c):
    d = data_dir(c.tmp_path, torch.arange(20, dtype=torch.int16).numpy().tobytes())
    return ["train.py", *TINY, f"--dataset={d}", f"--out_dir={c.tmp_path / 'out'}"], ["20 tokens", "block_size+1"]


def case_block_size_larger_than_checkpoint(c):
    run = copy_run(c.trained, c.tmp_path)  # a fine-tune may shorten the context, not lengthen it
    return ["train.py", *c.tiny, f"--init_from={run}", "--block_size=64", "--max_iters=40"], \
        ["block_size=64 is longer than the 32 positions"]


def case_resume_with_another_block_size(c):
    run = copy_run(c.trained, c.tmp_path)  # its position table and that table's AdamW moments are 32 long
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--block_size=16", "--max_iters=40"], \
        ["holds a model with block_size=32", "this run has block_size=16", "--block_size=32"]


def case_fine_tune_as_another_architecture(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--init_from={run}", "--residual=nesterov", "--max_iters=2"], \
        ["holds a model with residual='gd'", "asks for residual='nesterov'", "keeps its source's architecture"]


def case_decay_ends_before_warmup(c):
    return ["train.py", *c.tiny, "--warmup_iters=10", "--lr_decay_iters=5", "--max_iters=2"], \
        ["lr_decay_iters=5 ends the schedule before warmup_iters=10"]


# --overwrite deletes the earlier run only once the new one is certain to start
def case_overwrite_with_missing_data(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--out_dir={run}", "--overwrite=True", "--dataset=tinystories_no_such_name"], \
        ["has no", "train.bin"]


def case_overwrite_with_a_bad_model_setting(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--out_dir={run}", "--overwrite=True", "--n_embd=33", "--n_head=2"], \
        ["n_embd=33 must be divisible by n_head=2"]


def case_overwrite_the_init_from_run(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--out_dir={run}", f"--init_from={run / 'best.pt'}", "--overwrite=True"], \
        ["lies in out_dir", "whose run overwrite=True deletes"]


def case_missing_data(c):
    return ["train.py", *c.tiny, "--dataset=tinystories_no_such_name"], \
        ["has no", "train.bin", "data/<name>/prepare.py --out-dir DIR"]


def case_missing_data_known_dataset(c):
    return ["train.py", *c.tiny, f"--dataset={c.tmp_path / 'openwebtext'}"], \
        ["train.bin", "`python data/openwebtext/prepare.py --sample`"]


def case_empty_data_file(c):
    d = data_dir(c.tmp_path, b"")
    return ["train.py", *c.tiny, f"--dataset={d}"], ["holds 0 tokens"]


def case_data_not_uint16(c):
    d = data_dir(c.tmp_path, b"\x01\x02\x03")
    return ["train.py", *c.tiny, f"--dataset={d}"], ["odd number of bytes", "not a file of uint16 tokens"]


def case_data_from_another_tokenizer(c):
    d = data_dir(c.tmp_path, np.array([5, 300, 7] * 100, dtype=np.uint16).tobytes(), char_meta(65))
    return ["train.py", *c.tiny, f"--dataset={d}", "--max_iters=2"], \
        ["holds token id 300", "the model's vocabulary has 128 entries", "different tokenizers"]


def case_no_checkpoint(c):
    return ["train.py", *c.tiny, f"--out_dir={c.tmp_path}", "--init_from=resume"], ["no checkpoint", "ckpt.pt"]


def case_truncated_checkpoint(c):
    run = copy_run(c.trained, c.tmp_path)
    data = (run / "ckpt.pt").read_bytes()
    (run / "ckpt.pt").write_bytes(data[:len(data) // 2])
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--max_iters=40"], \
        ["could not resume", "damaged"]


def case_truncated_checkpoint_sample(c):
    run = copy_run(c.trained, c.tmp_path)
    data = (run / "best.pt").read_bytes()
    (run / "best.pt").write_bytes(data[:len(data) // 2])
    return ["sample.py", f"--out_dir={run}", "--device=cpu"], ["could not load", "damaged"]


def case_resume_as_another_architecture(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--residual=nesterov",
            "--max_iters=40"], ["holds a model with residual='gd'", "asks for residual='nesterov'"]


def case_weights_of_another_architecture(c):
    run = copy_run(c.trained, c.tmp_path)
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    ckpt["model_args"]["residual"] = "nesterov"  # but the weights are gd's
    torch.save(ckpt, run / "best.pt")
    return ["sample.py", f"--out_dir={run}", "--device=cpu"], ["do not fit its model_args", "missing"]


def case_pickled_object_in_checkpoint(c):
    run = copy_run(c.trained, c.tmp_path)
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)  # what eval.py reads
    # a pickled instance of a class: unpickling it would call code named in the file (here argparse's, harmless)
    ckpt["config"]["extra"] = argparse.Namespace(note="any object")
    torch.save(ckpt, run / "best.pt")
    return ["eval.py", f"--out_dir={run}", "--device=cpu"], ["pickled Python object", "argparse.Namespace", "refused"]


def case_sample_vocab_mismatch(c):
    run = copy_run(c.trained, c.tmp_path)
    d = data_dir(c.tmp_path, b"", char_meta(60))
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    ckpt["config"]["dataset"] = str(d)  # a model of 128 tokens, a tokenizer of 60 (train.py would pad it to 64)
    torch.save(ckpt, run / "best.pt")
    return ["sample.py", f"--out_dir={run}", "--device=cpu"], ["vocabulary of 128", "has 60", "do not belong"]


def case_fresh_run_into_a_used_out_dir(c):
    run = copy_run(c.trained, c.tmp_path)
    best = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)["best_val_loss"]
    return ["train.py", *c.tiny, f"--out_dir={run}", "--max_iters=40"], \
        [f"holds another run (ckpt.pt at iter 30, best val loss {best:.4f})", "--init_from=resume", "--overwrite=True"]


def case_overwrite_with_resume(c):
    return ["train.py", *c.tiny, f"--out_dir={c.tmp_path}", "--init_from=resume", "--overwrite=True"], \
        ["overwrite=True", "init_from='resume'"]


def arc_file(c, *questions):
    """ARC-Easy examples in the hub's layout, one per question, in a jsonl file. eval.py indexes lm-eval's tasks
    once per process and set of tasks; arc_easy's alone takes milliseconds."""
    path = c.tmp_path / "arc.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answerKey": "A", "choices": {
        "text": ["a rock", "the sun"], "label": ["A", "B"]}}) + "\n" for i, q in enumerate(questions)))
    return path


def case_char_model_on_unencodable_task(c):
    run = copy_run(c.trained, c.tmp_path)  # TinyStories' characters: no '%' or '+'
    arc = arc_file(c, "Is half% of ten five?", "Which is bright?", "Is one+one two?")
    return ["eval.py", f"--out_dir={run}", "--tasks=arc_easy", f"--arc_easy_file={arc}", "--num_fewshot=0"], \
        ["arc_easy: 2 of 3 examples hold characters", "('%+')", "--encodable_only=True"]


def case_too_few_fewshot_examples(c):
    run = copy_run(c.trained, c.tmp_path)
    arc = arc_file(c, "Which is bright?", "What is hard?")
    return ["eval.py", f"--out_dir={run}", "--tasks=arc_easy", f"--arc_easy_file={arc}"], \
        ["arc_easy asks for 25 few-shot examples", "holds 2", "--num_fewshot"]


def case_eval_tokenizer_not_found(c):
    run = copy_run(c.trained, c.tmp_path)
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    ckpt["config"]["dataset"] = str(c.tmp_path / "moved_away")  # the char dataset's folder is not here
    torch.save(ckpt, run / "best.pt")
    return ["eval.py", f"--out_dir={run}", "--device=cpu"], \
        ["vocabulary of 128 tokens, not GPT-2's", "meta.json of its dataset", "is not in", "prepare that dataset"]


def case_cuda_without_gpu(c):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    return ["train.py", "--device=cuda"], ["no CUDA GPU", "--device=cpu"]


def case_bf16_unsupported(c):
    # a GPU without bfloat16 (e.g. a V100), as torch would report it
    c.monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    c.monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    c.monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "V100")
    return ["train.py", *c.tiny, "--device=cuda", "--dtype=bfloat16"], ["bfloat16", "V100", "--dtype=float16"]


def case_out_dir_not_writable(c):
    (c.tmp_path / "file").write_text("a file, not a folder")
    return ["train.py", *c.tiny, f"--out_dir={c.tmp_path / 'file' / 'out'}"], ["cannot write to out_dir", "writable"]


def case_disk_full_on_save(c):
    run = copy_run(c.trained, c.tmp_path)

    def save(obj, f, *a, **k):
        f.write(b"part of a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    c.monkeypatch.setattr(torch, "save", save)
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--max_iters=32", "--eval_interval=2"], \
        ["No space left on device", "at iter 32", "still holds the last good one"]


def case_checkpoint_naming_paths(c):
    run = copy_run(c.trained, c.tmp_path)
    victim = c.tmp_path / "someone_elses.txt"
    victim.write_text("the next prune of kept copies would delete this")
    ckpt = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    ckpt["kept_checkpoints"] = [str(victim)]
    torch.save(ckpt, run / "ckpt.pt")
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--max_iters=32", "--eval_interval=1",
            "--keep_checkpoints=1"], ["lists kept copies that are not ckpt-<iter>.pt files of out_dir"]


def case_metrics_damaged_before_its_last_line(c):
    run = copy_run(c.trained, c.tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:3] + ['{"iter": 3, "tra\n'] + lines[3:]))
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--max_iters=32"], \
        ["metrics.jsonl, line 4, is not a row", "move it away"]


def hf_folder(c, residual="gd"):
    """The trained run exported by convert.py --to=hf (the char tokenizer), in c.tmp_path/hf."""
    out, _ = c.trained(residual)
    r = _run_here("convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={c.tmp_path / 'hf'}")
    assert r.returncode == 0, r.stderr
    return c.tmp_path / "hf"


def case_hf_config_that_does_not_fit_the_weights(c):
    folder = hf_folder(c, "nesterov")
    config = json.loads((folder / "config.json").read_text())
    config["gpt_config"]["n_layer"] = 10 ** 7  # built before the weights were compared, this took hours of CPU
    (folder / "config.json").write_text(json.dumps(config))
    return ["sample.py", f"--init_from={folder}", "--device=cpu"], \
        ["n_layer=10000000, but the weights hold 2 layers"]


def case_hf_weights_not_float(c):
    from safetensors.torch import load_file, save_file
    folder = hf_folder(c)
    weights = load_file(folder / "model.safetensors")
    weights["transformer.h.0.attn.c_attn.weight"] = weights["transformer.h.0.attn.c_attn.weight"].to(torch.int32)
    save_file(weights, folder / "model.safetensors")
    return ["sample.py", f"--init_from={folder}", "--device=cpu"], \
        ["must be floating-point tensors", "transformer.h.0.attn.c_attn.weight is torch.int32"]


def case_hf_tokenizer_that_does_not_fit(c):
    import convert
    folder = hf_folder(c)  # a model of 128 tokens; GPT-2's tokenizer has 50257
    convert.hf_tokenizer({}, 32).backend_tokenizer.save(str(folder / "tokenizer.json"))
    return ["sample.py", f"--init_from={folder}", "--device=cpu"], \
        ["vocabulary of 128 tokens but its tokenizer", "tokenizer.json) has 50257", "do not belong together"]


def case_hf_dir_not_empty(c):
    out, _ = c.trained("gd")
    (c.tmp_path / "hf").mkdir()
    (c.tmp_path / "hf" / "notes.txt").write_text("mine")
    return ["convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={c.tmp_path / 'hf'}"], \
        ["is not empty (it holds notes.txt)", "--overwrite=True"]


def case_hf_dir_is_a_run(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["convert.py", "--to=hf", f"--out_dir={run}", f"--hf_dir={run}", "--overwrite=True"], \
        ["holds a training run", "would hide", "another --hf_dir"]


def case_disk_full_during_convert(c):
    import safetensors.torch
    folder = hf_folder(c)  # an earlier export, replaced with --overwrite=True: it must survive the failure

    def save_file(tensors, path, *a, **k):
        open(path, "wb").write(b"part of the weights")
        raise OSError(errno.ENOSPC, "No space left on device")
    c.monkeypatch.setattr(safetensors.torch, "save_file", save_file)
    out, _ = c.trained("gd")
    return ["convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={folder}", "--overwrite=True"], \
        ["could not write the folder (No space left on device)", "is as it was"]


def case_preemption_bench_into_a_used_folder(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["bench/preemption.py", f"--out_dir={run}"], ["is not an empty folder", "a folder of its own"]


def case_nan_loss(c):
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--max_iters=60", "--eval_interval=5",
            "--learning_rate=1e30", "--warmup_iters=0", "--lr_decay_iters=60"], ["diverged", "learning_rate"]


CASES = {name.removeprefix("case_"): f for name, f in globals().items() if name.startswith("case_")}


class Context:
    def __init__(self, trained, tiny_data, tmp_path, monkeypatch=None):
        self.trained, self.tiny_data, self.tmp_path, self.monkeypatch = trained, tiny_data, tmp_path, monkeypatch
        # an out_dir of the test's own, not the repo's out/ (a case that names one overrides it: the last wins)
        self.tiny = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'out'}"]


def snapshot(folder):
    """Every file's bytes, but metrics.jsonl, which a resumed run may rewrite from its iteration on (unless it is
    damaged: then it is refused as it is)."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and (p.name != "metrics.jsonl" or b'"tra\n' in p.read_bytes())}


@pytest.mark.parametrize("case", CASES)
def test_bad_input(case, trained, tiny_data, tmp_path, run_here, monkeypatch):
    """In this process (the scripts run as they would in their own; test_debug_shows_the_traceback and
    test_configurator's usage errors check real processes)."""
    c = Context(trained, tiny_data, tmp_path, monkeypatch)
    (script, *args), needles = CASES[case](c)
    before = snapshot(tmp_path)
    r = run_here(script, *args)
    one_sentence_error(r, *needles)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing existing changed
    assert not [k for k in after if k not in before and k.suffix in (".pt", ".tmp")]  # no new checkpoint files
    assert not [k for k in after if k not in before and k.name == "config.json"]  # nor a Hugging Face folder
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]  # convert.py's unfinished folder went


def test_debug_shows_the_traceback(trained, tiny_data, tmp_path, run_script):
    (script, *args), needles = case_truncated_checkpoint(Context(trained, tiny_data, tmp_path))
    r = run_script(script, *args, "--debug=True")
    assert r.returncode == 1 and "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: could not resume")


def test_readme_lists_the_catalogue():
    section = (REPO / "README.md").read_text().split("## When something goes wrong")[1].split("\n## ")[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))
    assert listed == set(CASES)
