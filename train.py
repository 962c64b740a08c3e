"""
Train GPT or a YuriiFormer (momentum) variant: nanoGPT's train.py, same keys and semantics.

One process (CPU or one GPU):
$ python train.py config/tinystories_cpu_nesterov.py --max_iters=100
DDP on 8 GPUs of one node (gradient_accumulation_steps is divided by the 8 processes):
$ torchrun --standalone --nproc_per_node=8 train.py config/tinystories_nesterov.py
Settings: the defaults below, then config files and --key=value overrides, left to right (configurator.py).
"""
import contextlib
import copy
import dataclasses
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

if not sys.stdout.isatty():  # scheduler logs get no progress bars, ours or the libraries' (read at tqdm's import)
    os.environ.setdefault('TQDM_DISABLE', '1')

import numpy as np
import torch
import torch.distributed as dist
from torch._dynamo.utils import counters as dynamo_counters
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

import checkpoints
from checkpoints import CheckpointError, load_model, write_atomically
from configurator import apply_config
from data_order import EpochOrder
from model import GPT, GPTConfig, device_peak_flops
from tokenizer import read_meta

REPO = os.path.dirname(os.path.abspath(__file__))
# Evaluation uses one fixed set of windows drawn from this seed, independent of `seed`, so every
# variant and every run is scored on exactly the same tokens.
EVAL_SEED = 20260130

# -----------------------------------------------------------------------------
# default config values, nanoGPT's (GPT-2 124M on OpenWebText)
cuda = torch.cuda.is_available()
defaults = dict(
    # I/O
    out_dir='out',
    eval_interval=2000,
    log_interval=1,
    eval_iters=200,
    eval_only=False,  # if True, evaluate once and exit
    always_save_checkpoint=True,  # ckpt.pt at every eval; if False, only when val loss improves (and on stop, at the end)
    # also keep this run's last N checkpoints as ckpt-<iter>.pt; 0 = none. Each is a hard link to ckpt.pt when saved,
    # so free only until ckpt.pt is next replaced: N kept copies cost N full checkpoints (weights + optimizer state)
    keep_checkpoints=0,
    max_bad_steps=5,  # a step with a non-finite loss or gradient is skipped; this many in a row stop the run
    debug=False,  # print the Python traceback behind an error message
    plot=True,  # draw out_dir/loss.png at the end of the run (plot.py; about a second)
    # 'scratch' | 'resume' (from out_dir/ckpt.pt, the latest state) | weights to fine-tune: another run's out_dir
    # (its best.pt), a Hugging Face folder or Hub id (convert.py --to=hf), 'gpt2', 'gpt2-medium', ...
    init_from='scratch',
    # a new run into an out_dir that holds another run: delete that run's files (RUN_FILES in checkpoints.py, no
    # others) once every check of the new run has passed, just before it starts
    overwrite=False,
    # wandb logging
    wandb_log=False,
    wandb_project='owt',
    wandb_run_name='gpt2',
    # data
    dataset='openwebtext',  # a folder under data/, or a path to any folder holding train.bin and val.bin
    gradient_accumulation_steps=5 * 8,  # for one process; divided by the number of processes under torchrun
    batch_size=12,  # micro-batch size
    data_order='random',  # 'random': nanoGPT's random windows; 'epoch': the paper's shuffled epochs (data_order.py)
    # optimizer: 'adamw' for everything, or 'muon' (the paper's) for the 2-D matrices inside the blocks
    # at muon_lr, with AdamW for the rest (model.configure_optimizers)
    optimizer='adamw',
    muon_lr=0.02,  # peak; the paper's 0.02 on TinyStories, 0.004 on OpenWebText
    learning_rate=6e-4,  # AdamW's peak; the mu/beta/gamma scalars get lr_scale times this
    max_iters=600000,
    weight_decay=1e-1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,  # clip gradients at this norm, or 0.0 for no clipping
    # learning rate schedule: linear warmup, then cosine down to min_lr
    decay_lr=True,
    warmup_iters=2000,
    lr_decay_iters=600000,  # ~= max_iters per Chinchilla
    min_lr=6e-5,  # ~= learning_rate / 10 per Chinchilla
    # system
    backend=None,  # DDP backend; None picks nccl on CUDA, gloo on CPU
    device='cuda' if cuda else 'cpu',  # 'cpu', 'cuda', 'cuda:1', 'mps', ...
    dtype='float32',  # 'float32' | 'bfloat16' | 'float16'; default set by device below
    compile=False,  # torch.compile the model; default set by device below
    chunked_head=True,  # on CPU the loss goes through model.py's chunked head; False: the full-logits loss, as on CUDA
    peak_flops=0.0,  # the MFU denominator; 0: the device's dense peak for dtype (model.device_peak_flops)
    seed=1337,
    # downstream evaluation (eval.py) of the best checkpoint at the end: the paper's HellaSwag 10-shot and
    # ARC-Easy 25-shot; from the hub, or from local jsonl files when these paths are set
    eval_downstream=False,
    downstream_tasks='hellaswag,arc_easy',
    downstream_limit=0,  # evaluate only the first N examples of each task; 0 = all
    hellaswag_file='',
    hellaswag_fewshot_file='',
    arc_easy_file='',
    arc_easy_fewshot_file='',
)
# every model option is a setting too; nanoGPT trains without biases, and vocab_size None means
# "from the dataset's meta.json"
defaults.update({f.name: f.default for f in dataclasses.fields(GPTConfig)}, bias=False, vocab_size=None)
config = apply_config(defaults, sys.argv[1:])
# dtype and compile default by the chosen device: read the arguments again with those defaults
on_cuda = config['device'].startswith('cuda') and cuda
defaults.update(
    dtype='bfloat16' if on_cuda and torch.cuda.is_bf16_supported() else 'float32',  # bf16 matmuls are slow on CPUs
    compile=on_cuda,  # on CPU, compiling takes a minute or more and did not speed up our small models
)
config = apply_config(defaults, sys.argv[1:])
globals().update(config)  # as in nanoGPT, every setting is a plain global from here on
# -----------------------------------------------------------------------------

