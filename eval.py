"""
Downstream evaluation as the paper reports it: HellaSwag 10-shot and ARC-Easy 25-shot accuracy,
scored as lm-evaluation-harness v0.4 scores multiple choice.

$ python eval.py --out_dir=out-tinystories-cpu-nesterov --limit=200
$ python eval.py --out_dir=out --tasks=arc_easy --arc_easy_file=ARC-Easy-Test.jsonl --arc_easy_fewshot_file=ARC-Easy-Train.jsonl

Each choice is scored by the sum of the log-probabilities of its continuation tokens (" " + choice)
after the context (few-shot examples + question). acc takes the argmax of that sum; acc_norm the
argmax of the sum divided by the choice's length in characters (lm-eval's completion_len: Python
len() of the choice without the leading space, so characters, not bytes or tokens). The context is
cut from the left to fit block_size; the continuation is always kept whole.

Data comes from the Hugging Face hub (HellaSwag's validation split, ARC-Easy's test split, few-shot
examples from their train splits, as lm-eval) or from local jsonl files in the datasets' own layouts.
Results are appended to out_dir/eval.json, one record per task.
"""
import fcntl
import json
import math
import os
import random
import re
import sys
from datetime import datetime, timezone

import torch
from torch.nn import functional as F
from tqdm import tqdm


class EvalError(Exception):
    """A problem with the inputs, said in one sentence; the command line prints it without a traceback."""


# -----------------------------------------------------------------------------
# the tasks: raw records (hub or local layout) -> {"query", "choices", "gold"}

def _hellaswag_clean(text):
    # lm-eval's preprocess: the brackets are artifacts of HellaSwag's WikiHow part
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def hellaswag_doc(record):
    """HellaSwag's jsonl (ctx_a, ctx_b, endings, label, activity_label); the hub's label is a string."""
    ctx = record["ctx_a"] + " " + record["ctx_b"].capitalize()
    return {"query": _hellaswag_clean(record["activity_label"] + ": " + ctx),
            "choices": [_hellaswag_clean(ending) for ending in record["endings"]],
            "gold": int(record["label"])}


def arc_doc(record):
    """ARC's jsonl ({"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}) or the hub's
    flattened layout ({"question": str, "choices": {"text": [...], "label": [...]}, "answerKey"})."""
    question = record["question"]
    if isinstance(question, dict):
        stem = question["stem"]
        texts = [c["text"] for c in question["choices"]]
        labels = [c["label"] for c in question["choices"]]
    else:
        stem, texts, labels = question, record["choices"]["text"], record["choices"]["label"]
    return {"query": f"Question: {stem}\nAnswer:", "choices": texts, "gold": labels.index(record["answerKey"])}


TASKS = {
    # hub dataset, its config, the split evaluated, the paper's number of few-shot examples, record parser
    "hellaswag": dict(hub="Rowan/hellaswag", config=None, split="validation", num_fewshot=10, doc=hellaswag_doc),
    "arc_easy": dict(hub="allenai/ai2_arc", config="ARC-Easy", split="test", num_fewshot=25, doc=arc_doc),
}


# -----------------------------------------------------------------------------
# data

def read_jsonl(path):
    if not os.path.isfile(path):
        raise EvalError(f"data file '{path}' does not exist.")
    records = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise EvalError(f"{path}, line {line_no}, is not JSON ({e.msg}); expected one record per line.")
    return records


def _first_line(e):
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def _hub_offline():
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def read_hub(task, split):
    spec = TASKS[task]
    advice = (f"pass local jsonl files with --{task}_file=PATH (and --{task}_fewshot_file=PATH for the "
              f"few-shot examples) instead.")
    from dataprep import _hub_reachable  # offline, `datasets` retries for ~25 s; this answers in <= 5 s
    if not _hub_offline() and not _hub_reachable():
        raise EvalError(f"{task} needs {spec['hub']} from the Hugging Face hub, which cannot be reached: {advice}")
    import datasets  # slow to import, and only needed here
    try:
        return list(datasets.load_dataset(spec["hub"], spec["config"], split=split))
    except Exception as e:
        raise EvalError(f"could not load {spec['hub']} ({split}) from the Hugging Face hub "
                        f"({_first_line(e)}); {advice}")


def load_task(task, path="", fewshot_path="", num_fewshot=0):
    """(docs, few-shot pool, description of the source). With a local file and no few-shot file, the
    few-shot examples come from the evaluated file itself (lm-eval's rule for tasks without a train split)."""
    parse = TASKS[task]["doc"]

    def docs(records, source):
        try:
            return [parse(r) for r in records]
        except (KeyError, TypeError, ValueError) as e:
            raise EvalError(f"{source} does not hold {task} records in a known layout ({type(e).__name__}: {e}).")

    if path:
        eval_docs, source = docs(read_jsonl(path), path), path
    else:
        split = TASKS[task]["split"]
        eval_docs, source = docs(read_hub(task, split), TASKS[task]["hub"]), f"{TASKS[task]['hub']} {split}"
    if num_fewshot == 0:
        pool = []
    elif fewshot_path:
        pool = docs(read_jsonl(fewshot_path), fewshot_path)
    elif path:
        print(f"note: no --{task}_fewshot_file: the few-shot examples are drawn from {path} itself "
              f"(never the example being scored)")
        pool = eval_docs
    else:
        pool = docs(read_hub(task, "train"), TASKS[task]["hub"])
    return eval_docs, pool, source


