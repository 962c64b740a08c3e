"""eval.py: lm-eval's multiple-choice scoring against fake models whose log-probabilities are known,
the HellaSwag and ARC prompt formats, few-shot contexts, left truncation, eval.json, and the CLI."""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import eval as ev
from model import GPT, GPTConfig

ROOT = Path(__file__).resolve().parents[1]


class TableLM(torch.nn.Module):
    """A fake language model: the next-token log-probabilities depend only on the current token,
    log P(next | current) = table[current, next]. It records every input it is given."""

    def __init__(self, probs):
        super().__init__()
        self.register_buffer("table", torch.log(probs))
        self.seen = []

    def forward(self, idx, targets=None):
        self.seen.append(idx.clone())
        return self.table[idx], None


V = 128
MERGE = "\x01"  # token 1 of the toy tokenizer below: the two characters "bb"


def toy_encode(text):
    """Characters as tokens, with one merge ("bb" is a single token), so that a choice's length in
    tokens differs from its length in characters."""
    return [ord(ch) for ch in text.replace("bb", MERGE)]


def unigram(probs_by_char):
    """Every position predicts the same distribution; characters not named share what is left."""
    p = torch.zeros(V, dtype=torch.float64)
    for ch, prob in probs_by_char.items():
        p[ord(ch)] = prob
    rest = [i for i in range(V) if p[i] == 0]
    p[rest] = (1 - p.sum()) / len(rest)
    return TableLM(p.expand(V, V).clone())


# P(" ") = 0.25, P("a") = 0.4, P("bb") = 0.09, whatever came before
LM = dict(zip(" a" + MERGE, (0.25, 0.4, 0.09)))


def test_sum_logprob_acc_and_acc_norm_by_hand():
    # " a": ln(0.25 * 0.4) = ln 0.1 = -2.303; " bb" (two tokens " ", "bb"): ln(0.25 * 0.09) = ln 0.0225 = -3.794
    scores = ev.loglikelihoods(unigram(LM), [(toy_encode("Q:"), toy_encode(" a")), (toy_encode("Q:"), toy_encode(" bb"))], 16)
    assert scores == pytest.approx([math.log(0.1), math.log(0.0225)])
    # acc picks "a" (larger sum). acc_norm divides by the choice's characters without the leading space:
    # -2.303 / 1 < -3.794 / 2 = -1.897, so it picks "bb". Dividing by characters with the space (2, 3) or
    # by tokens (1, 1 or 2, 2) would pick "a" again: only lm-eval's definition gets acc_norm = 1 here.
    example = {"context": "Q:", "choices": ["a", "bb"], "gold": 1}
    result = ev.evaluate(unigram(LM), [example], toy_encode, block_size=16)
    assert (result["acc"], result["acc_norm"]) == (0.0, 1.0)
    flipped = ev.evaluate(unigram(LM), [dict(example, gold=0)], toy_encode, block_size=16)
    assert (flipped["acc"], flipped["acc_norm"]) == (1.0, 0.0)


def test_evaluate_batches_means_and_stderr():
    # first: "a" wins both ways; second: acc picks "a", acc_norm "bb"; third: "aa" (ln 0.04 = -3.219,
    # per char -1.609) beats " bb" per char; sums: ln 0.04 > ln 0.0225, so both pick "aa"
    examples = [{"context": "x", "choices": ["a", "bb"], "gold": 0},
                {"context": "y", "choices": ["a", "bb"], "gold": 1},
                {"context": "z", "choices": ["bb", "aa", "a"], "gold": 1}]
    model = unigram(LM)
    result = ev.evaluate(model, examples, toy_encode, block_size=16, batch_size=2)
    assert len(model.seen) == 2 and model.seen[0].shape[0] == 4 and model.seen[1].shape[0] == 3
    # acc: argmax of sums is "a", "a", "a" -> hits 1, 0, 0. acc_norm: "a", "bb", "aa" -> hits 0, 1, 1
    assert result["n"] == 3
    assert result["acc"] == pytest.approx(1 / 3) and result["acc_norm"] == pytest.approx(2 / 3)
    assert result["acc_stderr"] == pytest.approx(math.sqrt((1 / 3) * (2 / 3) / 2))


