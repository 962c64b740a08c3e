"""
One command measures what only a GPU can tell (meant to fit in ten minutes on one H100; 176 s on one H200,
results/gpu_nvidia_h200.md):

$ python bench/gpu_check.py

1. the tests of the code paths a GPU run takes (tests/test_cuda_paths.py), on the GPU (TEST_DEVICE=cuda);
2. train.py with gd (GPT) and nesterov (YuriiFormer) at paper width (12 layers, 768 wide, context 1024, bf16,
   torch.compile) for max_iters steps of batch_size x 1024 tokens per GPU, on one GPU and then with DDP over all
   of them (torchrun), on the prepared data (data/openwebtext, else data/tinystories) or random tokens;
3. results/gpu_<device>.json and results/gpu_<device>.md: tokens/s, MFU per GPU (against the GPU's spec-sheet
   peak for dtype, model.device_peak_flops, else one measured here), peak memory (rank 0's), compile time, the
   torch version, Dynamo's graphs and graph breaks with their reasons (train.py's compile.json), and nesterov's
   ratios to gd.

Tokens/s and MFU are medians over the steps after the first tenth; "compile" is what the first three steps took
beyond three median steps (compiling the training graph; the eval graph compiles during the first eval, not
counted). Each run's full output is kept in results/gpu_<device>_logs/ only when it fails.
Settings are --key=value (configurator.py); the test runs this on CPU at a tiny size, e.g.
$ python bench/gpu_check.py --device=cpu --n_layer=2 --n_head=2 --n_embd=32 --block_size=32 --batch_size=2 \
      --max_iters=4 --dtype=float32 --compile=False --dataset=random --ddp_procs=2 --tests=tests/test_peak_flops.py \
      --out=/tmp/x
"""
import datetime
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from tqdm import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repo root, from anywhere
from checkpoints import read_metrics  # noqa: E402
from configurator import apply_config  # noqa: E402
from model import device_peak_flops  # noqa: E402

cuda = torch.cuda.is_available()
defaults = dict(
    device='cuda' if cuda else 'cpu',
    # residuals, gd first (the baseline of the ratios); residual:key=value:... adds train.py settings to one run, so
    # that one window of GPU time also measures candidate fixes, e.g. gd,nesterov,nesterov:compile=False
    variants='gd,nesterov',
    n_layer=12,
    n_head=12,
    n_embd=768,
    block_size=1024,
    batch_size=16,  # micro-batch per GPU, one per step
    max_iters=200,
    dtype='bfloat16',
    compile=True,
    dataset='',  # a folder with train.bin/val.bin; '': data/openwebtext or data/tinystories if prepared, else random
    # tokens, as 'random' always
    ddp_procs=-1,  # processes of the DDP runs; -1: every GPU (none if fewer than 2); 0: no DDP runs
    tests='tests/test_cuda_paths.py',  # run with pytest first (TEST_DEVICE=device); '' skips them
    out=os.path.join(ROOT, 'results'),  # writes gpu_<device>.json and gpu_<device>.md here
)
config = apply_config(defaults, sys.argv[1:])
globals().update(config)


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


on_cuda = device.startswith('cuda')
if on_cuda and not cuda:
    fail(f"device='{device}' but PyTorch sees no CUDA GPU here; use --device=cpu for a trial run.")
device_name = torch.cuda.get_device_name(device) if on_cuda else 'cpu'
gpus = torch.cuda.device_count() if on_cuda else 0
procs = (gpus if gpus > 1 else 0) if ddp_procs < 0 else ddp_procs
slug = re.sub(r'[^a-z0-9]+', '_', device_name.lower()).strip('_')
json_path, md_path = os.path.join(out, f'gpu_{slug}.json'), os.path.join(out, f'gpu_{slug}.md')
log_dir = os.path.join(out, f'gpu_{slug}_logs')
os.makedirs(out, exist_ok=True)
env = {**os.environ, 'TEST_DEVICE': device.split(':')[0]}
if not on_cuda:
    env.setdefault('OMP_NUM_THREADS', '1')
work = tempfile.mkdtemp(prefix='gpu_check_')
# one MFU denominator for every run: the spec-sheet peak of a known GPU, else measured here once
peak_flops, peak_source = device_peak_flops(device, dtype)


