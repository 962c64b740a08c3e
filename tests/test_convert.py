"""convert.py: Hugging Face folders out and back in (transformers' logits equal ours for every residual and splitting,
a round trip is exact, lm-eval's own hf backend scores as eval.py), and the reproduction's state dicts in."""
import dataclasses
import json

import pytest
import torch
from torch.nn import functional as F

import convert
from conftest import TINY
from model import GPT, GPTConfig
from test_eval import ARC_NESTED, HELLASWAG, flat, write_jsonl
from test_train import metrics
from tokenizer import get_codec, get_gpt2_encoding

transformers = pytest.importorskip("transformers")

VARIANTS = [  # (residual, splitting, other GPTConfig options)
    ("gd", "lie_trotter", dict(bias=False)), ("gd", "lie_trotter", dict(bias=True)), ("gd", "euler", {}),
    ("polyak", "lie_trotter", {}), ("nesterov", "lie_trotter", {}), ("nesterov", "lie_trotter", dict(v0="zero")),
    ("nesterov", "euler", dict(bias=True)), ("nesterov", "verlet", {}), ("nesterov", "imex", dict(imex_iters=2)),
    ("polyak", "lie_trotter", dict(velocity_norm=False, v0="wte")),
    ("gd", "lie_trotter", dict(untied_input=True)), ("nesterov", "lie_trotter", dict(untied_input=True)),
]


def random_model(residual, splitting, vocab_size=50304, **options):
    """A small model whose every weight matters: biases, norm gains and scalars moved off their initial values, and
    matrices 10x GPT's init, so that activations reach the range where, e.g., GELU's tanh approximation differs."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=32, vocab_size=vocab_size, residual=residual,
                       splitting=splitting, **{"bias": False, **options})
    model = GPT(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2:
                p.add_(torch.randn_like(p) * 0.3)
            else:
                p.mul_(10)
    return model


def as_checkpoint(model, **extra):
    return {"model": model.state_dict(), "model_args": dataclasses.asdict(model.config), "iter_num": 7,
            "best_val_loss": 3.25, "config": {}, **extra}


@pytest.mark.parametrize("residual,splitting,options", VARIANTS,
                         ids=[f"{r}-{s}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for r, s, o in VARIANTS])
def test_transformers_gives_our_logits_and_the_round_trip_is_exact(tmp_path, residual, splitting, options):
    from transformers import AutoModelForCausalLM
    ours = random_model(residual, splitting, **options)
    convert.export_hf(as_checkpoint(ours), tmp_path, {})
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path, trust_remote_code=True).eval()
    # plain GPT is transformers' own GPT-2, no remote code; every other variant is ours through auto_map
    assert type(theirs).__name__ == ("GPT2LMHeadModel" if (residual, splitting) == ("gd", "lie_trotter")
                                     else "YuriiFormerForCausalLM")
    assert (tmp_path / "modeling_yuriiformer.py").exists() == (type(theirs).__name__ != "GPT2LMHeadModel")
    idx = torch.randint(0, 50257, (2, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(theirs(idx).logits, ours.lm_head(ours.features(idx)), rtol=1e-5, atol=1e-5)
    # greedy generate(): transformers' loop over its model, ours over ours (top_k=1 is greedy)
    with torch.no_grad():
        torch.testing.assert_close(theirs.generate(idx[:1, :6], max_new_tokens=8, do_sample=False),
                                   ours.generate(idx[:1, :6], 8, top_k=1))
    back = GPT.from_pretrained(str(tmp_path))
    assert back.config == ours.config
    assert back.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(back.state_dict()[k], v) for k, v in ours.state_dict().items())
    assert back.transformer.wte.weight is back.lm_head.weight  # still tied (the head; untied_input's xte apart)


def test_convert_cli_on_a_character_level_run(trained, tiny_data, tmp_path, run_here):
    """A trained char run through the command line: the folder's files, a tokenizer that transformers loads and
    that encodes as ours, a model card with the run's figures, and sample.py reading the folder."""
    from transformers import AutoTokenizer
    out, _ = trained("gd")
    hf_dir = tmp_path / "hf"
    r = run_here("convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={hf_dir}", "--hub_id=someone/tiny-gpt")
    assert r.returncode == 0, r.stderr
    assert "huggingface-cli upload" in r.stdout
    assert {p.name for p in hf_dir.iterdir()} >= {"config.json", "model.safetensors", "generation_config.json",
                                                  "tokenizer.json", "tokenizer_config.json", "README.md", "loss.png"}
    text = "Once upon a time, Tom saw a big dog.\n<|endoftext|>The end!"
    encode, decode = get_codec(tiny_data)
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    assert tokenizer(text)["input_ids"] == encode(text)
    assert tokenizer.decode(encode(text)) == text
    ours_encode, ours_decode, eot, vocab = convert.hf_codec(str(hf_dir))  # what sample.py and eval.py read
    assert ours_encode(text) == encode(text) and ours_decode(encode(text)) == text
    assert eot == 0 and vocab == len(json.loads((tiny_data / "meta.json").read_text())["chars"])
    best = torch.load(out / "best.pt", weights_only=True)
    card = (hf_dir / "README.md").read_text()
    assert f"{best['best_val_loss']:.4f}" in card and f"trained: {best['iter_num']} iterations" in card
    assert "AutoModelForCausalLM.from_pretrained('someone/tiny-gpt')" in card and "characters" in card
    assert json.loads((hf_dir / "generation_config.json").read_text())["eos_token_id"] == 0  # id 0 ends a story
    r = run_here("sample.py", f"--init_from={hf_dir}", "--num_samples=1", "--max_new_tokens=30", "--start=Once")
    assert r.returncode == 0, r.stderr
    sample = r.stdout.split("---")[0].splitlines()[-1]  # after the parameter count
    assert sample.startswith("Once") and len(sample) > 20, r.stdout


