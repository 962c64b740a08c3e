"""The code paths a GPU run takes, run on CPU on a tiny model: torch.compile (train, save, resume, sample with the
KV cache), bf16 autocast, fp16 autocast with the GradScaler and Muon + AdamW, and the full-logits loss (on CUDA the
model never takes the chunked head). With TEST_DEVICE=cuda (bench/gpu_check.py) they run on the GPU instead.
The scripts run in this process (run_here): what is checked is what they compute, not their process."""
import contextlib
import json
import os

import pytest
import torch
import torch._dynamo.utils

import model
from checkpoints import load_model
from conftest import TINY
from model import GPT, GPTConfig
from test_train import metrics
from tokenizer import get_codec

DEVICE = os.environ.get("TEST_DEVICE", "cpu")
# float32 runs as TF32 on CUDA: looser agreement there
TOL = 1e-4 if DEVICE == "cpu" else 2e-2


@contextlib.contextmanager
def chunked_head_calls():
    """Count the losses that go through model.ChunkedHeadLoss meanwhile: yields a list holding the count."""
    calls, apply = [0], model.ChunkedHeadLoss.apply

    def counted(*args):
        calls[0] += 1
        return apply(*args)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(model.ChunkedHeadLoss, "apply", counted)
        yield calls


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches and counters emptied before and after a test, as in a process of its own."""
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    yield torch._dynamo.utils.counters
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()


def train_args(tiny_data, out_dir, *extra):
    return [*TINY, f"--device={DEVICE}", f"--dataset={tiny_data}", f"--out_dir={out_dir}", "--residual=nesterov",
            "--max_iters=6", "--eval_interval=2", "--compile=False", "--dtype=float32", *extra]


def close(a, b, rel):
    """The losses and learning rates of two runs, logged at the same iterations, agree to rel."""
    assert [r["iter"] for r in a] == [r["iter"] for r in b]
    for x, y in zip(a, b):
        for key in ("train_loss", "val_loss", "lr"):
            assert (x[key] is None) == (y[key] is None)
            if x[key] is not None:
                assert x[key] == pytest.approx(y[key], rel=rel), (key, x, y)


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory, run_here):
    """6 eager float32 iterations, with the loss through the chunked head (on CPU): what the other paths match."""
    out = tmp_path_factory.mktemp("reference")
    with chunked_head_calls() as calls:
        r = run_here("train.py", *train_args(tiny_data, out))
    assert r.returncode == 0, r.stderr
    assert (calls[0] > 0) == (DEVICE == "cpu")
    return metrics(out)


def test_full_logits_loss_equals_chunked_head(reference, tiny_data, tmp_path, run_here):
    with chunked_head_calls() as calls:
        r = run_here("train.py", *train_args(tiny_data, tmp_path, "--chunked_head=False", "--peak_flops=2e9"))
    assert r.returncode == 0, r.stderr
    assert "MFU is against a peak of 0.002 TFLOP/s: set by peak_flops" in r.stdout
    assert calls[0] == 0
    close(metrics(tmp_path), reference, rel=TOL)


def test_chunked_head_gradients_equal_full_logits():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=300, residual="nesterov"))
    x, y = torch.randint(300, (2, 3, 16))
    y[0, :5] = -1  # ignored targets
    grads = []
    for return_logits in (False, True):
        model.zero_grad()
        _, loss = model(x, y, return_logits=return_logits)
        loss.backward()
        grads.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
    (chunked, chunked_grads), (full, full_grads) = grads
    assert chunked == pytest.approx(full, rel=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(chunked_grads, full_grads))


def test_compiled_train_save_resume_sample(reference, tiny_data, tmp_path, run_here, fresh_dynamo):
    """compile=True with the full-logits loss, as on CUDA: 4 iterations in one graph without a graph break (train.py's
    compile.json), saved, resumed to 6, with the eager run's losses; then sample.py --compile=True writes 50 tokens through the KV cache (past block_size=32, so the cache
    refills once) with a few graphs and no graph break, greedily the same text as the eager model."""
    args = train_args(tiny_data, tmp_path, "--compile=True", "--chunked_head=False")
    r = run_here("train.py", *args, "--max_iters=4")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "compile.json").read_text())  # the first training step's, from train.py
    assert report["graph_breaks"] == 0 and report["break_reasons"] == {} and report["graphs"] == 1, report
    assert report["torch"] == torch.__version__
    assert "torch.compile of the training step: 1 graph(s), 0 graph break(s)" in r.stdout
    ckpt = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True)
    assert ckpt["iter_num"] == 4 and not any(k.startswith("_orig_mod.") for k in ckpt["model"])
    torch._dynamo.reset()  # the resumed run compiles anew, as in a process of its own
    r = run_here("train.py", *args, "--init_from=resume")
    assert r.returncode == 0, r.stderr
    close(metrics(tmp_path), reference, rel=TOL)

    prompt = "Once upon a time"
    torch._dynamo.reset()
    fresh_dynamo.clear()  # what torch.compile does in sample.py alone
    r = run_here("sample.py", f"--out_dir={tmp_path}", "--compile=True", f"--device={DEVICE}", f"--start={prompt}",
                 "--num_samples=1", "--max_new_tokens=50", "--top_k=1", "--dtype=float32")
    assert r.returncode == 0, r.stderr
    dynamo = {"frames": dict(fresh_dynamo["frames"]), "graphs": fresh_dynamo["stats"]["unique_graphs"],
              "graph_breaks": sum(fresh_dynamo["graph_break"].values())}
    # one graph for the prompt, one for each next token; the refill at block_size reuses the prompt's
    assert dynamo["graph_breaks"] == 0 and dynamo["frames"]["ok"] == dynamo["frames"]["total"] > 0, dynamo
    assert 0 < dynamo["graphs"] <= 3, dynamo
    encode, decode = get_codec(tiny_data)
    sample = r.stdout.split("\n", 1)[1]
    assert sample.startswith(prompt) and len(sample) >= len(prompt) + 50  # every token decodes to a character or more
    if DEVICE == "cpu":  # TF32 on CUDA may flip a near tie of this barely trained model
        model = load_model(str(tmp_path / "best.pt"))[0].eval()
        eager = decode(model.generate(torch.tensor([encode(prompt)]), 50, top_k=1)[0].tolist())
        assert sample == f"{eager}\n---------------\n"


def test_bf16_autocast(reference, tiny_data, tmp_path, run_here):
    r = run_here("train.py", *train_args(tiny_data, tmp_path, "--dtype=bfloat16"))
    assert r.returncode == 0, r.stderr
    if DEVICE == "cpu":  # MFU against the peak of the dtype trained in
        assert "TFLOP/s: measured with bfloat16 matmuls on cpu" in r.stdout
    close(metrics(tmp_path), reference, rel=2e-2)  # bfloat16 keeps 8 bits of mantissa


def test_fp16_autocast_with_grad_scaler_and_muon(tiny_data, tmp_path, run_here):
    """float16 needs the GradScaler: its first steps overflow at the initial scale (2^16) and are skipped while
    it lowers the scale; then Muon (block matrices) and AdamW (the rest) train. The scale is saved for resuming."""
    r = run_here("train.py", *train_args(tiny_data, tmp_path, "--dtype=float16", "--optimizer=muon",
                                           "--max_iters=10", "--eval_interval=10"))
    assert r.returncode == 0, r.stderr
    evals = [row["val_loss"] for row in metrics(tmp_path) if row["val_loss"] is not None]
    assert evals[-1] < evals[0] - 0.5, evals
    ckpt = torch.load(tmp_path / "ckpt.pt", map_location="cpu", weights_only=True)
    assert len(ckpt["optimizer"]) == 2 and ckpt["optimizer"][0]["state"]  # Muon's momentum buffers
    assert 0 < ckpt["scaler"]["scale"] <= 2.0 ** 16
