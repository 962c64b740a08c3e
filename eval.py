"""
Downstream evaluation through lm-evaluation-harness (lm-eval), as the paper reports it: HellaSwag 10-shot and
ARC-Easy 25-shot acc / acc_norm, with lm-eval's own task definitions, prompts, few-shot draw and metrics.

$ python eval.py --out_dir=out-tinystories-cpu-nesterov --limit=200
$ python eval.py --out_dir=out --tasks=arc_easy --arc_easy_file=test.jsonl --arc_easy_fewshot_file=train.jsonl
$ python eval.py --out_dir=out --tasks=piqa,lambada_openai --num_fewshot=0
$ python eval.py --init_from=hf-tinystories-nesterov --out_dir=out-hf   # a Hugging Face folder (convert.py) or Hub id

Any lm-eval task that scores log-likelihoods works (multiple choice, perplexity); generation tasks do not.
Our part is the model adapter (GPTAdapter: lm-eval's TemplateLM over our model and the tokenizer of the
checkpoint's dataset) and the data: the hub when online, or local jsonl files in the hub's layout (what
`datasets` exports), pointed at with --<task>_file / --<task>_fewshot_file. Results are appended to
out_dir/eval.json, one record per task.
"""
import fcntl
import functools
import json
import logging
import os
import sys
from datetime import datetime, timezone

if not sys.stdout.isatty():  # scheduler logs get no progress bars: datasets' (tqdm reads this at import), ours below
    os.environ.setdefault("TQDM_DISABLE", "1")

import torch
from lm_eval.api.model import TemplateLM
from torch.nn import functional as F
from tqdm import tqdm

from checkpoints import first_line

# the paper's number of few-shot examples; other tasks default to lm-eval's (usually 0)
PAPER_FEWSHOT = {"hellaswag": 10, "arc_easy": 25}


class EvalError(Exception):
    """A problem with the inputs, said in one sentence; the command line prints it without a traceback."""


# -----------------------------------------------------------------------------
# lm-eval's model interface over our model