def test_lm_eval_hf_backend_scores_as_eval_py(trained, tmp_path, run_here):
    """lm-eval's own `hf` backend on an exported YuriiFormer folder (transformers, remote code, the folder's GPT-2
    tokenizer) against eval.py's adapter on the checkpoint it came from: the same local task files, few-shot draws
    and metrics."""
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    import eval as ev
    out, _ = trained("nesterov", bpe=True)
    hf_dir = tmp_path / "hf"
    assert run_here("convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={hf_dir}").returncode == 0
    files = {"hellaswag": write_jsonl(tmp_path / "hs.jsonl", HELLASWAG),
             "arc_easy": write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED])}
    num_fewshot = {"hellaswag": 1, "arc_easy": 1}
    lm, _ = ev.load_model(str(out / "best.pt"))
    (tmp_path / "ours").mkdir()
    ours = ev.run_downstream(lm, str(tmp_path / "ours"), list(files), files=files, num_fewshot=num_fewshot)
    hflm = HFLM(pretrained=str(hf_dir), trust_remote_code=True, device="cpu", batch_size=1)
    task_manager = ev._task_manager(tuple(files))
    for record in ours:
        task = record["task"]
        out_hf = lm_eval.simple_evaluate(hflm, tasks=[ev.task_spec(task_manager, task, files[task])],
                                         num_fewshot=num_fewshot[task], task_manager=task_manager, log_samples=False,
                                         random_seed=1234, numpy_random_seed=1234, torch_random_seed=1234,
                                         fewshot_random_seed=1234)
        theirs = out_hf["results"][task]
        for metric in ("acc", "acc_norm"):
            assert record[metric] == pytest.approx(theirs[metric + ",none"], abs=1e-12), (task, metric)
    # eval.py reads the folder too, and scores it as the checkpoint
    # (its command line in this process: a run_here would index lm-eval's tasks again, ~5 s)
    ev.main([f"--init_from={hf_dir}", f"--out_dir={tmp_path / 'via-folder'}", "--tasks=arc_easy", "--num_fewshot=1",
             f"--arc_easy_file={files['arc_easy']}"])
    via_folder = json.loads((tmp_path / "via-folder" / "eval.json").read_text())[0]
    assert via_folder["acc"] == ours[1]["acc"] and via_folder["acc_norm"] == ours[1]["acc_norm"]


def test_train_fine_tunes_from_a_folder_or_a_run(trained, tiny_data, tmp_path, run_here):
    """--init_from=DIR starts a fresh run from the folder's weights: its first eval equals the source's best val loss
    on the same eval windows; another run's out_dir works the same way (its best.pt)."""
    out, _ = trained("nesterov")
    hf_dir = tmp_path / "hf"
    assert run_here("convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={hf_dir}").returncode == 0
    best = torch.load(out / "best.pt", weights_only=True)["best_val_loss"]
    for source in (hf_dir, out):
        run = tmp_path / f"tuned-{source.name}"
        r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={run}", f"--init_from={source}",
                     "--max_iters=2", "--eval_interval=2")
        assert r.returncode == 0, r.stderr
        first = next(row for row in metrics(run) if row["val_loss"] is not None)
        assert first["iter"] == 0 and first["val_loss"] == pytest.approx(best, abs=1e-6)
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'x'}",
                 f"--init_from={tmp_path / 'empty'}", "--max_iters=1")
    assert r.returncode == 1 and "init_from" in r.stderr and "Traceback" not in r.stderr