def keep_log(name, text):
    os.makedirs(log_dir, exist_ok=True)
    with open(os.path.join(log_dir, f'{name}.log'), 'w') as f:
        f.write(text)


# 1. the tests
t0 = time.time()
tests_record = None
if tests:
    print(f"running the tests: pytest {tests} (TEST_DEVICE={env['TEST_DEVICE']})")
    r = subprocess.run([sys.executable, '-m', 'pytest', '-q', *tests.split()], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    summary = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ''
    tests_record = dict(command=f"pytest -q {tests}", status=r.returncode, summary=summary,
                        seconds=round(time.time() - t0, 1))
    print(f"tests: {summary} ({tests_record['seconds']} s)")
    if r.returncode:
        keep_log('tests', r.stdout + r.stderr)

# 2. the data: a prepared dataset, or random GPT-2 token ids
data_dir = '' if dataset == 'random' else dataset
if not data_dir and dataset != 'random':
    prepared = [os.path.join(ROOT, 'data', d) for d in ('openwebtext', 'tinystories')]
    data_dir = next((d for d in prepared if os.path.exists(os.path.join(d, 'train.bin'))), '')
if not data_dir:
    data_dir = os.path.join(work, 'random')
    os.makedirs(data_dir)
    tokens = np.random.default_rng(0).integers(0, 50257, size=max(1 << 21, 64 * block_size), dtype=np.uint16)
    for split in ('train', 'val'):
        tokens.tofile(os.path.join(data_dir, f'{split}.bin'))
data_name = 'random tokens' if data_dir.startswith(work) else data_dir


def train(variant, nproc):
    """One train.py run; its medians from metrics.jsonl and its peak memory from the summary line."""
    name = f"{re.sub(r'[^A-Za-z0-9]+', '_', variant)}_{'ddp' if nproc else 'single'}"
    out_dir = os.path.join(work, name)
    launcher = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={nproc}'] \
        if nproc else [sys.executable]
    residual, *switches = variant.split(':')  # e.g. nesterov:compile=False, a candidate fix behind a train.py switch
    args = [f'--residual={residual}', f'--n_layer={n_layer}', f'--n_head={n_head}', f'--n_embd={n_embd}',
            f'--block_size={block_size}', f'--batch_size={batch_size}', f'--gradient_accumulation_steps={max(nproc, 1)}',
            f'--max_iters={max_iters}', f'--eval_interval={max_iters}', '--eval_iters=10', '--log_interval=1',
            f'--warmup_iters={max_iters // 10}', f'--lr_decay_iters={max_iters}', f'--dtype={dtype}',
            f'--compile={compile}', f'--device={device}', f'--dataset={data_dir}', f'--out_dir={out_dir}',
            f'--peak_flops={peak_flops}', '--always_save_checkpoint=False', '--plot=False',
            *(f'--{switch}' for switch in switches)]
    t_start = time.time()
    r = subprocess.run([*launcher, os.path.join(ROOT, 'train.py'), *args], cwd=ROOT, env=env, capture_output=True,
                       text=True)
    record = dict(variant=variant, mode='ddp' if nproc else 'single', processes=max(nproc, 1), status=r.returncode,
                  wall_s=round(time.time() - t_start, 1))
    if r.returncode:
        keep_log(name, r.stdout + r.stderr)
        return dict(record, error=(r.stderr.strip().splitlines() or [''])[-1])
    compiled = os.path.join(out_dir, 'compile.json')  # train.py's report of Dynamo on the first training step
    if os.path.exists(compiled):
        with open(compiled) as f:
            report = json.load(f)
        record.update(torch=report['torch'], graphs=report['graphs'], graph_breaks=report['graph_breaks'],
                      break_reasons=report['break_reasons'])
    rows = read_metrics(out_dir)
    steps = [row for row in rows if row['tokens_per_s']]
    timed = [row for row in steps if row['iter'] >= max(max_iters // 10, 3)] or steps[-1:]
    tokens_per_s = statistics.median(row['tokens_per_s'] for row in timed)
    tokens_per_iter = max(nproc, 1) * batch_size * block_size
    step_s = tokens_per_iter / tokens_per_s
    first = sum(tokens_per_iter / row['tokens_per_s'] for row in steps[:3])
    memory = re.search(r'peak CUDA memory ([\d.]+) GiB', r.stdout)
    return dict(record, tokens_per_s=tokens_per_s, mfu=statistics.median(row['mfu'] for row in timed),
                step_ms=step_s * 1e3, compile_s=max(first - 3 * step_s, 0.0),
                peak_mem_gib=float(memory.group(1)) if memory else None,
                final_val_loss=[row['val_loss'] for row in rows if row['val_loss'] is not None][-1])


runs = [(v, n) for n in ([0, procs] if procs else [0]) for v in variants.split(',')]
results = []
for variant, nproc in tqdm(runs, desc="training runs", unit="run"):
    results.append(train(variant, nproc))
    row = results[-1]
    tqdm.write(f"{row['variant']} {row['mode']}: " + (f"{row['tokens_per_s']:,.0f} tok/s, MFU {row['mfu'] * 100:.1f}%"
                                                        if not row['status'] else f"failed: {row['error']}"))
shutil.rmtree(work, ignore_errors=True)

# 3. ratios to gd and the files
base = variants.split(',')[0]
for row in results:
    gd = next((r for r in results if r['variant'] == base and r['mode'] == row['mode'] and not r['status']), None)
    if gd and not row['status']:
        row['tokens_per_s_vs_gd'] = row['tokens_per_s'] / gd['tokens_per_s']
        row['mem_vs_gd'] = row['peak_mem_gib'] / gd['peak_mem_gib'] if row['peak_mem_gib'] else None
machine = dict(name=device_name, gpus=gpus, torch=torch.__version__, cuda=torch.version.cuda,
               date=datetime.datetime.now().isoformat(timespec='seconds'), peak_flops=peak_flops,
               peak_source=peak_source)
with open(json_path, 'w') as f:
    json.dump(dict(machine=machine, config=config, data=data_name, tests=tests_record, runs=results), f, indent=1)


def fmt(value, spec, suffix=''):
    return '-' if value is None else f"{value:{spec}}{suffix}"


lines = [f"# {device_name}: {n_layer} layers, {n_embd} wide, context {block_size}, batch {batch_size} per GPU, "
         f"{dtype}{', compiled' if compile else ''}, {max_iters} steps on {data_name}",
         "", f"{machine['date']}, torch {machine['torch']}, CUDA {machine['cuda']}, {gpus} GPU(s).", ""]
if tests_record:
    lines += [f"Tests (`{tests_record['command']}`, TEST_DEVICE={env['TEST_DEVICE']}): {tests_record['summary']}", ""]
lines += ["| variant | run | tok/s | ms/step | MFU | peak memory | compile | graph breaks | final val loss | tok/s vs gd | "
          "memory vs gd |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
for row in results:
    if row['status']:
        lines.append(f"| {row['variant']} | {row['mode']} | failed: {row['error']} | | | | | | | | |")
        continue
    lines.append(f"| {row['variant']} | {row['mode']} ({row['processes']}) | {row['tokens_per_s']:,.0f} | "
                 f"{row['step_ms']:,.1f} | {row['mfu'] * 100:.1f}% | {fmt(row['peak_mem_gib'], '.2f', ' GiB')} | "
                 f"{row['compile_s']:.0f} s | {fmt(row.get('graph_breaks'), 'd')} | {row['final_val_loss']:.3f} | {fmt(row.get('tokens_per_s_vs_gd'), '.2f', 'x')} | "
                 f"{fmt(row.get('mem_vs_gd'), '.2f', 'x')} |")
lines += ["", f"MFU per GPU against {peak_flops / 1e12:,.4g} TFLOP/s, {peak_source}. Graph breaks: Dynamo's, compiling the "
          "first training step (train.py's compile.json; their reasons are in the JSON)."]
with open(md_path, 'w') as f:
    f.write('\n'.join(lines) + '\n')
print('\n'.join(lines))
print(f"wrote {json_path} and {md_path} in {time.time() - t0:.0f} s")
problems = (['the tests'] if tests_record and tests_record['status'] else []) + \
    [f"the {r['variant']} {r['mode']} run" for r in results if r['status']]
if problems:
    fail(f"{' and '.join(problems)} failed; the output is in {log_dir}.")