class GPTAdapter(TemplateLM):
    """lm-eval's TemplateLM for a GPT of model.py (ours or nanoGPT's weights): lm-eval turns each request into
    (context tokens, continuation tokens) with encode, and we return the summed log-probability of the
    continuation, batch_size requests per forward. The context is cut from the left to fit block_size."""

    def __init__(self, model, encode, eot_token_id, batch_size=1):
        super().__init__()
        self.model, self.encode, self._eot, self.batch_size = model, encode, eot_token_id, batch_size
        self.block_size = model.config.block_size

    @property
    def eot_token_id(self):
        return self._eot

    def tok_encode(self, string, **kwargs):
        return self.encode(string)

    @torch.no_grad()
    def score(self, pairs):
        """(sum of log P(continuation | context), whether greedy decoding gives the continuation) for each
        (context tokens, continuation tokens) pair, in one batched forward."""
        rows = []
        for context, continuation in pairs:
            if not context or not 0 < len(continuation) <= self.block_size:
                raise EvalError(f"cannot score a continuation of {len(continuation)} tokens after a context of "
                                f"{len(context)}: it needs a context and at most block_size={self.block_size} tokens.")
            rows.append((context + continuation)[-(self.block_size + 1):])  # the model's input is all but the last
        device = next(self.model.parameters()).device
        x = torch.zeros((len(rows), max(len(r) for r in rows) - 1), dtype=torch.long)
        for i, row in enumerate(rows):
            x[i, :len(row) - 1] = torch.tensor(row[:-1])  # right padding: a causal model never attends to it
        logits, _ = self.model(x.to(device), x.to(device))  # with targets, GPT returns every position's logits
        results = []
        for i, (row, (_, continuation)) in enumerate(zip(rows, pairs)):
            n = len(continuation)
            # position j predicts token j + 1: the continuation is predicted by the last n input positions
            logprobs = F.log_softmax(logits[i, len(row) - 1 - n:len(row) - 1].float(), dim=-1)
            target = torch.tensor(continuation, device=logprobs.device)
            results.append((logprobs.gather(1, target[:, None]).sum().item(),
                            bool((logprobs.argmax(-1) == target).all())))
        return results

    def loglikelihood(self, requests, disable_tqdm=False):
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not sys.stdout.isatty())

    def _loglikelihood_tokens(self, requests, disable_tqdm=False):
        was_training = self.model.training
        self.model.eval()
        results = []
        for start in tqdm(range(0, len(requests), self.batch_size), desc="scoring", dynamic_ncols=True,
                          disable=disable_tqdm):
            batch = requests[start:start + self.batch_size]
            results += self.score([(context, continuation) for _, context, continuation in batch])
        self.model.train(was_training)
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm=False):
        """Perplexity tasks: the whole text in windows of block_size tokens, each scored once (lm-eval's rule)."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        totals = []
        for request in requests:
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                self.encode(request.args[0]), self.eot_token_id, self.block_size, 1)]
            scores = self._loglikelihood_tokens([(None, c, t) for c, t in windows], disable_tqdm=True)
            totals.append(sum(ll for ll, _ in scores))
        return totals

    def generate_until(self, requests, disable_tqdm=False):
        raise EvalError("generation tasks are not supported; choose tasks scored by log-likelihood "
                        "(multiple choice or perplexity).")


# -----------------------------------------------------------------------------
# tasks: lm-eval's own definitions, optionally reading local jsonl files

def _hub_offline():
    return any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.cache
def _task_manager(tasks=()):
    """lm-eval's index of task definitions, once per process and set of tasks. Indexing all ~15k of lm-eval's tasks
    takes ~9 s; the folders named like the start of the tasks' names (arc for arc_easy, hellaswag) take
    milliseconds, so they are tried first, and everything is indexed only when a task is not found there."""
    import lm_eval.tasks
    from lm_eval.tasks import TaskManager
    root = os.path.dirname(lm_eval.tasks.__file__)
    folders = [os.path.join(root, d) for d in sorted(os.listdir(root))
               if any(t == d or t.startswith(d + "_") for t in tasks) and os.path.isdir(os.path.join(root, d))]
    if folders:
        task_manager = TaskManager(include_defaults=False, include_path=folders)
        if all(t in task_manager.all_tasks for t in tasks):
            return task_manager
    return TaskManager()


def _task_config(task_manager, task):
    """The YAML definition of a task, as a dict that lm-eval accepts in place of the name."""
    from lm_eval.tasks._yaml_loader import load_yaml
    path = task_manager.task_index[task].yaml_path
    if path is None:
        raise EvalError(f"task '{task}' is not defined by a YAML file, so its data source cannot be changed.")
    return load_yaml(path, resolve_func=True)


def task_spec(task_manager, task, path="", fewshot_path=""):
    """The task as lm-eval defines it; with path, its evaluated split read from that jsonl file, and its
    few-shot split from fewshot_path (without one, from path itself, never the example being scored)."""
    if task not in task_manager.all_tasks:
        raise EvalError(f"unknown task '{task}'; `python -m lm_eval ls tasks` lists lm-eval's task names.")
    if not path:
        return task
    for p in (path, fewshot_path):
        if p and not os.path.isfile(p):
            raise EvalError(f"data file '{p}' does not exist.")
    cfg = _task_config(task_manager, task)
    eval_split = cfg.get("test_split") or cfg.get("validation_split")
    shots_split = cfg.get("fewshot_split") or cfg.get("training_split") or cfg.get("validation_split")
    data_files = {eval_split: os.path.abspath(path)}
    if fewshot_path:
        data_files[shots_split] = os.path.abspath(fewshot_path)
    cfg.update(dataset_path="json", dataset_name=None, dataset_kwargs={"data_files": data_files})
    for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
        if cfg.get(key) not in data_files:
            cfg[key] = None
    return cfg


def _check_hub(tasks, files):
    """Offline, `datasets` retries for ~25 s before failing; this answers in <= 5 s."""
    from_hub = [t for t in tasks if not files.get(t)]
    if from_hub and not _hub_offline():
        from dataprep import _hub_reachable
        if not _hub_reachable():
            raise EvalError(f"{', '.join(from_hub)} need(s) the Hugging Face hub, which cannot be reached: pass "
                            f"local jsonl files with --{from_hub[0]}_file=PATH (and --{from_hub[0]}_fewshot_file=PATH "
                            f"for the few-shot examples) instead.")


# -----------------------------------------------------------------------------
# results

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


def _metrics(task_results):
    """lm-eval's "acc,none": 0.5 as "acc": 0.5 (a filter other than none stays in the name); no alias."""
    return {k.removesuffix(",none"): v for k, v in task_results.items() if k not in ("alias", "name", "sample_len")}


