"""eval.py: our lm-eval model adapter (log-likelihoods, batching, left truncation) against fake models whose
log-probabilities are known and against the model's own logits; downstream scores equal to what lm-eval computes
for the same model through its own evaluator; local data files; eval.json; and the command line."""
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lm_eval
import pytest
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.tasks import TaskManager

import eval as ev
from model import GPT, GPTConfig
from tokenizer import get_gpt2_encoding

ROOT = Path(__file__).resolve().parents[1]


class TableLM(torch.nn.Module):
    """A fake language model: the next-token log-probabilities depend only on the current token,
    log P(next | current) = table[current, next]. It records every input it is given."""

    def __init__(self, probs, block_size=16):
        super().__init__()
        self.table = torch.nn.Parameter(torch.log(probs), requires_grad=False)
        self.config = SimpleNamespace(block_size=block_size)
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


def test_sum_logprob_and_greedy_by_hand():
    lm = ev.GPTAdapter(unigram(LM), toy_encode, eot_token_id=0, batch_size=2)
    # " a": ln(0.25 * 0.4) = ln 0.1; " bb" (two tokens " ", "bb"): ln(0.25 * 0.09) = ln 0.0225. Greedy decoding
    # gives "a" after anything (0.4 is the largest), so neither continuation, which starts with " ", is greedy
    scores = lm.score([(toy_encode("Q:"), toy_encode(" a")), (toy_encode("Q:"), toy_encode(" bb"))])
    assert [s for s, _ in scores] == pytest.approx([math.log(0.1), math.log(0.0225)])
    assert [g for _, g in scores] == [False, False]
    assert lm.score([(toy_encode("Q"), toy_encode("aa"))]) == [(pytest.approx(2 * math.log(0.4)), True)]
    # through lm-eval's request path: it encodes context + continuation whole with our tok_encode and splits
    # after the context's tokens; batch_size requests per forward
    lm.model.seen.clear()
    requests = [SimpleNamespace(args=("Q:", " a")), SimpleNamespace(args=("Q:", " bb")),
                SimpleNamespace(args=("Q:", "a"))]
    out = lm.loglikelihood(requests, disable_tqdm=True)
    assert [s for s, _ in out] == pytest.approx([math.log(0.1), math.log(0.0225), math.log(0.4)])
    assert [x.shape[0] for x in lm.model.seen] == [2, 1]


def successor_bigram(block_size=16):
    """P(t + 1 | t) = 0.5, every other next token 0.5 / 127: each prediction depends on the token before it."""
    p = torch.full((V, V), 0.5 / (V - 1), dtype=torch.float64)
    p[torch.arange(V - 1), torch.arange(1, V)] = 0.5
    return TableLM(p, block_size=block_size)


def test_rolling_loglikelihood_scores_every_token_once():
    """Perplexity tasks: a text longer than block_size is scored in lm-eval's rolling windows, every token once,
    the first after the end-of-text token, each with the token before it: the sum is the whole text's
    log-likelihood under a model whose predictions depend on the context (a window cut one token off, or scored
    after the wrong token, changes it)."""
    text = "".join(chr(ord("a") + i % 7) for i in range(40))  # abcdefgabc...: mostly successors
    lm = ev.GPTAdapter(successor_bigram(), toy_encode, eot_token_id=0)
    tokens = [0] + toy_encode(text)
    expected = sum(math.log(0.5 if b == a + 1 else 0.5 / 127) for a, b in zip(tokens, tokens[1:]))
    assert lm.loglikelihood_rolling([SimpleNamespace(args=(text,))]) == [pytest.approx(expected)]
    assert lm.model.seen[0][0, 0] == 0 and sum(x.shape[1] for x in lm.model.seen) > 40  # windows overlap


