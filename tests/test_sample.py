import torch

from model import GPT, GPTConfig
from tokenizer import get_gpt2_encoding

SEP = "---------------"


def test_samples_from_trained_checkpoint(trained, run_here):
    out, _ = trained("nesterov", bpe=True)
    r = run_here("sample.py", f"--out_dir={out}", "--num_samples=2", "--max_new_tokens=20", "--device=cpu",
                   "--start=Once upon a time")
    assert r.returncode == 0, r.stderr
    samples = r.stdout.split("\n", 1)[1].split(SEP + "\n")  # after the model's parameter count
    assert len(samples) == 3 and samples[-1] == ""  # two samples, each followed by the dashes
    for s in samples[:2]:
        assert s.startswith("Once upon a time") and len(s.strip()) > len("Once upon a time") + 10


def test_nanogpt_checkpoint(tmp_path, run_here):
    """A checkpoint as nanoGPT's train.py writes it: model_args without our keys, a compiled model's
    '_orig_mod.' prefixes, maybe a causal-mask buffer. Greedy decoding (top_k=1) must give the text this exact model gives."""
    torch.manual_seed(0)
    model_args = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, bias=True, vocab_size=50304, dropout=0.0)
    model = GPT(GPTConfig(**model_args))
    model.eval()
    state_dict = dict(model.state_dict())
    for i in range(2):  # the causal-mask buffer nanoGPT keeps when torch has no flash attention
        state_dict[f"transformer.h.{i}.attn.bias"] = torch.tril(torch.ones(64, 64)).view(1, 1, 64, 64)
    torch.save({
        "model": {f"_orig_mod.{k}": v for k, v in state_dict.items()},
        "optimizer": torch.optim.AdamW(model.parameters()).state_dict(),
        "model_args": model_args,
        "iter_num": 5000,
        "best_val_loss": torch.tensor(1.47),
        "config": {"batch_size": 12, "dataset": "shakespeare", "compile": True},
    }, tmp_path / "ckpt.pt")
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("The cat sat on the")
    r = run_here("sample.py", f"--out_dir={tmp_path}", f"--start=FILE:{prompt}", "--num_samples=1",
                   "--max_new_tokens=12", "--top_k=1", "--device=cpu")
    assert r.returncode == 0, r.stderr
    enc = get_gpt2_encoding()
    x = torch.tensor([enc.encode("The cat sat on the")])
    expected = enc.decode(model.generate(x, 12, top_k=1)[0].tolist())
    assert r.stdout.endswith(f"{expected}\n{SEP}\n")


def test_errors(tmp_path, run_script, run_here):
    r = run_script("sample.py", f"--out_dir={tmp_path}")  # a process of its own: its real stderr and exit status
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip() == f"error: no checkpoint at {tmp_path / 'ckpt.pt'}: train one with train.py first, " \
                               f"or point --out_dir at its folder."
    (tmp_path / "ckpt.pt").write_bytes(b"garbage")
    r = run_here("sample.py", f"--out_dir={tmp_path}")
    assert r.returncode == 1 and "Traceback" not in r.stderr and "could not load" in r.stderr
    r = run_here("sample.py", f"--out_dir={tmp_path}", f"--start=FILE:{tmp_path / 'nope.txt'}")
    assert r.returncode == 1 and "does not exist" in r.stderr