def _build_task(task_manager, task, spec, source):
    """lm-eval's Task object for spec, its data loaded (from the hub's parquet conversion when datasets refuses the
    dataset's loading script); a group of tasks stays a spec."""
    from lm_eval.api.task import Task

    from dataprep import PARQUET_REVISION, SCRIPT_ERROR, parquet_note
    try:
        try:
            built = task_manager.load(spec)
        except Exception as e:
            if SCRIPT_ERROR not in str(e) or not isinstance(spec, str):
                raise
            cfg = _task_config(task_manager, task)
            parquet_note(cfg["dataset_path"])
            built = task_manager.load(dict(cfg, dataset_kwargs={**(cfg.get("dataset_kwargs") or {}),
                                                                 "revision": PARQUET_REVISION}))
    except EvalError:
        raise
    except Exception as e:  # a dataset that cannot be loaded or does not fit the task's layout
        raise EvalError(f"lm-eval could not evaluate {task} on {source} ({first_line(e)}).")
    task_obj = built["tasks"].get(task)
    return task_obj if isinstance(task_obj, Task) and not built["groups"] else spec


def _doc_texts(task_obj, doc):
    """The strings of one example that reach the tokenizer: its prompt and its choices or target."""
    texts = [task_obj.doc_to_text(doc)]
    if task_obj.OUTPUT_TYPE == "multiple_choice":
        texts += list(task_obj.doc_to_choice(doc))
    else:
        target = task_obj.doc_to_target(doc)
        texts += target if isinstance(target, list) else [target]
    return [t for t in texts if isinstance(t, str)]


def _unencodable(task_obj, docs, encode):
    """The positions of the docs whose text encode refuses (a character-level vocabulary lacks some character),
    and those characters."""
    bad, chars, known = [], set(), {}

    def encodes(text):
        try:
            encode(text)
            return True
        except ValueError:
            return False
    for i, doc in enumerate(docs):
        failing = [t for t in _doc_texts(task_obj, doc) if not encodes(t)]
        if failing:
            bad.append(i)
            for ch in set("".join(failing)):
                if ch not in known:
                    known[ch] = encodes(ch)
                if not known[ch]:
                    chars.add(ch)
    return bad, chars


