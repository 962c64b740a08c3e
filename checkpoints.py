"""A run's files in one place: where train.py writes its checkpoints and how, how sample.py, eval.py and bench/ read
them back (safely, with one sentence when they cannot), and the guard that keeps one run per out_dir.

out_dir holds one run: ckpt.pt (the latest state, what --init_from=resume reads), best.pt (the weights of the best
val loss so far, what sample.py and eval.py read), ckpt-<iter>.pt (keep_checkpoints), metrics.jsonl, loss.png,
eval.json and compile.json (torch.compile's graph breaks); train.lock is held by the process training into it.
These names (RUN_FILES) are all that --overwrite deletes: a user's own files in the folder (ckpt-final.pt,
notes.txt) stay.
"""
import contextlib
import fcntl
import json
import os
import pickle
import re

import torch

from model import GPT, SPLITTINGS
from tokenizer import GPT2_VOCAB_SIZE, get_codec, read_meta

REPO = os.path.dirname(os.path.abspath(__file__))
# what train.py and eval.py write into an out_dir, with write_atomically's and eval.py's temporary files
RUN_FILES = re.compile(r'(ckpt|best)\.pt(\.tmp)?|ckpt-\d+\.pt|metrics\.jsonl(\.tmp)?|loss\.png|'
                       r'eval\.json(\.\d+\.tmp)?|compile\.json')
KEPT_COPY = re.compile(r'ckpt-\d+\.pt')  # keep_checkpoints' copies, ckpt-<iter>.pt
LOCK_FILE = 'train.lock'


class CheckpointError(Exception):
    """What is wrong with a checkpoint or an out_dir, and what to do, in one sentence."""


def first_line(e):
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


# -----------------------------------------------------------------------------
# writing

def write_atomically(obj, path):
    """torch.save to path.tmp, flushed, fsynced and renamed over path, so a crash never leaves a damaged file."""
    tmp_path = path + '.tmp'
    try:
        with open(tmp_path, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp_path)
        raise


# -----------------------------------------------------------------------------
# reading

def checkpoint_path(out_dir, which='best'):
    """The checkpoint in out_dir that sample.py and eval.py read: which='best' reads best.pt when there is one, else
    ckpt.pt (a nanoGPT run); which='latest' reads ckpt.pt."""
    if which not in ('best', 'latest'):
        raise CheckpointError(f"checkpoint='{which}' is not one of 'best', 'latest'.")
    best = os.path.join(out_dir, 'best.pt')
    return best if which == 'best' and os.path.exists(best) else os.path.join(out_dir, 'ckpt.pt')