master_process = int(os.environ.get('RANK', 0)) == 0
pbar = None  # the training loop's progress bar


def fail(msg):
    """Stop with one sentence on stderr (printed once under DDP) and a non-zero exit status."""
    if pbar is not None:
        pbar.close()  # before the message, so that it is the last line
    if master_process:
        if debug and sys.exc_info()[0] is not None:
            traceback.print_exc()
        print(f"error: {msg}", file=sys.stderr)
    # torchrun then shows it in its failure report, not <N/A>. Every rank writes it (they stop on the same sentence):
    # the report's root cause is whichever rank the agent saw fail first, not always rank 0
    if os.environ.get('TORCHELASTIC_ERROR_FILE'):
        with contextlib.suppress(OSError), open(os.environ['TORCHELASTIC_ERROR_FILE'], 'w') as f:
            json.dump({'message': f"error: {msg}", 'timestamp': int(time.time())}, f)
    if dist.is_initialized():
        # end at once: tearing the process group down while the other ranks exit too can abort in gloo
        # ("terminate called without an active exception") below the message
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.exit(1)


if device.startswith('cuda') and not cuda:
    fail(f"device='{device}' but PyTorch sees no CUDA GPU here; use --device=cpu.")
if dtype not in ('float32', 'bfloat16', 'float16'):
    fail(f"dtype='{dtype}' is not one of float32, bfloat16, float16.")
if on_cuda and dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
    fail(f"dtype='bfloat16' but this GPU ({torch.cuda.get_device_name()}) does not support it; use --dtype=float16.")
for key in ('eval_interval', 'log_interval', 'eval_iters', 'batch_size', 'block_size', 'gradient_accumulation_steps',
            'max_bad_steps'):
    if config[key] < 1:
        fail(f"{key}={config[key]} must be at least 1.")
if data_order not in ('random', 'epoch'):
    fail(f"data_order='{data_order}' is not one of 'random', 'epoch'.")
if overwrite and init_from == 'resume':
    fail("overwrite=True deletes out_dir's run, so it cannot go with init_from='resume'; drop one of them.")
if overwrite and init_from not in ('scratch', 'resume') and os.path.exists(init_from) \
        and checkpoints.inside(init_from, out_dir):
    fail(f"init_from='{init_from}' lies in out_dir='{out_dir}', whose run overwrite=True deletes; fine-tune into "
         f"another --out_dir.")
for key in ('max_iters', 'warmup_iters', 'lr_decay_iters', 'keep_checkpoints'):
    if config[key] < 0:
        fail(f"{key}={config[key]} must be at least 0.")
if decay_lr and lr_decay_iters < warmup_iters:
    fail(f"lr_decay_iters={lr_decay_iters} ends the schedule before warmup_iters={warmup_iters} ends the warmup; "
         f"give lr_decay_iters >= warmup_iters (usually ~max_iters).")

# DDP: torchrun sets RANK, LOCAL_RANK and WORLD_SIZE
ddp = int(os.environ.get('RANK', -1)) != -1
if ddp:
    rank, local_rank, world_size = (int(os.environ[k]) for k in ('RANK', 'LOCAL_RANK', 'WORLD_SIZE'))
    if gradient_accumulation_steps % world_size != 0:
        fail(f"gradient_accumulation_steps={gradient_accumulation_steps} must be divisible by the "
             f"{world_size} processes torchrun started.")
    gradient_accumulation_steps //= world_size
    if device.startswith('cuda'):
        device = f'cuda:{local_rank}'
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend or ('nccl' if device.startswith('cuda') else 'gloo'))
else:
    rank, world_size = 0, 1


