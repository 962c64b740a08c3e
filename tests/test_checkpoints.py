"""Best and latest checkpoints: ckpt.pt is the latest state (what resume reads), best.pt the weights of the best
val loss (what sample.py, eval.py and eval_downstream read); a resumed run takes the schedule it is given."""
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, TINY
from checkpoints import CheckpointError, checkpoint_path
from test_train import losses, metrics


def val_losses(out_dir):
    return {r["iter"]: r["val_loss"] for r in metrics(out_dir) if r["val_loss"] is not None}


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


def test_sigterm_after_an_eval_that_did_not_improve(tiny_data, tmp_path, run_here):
    """always_save_checkpoint=False, as every paper config. After the warmup (5 iters) the learning rate climbs to 10,
    so every val loss after iter 5's is worse; SIGTERM right after the eval at iter 15. best.pt must still hold iter
    5's weights (main wrote the stopped state over its only checkpoint), ckpt.pt the stopped state, and resuming
    from ckpt.pt must give the uninterrupted run's losses. The run that is signalled is a process of its own; the
    others run in this process."""
    args = [*TINY, f"--dataset={tiny_data}", "--max_iters=40", "--eval_interval=5", "--always_save_checkpoint=False",
            "--lr_decay_iters=10", "--min_lr=10"]
    full = tmp_path / "full"
    r = run_here("train.py", *args, f"--out_dir={full}", "--keep_checkpoints=5")
    assert r.returncode == 0, r.stderr
    evals = val_losses(full)
    assert evals[5] < evals[0] and evals[5] < min(evals[i] for i in range(10, 45, 5)), evals  # the schedule does its job
    # every saved state is kept as ckpt-<iter>.pt: at the eval that improved, and at the end
    assert sorted(p.name for p in full.glob("ckpt-*.pt")) == ["ckpt-00000005.pt", "ckpt-00000040.pt"]

    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "train.py", *args, f"--out_dir={run}"], cwd=REPO,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.time() + 120
    while p.poll() is None and time.time() < deadline:
        if (run / "metrics.jsonl").exists() and 15 in val_losses(run):
            break
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    stdout, stderr = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, stderr
    latest = torch.load(run / "ckpt.pt", map_location="cpu", weights_only=True)
    best = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert 15 < latest["iter_num"] < 40, stdout
    assert best["iter_num"] == 5 and best["best_val_loss"] == evals[5]
    assert "optimizer" not in best and "rng" not in best  # the weights and what describes them
    reference = weights(full / "ckpt-00000005.pt")  # the state the uninterrupted run saved at iter 5
    assert all(torch.equal(best["model"][k], reference[k]) for k in reference)
    assert not all(torch.equal(latest["model"][k], reference[k]) for k in reference)

    # sample.py reads best.pt by default
    r = run_here("sample.py", f"--out_dir={run}", "--num_samples=1", "--max_new_tokens=2", "--device=cpu")
    assert r.returncode == 0, r.stderr
    assert f"sampling from {run / 'best.pt'} (iter 5)" in r.stderr

    r = run_here("train.py", *args, f"--out_dir={run}", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert losses(run) == losses(full)
    for name, iter_num in (("ckpt.pt", 40), ("best.pt", 5)):  # as the uninterrupted run's
        assert torch.load(run / name, map_location="cpu", weights_only=True)["iter_num"] == iter_num
        assert all(torch.equal(a, b) for a, b in zip(weights(run / name).values(), weights(full / name).values()))


def sigterm_in_iteration(monkeypatch, stop_iter):
    """SIGTERM to this process in the first training forward of iteration stop_iter (TINY: 2 micro-batches an
    iteration), as a scheduler would send it: train.py then finishes that iteration, saves ckpt.pt at stop_iter + 1
    and exits."""
    import model
    forward, calls = model.GPT.forward, [0]

    def patched(self, idx, targets=None, **kw):
        if self.training:
            calls[0] += 1
            if calls[0] == 2 * stop_iter + 1:
                os.kill(os.getpid(), signal.SIGTERM)
        return forward(self, idx, targets, **kw)
    monkeypatch.setattr(model.GPT, "forward", patched)


@pytest.mark.parametrize("stop_iter", [4, 5], ids=["stop before an eval", "stop after an eval"])
def test_best_pt_after_a_stop_and_a_worse_resume(stop_iter, tiny_data, tmp_path, run_here, monkeypatch):
    """A stop in iteration 4 leaves ckpt.pt at iter 5, so the eval at 5 falls to the resumed run, at its first
    iteration (main skipped saving there: no best.pt at all, and sample.py read the worse final ckpt.pt); a stop in
    iteration 5 comes just after that eval. The resumed run's learning rate of 10 makes every later eval worse, so
    best.pt must hold iter 5's weights and val loss, and ckpt.pt record that loss as the best."""
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--max_iters=15", "--eval_interval=5",
            "--always_save_checkpoint=False"]
    with monkeypatch.context() as m:
        sigterm_in_iteration(m, stop_iter)
        r = run_here("train.py", *args)
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    assert torch.load(tmp_path / "ckpt.pt", weights_only=True)["iter_num"] == stop_iter + 1
    at_5 = weights(tmp_path / ("ckpt.pt" if stop_iter == 4 else "best.pt"))  # the weights evaluated at iter 5
    r = run_here("train.py", *args, "--init_from=resume", "--decay_lr=False", "--learning_rate=10")
    assert r.returncode == 0, r.stderr
    evals = val_losses(tmp_path)
    assert sorted(evals) == [0, 5, 10, 15] and evals[5] < min(evals[0], evals[10], evals[15]), evals
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["iter_num"] == 5 and best["best_val_loss"] == evals[5]
    assert all(torch.equal(best["model"][k], v) for k, v in at_5.items())
    latest = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert latest["iter_num"] == 15 and latest["best_val_loss"] == evals[5]
    r = run_here("sample.py", f"--out_dir={tmp_path}", "--num_samples=1", "--max_new_tokens=2", "--device=cpu")
    assert f"sampling from {tmp_path / 'best.pt'} (iter 5)" in r.stderr


