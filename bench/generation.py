"""
Generation speed (tokens/s) with and without the KV cache, per variant, on random weights: the speed
of generation does not depend on what the weights are.

$ python bench/generation.py                                  # gd and nesterov, 6 layers, d=256, GPT-2 vocab
$ python bench/generation.py --variants=all --json=gen.json   # every residual x splitting
$ python bench/generation.py --variants=gd,nesterov,nesterov/euler --device=cuda --n_layer=12 --n_embd=768

A variant is a residual (gd, polyak, nesterov), optionally with a splitting: nesterov/euler. Each
repeat times every variant, cached and uncached, in a rotated order, so slow drifts of a shared
machine spread over all of them; the table shows the medians. Timings include the prompt's forward
pass and sampling, as a user of model.generate sees them. Keep prompt_len + new_tokens <= block_size
to measure the cache itself: past block_size, generate() refills the cache at every step. On a
shared CPU use --threads=1: two threads on a busy 2-core machine ran 10-20x slower here.
"""
import json as jsonlib  # `json` is a setting here: the output path
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, from anywhere
from configurator import apply_config  # noqa: E402
from model import GPT, GPTConfig, RESIDUALS, SPLITTINGS  # noqa: E402

defaults = dict(
    variants='gd,nesterov',  # comma-separated residual or residual/splitting; 'all': every combination
    n_layer=6,
    n_head=4,
    n_embd=256,
    block_size=256,
    vocab_size=50304,
    prompt_len=32,
    new_tokens=200,
    batch_size=1,  # sequences generated together
    repeats=5,
    threads=0,  # torch CPU threads; 0 keeps torch's default
    device='cpu',
    seed=1337,
    json='',  # also write the results to this file
)
config = apply_config(defaults, sys.argv[1:])
globals().update(config)


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


if variants == 'all':
    variants = ','.join(f'{r}/{s}' for r in RESIDUALS for s in SPLITTINGS)
names = [v for v in variants.split(',') if v]
if device.startswith('cuda') and not torch.cuda.is_available():
    fail(f"device='{device}' but PyTorch sees no CUDA GPU here; use --device=cpu.")
if threads:
    torch.set_num_threads(threads)
if prompt_len + new_tokens > block_size:
    print(f"note: prompt_len + new_tokens = {prompt_len + new_tokens} > block_size = {block_size}: "
          f"past block_size the cached runs recompute the whole window at every step")

models = {}
for name in names:
    residual, _, splitting = name.partition('/')
    try:
        cfg = GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size,
                        vocab_size=vocab_size, bias=False, residual=residual, splitting=splitting or 'lie_trotter')
    except ValueError as e:
        fail(f"variant '{name}': {e}")
    torch.manual_seed(seed)
    models[name] = GPT(cfg).to(device).eval()
prompt = torch.randint(vocab_size, (batch_size, prompt_len), generator=torch.Generator().manual_seed(seed)).to(device)


def tokens_per_s(model, use_kv_cache, n):
    torch.manual_seed(seed)  # the same sampled tokens in every run
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model.generate(prompt, n, use_kv_cache=use_kv_cache)
    if device.startswith('cuda'):
        torch.cuda.synchronize()
    return n * batch_size / (time.perf_counter() - t0)


for model in models.values():  # warm-up: first calls allocate memory and pick kernels
    for use_kv_cache in (True, False):
        tokens_per_s(model, use_kv_cache, min(new_tokens, 8))

runs = {name: {True: [], False: []} for name in names}
for r in range(repeats):
    for name in names[r % len(names):] + names[:r % len(names)]:
        for use_kv_cache in ((True, False) if r % 2 == 0 else (False, True)):
            runs[name][use_kv_cache].append(tokens_per_s(models[name], use_kv_cache, new_tokens))

results = []
for name in names:
    cached, uncached = statistics.median(runs[name][True]), statistics.median(runs[name][False])
    results.append(dict(variant=name, residual=models[name].config.residual, splitting=models[name].config.splitting,
                        cached_tok_s=cached, uncached_tok_s=uncached, speedup=cached / uncached,
                        cached_runs=runs[name][True], uncached_runs=runs[name][False]))

print(f"\n{n_layer} layers, d={n_embd}, {n_head} heads, block {block_size}, vocab {vocab_size}; prompt {prompt_len}, "
      f"{new_tokens} new tokens, batch {batch_size}; {device}, {torch.get_num_threads()} threads; "
      f"median of {repeats}\n")
print("| variant | cached tok/s | uncached tok/s | speed-up |")
print("|---|---:|---:|---:|")
for row in results:
    print(f"| {row['variant']} | {row['cached_tok_s']:,.1f} | {row['uncached_tok_s']:,.1f} | {row['speedup']:.2f}x |")
if json:
    with open(json, 'w') as f:
        jsonlib.dump(dict(config=config, torch=torch.__version__, threads=torch.get_num_threads(), results=results),
                     f, indent=1)
    print(f"\nwrote {json}")