def test_code_in_a_model_folder_never_runs(trained, tiny_data, tmp_path, run_here):
    """A downloaded folder is data: code planted in its modeling_yuriiformer.py and model.py (git clone and
    huggingface-cli download bring them) runs through none of our scripts; transformers runs it when the user says
    trust_remote_code=True, which shows that the plant works."""
    from transformers import AutoModelForCausalLM
    out, _ = trained("nesterov")
    folder = tmp_path / "planted"  # a name of its own: transformers caches remote code by the folder's name
    assert run_here("convert.py", "--to=hf", f"--out_dir={out}", f"--hf_dir={folder}").returncode == 0
    ran = tmp_path / "ran"
    for name in ("modeling_yuriiformer.py", "model.py"):
        with open(folder / name, "a") as f:
            f.write(f"\nopen({str(ran)!r}, 'a').write('{name}\\n')\n")
    arc = write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED])
    runs = {
        "sample.py": ["sample.py", f"--init_from={folder}", "--num_samples=1", "--max_new_tokens=5", "--start=Once"],
        "eval.py": ["eval.py", f"--init_from={folder}", f"--out_dir={tmp_path / 'eval'}", "--tasks=arc_easy",
                    f"--arc_easy_file={arc}", "--num_fewshot=0"],
        "train.py": ["train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={tmp_path / 'tuned'}",
                     f"--init_from={folder}", "--max_iters=1", "--eval_interval=1"],
        "convert.py": ["convert.py", "--to=hf", f"--out_dir={tmp_path / 'tuned'}", f"--hf_dir={tmp_path / 'again'}"],
    }
    for script, args in runs.items():
        r = run_here(*args)
        assert r.returncode == 0, (script, r.stderr)
        assert not ran.exists(), f"{script} ran the folder's code"
    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    assert sorted(ran.read_text().split()) == ["model.py", "modeling_yuriiformer.py"]


def test_overwrite_replaces_an_earlier_export(trained, tmp_path, run_here):
    """--overwrite=True into a folder of an earlier export: its files are replaced, those this export does not write
    (a YuriiFormer's model.py under a GPT, a sharded save's index) go, a file of the user's stays."""
    hf_dir = tmp_path / "hf"
    assert run_here("convert.py", "--to=hf", f"--out_dir={trained('nesterov')[0]}", f"--hf_dir={hf_dir}").returncode == 0
    (hf_dir / "model.safetensors.index.json").write_text('{"weight_map": {}}')
    (hf_dir / "notes.txt").write_text("mine")
    gpt, _ = trained("gd")
    r = run_here("convert.py", "--to=hf", f"--out_dir={gpt}", f"--hf_dir={hf_dir}", "--overwrite=True")
    assert r.returncode == 0, r.stderr
    names = {p.name for p in hf_dir.iterdir()}
    assert not names & {"model.py", "modeling_yuriiformer.py", "model.safetensors.index.json"}
    assert {"config.json", "model.safetensors", "tokenizer.json", "notes.txt"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".hf.")]
    model = convert.load_hf(str(hf_dir))
    best = torch.load(gpt / "best.pt", weights_only=True)["model"]
    assert model.config.residual == "gd" and all(torch.equal(model.state_dict()[k], v) for k, v in best.items())


def test_half_precision_weights_in_a_folder_are_upcast(trained, tmp_path, run_here):
    """bf16 weights (common on the Hub) load, as float32, with a note."""
    from safetensors.torch import load_file, save_file
    hf_dir = tmp_path / "hf"
    assert run_here("convert.py", "--to=hf", f"--out_dir={trained('gd')[0]}", f"--hf_dir={hf_dir}").returncode == 0
    exact = convert.load_hf(str(hf_dir)).state_dict()
    weights = load_file(hf_dir / "model.safetensors")
    save_file({k: v.to(torch.bfloat16) for k, v in weights.items()}, hf_dir / "model.safetensors")
    r = run_here("sample.py", f"--init_from={hf_dir}", "--num_samples=1", "--max_new_tokens=5", "--start=Once")
    assert r.returncode == 0, r.stderr
    assert "note: the weights are torch.bfloat16; they are converted to float32" in r.stdout
    upcast = convert.load_hf(str(hf_dir)).state_dict()
    assert all(upcast[k].dtype == torch.float32 and torch.equal(upcast[k], v.to(torch.bfloat16).float())
               for k, v in exact.items())