def agreed(error):
    """The outcome of a check that rank 0 alone makes (an error message, or None), shared with every process,
    so that all of them stop together instead of waiting for rank 0 in their next collective."""
    if ddp:
        shared = [error]
        dist.broadcast_object_list(shared, src=0)
        return shared[0]
    return error


seed_offset = rank  # each process draws its own training batches
device_type = 'cuda' if device.startswith('cuda') else 'cpu'  # for autocast and fused AdamW
tokens_per_iter = gradient_accumulation_steps * world_size * batch_size * block_size
error = None
earlier_run = []
if master_process:
    for k, v in config.items():
        if v != defaults[k]:
            print(f"config: {k} = {v!r}")
    print(f"tokens per iteration will be: {tokens_per_iter:,}")
    try:  # find out now, not at the first checkpoint
        os.makedirs(out_dir, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
        # one run per out_dir: this process holds it (rank 0 for all of them) until it ends, and a new run never
        # mixes with, or replaces, another's files unless asked to
        if note := checkpoints.lock_out_dir(out_dir):
            print(note)
        if init_from != 'resume':  # an earlier run's files, deleted (with overwrite) only when this run starts
            earlier_run = checkpoints.check_fresh_out_dir(out_dir, overwrite)
    except OSError as e:
        error = f"cannot write to out_dir='{out_dir}' ({e.strerror or e}); choose a writable --out_dir."
    except CheckpointError as e:
        error = str(e)
if error := agreed(error):
    fail(error)
torch.manual_seed(seed + seed_offset)
if device_type == 'cuda':
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = contextlib.nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
peak_source = "set by peak_flops"
if not peak_flops:
    peak_flops, peak_source = device_peak_flops(device, dtype)
if master_process:
    print(f"MFU is against a peak of {peak_flops / 1e12:,.3g} TFLOP/s: {peak_source}")

# -----------------------------------------------------------------------------
# data: uint16 GPT-2 tokens in train.bin / val.bin (nanoGPT's format)
data_dir = dataset if os.path.isdir(dataset) else os.path.join(REPO, 'data', dataset)
n_tokens = {}
for split in ('train', 'val'):
    path = os.path.join(data_dir, f'{split}.bin')
    if not os.path.exists(path):
        prepare = os.path.join('data', os.path.basename(os.path.normpath(dataset)), 'prepare.py')
        how = (f"`python {prepare} --sample` (a small sample) or `python {prepare}` (the full dataset)"
               if os.path.exists(os.path.join(REPO, prepare)) else "data/<name>/prepare.py --out-dir DIR")
        fail(f"dataset '{dataset}' has no {path}: create it with {how}.")
    if os.path.getsize(path) % 2:
        fail(f"{path} has an odd number of bytes, so it is not a file of uint16 tokens; recreate it with "
             f"data/<name>/prepare.py.")
    n_tokens[split] = os.path.getsize(path) // 2
    if n_tokens[split] < block_size + 1:
        fail(f"{path} holds {n_tokens[split]} tokens, fewer than block_size+1 = {block_size + 1}; "
             f"use more data or a smaller block_size.")


def load_windows(split, offsets):
    """Inputs and next-token targets of the block_size windows starting at offsets."""
    # re-open the memmap for every batch: a long-lived np.memmap leaks memory (nanoGPT)
    data = np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')
    x = torch.stack([torch.from_numpy(data[i:i + block_size].astype(np.int64)) for i in offsets])
    y = torch.stack([torch.from_numpy(data[i + 1:i + 1 + block_size].astype(np.int64)) for i in offsets])
    if device_type == 'cuda':
        return x.pin_memory().to(device, non_blocking=True), y.pin_memory().to(device, non_blocking=True)
    return x.to(device), y.to(device)


# training batches: random windows from a seeded generator of our own, or this process's share of the
# seeded epochs; either's state goes into the checkpoint, so a resumed run continues the same data stream
train_gen = torch.Generator().manual_seed(seed + seed_offset)
epoch_order = EpochOrder(n_tokens['train'], block_size, seed, rank, world_size)  # one order shared by all processes
if data_order == 'epoch' and n_tokens['train'] < (world_size + 1) * block_size:
    fail(f"data_order='epoch' needs at least {(world_size + 1) * block_size} training tokens for {world_size} "
         f"process(es) with block_size={block_size}, but there are {n_tokens['train']}.")


def get_batch():
    if data_order == 'epoch':
        return load_windows('train', epoch_order.next(batch_size))
    offsets = torch.randint(n_tokens['train'] - block_size, (batch_size,), generator=train_gen)
    return load_windows('train', offsets.tolist())


# evaluation: eval_iters * batch_size fixed windows per split, shared out between the processes
eval_windows = {}
for split in ('train', 'val'):
    offsets = torch.randint(n_tokens[split] - block_size, (eval_iters * batch_size,),
                            generator=torch.Generator().manual_seed(EVAL_SEED))
    eval_windows[split] = offsets[rank::world_size].tolist()

# vocab_size None: the dataset's, padded up to a multiple of 64 for efficiency (50257 -> 50304)
meta_vocab_size = read_meta(data_dir).get('vocab_size')
if meta_vocab_size and master_process:
    print(f"found vocab_size = {meta_vocab_size} (inside {os.path.join(data_dir, 'meta.json')})")

# -----------------------------------------------------------------------------
# model and optimizer
iter_num = 0  # optimizer steps taken
best_val_loss = 1e9
kept_copies = []  # the ckpt-<iter>.pt copies this run made (keep_checkpoints), oldest first
checkpoint = None
ckpt_path = os.path.join(out_dir, 'ckpt.pt')  # the latest state
best_path = os.path.join(out_dir, 'best.pt')  # the weights of the best val loss so far


def check_given_settings(model_config, source, how):
    """The model settings given for this run (those not at their defaults) must be the source's, but for dropout and
    block_size (checked by the caller): a resume or a fine-tune takes the source's architecture and would otherwise
    silently ignore them."""
    for f in dataclasses.fields(GPTConfig):
        if f.name not in ('dropout', 'block_size') and config[f.name] != defaults[f.name] \
                and config[f.name] != getattr(model_config, f.name):
            fail(f"{source} holds a model with {f.name}={getattr(model_config, f.name)!r}, but this run asks for "
                 f"{f.name}={config[f.name]!r}; {how}.")


if init_from == 'scratch':
    model_args = {f.name: config[f.name] for f in dataclasses.fields(GPTConfig)}
    if vocab_size is None:
        model_args['vocab_size'] = (meta_vocab_size + 63) // 64 * 64 if meta_vocab_size else 50304
    try:
        raw_model = GPT(GPTConfig(**model_args))
    except ValueError as e:  # a bad choice of residual, splitting, ...: GPTConfig says which
        fail(str(e))
elif init_from == 'resume':
    if not os.path.exists(ckpt_path):
        fail(f"init_from='resume' but there is no checkpoint at {ckpt_path}; train with init_from='scratch' first.")
    try:
        checkpoint = checkpoints.read_checkpoint(ckpt_path, 'resume from')
        # the architecture and weights are the checkpoint's (ours or nanoGPT's); only dropout may change
        raw_model = checkpoints.model_from_checkpoint(checkpoint, dropout=dropout)
        iter_num, best_val_loss = checkpoint['iter_num'], checkpoint['best_val_loss']
        kept_copies = checkpoint.get('kept_checkpoints', [])
    except CheckpointError as e:
        fail(str(e))
    except Exception as e:
        fail(str(checkpoints.damaged(ckpt_path, 'resume from', e)))
    # names that the next prune deletes: only keep_checkpoints' own copies in out_dir, never a path from the file
    if not isinstance(kept_copies, list) or not all(isinstance(k, str) and checkpoints.KEPT_COPY.fullmatch(k)
                                                     for k in kept_copies):
        fail(f"{ckpt_path} lists kept copies that are not ckpt-<iter>.pt files of out_dir ({str(kept_copies)[:100]}),"
             f" so it was not written by train.py; resume from a checkpoint train.py wrote, or start a new run.")
    # resuming never changes the architecture, nor the context (it sizes the position tables and their moments)
    check_given_settings(raw_model.config, ckpt_path, "drop that setting to resume, or train it in a new --out_dir")
    if block_size != raw_model.config.block_size:
        fail(f"{ckpt_path} holds a model with block_size={raw_model.config.block_size}, but this run has "
             f"block_size={block_size}; resume with --block_size={raw_model.config.block_size}.")
    if master_process:
        print(f"resuming from {ckpt_path} at iter {iter_num}")
else:  # a fresh run from trained weights: another run's out_dir (its best.pt), a Hugging Face folder or Hub id
    try:
        raw_model, _, source = load_model(init_from, 'best', hub=True, dropout=dropout)
    except CheckpointError as e:
        fail(f"init_from='{init_from}': {e}")
    check_given_settings(raw_model.config, source, "drop that setting: a fine-tuned model keeps its source's "
                         "architecture (dropout, and a shorter block_size, may change)")
    if master_process:
        print(f"initializing from {source}: its weights; the optimizer, schedule and data stream start afresh")
# the settings saved with checkpoints describe the model actually trained (all GPTConfig fields)
model_args = dataclasses.asdict(raw_model.config)
config.update(model_args)
if block_size < raw_model.config.block_size:
    raw_model.crop_block_size(block_size)  # e.g. GPT-2's 1024 down to a shorter context
    config['block_size'] = model_args['block_size'] = block_size
elif block_size > raw_model.config.block_size:
    fail(f"block_size={block_size} is longer than the {raw_model.config.block_size} positions the model was trained "
         f"with; use --block_size={raw_model.config.block_size} or less.")
for split in ('train', 'val'):  # tokens from another tokenizer would index past the embedding table
    top = int(np.memmap(os.path.join(data_dir, f'{split}.bin'), dtype=np.uint16, mode='r')[:1 << 22].max())
    if top >= raw_model.config.vocab_size:
        fail(f"{data_dir}/{split}.bin holds token id {top}, but the model's vocabulary has "
             f"{raw_model.config.vocab_size} entries; the data and the model use different tokenizers.")
raw_model.to(device)

scaler = torch.amp.GradScaler(device_type, enabled=(dtype == 'float16'))
try:
    optimizers = raw_model.configure_optimizers(weight_decay, learning_rate, (beta1, beta2), device_type,
                                                optimizer=optimizer, muon_lr=muon_lr)
except ValueError as e:
    fail(str(e))
if not isinstance(optimizers, list):
    optimizers = [optimizers]
if checkpoint is not None:
    states = checkpoint['optimizer']
    states = states if isinstance(states, list) else [states]  # nanoGPT's checkpoints hold one AdamW state
    if len(states) != len(optimizers):
        fail(f"the checkpoint holds the state of {len(states)} optimizer(s), but optimizer='{optimizer}' "
             f"uses {len(optimizers)}; resume with the optimizer it was trained with.")
    # the optimizers' state (moments, momentum buffers) comes from the checkpoint, their settings from this run:
    # load_state_dict would bring back the old groups' lr_scale (hence the old muon_lr), weight decay and betas
    for opt, state in zip(optimizers, states):
        settings = [{k: v for k, v in group.items() if k != 'params'} for group in opt.param_groups]
        opt.load_state_dict(state)
        for group, setting in zip(opt.param_groups, settings):
            group.update(setting)
    if checkpoint.get('scaler') and scaler.is_enabled():
        scaler.load_state_dict(checkpoint['scaler'])
    changed = [f"{k} {v!r} -> {config[k]!r}" for k, v in checkpoint.get('config', {}).items()
               if k in config and k != 'init_from' and config[k] != v]
    if changed and master_process:
        print(f"resuming with settings that differ from the checkpoint's run: {', '.join(changed)}")
    rng = checkpoint.get('rng', [])
    if rng and 'epoch_order' in rng[0]:  # one position in the epoch, shared by the processes, however many
        epoch_order.load_state_dict(rng[0]['epoch_order'], world_size=len(rng))
    if len(rng) == world_size:
        train_gen.set_state(rng[rank]['data'])
        torch.set_rng_state(rng[rank]['torch'])
        if device_type == 'cuda' and 'cuda' in rng[rank]:
            torch.cuda.set_rng_state(rng[rank]['cuda'], device)
    elif rng:
        # each process's random windows and dropout: new streams, not those that began the run once more
        train_gen.manual_seed(seed + seed_offset + 1000 * iter_num)
        torch.manual_seed(seed + seed_offset + 1000 * iter_num)
        if master_process:
            print(f"note: the checkpoint holds the data streams of {len(rng)} processes, not {world_size}: the epoch "
                  f"order goes on where it stopped; random windows and dropout start new streams, seeded by seed "
                  f"and iter {iter_num}")
checkpoint = None  # free memory

# return_logits=False lets the model skip the full logits: on CPU its loss goes through the chunked head (on CUDA
# it takes the plain cross-entropy either way); asking for the logits takes that plain path on CPU too
full_logits = not chunked_head
fwd_model = raw_model
if compile:
    if master_process:
        print("compiling the model... (takes a ~minute)")
    fwd_model = torch.compile(raw_model)
model = DDP(fwd_model, device_ids=[local_rank] if device_type == 'cuda' else None) if ddp else fwd_model


@torch.no_grad()
def estimate_loss():
    """Mean loss over the fixed eval windows of each split: every process scores its share, then all-reduce."""
    out = {}
    fwd_model.eval()
    for split, offsets in eval_windows.items():
        total = torch.zeros((), dtype=torch.float64, device=device)
        for i in range(0, len(offsets), batch_size):
            X, Y = load_windows(split, offsets[i:i + batch_size])
            with ctx:
                _, loss = fwd_model(X, Y, return_logits=full_logits)
            total += loss.double() * len(X)
        if ddp:
            dist.all_reduce(total)
        out[split] = total.item() / (eval_iters * batch_size)
    fwd_model.train()
    return out


def get_lr(it):
    # 1) linear warmup for warmup_iters steps
    if it < warmup_iters:
        return learning_rate * (it + 1) / (warmup_iters + 1)
    # 2) from lr_decay_iters on, min learning rate (>=: a decay as long as the warmup has no cosine part to divide by)
    if it >= lr_decay_iters:
        return min_lr
    # 3) in between, use cosine decay down to min learning rate
    decay_ratio = (it - warmup_iters) / (lr_decay_iters - warmup_iters)
    coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))
    return min_lr + coeff * (learning_rate - min_lr)