def _prepare_task(task_obj, task, k, lm, limit, encodable_only, source):
    """Check a built task before it is scored: every example's text must be encodable (or, with encodable_only,
    the others are left out: the eval docs through lm-eval's `samples`, the few-shot pool here), and the few-shot
    pool must hold enough examples. Returns (the indices to score or None, the number of examples left out before
    the last one scored, the number of few-shot examples left out)."""
    docs = list(task_obj.eval_docs)
    if limit and not encodable_only:
        docs = docs[:limit]
    bad, chars = _unencodable(task_obj, docs, lm.encode)
    sampler = getattr(task_obj, "sampler", None)
    pool = list(sampler.fewshot_docs()) if sampler is not None and k else []
    bad_shots, shot_chars = _unencodable(task_obj, pool, lm.encode)
    if (bad or bad_shots) and not encodable_only:
        shots = f" (and {len(bad_shots):,} of its {len(pool):,} few-shot examples)" if bad_shots else ""
        raise EvalError(f"{task}: {len(bad):,} of {len(docs):,} examples{shots} hold characters that the model's "
                        f"tokenizer does not have ({''.join(sorted(chars | shot_chars))!r}); score only the others "
                        f"with --encodable_only=True (how many are left out is printed and recorded in eval.json), "
                        f"or evaluate a model with a tokenizer that covers them (GPT-2 BPE covers all text).")
    if bad_shots:
        left_out = set(bad_shots)
        pool = [d for i, d in enumerate(pool) if i not in left_out]
        sampler.df, sampler._loaded = pool, True
    if sampler is not None and k:
        same_split = getattr(task_obj, "fewshot_cfg", None) is not None and \
            task_obj.fewshot_cfg.split == task_obj.config.test_split
        if len(pool) < k + same_split:  # lm-eval draws k + 1 and drops the example being scored
            other = " other than the example being scored" if same_split else ""
            raise EvalError(f"{task} asks for {k} few-shot examples{other}, but its few-shot data ({source}) holds "
                            f"{len(pool) - same_split}" + (" encodable ones" if bad_shots else "") + "; give more "
                            f"with --{task}_fewshot_file=PATH, or fewer shots with --num_fewshot.")
    if not encodable_only:
        return None, 0, 0
    left_out = set(bad)
    scored = [i for i in range(len(docs)) if i not in left_out][:limit or None]
    end = scored[-1] + 1 if limit and scored else len(docs)
    return scored, sum(i < end for i in bad), len(bad_shots)