def test_left_truncation_keeps_the_continuation_and_scores_the_right_positions():
    # bigram model: P(t + 1 | t) = 0.5, every other next token 0.5 / 127
    p = torch.full((V, V), 0.5 / (V - 1), dtype=torch.float64)
    p[torch.arange(V - 1), torch.arange(1, V)] = 0.5
    model = TableLM(p)
    context, continuation = list(range(1, 20)), [50, 51, 52]
    [score] = ev.loglikelihoods(model, [(context, continuation)], block_size=8)
    # the last block_size + 1 = 9 tokens of context + continuation; the model sees the first 8
    assert model.seen[0].tolist() == [[14, 15, 16, 17, 18, 19, 50, 51]]
    # 19 -> 50 is unlikely, 50 -> 51 and 51 -> 52 are likely
    assert score == pytest.approx(math.log(0.5 / 127) + 2 * math.log(0.5))
    # a context that fits is not cut, and a shorter row in the same batch is padded on the right
    model.seen.clear()
    scores = ev.loglikelihoods(model, [([1, 2, 3], [4, 5]), ([1, 2, 3, 4, 5, 6], [9])], block_size=8)
    assert model.seen[0].tolist() == [[1, 2, 3, 4, 0, 0], [1, 2, 3, 4, 5, 6]]
    assert scores == pytest.approx([2 * math.log(0.5), math.log(0.5 / 127)])
    with pytest.raises(ev.EvalError, match="block_size=8"):
        ev.loglikelihoods(model, [([1], list(range(9)))], block_size=8)


def tiny_gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**dict(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=64, dropout=0.0, **kw)))


@pytest.mark.parametrize("residual", ["gd", "nesterov"])
def test_real_model_scores_do_not_depend_on_batching(residual):
    model = tiny_gpt(residual=residual).eval()
    pairs = [([1, 2, 3, 4, 5], [6, 7]), ([9] * 40, [10, 11, 12]), ([3], [4])]
    batched = ev.loglikelihoods(model, pairs, 32)
    alone = [ev.loglikelihoods(model, [pair], 32)[0] for pair in pairs]
    assert batched == pytest.approx(alone, abs=1e-5)
    # and equal to the log-softmax of the model's own logits, computed here the long way
    logits, _ = model(torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([[1, 2, 3, 4, 5, 6]]))
    logp = torch.log_softmax(logits[0], dim=-1)
    assert batched[0] == pytest.approx((logp[4, 6] + logp[5, 7]).item(), abs=1e-5)


# -----------------------------------------------------------------------------
# formats, in each dataset's own jsonl layout (our own text)

HELLASWAG = [
    {"ind": 1, "activity_label": "Baking bread", "ctx_a": "A woman kneads dough on a table.",
     "ctx_b": "she", "ctx": "A woman kneads dough on a table. she",
     "endings": ["puts the dough in a bowl.", "flies away.", "paints the wall red.", "sings to the oven."],
     "label": 0, "split": "val"},
    {"ind": 2, "activity_label": "Home and Garden", "ctx_a": "[header] How to water a plant [title] Check the soil.",
     "ctx_b": "[step] if it", "ctx": "", "endings": ["is dry, water it. [substeps] Use a can.", "is a cat.",
                                                      "melts.", "is blue."],
     "label": "0", "split": "val"},
    {"ind": 3, "activity_label": "Running", "ctx_a": "Two men jog along a beach.", "ctx_b": "they",
     "ctx": "", "endings": ["stop to drink water.", "turn into birds.", "read a book.", "swim to the moon."],
     "label": 0, "split": "val"},
]
ARC_NESTED = [
    {"id": "q1", "question": {"stem": "Which object is a source of light?", "choices": [
        {"text": "a rock", "label": "A"}, {"text": "the Sun", "label": "B"}, {"text": "a spoon", "label": "C"}]},
     "answerKey": "B"},
    {"id": "q2", "question": {"stem": "What do plants need to make food?", "choices": [
        {"text": "sand", "label": "1"}, {"text": "music", "label": "2"}, {"text": "sunlight", "label": "3"},
        {"text": "plastic", "label": "4"}]}, "answerKey": "3"},
    {"id": "q3", "question": {"stem": "Water freezes at what temperature in Celsius?", "choices": [
        {"text": "0 degrees", "label": "A"}, {"text": "50 degrees", "label": "B"},
        {"text": "100 degrees", "label": "C"}, {"text": "200 degrees", "label": "D"}]}, "answerKey": "A"},
]