def git_commit():
    try:
        return subprocess.run(['git', 'rev-parse', 'HEAD'], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


commit = git_commit() if master_process else None


def save_checkpoint(best=False, latest=True):
    """ckpt.pt: the latest state, what --init_from=resume reads; with best, first best.pt: the weights alone, what
    sample.py, eval.py and eval_downstream read, written before ckpt.pt records their val loss as the best. Called by
    every process (each contributes its data stream and RNG states); rank 0 writes the files, and if that fails every
    process stops."""
    rng = {'data': train_gen.get_state(), 'epoch_order': epoch_order.state_dict(), 'torch': torch.get_rng_state()}
    if device_type == 'cuda':
        rng['cuda'] = torch.cuda.get_rng_state(device)
    rngs = [None] * world_size
    if ddp:
        dist.all_gather_object(rngs, rng)
    else:
        rngs = [rng]
    error = None
    if master_process:
        checkpoint = {
            'model': raw_model.state_dict(),  # the uncompiled, unwrapped module: no _orig_mod./module. prefixes
            'optimizer': [opt.state_dict() for opt in optimizers],
            'scaler': scaler.state_dict(),  # float16's loss scale; empty otherwise
            'model_args': model_args,
            'iter_num': iter_num,
            'best_val_loss': best_val_loss,
            'config': config,
            'rng': rngs,
            'torch_version': str(torch.__version__),
            'git_commit': commit,
        }
        copy = f'ckpt-{iter_num:08d}.pt'
        if latest and keep_checkpoints > 0:
            checkpoint['kept_checkpoints'] = ([k for k in kept_copies if k != copy] + [copy])[-keep_checkpoints:]
        print(f"saving checkpoint to {out_dir} ({' and '.join(['best.pt'] * best + ['ckpt.pt'] * latest)})")
        try:
            if best:
                write_atomically({k: v for k, v in checkpoint.items()
                                  if k not in ('optimizer', 'scaler', 'rng', 'kept_checkpoints')}, best_path)
            if latest:
                write_atomically(checkpoint, ckpt_path)
            if latest and keep_checkpoints > 0:
                keep_copy(copy, checkpoint['kept_checkpoints'])
        except OSError as e:  # a full disk, a lost mount, ...
            error = (f"could not save a checkpoint in {out_dir} at iter {iter_num} ({e.strerror or e}), so training "
                     f"stops; {ckpt_path} still holds the last good one: free some space (or pick another --out_dir) "
                     f"and resume.")
    if error := agreed(error):
        fail(error)


def keep_copy(copy, keep):
    """ckpt.pt as copy (ckpt-<iter>.pt), a hard link that keeps this version when ckpt.pt is next replaced; then
    this run's copies that are not in keep go. Copies it did not make (another branch of resumes) stay."""
    global kept_copies
    kept_path = os.path.join(out_dir, copy)
    with contextlib.suppress(FileNotFoundError):
        os.remove(kept_path)
    try:
        os.link(ckpt_path, kept_path)
    except OSError:  # a filesystem without hard links
        shutil.copyfile(ckpt_path, kept_path)
    for old in kept_copies:
        if old not in keep:
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(out_dir, old))
    kept_copies = keep