def read_checkpoint(path, purpose='load', mmap=False):
    """The checkpoint dict in path, tensors and plain data only (weights_only: unpickling anything else could run
    code). purpose completes "could not ... path" in the error; mmap reads tensors only when they are used."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}: train one with train.py first, or point --out_dir at its "
                              f"folder.")
    try:
        return torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        unsafe = re.search(r"GLOBAL (\S+)", str(e))
        if unsafe:
            raise CheckpointError(f"{path} holds a pickled Python object that is not a tensor or plain data "
                                  f"({unsafe.group(1)}); it is refused, as loading it could run code: use only "
                                  f"checkpoints written by train.py or nanoGPT.") from None
        raise damaged(path, purpose, e) from None
    except Exception as e:
        raise damaged(path, purpose, e) from None


def damaged(path, purpose, e):
    return CheckpointError(f"could not {purpose} {path} ({first_line(e)}); it is damaged or was not written by "
                           f"train.py or nanoGPT.")


def current_name(key, splitting):
    """A weight's name in this version of model.py. Compiled and DDP models saved theirs with _orig_mod. and
    module. prefixes; before substeps were modules (checkpoints until 2026-11-29) the scalars were attributes of the
    block (h.0.attn_mu, h.0.euler_mlp_gamma) and LN_v a dict (h.0.ln_v.attn.weight)."""
    key = key.removeprefix('_orig_mod.').removeprefix('module.')
    old = re.fullmatch(r'(transformer\.h\.\d+\.)(?:ln_v\.(\w+)\.(weight|bias)|(\w+?)_(?:(attn|mlp)_)?(mu|beta|gamma))', key)
    if not old:
        return key
    layer, ln_step, ln_weight, step, oracle, scalar = old.groups()
    if ln_step:
        return f"{layer}substeps.{ln_step}.ln_v.{ln_weight}"
    if scalar == "gamma":  # one gamma per oracle call; a substep that calls one oracle named it <step>_gamma
        return f"{layer}substeps.{step}.gamma.{oracle or next(iter(SPLITTINGS[splitting][step]))}"
    return f"{layer}substeps.{step}.{scalar}"


def model_from_checkpoint(checkpoint, **changes):
    """The GPT of a checkpoint dict, ours (of any version) or nanoGPT's; changes (e.g. dropout) override its
    model_args."""
    model_args = {**checkpoint['model_args'], **changes}
    splitting = model_args.get('splitting', 'lie_trotter')
    state_dict = {current_name(k, splitting): v for k, v in checkpoint['model'].items()}
    # nanoGPT's causal-mask buffer (torch without flash attention) is not a weight
    state_dict = {k: v for k, v in state_dict.items() if not re.fullmatch(r'transformer\.h\.\d+\.attn\.bias', k)}
    return GPT.from_checkpoint({'model_args': model_args, 'model': state_dict})


def load_model(path, which='best', hub=False, **changes):
    """What the user named -> (model, checkpoint dict, the file read): an out_dir (its best.pt, or ckpt.pt: see
    checkpoint_path), a checkpoint file, or a model in Hugging Face format (a folder with a config.json; with hub,
    as init_from takes names, also a Hub id or 'gpt2', ...: convert.py reads it, and the dict is {'hf': path}).
    The one way sample.py, eval.py and train.py's init_from get a model; changes (e.g. dropout) override its
    settings; errors: CheckpointError."""
    if os.path.isfile(os.path.join(path, 'config.json')) or (hub and not os.path.exists(path)):
        from convert import ConvertError, load_hf
        try:
            return load_hf(path, changes), {'hf': path}, path
        except ConvertError as e:
            raise CheckpointError(str(e)) from None
    file = path if os.path.isfile(path) else checkpoint_path(path, which)
    checkpoint = read_checkpoint(file)
    try:
        model = model_from_checkpoint(checkpoint, **changes)
    except Exception as e:  # weights that do not fit the model_args, keys missing, ...
        raise damaged(file, 'load a model from', e) from None
    return model, checkpoint, file


def tokenizer_of(checkpoint, model, file):
    """(encode, decode, end-of-document id) of the dataset the model was trained on (its meta.json; GPT-2 BPE when
    there is none, as nanoGPT), checked against the model's vocabulary, which train.py pads up to a multiple of 64.
    A model in Hugging Face format comes with its own tokenizer, in its folder (read as data: convert.hf_codec)."""
    if 'hf' in checkpoint:
        from convert import ConvertError, hf_codec
        try:
            encode, decode, eot, vocab = hf_codec(checkpoint['hf'])
        except ConvertError as e:
            raise CheckpointError(str(e)) from None
        source, fix = f"{file}'s tokenizer.json", "the folder is damaged, or its files come from two models"
    else:
        dataset = checkpoint.get('config', {}).get('dataset', '')
        data_dir = dataset if os.path.isdir(dataset) else os.path.join(REPO, 'data', dataset)
        meta = read_meta(data_dir) if dataset else {}
        vocab = meta.get('vocab_size', GPT2_VOCAB_SIZE)
        if dataset and not meta and not GPT2_VOCAB_SIZE <= model.config.vocab_size < GPT2_VOCAB_SIZE + 64:
            raise CheckpointError(f"the model in {file} has a vocabulary of {model.config.vocab_size} tokens, not "
                                  f"GPT-2's, and its tokenizer, the meta.json of its dataset '{dataset}', is not in "
                                  f"{data_dir}: prepare that dataset here, or copy its folder (meta.json is enough).")
        source = os.path.join(data_dir, 'meta.json') if meta else 'GPT-2 BPE'
        fix = "prepare the dataset the model was trained on, or pick the matching --out_dir"
        try:
            encode, decode = get_codec(data_dir)
        except ValueError as e:  # a meta.json naming a tokenizer we do not have
            raise CheckpointError(f"{e}; the dataset was not prepared by this repository's prepare.py.") from None
        eot = 0 if meta.get('tokenizer') == 'char' else 50256  # char: id 0 ends a document
    if not vocab <= model.config.vocab_size < vocab + 64:
        raise CheckpointError(f"the model has a vocabulary of {model.config.vocab_size} tokens but its tokenizer "
                              f"({source}) has {vocab}; they do not belong together: {fix}.")
    return encode, decode, eot


# -----------------------------------------------------------------------------
# one run per out_dir

_lock = None  # the lock file this process holds open: the kernel releases it when the process ends, however


def lock_out_dir(out_dir):
    """Hold out_dir's train.lock (flock) for the rest of this process, or say which process holds it. Returns a
    note when the filesystem cannot lock (some network ones): the run goes on unguarded."""
    global _lock
    unlock_out_dir()
    f = open(os.path.join(out_dir, LOCK_FILE), 'a+')
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise CheckpointError(f"out_dir='{out_dir}' is in use by another train.py run (process "
                              f"{holder or 'unknown'}); wait for it to end, stop it, or choose another --out_dir.")
    except OSError as e:
        f.close()
        return f"note: cannot lock {out_dir} ({e.strerror or e}), so nothing stops a second run from training into it"
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _lock = f
    return None


def unlock_out_dir():
    """Let go of this process's out_dir lock (what the end of the process does; tests run train.py in-process)."""
    global _lock
    if _lock is not None:
        _lock.close()
        _lock = None