def flat(record):  # the hub's ai2_arc layout
    q = record["question"]
    return {"id": record["id"], "question": q["stem"], "answerKey": record["answerKey"],
            "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}


def test_hellaswag_format():
    doc = ev.hellaswag_doc(HELLASWAG[0])
    # ctx_a + " " + ctx_b.capitalize(), after "activity_label: "
    assert doc == {"query": "Baking bread: A woman kneads dough on a table. She",
                   "choices": HELLASWAG[0]["endings"], "gold": 0}
    # WikiHow artifacts: " [title]" becomes ". ", other [brackets] go, double spaces close up. The
    # capitalisation comes first and meets "[step]", so "if" stays lower case (as in lm-eval)
    doc = ev.hellaswag_doc(HELLASWAG[1])
    assert doc["query"] == "Home and Garden: How to water a plant. Check the soil. if it"
    assert doc["choices"][0] == "is dry, water it. Use a can."
    assert doc["gold"] == 0  # the hub's labels are strings


def test_arc_format_both_layouts():
    doc = ev.arc_doc(ARC_NESTED[1])
    assert doc == {"query": "Question: What do plants need to make food?\nAnswer:",
                   "choices": ["sand", "music", "sunlight", "plastic"], "gold": 2}
    assert [ev.arc_doc(flat(r)) for r in ARC_NESTED] == [ev.arc_doc(r) for r in ARC_NESTED]


def test_continuations_are_space_then_choice_and_split_like_lm_eval():
    seen = []

    def encode(text):
        seen.append(text)
        return toy_encode(text)

    ev.evaluate(unigram(LM), [{"context": "Question: Q?\nAnswer:", "choices": ["a", "bb"], "gold": 0}], encode, 64)
    assert seen == ["Question: Q?\nAnswer:", "Question: Q?\nAnswer: a", "Question: Q?\nAnswer: bb"]


def test_fewshot_contexts():
    docs = [ev.arc_doc(r) for r in ARC_NESTED]
    pool = [ev.hellaswag_doc(r) for r in HELLASWAG]
    contexts = ev.fewshot_contexts(docs, pool, 2, seed=1234)
    answered = {d["query"] + " " + d["choices"][d["gold"]] for d in pool}
    for doc, context in zip(docs, contexts):
        *shots, query = context.split("\n\n")
        assert query == doc["query"]
        assert len(shots) == 2 and len(set(shots)) == 2 and set(shots) <= answered
    assert contexts[0].startswith(("Baking bread: ", "Home and Garden: ", "Running: "))
    # fixed seed: the same contexts again; another seed draws other examples somewhere
    assert ev.fewshot_contexts(docs, pool, 2, seed=1234) == contexts
    assert any(ev.fewshot_contexts(docs, pool, 2, seed=s) != contexts for s in range(5))
    assert ev.fewshot_contexts(docs, pool, 0) == [d["query"] for d in docs]
    # drawing from the evaluated set itself: never the example being scored, and still 2 shots
    for doc, context in zip(docs, ev.fewshot_contexts(docs, docs, 2, same_split=True)):
        *shots, _ = context.split("\n\n")
        assert len(shots) == 2 and doc["query"] not in "".join(shots)
    with pytest.raises(ev.EvalError, match="3 examples to draw from but there are 2"):
        ev.fewshot_contexts(docs[:2], docs[:2], 2, same_split=True)


# -----------------------------------------------------------------------------
# files, eval.json, the command line

def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def small_gpt_checkpoint(out_dir, iter_num=7):
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=64, vocab_size=50304, residual="nesterov",
                       bias=False)
    model = GPT(config)
    out_dir.mkdir(exist_ok=True)
    torch.save({"model": model.state_dict(), "model_args": dataclasses.asdict(config), "iter_num": iter_num,
                "best_val_loss": 9.9, "config": {}}, out_dir / "ckpt.pt")
    return model


def test_run_downstream_appends_records(tmp_path):
    model = small_gpt_checkpoint(tmp_path / "out")
    files = {"hellaswag": write_jsonl(tmp_path / "hs.jsonl", HELLASWAG),
             "arc_easy": write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED])}
    eval_json = tmp_path / "out" / "eval.json"
    eval_json.write_text(json.dumps([{"task": "earlier"}]))
    for it in (3, 4):
        ev.run_downstream(model, str(tmp_path / "out"), ["hellaswag", "arc_easy"], iter_num=it, files=files,
                          num_fewshot={"hellaswag": 2, "arc_easy": 1}, batch_size=2)
    records = json.loads(eval_json.read_text())
    assert [(r["task"], r.get("iter")) for r in records] == [
        ("earlier", None), ("hellaswag", 3), ("arc_easy", 3), ("hellaswag", 4), ("arc_easy", 4)]
    r = records[1]
    assert {"iter", "task", "num_fewshot", "n", "acc", "acc_norm", "timestamp"} <= set(r)
    assert (r["num_fewshot"], r["n"], r["data"]) == (2, 3, files["hellaswag"])
    for first, second in zip(records[1:3], records[3:5]):  # same model, same data: the same numbers
        assert (first["acc"], first["acc_norm"]) == (second["acc"], second["acc_norm"])
    assert not [p for p in os.listdir(tmp_path / "out") if p.endswith(".tmp")]
    # a file that is not a list of records is never overwritten
    eval_json.write_text("{oops")
    with pytest.raises(ev.EvalError, match="not a JSON list"):
        ev.append_records(str(eval_json), [{"task": "x"}])
    assert eval_json.read_text() == "{oops"


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)