def diverged(what, value):
    fail(f"{what} is {value} at iter {iter_num}: training diverged, so it stops here and leaves {ckpt_path} as it "
         f"was; try a lower learning_rate (now {learning_rate:g}).")


error = None
if wandb_log and master_process:
    try:
        import wandb
    except ImportError:
        error = "wandb_log=True but wandb is not installed: `pip install wandb`, or set --wandb_log=False."
if error := agreed(error):
    fail(error)

# Every check has passed: the run starts. Only now does overwrite delete the earlier run's files.
# metrics.jsonl: one line per log step and per eval step. A resumed run drops the lines from iter_num on (they are
# redone), rewrites the file atomically and appends.
metrics_path = os.path.join(out_dir, 'metrics.jsonl')
time_offset = 0.0
error = None
if master_process:
    try:
        checkpoints.delete_run(earlier_run)
        kept = []
        if init_from == 'resume' and os.path.exists(metrics_path):
            kept = [row for row in checkpoints.read_metrics(metrics_path) if row['iter'] < iter_num]
        checkpoints.write_metrics(kept, metrics_path)
        # training seconds (evaluation excluded) go on from the interrupted run's, for plots against time
        time_offset = max((row.get('time') or 0.0 for row in kept), default=0.0)
    except OSError as e:
        error = f"cannot write {metrics_path} ({e.strerror or e}); free some space or choose another --out_dir."
    except ValueError as e:  # a damaged line in the middle of metrics.jsonl
        error = f"{e}."