def test_left_truncation_keeps_the_continuation_and_scores_the_right_positions():
    model = successor_bigram(block_size=8)
    lm = ev.GPTAdapter(model, toy_encode, eot_token_id=0)
    context, continuation = list(range(1, 20)), [50, 51, 52]
    [(score, _)] = lm.score([(context, continuation)])
    # the last block_size + 1 = 9 tokens of context + continuation; the model sees the first 8
    assert model.seen[0].tolist() == [[14, 15, 16, 17, 18, 19, 50, 51]]
    # 19 -> 50 is unlikely, 50 -> 51 and 51 -> 52 are likely
    assert score == pytest.approx(math.log(0.5 / 127) + 2 * math.log(0.5))
    # a context that fits is not cut, and a shorter row in the same batch is padded on the right
    model.seen.clear()
    scores = lm.score([([1, 2, 3], [4, 5]), ([1, 2, 3, 4, 5, 6], [9])])
    assert model.seen[0].tolist() == [[1, 2, 3, 4, 0, 0], [1, 2, 3, 4, 5, 6]]
    assert [s for s, _ in scores] == pytest.approx([2 * math.log(0.5), math.log(0.5 / 127)])
    with pytest.raises(ev.EvalError, match="block_size=8"):
        lm.score([([1], list(range(9)))])


def tiny_gpt(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(**dict(n_layer=1, n_head=2, n_embd=16, block_size=32, vocab_size=64, dropout=0.0, **kw)))


@pytest.mark.parametrize("residual", ["gd", "nesterov"])
def test_real_model_scores_do_not_depend_on_batching(residual):
    lm = ev.GPTAdapter(tiny_gpt(residual=residual).eval(), toy_encode, eot_token_id=0)
    pairs = [([1, 2, 3, 4, 5], [6, 7]), ([9] * 40, [10, 11, 12]), ([3], [4])]
    batched = lm.score(pairs)
    alone = [lm.score([pair])[0] for pair in pairs]
    assert [s for s, _ in batched] == pytest.approx([s for s, _ in alone], abs=1e-5)
    assert [g for _, g in batched] == [g for _, g in alone]
    # and equal to the log-softmax of the model's own logits, computed here the long way
    logits, _ = lm.model(torch.tensor([[1, 2, 3, 4, 5, 6]]), torch.tensor([[1, 2, 3, 4, 5, 6]]))
    logp = torch.log_softmax(logits[0], dim=-1)
    assert batched[0][0] == pytest.approx((logp[4, 6] + logp[5, 7]).item(), abs=1e-5)
    assert batched[0][1] == (logp[4].argmax() == 6 and logp[5].argmax() == 7)


# -----------------------------------------------------------------------------
# local data, in the hub's layouts (our own text)

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


def flat(record):  # ARC's own nested layout -> the hub's ai2_arc layout
    q = record["question"]
    return {"id": record["id"], "question": q["stem"], "answerKey": record["answerKey"],
            "choices": {"text": [c["text"] for c in q["choices"]], "label": [c["label"] for c in q["choices"]]}}




def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


class ReferenceLM(TemplateLM):
    """lm-eval's TemplateLM with the plainest scoring: each request alone, whole (no truncation, no batching,
    no padding), straight from the model's logits; what lm-eval's evaluator gets from it is the reference."""

    def __init__(self, model):
        super().__init__()
        self.model, self.enc = model.eval(), get_gpt2_encoding()

    @property
    def eot_token_id(self):
        return self.enc.eot_token

    def tok_encode(self, string, **kwargs):
        return self.enc.encode(string, allowed_special={"<|endoftext|>"})

    @torch.no_grad()
    def _loglikelihood_tokens(self, requests, disable_tqdm=False):
        results = []
        for _, context, continuation in requests:
            x = torch.tensor([context + continuation])
            logits, _ = self.model(x, x)
            logp = torch.log_softmax(logits[0, len(context) - 1:-1].double(), dim=-1)
            target = torch.tensor(continuation)
            results.append((logp[torch.arange(len(target)), target].sum().item(),
                            bool((logp.argmax(-1) == target).all())))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        raise NotImplementedError

    def generate_until(self, requests, disable_tqdm=False):
        raise NotImplementedError


class RecordingAdapter(ev.GPTAdapter):
    """Our adapter, keeping every (context, continuation) text it scored and its score."""

    def _loglikelihood_tokens(self, requests, disable_tqdm=False):
        results = super()._loglikelihood_tokens(requests, disable_tqdm)
        self.scored = getattr(self, "scored", {})
        self.scored.update({texts: ll for (texts, _, _), (ll, _) in zip(requests, results)})
        return results