def fewshot_contexts(docs, pool, num_fewshot, seed=1234, same_split=False):
    """The context of each doc: num_fewshot solved examples from pool, then its query. lm-eval's format
    and draw: one random.Random(seed), examples sampled for each doc in turn; when the pool is the
    evaluated split itself (same_split), one more is drawn and the doc being scored is dropped."""
    n = num_fewshot + 1 if same_split else num_fewshot
    if num_fewshot and len(pool) < n:
        raise EvalError(f"{num_fewshot}-shot needs {n} examples to draw from but there are {len(pool)}; "
                        f"give a larger few-shot file or fewer shots.")
    rnd = random.Random(seed)
    contexts = []
    for doc in docs:
        shots = [d for d in rnd.sample(pool, n) if d != doc][:num_fewshot] if num_fewshot else []
        contexts.append("".join(d["query"] + " " + d["choices"][d["gold"]] + "\n\n" for d in shots) + doc["query"])
    return contexts


# -----------------------------------------------------------------------------
# scoring

@torch.no_grad()
def loglikelihoods(model, pairs, block_size, device="cpu"):
    """Sum of log P(continuation | context) for each (context_tokens, continuation_tokens) pair, in one
    batched forward. model(idx, targets) -> (logits, loss) with logits at every position, as GPT."""
    rows = []
    for context, continuation in pairs:
        if not context or not 0 < len(continuation) <= block_size:
            raise EvalError(f"cannot score a continuation of {len(continuation)} tokens after a context of "
                            f"{len(context)}: it needs a context and at most block_size={block_size} tokens.")
        # left-truncate: the last block_size + 1 tokens, whose first block_size are the model's input
        rows.append((context + continuation)[-(block_size + 1):])
    x = torch.zeros((len(rows), max(len(r) for r in rows) - 1), dtype=torch.long)
    for i, row in enumerate(rows):
        x[i, :len(row) - 1] = torch.tensor(row[:-1])  # right padding: a causal model never attends to it
    x = x.to(device)
    logits, _ = model(x, x)  # with targets, GPT returns the logits of every position (the loss is ignored)
    scores = []
    for i, (row, (_, continuation)) in enumerate(zip(rows, pairs)):
        n = len(continuation)
        # position j predicts token j + 1: the continuation is predicted by the last n input positions
        logprobs = F.log_softmax(logits[i, len(row) - 1 - n:len(row) - 1].float(), dim=-1)
        scores.append(logprobs.gather(1, torch.tensor(continuation, device=logprobs.device)[:, None]).sum().item())
    return scores


def _stderr(hits):
    # lm-eval's mean_stderr: sample standard deviation / sqrt(n)
    n = len(hits)
    if n < 2:
        return None
    p = sum(hits) / n
    return math.sqrt(p * (1 - p) / (n - 1))


def evaluate(model, examples, encode, block_size, batch_size=1, device="cpu", desc=None):
    """acc and acc_norm of examples [{"context", "choices", "gold"}], batch_size examples (all their
    choices) per forward. encode: str -> list of token ids."""
    was_training = getattr(model, "training", False)
    if was_training:
        model.eval()
    acc, acc_norm = [], []
    with tqdm(total=len(examples), desc=desc, dynamic_ncols=True) as pbar:
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            pairs = []
            for ex in batch:
                # lm-eval encodes context + continuation whole and splits after the context's tokens
                context = encode(ex["context"])
                pairs += [(context, encode(ex["context"] + " " + choice)[len(context):]) for choice in ex["choices"]]
            scores = iter(loglikelihoods(model, pairs, block_size, device))
            for ex in batch:
                lls = [next(scores) for _ in ex["choices"]]
                normed = [ll / len(choice) for ll, choice in zip(lls, ex["choices"])]
                # the first maximum on ties, as np.argmax
                acc.append(float(max(range(len(lls)), key=lls.__getitem__) == ex["gold"]))
                acc_norm.append(float(max(range(len(normed)), key=normed.__getitem__) == ex["gold"]))
            pbar.update(len(batch))
    if was_training:
        model.train()
    n = len(examples)
    return {"n": n, "acc": sum(acc) / n, "acc_norm": sum(acc_norm) / n,
            "acc_stderr": _stderr(acc), "acc_norm_stderr": _stderr(acc_norm)}


# -----------------------------------------------------------------------------
# results

def _show(mean, stderr):
    return f"{mean:.4f}" + (f" ± {stderr:.4f}" if stderr is not None else "")