if error := agreed(error):
    fail(error)


def scalar_lines(scalars):
    """The momentum scalars for the console, one line per layer: "layer0: attn.mu 0.500 attn.beta 0.500 ..."."""
    layers = {}
    for k, v in scalars.items():
        layer, name = k.split('.', 1)
        layers.setdefault(layer, []).append(f"{name} {v:.3f}")
    return "".join(f"\n  {layer}: {' '.join(items)}" for layer, items in layers.items())


def record(row, console):
    if master_process:
        tqdm.write(console)
        with open(metrics_path, 'a') as f:
            f.write(json.dumps(row) + '\n')


if wandb_log and master_process:
    wandb.init(project=wandb_project, name=wandb_run_name, config=config)

# SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) ask the loop to save and stop after the current
# iteration; a second one stops at once (ckpt.pt, written atomically, stays as it was)
stop_signal = None


def request_stop(signum, frame):
    global stop_signal
    if stop_signal is not None:
        print(f"\n{signal.Signals(signum).name} again: stopping without saving", file=sys.stderr)
        sys.exit(128 + signum)
    stop_signal = signum
    print(f"\n{signal.Signals(signum).name}: saving a checkpoint after this iteration, then stopping "
          f"(send it again to stop at once)", file=sys.stderr)


signal.signal(signal.SIGTERM, request_stop)
signal.signal(signal.SIGINT, request_stop)