# -----------------------------------------------------------------------------
# the reproduction's layout

def reproduction_state_dict(n_layer=2, n_embd=16, vocab_size=50304, block_size=32):
    """Random weights in the reproduction's layout (scalars saved with shape (1,), as nn.Parameter(torch.zeros(1)))."""
    g = torch.Generator().manual_seed(3)

    def rand(*shape, scale=0.1, offset=0.0):
        return torch.randn(*shape, generator=g) * scale + offset
    sd = {"tok_emb.weight": rand(vocab_size, n_embd), "pos_emb.weight": rand(block_size, n_embd),
          "vel_tok_emb.weight": rand(vocab_size, n_embd), "vel_pos_emb.weight": rand(block_size, n_embd),
          "final_ln.weight": rand(n_embd, offset=1.0)}
    for i in range(n_layer):
        layer = {"ln_attn.weight": rand(n_embd, offset=1.0), "attn.qkv_proj.weight": rand(3 * n_embd, n_embd),
                 "attn.out_proj.weight": rand(n_embd, n_embd), "ln_mlp.weight": rand(n_embd, offset=1.0),
                 "mlp.w1.weight": rand(4 * n_embd, n_embd), "mlp.w2.weight": rand(n_embd, 4 * n_embd),
                 "ln_v_attn.weight": rand(n_embd, offset=1.0), "ln_v_mlp.weight": rand(n_embd, offset=1.0)}
        layer.update({f"{s}_{o}_raw": rand(1, scale=1.0) for s in ("mu", "beta", "gamma") for o in ("attn", "mlp")})
        sd.update({f"layers.{i}.{k}": v for k, v in layer.items()})
    return sd