def run_files(out_dir):
    """The files of out_dir that a run of this repository wrote (RUN_FILES); a link among them is the link itself."""
    names = os.listdir(out_dir) if os.path.isdir(out_dir) else []
    paths = [os.path.join(out_dir, n) for n in sorted(names) if RUN_FILES.fullmatch(n)]
    return [p for p in paths if os.path.islink(p) or os.path.isfile(p)]


def check_fresh_out_dir(out_dir, overwrite):
    """Before a new run (not a resume) trains into out_dir: the files to delete before it starts. A run is there when
    out_dir holds a checkpoint or eval.json: that is refused, or with overwrite its files are returned, for
    delete_run once every other check of the new run has passed. metrics.jsonl and loss.png alone (a run stopped
    before its first checkpoint: nothing to resume) are simply replaced."""
    files = run_files(out_dir)
    if overwrite:
        return files
    names = [os.path.basename(p) for p in files]
    if not [n for n in names if n.endswith(('.pt', '.pt.tmp')) or n.startswith('eval.json')]:
        return []
    what = ', '.join(names)
    ckpt_path = os.path.join(out_dir, 'ckpt.pt')
    if os.path.exists(ckpt_path):
        try:
            ckpt = read_checkpoint(ckpt_path, mmap=True)  # not its 1.5 GB of tensors
            what = f"ckpt.pt at iter {ckpt['iter_num']}, best val loss {ckpt['best_val_loss']:.4f}"
        except (CheckpointError, KeyError, TypeError):
            what = "an unreadable ckpt.pt"
    raise CheckpointError(f"out_dir='{out_dir}' holds another run ({what}): continue it with --init_from=resume, "
                          f"start over with --overwrite=True (deletes its {', '.join(sorted(set(names)))}), or "
                          f"choose another --out_dir.")


def delete_run(files):
    """Delete an earlier run's files (check_fresh_out_dir's list); a link goes, not what it points to."""
    for path in files:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def inside(path, folder):
    """Whether path is folder or lies inside it, by real paths (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


# -----------------------------------------------------------------------------
# metrics.jsonl

def read_metrics(path):
    """The rows of a metrics.jsonl (train.py's log; path: the file or its out_dir). A last line that is not JSON (a
    kill or a full disk mid-write) is dropped with a note; a damaged line before it is an error (ValueError)."""
    if os.path.isdir(path):
        path = os.path.join(path, 'metrics.jsonl')
    with open(path, encoding='utf-8', errors='replace') as f:
        lines = f.read().splitlines()
    rows = []
    for line_no, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get('iter'), int):
            if line_no == len(lines):
                print(f"note: the last line of {path} is cut short (a run killed while writing it); it is left out")
                break
            raise ValueError(f"{path}, line {line_no}, is not a row of train.py's metrics; the file is damaged: move "
                             f"it away (a resumed run then starts a new one)")
        rows.append(row)
    return rows


def write_metrics(rows, path):
    """rows as path's lines, atomically: a killed process leaves the old file or the new one, never a mix."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.writelines(json.dumps(row) + '\n' for row in rows)
    os.replace(tmp, path)