def test_scores_equal_lm_eval_reference(tmp_path):
    """Our path (task_spec over local files, the adapter batched with right padding, the records) against lm-eval's
    evaluator on the same task definition with a plain reference model: the same prompts, the same few-shot draws,
    the same log-likelihoods and the same acc, acc_norm and stderr."""
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=512, vocab_size=50304, residual="nesterov",
                       bias=False)
    model = GPT(config).eval()
    with torch.no_grad():  # sharper than the initial weights, so that choices are told apart by a margin
        model.lm_head.weight.mul_(50)
    files = {"hellaswag": write_jsonl(tmp_path / "hs.jsonl", HELLASWAG * 2),
             "arc_easy": write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED])}
    shots = {"hellaswag": write_jsonl(tmp_path / "hs_train.jsonl", HELLASWAG)}  # arc_easy: from its own file
    num_fewshot = {"hellaswag": 2, "arc_easy": 1}
    ours = RecordingAdapter(model, get_gpt2_encoding().encode_ordinary, 50256, batch_size=3)
    records = ev.run_downstream(ours, str(tmp_path), ["hellaswag", "arc_easy"], files=files, fewshot_files=shots,
                                num_fewshot=num_fewshot)
    assert json.loads((tmp_path / "eval.json").read_text()) == records
    # lm-eval's own definitions of the two tasks, indexed apart from ours (all of lm-eval's take seconds to index)
    tasks_dir = Path(lm_eval.tasks.__file__).parent
    task_manager = TaskManager(include_defaults=False, include_path=[tasks_dir / "hellaswag", tasks_dir / "arc"])
    for record in records:
        task = record["task"]
        reference = ReferenceLM(model)
        scored = {}
        original = reference._loglikelihood_tokens

        def recording(requests, disable_tqdm=False):
            results = original(requests, disable_tqdm)
            scored.update({texts: ll for (texts, _, _), (ll, _) in zip(requests, results)})
            return results
        reference._loglikelihood_tokens = recording
        spec = ev.task_spec(task_manager, task, files[task], shots.get(task, ""))
        out = lm_eval.simple_evaluate(reference, tasks=[spec], num_fewshot=num_fewshot[task], task_manager=task_manager,
                                      log_samples=False, random_seed=1234, numpy_random_seed=1234,
                                      torch_random_seed=1234, fewshot_random_seed=1234)
        expected = out["results"][task]
        assert record["n"] == (6 if task == "hellaswag" else 3) and record["num_fewshot"] == num_fewshot[task]
        for metric in ("acc", "acc_norm", "acc_stderr", "acc_norm_stderr"):
            assert record[metric] == pytest.approx(expected[metric + ",none"], abs=1e-12), metric
        assert len({texts for texts in scored if texts[0].startswith(("Baking", "Home", "Running", "Question"))}) \
            == len(scored)
        # batched with padding vs alone: float32 sums of ~200 nats agree to float32's precision, not to 1e-4 absolute
        assert {k: ours.scored[k] for k in scored} == pytest.approx(scored, rel=2e-6, abs=1e-4)
    # lm-eval's own prompt formats reached the model: HellaSwag's cleaned WikiHow text and ARC's "Question:"
    contexts = [c for c, _ in ours.scored]
    assert any(c.endswith("Baking bread: A woman kneads dough on a table. She") for c in contexts)
    assert any(c.endswith("Home and Garden: How to water a plant. Check the soil. if it") for c in contexts)
    sun = [c for c, cont in ours.scored if cont == " the Sun"]
    assert sun and sun[0].endswith("Question: Which object is a source of light?\nAnswer:")
    # with ARC's few-shot examples drawn from the evaluated file: never the example being scored
    for context, _ in ours.scored:
        if not context.startswith("Question: "):
            continue
        *shots, query = context.split("\n\n")
        assert len(shots) == 1 and not shots[0].startswith(query)

# -----------------------------------------------------------------------------
# files, eval.json, the command line

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
    lm = ev.GPTAdapter(small_gpt_checkpoint(tmp_path / "out"), get_gpt2_encoding().encode_ordinary, 50256, 2)
    files = {"hellaswag": write_jsonl(tmp_path / "hs.jsonl", HELLASWAG),
             "arc_easy": write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED])}
    eval_json = tmp_path / "out" / "eval.json"
    eval_json.write_text(json.dumps([{"task": "earlier"}]))
    for it in (3, 4):
        ev.run_downstream(lm, str(tmp_path / "out"), ["hellaswag", "arc_easy"], iter_num=it, files=files,
                          num_fewshot={"hellaswag": 2, "arc_easy": 1})
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


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "eval.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