def reproduction_logits(sd, n_head, idx):
    """The paper's YuriiFormer written from its equations over the reproduction's names, apart from model.py."""
    d, t = sd["tok_emb.weight"].shape[1], idx.shape[1]
    n_layer = len({k.split(".")[1] for k in sd if k.startswith("layers.")})

    def norm(h, weight):
        return F.layer_norm(h, (d,), weight)

    def attention(h, p):
        q, k, v = (z.view(*h.shape[:2], n_head, -1).transpose(1, 2)
                   for z in F.linear(h, sd[p + "attn.qkv_proj.weight"]).split(d, dim=-1))
        scores = (q @ k.transpose(-1, -2)) / (d // n_head) ** 0.5
        scores = scores.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        return F.linear((scores.softmax(-1) @ v).transpose(1, 2).reshape(h.shape), sd[p + "attn.out_proj.weight"])

    def mlp(h, p):
        return F.linear(F.gelu(F.linear(h, sd[p + "mlp.w1.weight"])), sd[p + "mlp.w2.weight"])

    x = sd["tok_emb.weight"][idx] + sd["pos_emb.weight"][:t]
    v = sd["vel_tok_emb.weight"][idx] + sd["vel_pos_emb.weight"][:t]
    for i in range(n_layer):
        p = f"layers.{i}."
        for name, oracle, ln in (("attn", attention, "ln_attn"), ("mlp", mlp, "ln_mlp")):
            mu, beta = torch.sigmoid(sd[p + f"mu_{name}_raw"]), torch.sigmoid(sd[p + f"beta_{name}_raw"])
            gamma = F.softplus(sd[p + f"gamma_{name}_raw"])
            lookahead = x + mu * v
            v = norm(beta * v + gamma * oracle(norm(lookahead, sd[p + ln + ".weight"]), p),
                     sd[p + f"ln_v_{name}.weight"])
            x = x + v
    return F.linear(norm(x, sd["final_ln.weight"]), sd["tok_emb.weight"])


def test_reproduction_state_dict_becomes_our_model(tmp_path, run_here, bpe_data):
    sd = reproduction_state_dict()
    torch.save(sd, tmp_path / "yuriiformer.pt")
    out = tmp_path / "out"
    r = run_here("convert.py", "--from=reproduction", f"--state_dict={tmp_path / 'yuriiformer.pt'}", "--n_head=2",
                 f"--out_dir={out}")
    assert r.returncode == 0, r.stderr
    checkpoint = torch.load(out / "best.pt", weights_only=True)
    model = GPT.from_checkpoint(checkpoint).eval()
    assert (model.config.residual, model.config.splitting, model.config.n_layer, model.config.bias) == \
        ("nesterov", "lie_trotter", 2, False)
    idx = torch.randint(0, 50257, (2, 32), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(model.lm_head(model.features(idx)), reproduction_logits(sd, 2, idx),
                                   rtol=1e-5, atol=1e-5)
    # sample.py reads it (GPT-2 BPE), train.py fine-tunes from it
    r = run_here("sample.py", f"--out_dir={out}", "--num_samples=1", "--max_new_tokens=5", "--start=Hello")
    assert r.returncode == 0 and "\nHello" in r.stdout, r.stderr
    r = run_here("train.py", *TINY, "--n_embd=16", f"--dataset={bpe_data}", f"--out_dir={tmp_path / 'tuned'}",
                 f"--init_from={out}", "--max_iters=1", "--eval_interval=1", "--eval_iters=1")  # the source's width
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("change,args,words", [
    (lambda sd: sd, ["--n_head=3"], "does not divide the width 16"),
    (lambda sd: {k: v for k, v in sd.items() if k != "layers.1.ln_v_mlp.weight"}, ["--n_head=2"],
     "has no layers.1.ln_v_mlp.weight"),
    (lambda sd: {**sd, "layers.0.attn.qkv_proj.bias": torch.zeros(48)}, ["--n_head=2"], "does not place"),
    (lambda sd: {k: v for k, v in sd.items() if k != "tok_emb.weight"}, ["--n_head=2"], "has no tok_emb.weight"),
    (lambda sd: {**sd, "layers.0.mlp.w1.weight": torch.zeros(32, 16)}, ["--n_head=2"], "do not fit"),
])
def test_reproduction_files_that_do_not_fit_are_refused(tmp_path, run_here, change, args, words):
    torch.save(change(reproduction_state_dict(vocab_size=64)), tmp_path / "sd.pt")
    r = run_here("convert.py", "--from=reproduction", f"--state_dict={tmp_path / 'sd.pt'}", *args,
                 f"--out_dir={tmp_path / 'out'}")
    assert r.returncode == 1 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_bad_input(tmp_path, run_here):
    r = run_here("convert.py", "--to=hf", f"--out_dir={tmp_path}")
    assert r.returncode == 1 and "--hf_dir" in r.stderr
    r = run_here("convert.py", "--to=hf", f"--out_dir={tmp_path}", f"--hf_dir={tmp_path / 'hf'}")
    assert r.returncode == 1 and "no checkpoint" in r.stderr
    r = run_here("convert.py", f"--out_dir={tmp_path}")
    assert r.returncode == 1 and "say what to convert" in r.stderr
    # a folder of another architecture, and one whose bias-free config holds biases
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(1)}, tmp_path / "llama" / "model.safetensors")
    with pytest.raises(convert.ConvertError, match="'llama' model"):
        GPT.from_pretrained(str(tmp_path / "llama"))
    model = random_model("gd", "lie_trotter")
    convert.export_hf(as_checkpoint(model), tmp_path / "gpt", {})
    weights = convert.read_hf(str(tmp_path / "gpt"))[1]
    weights["transformer.h.0.ln_1.bias"] += 1
    save_file(weights, tmp_path / "gpt" / "model.safetensors")
    with pytest.raises(convert.ConvertError, match="non-zero biases"):
        GPT.from_pretrained(str(tmp_path / "gpt"))
    # a checkpoint whose dataset (hence tokenizer) is not here, and whose vocabulary is not GPT-2's
    torch.save(as_checkpoint(random_model("gd", "lie_trotter", vocab_size=128), config={"dataset": "/nowhere"}),
               tmp_path / "ckpt.pt")
    r = run_here("convert.py", "--to=hf", f"--out_dir={tmp_path}", f"--hf_dir={tmp_path / 'hf2'}")
    assert r.returncode == 1 and "--dataset=" in r.stderr and not (tmp_path / "hf2").exists()


def test_gpt2_tokenizer_in_the_folder_is_gpt2s(tmp_path):
    from transformers import AutoTokenizer
    convert.export_hf(as_checkpoint(random_model("gd", "lie_trotter")), tmp_path, {})
    text = "Hello world<|endoftext|>Hi  there\n\n ünï 😀"
    tokenizer = AutoTokenizer.from_pretrained(tmp_path)
    assert tokenizer(text)["input_ids"] == get_gpt2_encoding().encode(text, allowed_special={"<|endoftext|>"})
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    encode, decode, eot, vocab = convert.hf_codec(str(tmp_path))  # tokenizer.json read as data, as transformers
    assert encode(text) == tokenizer(text)["input_ids"] and decode(encode(text) + [50300]) == text
    assert (eot, vocab) == (50256, 50257)