# -----------------------------------------------------------------------------
# training loop
start_iter = iter_num
bad_steps = 0  # non-finite steps in a row
t_start = time.time()
eval_time = 0.0  # time spent evaluating, kept out of tokens/s


def train_seconds(now):
    return time_offset + now - t_start - eval_time




def report_dynamo(before):
    """Dynamo's graphs and graph breaks (with their reasons) in compiling the first training step, on the console
    and in out_dir/compile.json (bench/gpu_check.py records them): a break runs the code after it eagerly."""
    delta = {key: dict(dynamo_counters[key] - before[key]) for key in ('graph_break', 'stats')}
    report = dict(torch=torch.__version__, graphs=delta['stats'].get('unique_graphs', 0),
                  graph_breaks=sum(delta['graph_break'].values()), break_reasons=delta['graph_break'])
    with open(os.path.join(out_dir, 'compile.json'), 'w') as f:
        json.dump(report, f, indent=1)
    tqdm.write(f"torch.compile of the training step: {report['graphs']} graph(s), {report['graph_breaks']} graph "
               f"break(s) (torch {report['torch']})" + "".join(f"\n  break: {r.splitlines()[0]}" for r in delta['graph_break']))


log_t0, log_iters = time.time(), 0
pbar = tqdm(total=max_iters, initial=iter_num, disable=not master_process or not sys.stdout.isatty(),
            dynamic_ncols=True)