def test_best_pt_is_written_before_ckpt_pt_records_its_loss(tiny_data, tmp_path, run_here, monkeypatch):
    """A failure between the two writes must not leave a ckpt.pt whose best_val_loss has no best.pt: a full disk
    at the second write of the eval at iter 5 (the first, at iter 0, writes best.pt alone)."""
    import checkpoints
    written, write = [], checkpoints.write_atomically

    def failing_second(obj, path):
        written.append(os.path.basename(path))
        if len(written) == 3:
            raise OSError(28, "No space left on device")
        write(obj, path)
    monkeypatch.setattr(checkpoints, "write_atomically", failing_second)
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--max_iters=10",
                 "--eval_interval=5")
    assert r.returncode == 1 and "No space left on device" in r.stderr
    assert written == ["best.pt", "best.pt", "ckpt.pt"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["iter_num"] == 5


def test_checkpoint_path(tmp_path):
    assert checkpoint_path(tmp_path) == str(tmp_path / "ckpt.pt")  # no best.pt (nanoGPT's runs): ckpt.pt
    (tmp_path / "best.pt").write_bytes(b"")
    assert checkpoint_path(tmp_path) == str(tmp_path / "best.pt")
    assert checkpoint_path(tmp_path, "latest") == str(tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match="checkpoint='last' is not one of 'best', 'latest'"):
        checkpoint_path(tmp_path, "last")


def muon_lrs(monkeypatch):
    """The learning rate of every Muon step from now on, in a list that grows as they are taken."""
    used, step = [], torch.optim.Muon.step

    def recorded(self, *args, **kwargs):
        used.append(float(self.param_groups[0]["lr"]))
        return step(self, *args, **kwargs)
    monkeypatch.setattr(torch.optim.Muon, "step", recorded)
    return used


def test_resume_takes_the_new_muon_lr(tiny_data, tmp_path, run_here, monkeypatch):
    """A checkpoint restores the optimizers' state, and used to restore Muon's old lr_scale (muon_lr /
    learning_rate) with it: --muon_lr on resuming did nothing. The rate Muon steps with must follow the new one."""
    args = [*TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path}", "--optimizer=muon", "--eval_interval=4"]
    used = muon_lrs(monkeypatch)
    r = run_here("train.py", *args, "--max_iters=4", "--muon_lr=0.02")
    assert r.returncode == 0, r.stderr
    assert used == pytest.approx([row["lr"] * 0.02 / 1e-2 for row in metrics(tmp_path) if row["val_loss"] is None])
    used.clear()
    r = run_here("train.py", *args, "--max_iters=8", "--muon_lr=0.005", "--init_from=resume")
    assert r.returncode == 0, r.stderr
    assert "resuming with settings that differ from the checkpoint's run: muon_lr 0.02 -> 0.005, max_iters 4 -> 8" \
        in r.stdout
    scheduled = [row["lr"] for row in metrics(tmp_path) if row["val_loss"] is None and row["iter"] >= 4]
    assert len(used) == len(scheduled) == 4
    assert used == pytest.approx([lr * 0.005 / 1e-2 for lr in scheduled])