def test_cli_smoke_with_local_files(tmp_path):
    small_gpt_checkpoint(tmp_path / "out", iter_num=7)
    hs = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG)
    arc, arc_train = write_jsonl(tmp_path / "arc.jsonl", ARC_NESTED[:2]), write_jsonl(tmp_path / "arct.jsonl", ARC_NESTED)
    result = run_cli(f"--out_dir={tmp_path / 'out'}", "--tasks=hellaswag,arc_easy", "--device=cpu", "--limit=2",
                     "--batch_size=2", f"--hellaswag_file={hs}", f"--arc_easy_file={arc}",
                     f"--arc_easy_fewshot_file={arc_train}", "--hellaswag_num_fewshot=1", "--arc_easy_num_fewshot=3")
    assert result.returncode == 0, result.stderr
    assert "hellaswag 1-shot: acc" in result.stdout and "arc_easy 3-shot: acc" in result.stdout
    records = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [(r["task"], r["iter"], r["num_fewshot"], r["n"]) for r in records] == [
        ("hellaswag", 7, 1, 2), ("arc_easy", 7, 3, 2)]
    assert all(0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1 for r in records)


def test_train_evaluates_its_best_checkpoint_downstream(tmp_path, tiny_data, run_script):
    from conftest import TINY
    hs, arc = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG), write_jsonl(tmp_path / "arc.jsonl", ARC_NESTED)
    # the paper's 10 and 25 shots, drawn from enough (repeated) examples
    hs_shots = write_jsonl(tmp_path / "hs_train.jsonl", HELLASWAG * 4)
    arc_shots = write_jsonl(tmp_path / "arc_train.jsonl", ARC_NESTED * 9)
    out = tmp_path / "run"
    r = run_script("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={out}", "--residual=nesterov",
                   "--max_iters=4", "--eval_interval=2", "--eval_downstream=True", "--downstream_limit=2",
                   f"--hellaswag_file={hs}", f"--hellaswag_fewshot_file={hs_shots}",
                   f"--arc_easy_file={arc}", f"--arc_easy_fewshot_file={arc_shots}")
    assert r.returncode == 0, r.stderr
    best_iter = torch.load(out / "ckpt.pt", weights_only=True)["iter_num"]
    records = json.loads((out / "eval.json").read_text())
    assert [(rec["task"], rec["iter"], rec["n"]) for rec in records] == [("hellaswag", best_iter, 2), ("arc_easy", best_iter, 2)]
    assert records[0]["num_fewshot"] == 10 and records[1]["num_fewshot"] == 25
    assert "hellaswag 10-shot: acc" in r.stdout


def assert_clean_error(result, *words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for w in words:
        assert w in result.stderr


def test_cli_offline_without_files(tmp_path):
    small_gpt_checkpoint(tmp_path / "out")
    # an endpoint that refuses at once stands in for "no network", also on machines that have one
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"
    result = run_cli(f"--out_dir={tmp_path / 'out'}", "--tasks=hellaswag", env=env)
    assert_clean_error(result, "cannot be reached", "--hellaswag_file=PATH")
    assert not (tmp_path / "out" / "eval.json").exists()


@pytest.mark.parametrize("args, words", [
    (["--out_dir={tmp}/nothing"], "no checkpoint"),
    (["--out_dir={tmp}/out", "--tasks=hellaswag,piqa"], "unknown task(s) piqa"),
    (["--out_dir={tmp}/out", "--tasks=arc_easy", "--arc_easy_file={tmp}/bad.jsonl"], "known layout"),
    (["--out_dir={tmp}/out", "--tasks=arc_easy", "--arc_easy_file={tmp}/missing.jsonl"], "does not exist"),
])
def test_cli_bad_inputs(tmp_path, capsys, args, words):
    small_gpt_checkpoint(tmp_path / "out")
    (tmp_path / "bad.jsonl").write_text('{"question": "no choices here"}\n')
    with pytest.raises(SystemExit) as exit:
        ev.main([a.format(tmp=tmp_path) for a in args])
    assert exit.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and words in err
