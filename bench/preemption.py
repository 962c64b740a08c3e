"""
How long train.py's stop path takes at the paper's width: from SIGTERM to the process's exit (it finishes the
current iteration, then saves ckpt.pt), against torchrun's ~30 s between forwarding SIGTERM and killing its workers.

$ python bench/preemption.py                         # config/openwebtext_nesterov.py's model, 1 x 256 tokens
$ python bench/preemption.py --out_dir=/scratch/x    # the checkpoint on the storage a real run would use
                                                     # (a new folder: one that holds anything is refused)

train.py runs the paper's model (12 layers, 12 heads, d=768, vocab 50304) with AdamW, on random tokens (what they
are does not change the time), with a micro-batch of batch_size x block_size so that an iteration is short.
SIGTERM comes once a few iterations are logged, at a random point of one. Printed: the iteration time, the time
from the signal to the exit, and the checkpoint's size and the time of one more atomic write of it
(checkpoints.write_atomically, what the stop path does) into out_dir: point it at the storage a real run would
use. Timings of a shared machine vary: the load average is printed with them.
"""
import json as jsonlib  # `json` is a setting here: the output path
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the repo root, from anywhere
import checkpoints  # noqa: E402
from configurator import apply_config  # noqa: E402

defaults = dict(
    model_config='config/openwebtext_nesterov.py',  # the model and optimizer of the paper's OpenWebText run
    # AdamW's state is the larger; Muon's Newton-Schulz runs in bfloat16, which takes minutes an iteration on CPUs
    optimizer='adamw',
    batch_size=1,
    block_size=256,
    iters_before=3,  # iterations logged before the signal
    # where train.py writes its checkpoint, a folder that does not exist yet or is empty (it is left there, with the
    # checkpoint); '' = a temporary folder, removed at the end
    out_dir='',
    threads=0,  # OMP_NUM_THREADS of the training process; 0 keeps torch's default (all cores)
    seed=0,  # of the random tokens and the signal's moment
    json='',  # also write the figures to this file
)
config = apply_config(defaults, sys.argv[1:])
globals().update(config)
rng = random.Random(seed)
if out_dir and os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
    sys.exit(f"error: out_dir='{out_dir}' is not an empty folder, and this benchmark writes only into a folder of its "
             f"own; give a new path, e.g. {os.path.join(out_dir, 'preemption')}.")

with tempfile.TemporaryDirectory() as tmp:
    data = os.path.join(tmp, 'data')
    os.makedirs(data)
    tokens = np.random.default_rng(seed).integers(0, 50257, 200_000, dtype=np.uint16)
    for split in ('train', 'val'):
        tokens.tofile(os.path.join(data, f'{split}.bin'))
    run_dir = out_dir or os.path.join(tmp, 'out')
    env = {**os.environ, 'PYTHONUNBUFFERED': '1', **({'OMP_NUM_THREADS': str(threads)} if threads else {})}
    args = [sys.executable, 'train.py', model_config, f'--dataset={data}', f'--out_dir={run_dir}',
            f'--optimizer={optimizer}', f'--batch_size={batch_size}', f'--block_size={block_size}',
            '--gradient_accumulation_steps=1',
            '--log_interval=1', '--eval_iters=1', '--eval_interval=1000000', '--device=cpu']
    load = os.getloadavg()
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    iter_ms = []
    for line in proc.stdout:
        if m := re.match(r"iter (\d+): loss \S+, time ([\d.]+)ms", line):
            iter_ms.append(float(m[2]))
            if len(iter_ms) == iters_before:
                break
        elif line.startswith('error'):
            sys.exit(line.strip())
    if len(iter_ms) < iters_before:
        sys.exit(f"error: train.py ended before logging {iters_before} iterations: {proc.wait()}")
    time.sleep(rng.uniform(0, iter_ms[-1] / 1000))  # somewhere in the next iteration
    t_signal = time.time()
    proc.send_signal(signal.SIGTERM)
    tail = proc.stdout.read()
    status = proc.wait()
    stop_s = time.time() - t_signal
    ckpt_path = os.path.join(run_dir, 'ckpt.pt')
    size = os.path.getsize(ckpt_path)
    checkpoint = checkpoints.read_checkpoint(ckpt_path)
    t0 = time.time()
    checkpoints.write_atomically(checkpoint, ckpt_path)
    save_s = time.time() - t0

figures = {
    'model': model_config, 'tokens_per_iter': batch_size * block_size, 'exit_status': status,
    'iteration_s': sorted(iter_ms[1:])[len(iter_ms[1:]) // 2] / 1000 if len(iter_ms) > 1 else iter_ms[0] / 1000,
    'sigterm_to_exit_s': stop_s, 'checkpoint_bytes': size, 'save_s': save_s,
    'load_avg_before': load[0], 'load_avg_after': os.getloadavg()[0], 'threads': threads or 'default',
}
print(f"{model_config} at {batch_size} x {block_size} tokens an iteration, load {load[0]:.2f} -> "
      f"{figures['load_avg_after']:.2f}: iteration {figures['iteration_s']:.2f} s, SIGTERM to exit {stop_s:.2f} s "
      f"(exit status {status}), checkpoint {size / 2 ** 30:.2f} GiB written atomically in {save_s:.2f} s")
if 'stopped by SIGTERM' not in tail:
    print(f"note: train.py did not report a clean stop:\n{tail[-2000:]}")
if json:
    with open(json, 'w') as f:
        jsonlib.dump(figures, f, indent=1)