def append_records(path, records):
    """Append to the JSON list in path: never rewrites earlier records, and never leaves a half-written file."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two evaluations finishing together must not drop each other's record
        old = []
        if os.path.exists(path):
            try:
                with open(path) as f:
                    old = json.load(f)
            except json.JSONDecodeError:
                old = None
            if not isinstance(old, list):
                raise EvalError(f"{path} is not a JSON list of records; move it away, it is left as it is.")
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(old + records, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)


def run_downstream(model, out_dir, tasks=("hellaswag", "arc_easy"), iter_num=None, limit=0, batch_size=1,
                   seed=1234, num_fewshot=None, files=None, fewshot_files=None):
    """Evaluate model on tasks, append one record per task to out_dir/eval.json and return the records.
    num_fewshot, files, fewshot_files: optional {task: value}; by default the paper's shots and the hub."""
    from tokenizer import get_gpt2_encoding
    encode = get_gpt2_encoding().encode_ordinary
    device = next(model.parameters()).device
    block_size = model.config.block_size
    records = []
    for task in tasks:
        if task not in TASKS:
            raise EvalError(f"unknown task '{task}'; known tasks: {', '.join(TASKS)}.")
        k = (num_fewshot or {}).get(task, TASKS[task]["num_fewshot"])
        docs, pool, source = load_task(task, (files or {}).get(task, ""), (fewshot_files or {}).get(task, ""), k)
        same_split = pool is docs
        if limit:
            docs = docs[:limit]  # the pool stays whole, as with lm-eval's --limit
        contexts = fewshot_contexts(docs, pool, k, seed, same_split)
        examples = [dict(doc, context=context) for doc, context in zip(docs, contexts)]
        result = evaluate(model, examples, encode, block_size, batch_size, device, desc=f"{task} {k}-shot")
        record = {"iter": iter_num, "task": task, "num_fewshot": k, **result, "block_size": block_size,
                  "data": source, "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        append_records(os.path.join(out_dir, "eval.json"), [record])
        print(f"{task} {k}-shot: acc {_show(result['acc'], result['acc_stderr'])}, "
              f"acc_norm {_show(result['acc_norm'], result['acc_norm_stderr'])} (n={result['n']}, iter {iter_num})")
        records.append(record)
    return records


# -----------------------------------------------------------------------------
# command line: nanoGPT-style --key=value settings (configurator.py)

def main(argv):
    from configurator import apply_config
    from model import GPT, checkpoint_path
    defaults = dict(
        out_dir="out",  # reads out_dir/best.pt (or ckpt.pt, see checkpoint), appends to out_dir/eval.json
        checkpoint="best",  # 'best': best.pt (best val loss) when there is one, else ckpt.pt; 'latest': ckpt.pt
        tasks="hellaswag,arc_easy",
        limit=0,  # evaluate the first `limit` examples of each task; 0 = all
        # examples per forward, each with all its choices. Larger helps on a GPU; on a CPU it is slower, as the
        # logits of every position (B x T x vocab) dominate
        batch_size=1,
        device="cuda" if torch.cuda.is_available() else "cpu",
        seed=1234,  # of the few-shot draw (lm-eval's default)
        hellaswag_num_fewshot=TASKS["hellaswag"]["num_fewshot"],
        arc_easy_num_fewshot=TASKS["arc_easy"]["num_fewshot"],
        # local jsonl files; empty: the Hugging Face hub
        hellaswag_file="",
        hellaswag_fewshot_file="",
        arc_easy_file="",
        arc_easy_fewshot_file="",
    )
    c = apply_config(defaults, argv)
    tasks = [t for t in c["tasks"].split(",") if t]
    try:
        try:
            ckpt_path = checkpoint_path(c["out_dir"], c["checkpoint"])
        except ValueError as e:
            raise EvalError(str(e))
        unknown = [t for t in tasks if t not in TASKS]
        if unknown or not tasks:
            raise EvalError(f"unknown task(s) {', '.join(unknown) or '(none given)'}; known tasks: {', '.join(TASKS)}.")
        if not os.path.exists(ckpt_path):
            raise EvalError(f"no checkpoint at {ckpt_path}; train one with train.py or pass --out_dir=DIR.")
        try:
            checkpoint = torch.load(ckpt_path, map_location=c["device"], weights_only=False)
            model = GPT.from_checkpoint(checkpoint).to(c["device"])
        except Exception as e:
            raise EvalError(f"could not load a model from {ckpt_path} ({_first_line(e)}).")
        run_downstream(model, c["out_dir"], tasks, iter_num=checkpoint.get("iter_num"), limit=c["limit"],
                       batch_size=c["batch_size"], seed=c["seed"],
                       num_fewshot={t: c[f"{t}_num_fewshot"] for t in TASKS},
                       files={t: c[f"{t}_file"] for t in TASKS},
                       fewshot_files={t: c[f"{t}_fewshot_file"] for t in TASKS})
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