while True:
    # the learning rate of this iteration; the scalars' and Muon's groups run at a multiple of it
    lr = get_lr(iter_num) if decay_lr else learning_rate
    for opt in optimizers:
        for param_group in opt.param_groups:
            param_group['lr'] = lr * param_group['lr_scale']

    # evaluate on the fixed windows, log the momentum scalars, save a checkpoint
    if iter_num % eval_interval == 0 or iter_num == max_iters or eval_only:
        t_eval = time.time()
        losses = estimate_loss()
        scalars = raw_model.momentum_scalars()
        for split, value in losses.items():
            if not math.isfinite(value):
                diverged(f"the {split} loss", value)
        record({'iter': iter_num, 'train_loss': losses['train'], 'val_loss': losses['val'], 'lr': lr,
                'tokens_per_s': None, 'mfu': None, 'time': train_seconds(t_eval), **scalars},
               f"step {iter_num}: train loss {losses['train']:.4f}, val loss {losses['val']:.4f}"
               + scalar_lines(scalars))
        if wandb_log and master_process:
            wandb.log({'train/loss': losses['train'], 'val/loss': losses['val'], 'lr': lr,
                       **{f'scalars/{k}': v for k, v in scalars.items()}}, step=iter_num)
        improved = losses['val'] < best_val_loss and not eval_only
        best_val_loss = min(best_val_loss, losses['val'])
        # at the first iteration (0, or where a resume starts) ckpt.pt already holds this state, but best.pt may
        # not: the stop that ended the earlier run can land just before an eval; at the end ckpt.pt always gets the
        # latest state
        latest = iter_num > start_iter and (improved or always_save_checkpoint or iter_num >= max_iters)
        if improved or latest:
            save_checkpoint(best=improved, latest=latest)
        eval_time += time.time() - t_eval
        log_t0 += time.time() - t_eval
    if iter_num >= max_iters or eval_only:
        break

    # forward, backward, update, with gradient accumulation over micro-batches
    if compile and iter_num == start_iter:
        dynamo_before = copy.deepcopy(dynamo_counters)  # what the evaluation compiled, left out of the report
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(gradient_accumulation_steps):
        X, Y = get_batch()
        if ddp:
            # sync gradients only at the last micro step (nanoGPT's lighter form of model.no_sync())
            model.require_backward_grad_sync = (micro_step == gradient_accumulation_steps - 1)
        with ctx:
            _, loss = model(X, Y, return_logits=full_logits)
            loss = loss / gradient_accumulation_steps  # scale the loss to account for gradient accumulation
        loss_sum += loss.detach()
        scaler.scale(loss).backward()
    if grad_clip != 0.0:
        for opt in optimizers:
            scaler.unscale_(opt)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])
    # Skip the update if the loss or the gradient is not finite (under float16 a non-finite gradient is the
    # GradScaler's business: it skips the step and lowers its scale). One small all-reduce makes every
    # process take the same decision, and carries a stop request (SIGTERM/SIGINT) along.
    bad = ~torch.isfinite(loss_sum) if scaler.is_enabled() else ~(torch.isfinite(loss_sum) & torch.isfinite(grad_norm))
    flags = torch.stack([bad.float(), torch.tensor(float(stop_signal is not None), device=device)])
    if ddp:
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, stop = flags.tolist()  # a CPU-GPU sync point, once per iteration
    if bad:
        bad_steps += 1
        tqdm.write(f"warning: iter {iter_num}: the loss or gradient is not finite, so this update is skipped "
                   f"({bad_steps} in a row; max_bad_steps={max_bad_steps})")
        if bad_steps >= max_bad_steps:
            diverged(f"the loss or gradient of {bad_steps} steps in a row", "not finite")
    else:
        bad_steps = 0
    if not bad or scaler.is_enabled():
        for opt in optimizers:
            scaler.step(opt)
        scaler.update()
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)

    if compile and iter_num == start_iter and master_process:
        report_dynamo(dynamo_before)
    # log the mean loss of this iteration's micro-batches over all processes
    log_iters += 1
    if iter_num % log_interval == 0 and not bad:
        if ddp:
            dist.all_reduce(loss_sum)
            loss_sum /= world_size
        lossf = loss_sum.item()
        dt = (time.time() - log_t0) / log_iters
        mfu = raw_model.estimate_mfu(batch_size * gradient_accumulation_steps, dt, peak_flops)
        tokens_per_s = tokens_per_iter / dt
        record({'iter': iter_num, 'train_loss': lossf, 'val_loss': None, 'lr': lr,
                'tokens_per_s': tokens_per_s, 'mfu': mfu, 'time': train_seconds(time.time())},
               f"iter {iter_num}: loss {lossf:.4f}, time {dt * 1000:.2f}ms, mfu {mfu * 100:.2f}%, "
               f"{tokens_per_s:,.0f} tok/s")
        if wandb_log and master_process:
            wandb.log({'train/batch_loss': lossf, 'lr': lr, 'tokens_per_s': tokens_per_s, 'mfu': mfu}, step=iter_num)
        log_t0, log_iters = time.time(), 0
    iter_num += 1
    pbar.update()
    if stop:
        # preemption or Ctrl-C: the state after this iteration is everything a resumed run needs
        pbar.close()
        save_checkpoint()
        if master_process:
            print(f"stopped by {signal.Signals(stop_signal or signal.SIGTERM).name} at iter {iter_num}; continue with "
                  f"the same command and --init_from=resume")
        if ddp:
            dist.destroy_process_group()
        sys.exit(128 + (stop_signal or signal.SIGTERM))
pbar.close()

if master_process:
    train_time = time.time() - t_start - eval_time
    run_tokens = (iter_num - start_iter) * tokens_per_iter
    print(f"done: {iter_num} iters, best val loss {best_val_loss:.4f}, {iter_num * tokens_per_iter:,} tokens seen, "
          f"wall time {time.time() - t_start:.1f}s, {run_tokens / max(train_time, 1e-9):,.0f} tokens/s (training)"
          + (f", peak CUDA memory {torch.cuda.max_memory_allocated(device) / 2 ** 30:.2f} GiB" if device_type == 'cuda'
             else ""))
    if plot:
        from plot import plot_runs
        plot_runs([out_dir], os.path.join(out_dir, 'loss.png'),
                  labels=[f"{model_args['residual']}/{model_args['splitting']}"])
    if eval_downstream:
        # lm-eval on the best-val checkpoint (best.pt), as the paper; the same path as `python eval.py --out_dir=...`
        from eval import EvalError, load_model as load_scored, run_downstream  # a GPTAdapter, not checkpoints'
        print(f"downstream evaluation of {checkpoints.checkpoint_path(out_dir, 'best')}")
        try:
            lm, best_iter = load_scored(out_dir, device)
            run_downstream(lm, out_dir, [t for t in downstream_tasks.split(',') if t], iter_num=best_iter,
                           limit=downstream_limit,
                           files={'hellaswag': hellaswag_file, 'arc_easy': arc_easy_file},
                           fewshot_files={'hellaswag': hellaswag_fewshot_file, 'arc_easy': arc_easy_fewshot_file})
        except EvalError as e:
            print(f"downstream evaluation skipped: {e}")
if ddp:
    dist.destroy_process_group()