def test_cli_smoke_with_local_files(tmp_path):
    small_gpt_checkpoint(tmp_path / "out", iter_num=7)
    hs = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG)
    arc = write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED[:2]])
    arc_train = write_jsonl(tmp_path / "arct.jsonl", [flat(r) for r in ARC_NESTED])
    result = run_cli(f"--out_dir={tmp_path / 'out'}", "--tasks=hellaswag,arc_easy", "--device=cpu", "--limit=2",
                     "--batch_size=2", f"--hellaswag_file={hs}", f"--arc_easy_file={arc}",
                     f"--arc_easy_fewshot_file={arc_train}", "--num_fewshot=1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bars (ours, lm-eval's, datasets') where stdout is not a terminal
    assert "hellaswag 1-shot: acc " in result.stdout and "arc_easy 1-shot: acc " in result.stdout
    assert "acc_norm" in result.stdout
    records = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert [(r["task"], r["iter"], r["num_fewshot"], r["n"]) for r in records] == [
        ("hellaswag", 7, 1, 2), ("arc_easy", 7, 1, 2)]
    assert all(0 <= r["acc"] <= 1 and 0 <= r["acc_norm"] <= 1 for r in records)


def test_train_evaluates_its_best_checkpoint_downstream(tmp_path, tiny_data, run_here):
    from conftest import TINY
    arc_records = [flat(r) for r in ARC_NESTED]
    hs, arc = write_jsonl(tmp_path / "hs.jsonl", HELLASWAG), write_jsonl(tmp_path / "arc.jsonl", arc_records)
    # the paper's 10 and 25 shots, drawn from enough examples (repeated, but told apart by their ids: lm-eval
    # never draws a copy of the example being scored)
    hs_shots = write_jsonl(tmp_path / "hs_train.jsonl", [dict(r, ind=100 + i) for i, r in enumerate(HELLASWAG * 4)])
    arc_shots = write_jsonl(tmp_path / "arc_train.jsonl", [dict(r, id=f"t{i}") for i, r in enumerate(arc_records * 9)])
    out = tmp_path / "run"
    r = run_here("train.py", *TINY, f"--dataset={tiny_data}", f"--out_dir={out}", "--residual=nesterov",
                   "--max_iters=4", "--eval_interval=2", "--eval_downstream=True", "--downstream_limit=2",
                   f"--hellaswag_file={hs}", f"--hellaswag_fewshot_file={hs_shots}",
                   f"--arc_easy_file={arc}", f"--arc_easy_fewshot_file={arc_shots}")
    assert r.returncode == 0, r.stderr
    best_iter = torch.load(out / "ckpt.pt", weights_only=True)["iter_num"]
    records = json.loads((out / "eval.json").read_text())
    assert [(rec["task"], rec["iter"], rec["n"]) for rec in records] == [("hellaswag", best_iter, 2),
                                                                          ("arc_easy", best_iter, 2)]
    assert records[0]["num_fewshot"] == 10 and records[1]["num_fewshot"] == 25
    assert "hellaswag 10-shot: acc" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--out_dir={tmp}/nothing"], "no checkpoint"),
    (["--out_dir={tmp}/out", "--tasks=hellaswag,no_such_task"], "unknown task 'no_such_task'"),
    (["--out_dir={tmp}/out", "--tasks=arc_easy", "--arc_easy_file={tmp}/bad.jsonl"], "could not evaluate arc_easy"),
    (["--out_dir={tmp}/out", "--tasks=arc_easy", "--arc_easy_file={tmp}/missing.jsonl"], "does not exist"),
    (["--out_dir={tmp}/out", "--tasks=arc_easy", "--arc_easy_file={tmp}/arc.jsonl"],
     "arc_easy asks for 25 few-shot examples, but its few-shot data ({tmp}/arc.jsonl) holds 3;"),
    # an endpoint that refuses at once stands in for "no network", also on machines that have one
    (["--out_dir={tmp}/out", "--tasks=hellaswag"], "cannot be reached"),
])
def test_cli_bad_inputs(tmp_path, capsys, monkeypatch, args, words):
    small_gpt_checkpoint(tmp_path / "out")
    (tmp_path / "bad.jsonl").write_text('{"question": "no choices here"}\n')
    write_jsonl(tmp_path / "arc.jsonl", [flat(r) for r in ARC_NESTED])  # 3 examples for 25 shots
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    # a task not found in its folder makes eval.py index all of lm-eval's (~9 s): here the hellaswag folder stands in
    tasks_dir = Path(lm_eval.tasks.__file__).parent
    monkeypatch.setattr("lm_eval.tasks.TaskManager", lambda include_defaults=True, include_path=None: TaskManager(
        include_defaults=False, include_path=include_path or [tasks_dir / "hellaswag"]))
    with pytest.raises(SystemExit) as exit:
        ev.main([a.format(tmp=tmp_path) for a in args])
    assert exit.value.code == 1
    err = capsys.readouterr().err  # progress bars before it are off outside a terminal (see the CLI test)
    words = words.format(tmp=tmp_path)
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("error: ") and words in err, err
    assert not (tmp_path / "out" / "eval.json").exists()


