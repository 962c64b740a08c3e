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

from conftest import REPO, TINY
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
    """--overwrite=True deletes the earlier run's files (its kept copies and eval.json too, which the new run would
    not rewrite); without it, a folder holding only metrics.jsonl and loss.png (no checkpoint yet) is no run."""
    run = copy_run(trained, tmp_path)
    (run / "ckpt-00000030.pt").write_bytes(b"a kept copy")
    (run / "eval.json").write_text("[]")
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={run}", "--eval_iters=1", "--max_iters=2", "--eval_interval=2"]
    r = run_here("train.py", *args, "--overwrite=True")
    assert r.returncode == 0, r.stderr
    # the earlier run's loss.png went too (this run, --plot=False, draws none)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "ckpt.pt", "metrics.jsonl", "train.lock"]
    assert torch.load(run / "ckpt.pt", weights_only=True)["iter_num"] == 2
    assert [row["iter"] for row in metrics(run) if row["val_loss"] is not None] == [0, 2]
    for name in ("ckpt.pt", "best.pt"):
        (run / name).unlink()
    r = run_here("train.py", *args)
    assert r.returncode == 0, r.stderr


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
    run = copy_run(c.trained, c.tmp_path)
    return ["train.py", *c.tiny, f"--out_dir={run}", "--init_from=resume", "--block_size=64", "--max_iters=40"], \
        ["block_size=64 is longer than the 32 positions"]


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
    """Every file's bytes, but metrics.jsonl, which a resumed run may rewrite from its iteration on."""
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "metrics.jsonl"}


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


def test_debug_shows_the_traceback(trained, tiny_data, tmp_path, run_script):
    (script, *args), needles = case_truncated_checkpoint(Context(trained, tiny_data, tmp_path))
    r = run_script(script, *args, "--debug=True")
    assert r.returncode == 1 and "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: could not resume")


def test_readme_lists_the_catalogue():
    section = (REPO / "README.md").read_text().split("## When something goes wrong")[1].split("\n## ")[0]
    listed = set(re.findall(r"^\| `(\w+)` \|", section, flags=re.M))
    assert listed == set(CASES)