def run_downstream(lm, out_dir, tasks=("hellaswag", "arc_easy"), iter_num=None, limit=0, seed=1234,
                   num_fewshot=None, files=None, fewshot_files=None, encodable_only=False):
    """Evaluate lm (a GPTAdapter) on tasks with lm-eval, append one record per task to out_dir/eval.json and
    return the records. num_fewshot, files, fewshot_files: optional {task: value}; by default the paper's shots
    (lm-eval's for other tasks) and the hub. encodable_only: leave out the examples holding text the tokenizer
    cannot encode (a character-level model's), and record how many."""
    import lm_eval
    logging.getLogger("lm_eval").setLevel(logging.ERROR)  # its notes on every default it fills in

    files, fewshot_files, num_fewshot = files or {}, fewshot_files or {}, num_fewshot or {}
    if not tasks:
        raise EvalError("no task given; e.g. --tasks=hellaswag,arc_easy.")
    task_manager = _task_manager(tuple(tasks))
    specs = [task_spec(task_manager, t, files.get(t, ""), fewshot_files.get(t, "")) for t in tasks]
    _check_hub(tasks, files)
    # every task is loaded and checked before any is scored: a bad one stops the run before eval.json changes
    prepared = []
    for task, spec in zip(tasks, specs):
        source = files.get(task) or "the hub data"
        task_obj = _build_task(task_manager, task, spec, source)
        k = num_fewshot.get(task, PAPER_FEWSHOT.get(task))
        if isinstance(task_obj, str):  # a group: lm-eval's own path, unchecked
            prepared.append((task, task_obj, k, None, 0, 0, source))
            continue
        shots = task_obj.config.num_fewshot if k is None else k
        prepared.append((task, task_obj, k, *_prepare_task(task_obj, task, shots or 0, lm, limit, encodable_only,
                                                          fewshot_files.get(task) or source), source))
    records = []
    for task, task_obj, k, indices, left_out, left_out_shots, source in prepared:
        try:
            out = lm_eval.simple_evaluate(lm, tasks=[task_obj], num_fewshot=k,
                                          limit=None if indices is not None else limit or None,
                                          samples=None if indices is None else {task: indices},
                                          task_manager=task_manager, log_samples=False, verbosity="ERROR",
                                          random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                          fewshot_random_seed=seed)
        except EvalError:
            raise
        except Exception as e:  # a dataset that does not fit the task's layout
            raise EvalError(f"lm-eval could not evaluate {task} on {source} ({first_line(e)}).")
        metrics = _metrics(out["results"][task])
        record = {"iter": iter_num, "task": task, "num_fewshot": out["n-shot"].get(task, k),
                  "n": out["n-samples"].get(task, {}).get("effective"), **metrics, "block_size": lm.block_size,
                  "data": files.get(task) or "hub", "left_out": left_out, "left_out_fewshot": left_out_shots,
                  "lm_eval": lm_eval.__version__,
                  "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        append_records(os.path.join(out_dir, "eval.json"), [record])
        shown = ", ".join(f"{m} {v:.4f}" + (f" ± {metrics[m + '_stderr']:.4f}"
                                             if isinstance(metrics.get(m + "_stderr"), float) else "")
                          for m, v in metrics.items() if not m.endswith("_stderr") and isinstance(v, float))
        print(f"{task} {record['num_fewshot']}-shot: {shown} (n={record['n']}, iter {iter_num}"
              + (f"; left out, holding text the tokenizer cannot encode: {left_out:,} examples, {left_out_shots:,} "
                 f"few-shot examples" if left_out or left_out_shots else "") + ")")
        records.append(record)
    return records


# -----------------------------------------------------------------------------
# checkpoint -> model and tokenizer

def load_model(path, device="cpu", batch_size=1, which="best", hub=False):
    """A GPTAdapter over the model that path names (an out_dir, a checkpoint file or a Hugging Face folder; with hub
    also a Hub id: checkpoints.load_model) with the tokenizer of its dataset (a folder's own), and the checkpoint's
    iteration."""
    from checkpoints import CheckpointError, load_model as load, tokenizer_of
    try:
        model, checkpoint, file = load(path, which, hub=hub)
        encode, _, eot = tokenizer_of(checkpoint, model, file)
    except CheckpointError as e:
        raise EvalError(str(e)) from None
    return GPTAdapter(model.to(device), encode, eot, batch_size), checkpoint.get("iter_num")


# -----------------------------------------------------------------------------
# command line: nanoGPT-style --key=value settings (configurator.py)

def main(argv):
    from configurator import apply_config
    defaults = dict(
        out_dir="out",  # reads out_dir/best.pt (or ckpt.pt, see checkpoint), appends to out_dir/eval.json
        init_from="",  # a Hugging Face folder or Hub id (convert.py --to=hf) to evaluate instead of out_dir's checkpoint
        checkpoint="best",  # 'best': best.pt (best val loss) when there is one, else ckpt.pt; 'latest': ckpt.pt
        tasks="hellaswag,arc_easy",  # any lm-eval task names, comma-separated
        limit=0,  # evaluate the first `limit` examples of each task; 0 = all
        # requests per forward. Larger helps on a GPU; on a CPU it is slower, as the logits of every position
        # (B x T x vocab) dominate
        batch_size=1,
        device="cuda" if torch.cuda.is_available() else "cpu",
        seed=1234,  # of the few-shot draw (lm-eval's default)
        num_fewshot=-1,  # for every task; -1: the paper's 10 (hellaswag) and 25 (arc_easy), lm-eval's for others
        # local jsonl files in the hub's layout; empty: the Hugging Face hub
        hellaswag_file="",
        hellaswag_fewshot_file="",
        arc_easy_file="",
        arc_easy_fewshot_file="",
        # score only the examples whose text the model's tokenizer can encode (a character-level model's lacks
        # characters of most tasks); how many were left out is printed and recorded
        encodable_only=False,
    )
    c = apply_config(defaults, argv)
    tasks = [t for t in c["tasks"].split(",") if t]
    try:
        lm, iter_num = load_model(c["init_from"] or c["out_dir"], c["device"], c["batch_size"], c["checkpoint"],
                                  hub=bool(c["init_from"]))
        os.makedirs(c["out_dir"], exist_ok=True)
        run_downstream(lm, c["out_dir"], tasks, iter_num=iter_num, limit=c["limit"], seed=c["seed"],
                       num_fewshot={t: c["num_fewshot"] for t in tasks} if c["num_fewshot"] >= 0 else None,
                       files={t: c[f"{t}_file"] for t in PAPER_FEWSHOT},
                       fewshot_files={t: c[f"{t}_fewshot_file"] for t in PAPER_FEWSHOT},
                       encodable_only=c["encodable_only"])
    except EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