def test_char_model_scores_only_encodable_examples(trained, tmp_path, capsys):
    """A character-level model (TinyStories' characters: no '%') on ARC-Easy, one of whose 4 examples holds a '%':
    refused with the count and the characters (test_reliability's char_model_on_unencodable_task), and scored on
    the 3 others with --encodable_only=True, which the printed line and eval.json say. The few-shot examples come
    from the same file, so the left-out example is never a shot either."""
    import shutil
    run = tmp_path / "run"
    shutil.copytree(trained("gd")[0], run)
    records = [flat(r) for r in ARC_NESTED] + [dict(flat(ARC_NESTED[0]), id="q4", question="Which is 50% of 10?")]
    arc = write_jsonl(tmp_path / "arc.jsonl", records)
    ev.main([f"--out_dir={run}", "--tasks=arc_easy", f"--arc_easy_file={arc}", "--num_fewshot=2", "--device=cpu",
             "--encodable_only=True"])
    out = capsys.readouterr().out
    assert "arc_easy 2-shot: acc " in out
    assert "(n=3, iter 30; left out, holding text the tokenizer cannot encode: 1 examples, 1 few-shot examples)" in out
    [record] = json.loads((run / "eval.json").read_text())
    assert (record["n"], record["left_out"], record["left_out_fewshot"]) == (3, 1, 1)


def test_script_dataset_falls_back_to_parquet(tmp_path, monkeypatch, capsys):
    """datasets >= 4 refuses Rowan/hellaswag's loading script; lm-eval's task then reads the hub's parquet
    conversion. A stand-in load_dataset plays the hub: the script error, unless asked for that revision."""
    import datasets
    calls = []

    def load_dataset(path, name=None, revision=None, **kwargs):
        calls.append((path, revision))
        if revision != "refs/convert/parquet":
            raise RuntimeError("Dataset scripts are no longer supported, but found hellaswag.py")
        records = [dict(r, label=str(r["label"])) for r in HELLASWAG]  # the hub's labels are strings
        return datasets.DatasetDict({split: datasets.Dataset.from_list(records) for split in ("train", "validation")})
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr("dataprep._hub_reachable", lambda: True)
    lm = ev.GPTAdapter(small_gpt_checkpoint(tmp_path / "out"), get_gpt2_encoding().encode_ordinary, 50256)
    [record] = ev.run_downstream(lm, str(tmp_path / "out"), ["hellaswag"], num_fewshot={"hellaswag": 1})
    assert calls == [("Rowan/hellaswag", None), ("Rowan/hellaswag", "refs/convert/parquet")]
    assert (record["task"], record["n"], record["data"]) == ("hellaswag", 3, "hub")
    notes = [line for line in capsys.readouterr().out.splitlines() if line.startswith("note:")]
    assert notes == ["note: Rowan/hellaswag is built by a loading script, which this version of datasets no longer "
                     "runs; reading the hub's parquet conversion of it (revision='refs/convert/parquet') instead"]
