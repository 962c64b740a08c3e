"""
What does each variant cost to train on this machine? Full training steps per variant: tokens/s,
ms/step, peak memory, parameters, model FLOPs/token, MFU, and each one's ratio to gd (nanoGPT's GPT).

$ python bench/throughput.py                                     # 9 variants, the CPU config below (see the end)
$ python bench/throughput.py --variants=gd,nesterov --json=tp.json --plot=tp.png
$ python bench/throughput.py --variants=all                      # every residual x splitting (imex with k = 1, 2)
$ python bench/throughput.py --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 --batch_size=16 --compile=True
$ python bench/throughput.py --variants=nesterov --n_layer=12 --n_head=12 --n_embd=768 --block_size=1024 \
      --batch_size=1 --gradient_accumulation_steps=4     # paper width: 4 micro-batches per optimizer step

A variant is a residual (gd, polyak, nesterov) with an optional splitting: nesterov/euler, and
nesterov/imex2 for imex with imex_iters=2 (plain imex means k = 1). gd/lie_trotter is the baseline
and is always run. A step is train.py's iteration: forward and loss, and backward,
gradient_accumulation_steps times (1 by default; more amortise the optimizer step as real runs do), gradient
clipping, the AdamW step of model.configure_optimizers, zero_grad; the batch is random tokens, as
speed does not depend on what the tokens are.

Each variant runs in its own worker process (this script with --worker), which keeps its model and
optimizer between calls: after --warmup steps each, every round times one step of every variant in
a rotated order, so a shared machine's slow spells hit all variants alike; the table shows medians.
Peak memory is the worker's peak RSS on CPU (VmHWM, so ~0.2 GB of Python and torch included;
the JSON has that baseline as base_mem_bytes) and torch.cuda.max_memory_allocated on CUDA.
MFU is model.flops_per_token() x tokens/s over a peak: on CPU the matmul peak measured here first
(large square matmuls in the same dtype and threads); on CUDA the spec-sheet peak of a known device for the dtype
(model.py's table), else measured.
Each step's CPU time (all threads) is measured too. "CPU time vs gd" compares tokens per CPU-second,
which other jobs on a shared machine disturb far less than wall-clock time; the line below the table
says what share of their threads' time the steps got (near 100% on an idle machine).
OMP_WAIT_POLICY=PASSIVE is set (unless already set) for this process and the workers: idle OpenMP
threads then sleep instead of spinning, so waiting workers take no cores from the one being timed (with
libgomp's default spinning, a 2-thread char-config step took 25x as long) and 2-thread timings on a shared
machine are steadier. It costs the variants with many small element-wise ops most: train.py, one process,
runs with the default (char config, 2 threads: gd's step 15% faster, nesterov/gd 0.87 vs 0.83 under PASSIVE).

The default run takes 72 steps of ~3 CPU-seconds each: about 3 minutes on 2 free cores, 7 minutes when
other jobs left its steps a third of their threads' time (load average 7.7 on our 2-core machine).
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # before torch starts OpenMP (see above)

import datetime  # noqa: E402
import json as jsonlib  # noqa: E402  `json` is a setting here: the output path
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from contextlib import nullcontext  # noqa: E402

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the repo root, from anywhere
from configurator import apply_config  # noqa: E402
from model import GPT, GPTConfig, RESIDUALS, SPLITTINGS, measure_peak_flops, table_peak_flops  # noqa: E402

cuda = torch.cuda.is_available()
defaults = dict(
    variants='gd,gd/euler,polyak,polyak/euler,nesterov,nesterov/euler,nesterov/verlet,nesterov/imex1,nesterov/imex2',
    # a CPU training config: the head over GPT-2's vocabulary is a large part of the cost, as in our CPU runs
    n_layer=4,
    n_head=4,
    n_embd=256,
    block_size=256,
    batch_size=8,
    gradient_accumulation_steps=1,  # micro-batches of batch_size per optimizer step
    vocab_size=50304,
    device='cuda' if cuda else 'cpu',
    dtype='',  # float32 | bfloat16; '' picks bfloat16 on CUDA, float32 on CPU
    compile=False,
    grad_clip=1.0,  # as train.py; 0.0 leaves clipping out of the step
    repeats=7,  # timed rounds: one step of every variant per round
    warmup=1,  # untimed steps per variant first (allocations, kernel choice, compilation)
    threads=0,  # torch threads, here and in the workers; 0 keeps torch's default
    seed=1337,
    json='',  # also write the results to this file
    plot='',  # also draw tokens/s and peak memory relative to gd into this PNG
)
DTYPES = {'float32': torch.float32, 'bfloat16': torch.bfloat16}


def peak_rss_bytes():
    """This process's peak RSS. On Linux VmHWM, not ru_maxrss: ru_maxrss carries over the high-water
    mark of the parent at the fork, so every worker would count the parent's memory too."""
    try:
        with open('/proc/self/status') as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith('VmHWM:'))
    except (OSError, StopIteration):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss if sys.platform == 'darwin' else rss * 1024  # Linux reports KiB


def worker():
    """One variant: its settings come as a JSON line on stdin; then each line n on stdin runs n
    training steps, answered on stdout with their times (seconds) and the peak memory so far."""
    answer, sys.stdout = sys.stdout, open(os.devnull, 'w')  # model.py's prints would garble the answers
    s = jsonlib.loads(sys.stdin.readline())
    if s['threads']:
        torch.set_num_threads(s['threads'])
    device, ptdtype = s['device'], DTYPES[s['dtype']]
    on_cuda = device.startswith('cuda')
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # as train.py
        torch.backends.cudnn.allow_tf32 = True
    base_mem = peak_rss_bytes()
    torch.manual_seed(s['seed'])
    model = GPT(GPTConfig(**s['model'])).to(device)
    optimizer = model.configure_optimizers(0.1, 6e-4, (0.9, 0.95), 'cuda' if on_cuda else 'cpu')  # train.py's
    step_model = torch.compile(model) if s['compile'] else model
    ctx = nullcontext() if ptdtype == torch.float32 else torch.amp.autocast(device_type=device.split(':')[0],
                                                                           dtype=ptdtype)
    gen = torch.Generator().manual_seed(s['seed'])
    B, T, V = s['batch_size'], s['model']['block_size'], s['model']['vocab_size']
    x, y = torch.randint(V, (2, B, T), generator=gen).to(device)

    def step():
        for _ in range(s['gradient_accumulation_steps']):
            with ctx:
                _, loss = step_model(x, y, return_logits=False)  # the chunked head on CPU, as train.py
            (loss / s['gradient_accumulation_steps']).backward()
        if s['grad_clip']:
            torch.nn.utils.clip_grad_norm_(model.parameters(), s['grad_clip'])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def send(**msg):
        print(jsonlib.dumps(msg), file=answer, flush=True)

    v0_tables = sum(model.transformer[t].weight.numel() for t in ('vte', 'vpe') if t in model.transformer)
    send(params=model.get_num_params(non_embedding=False), params_non_embedding=model.get_num_params(),
         v0_table_params=v0_tables,
         flops_per_token=model.flops_per_token(), oracle_calls=model.transformer.h[0].oracle_calls,
         threads=torch.get_num_threads(), base_mem_bytes=None if on_cuda else base_mem)
    for line in sys.stdin:
        times, cpu_times = [], []
        for _ in range(int(line)):
            if on_cuda:
                torch.cuda.synchronize()
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if on_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)  # all threads: with PASSIVE, a waiting thread costs none
        send(times=times, cpu_times=cpu_times,
             peak_mem_bytes=torch.cuda.max_memory_allocated() if on_cuda else peak_rss_bytes())


if sys.argv[1:] == ['--worker']:
    worker()
    sys.exit()

config = apply_config(defaults, sys.argv[1:])
globals().update(config)


def fail(msg):
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


on_cuda = device.startswith('cuda')
if on_cuda and not cuda:
    fail(f"device='{device}' but PyTorch sees no CUDA GPU here; use --device=cpu.")
dtype = dtype or ('bfloat16' if on_cuda else 'float32')
if dtype not in DTYPES:
    fail(f"dtype='{dtype}' is not one of {', '.join(DTYPES)}.")
if repeats < 1 or warmup < 0 or gradient_accumulation_steps < 1:
    fail("repeats and gradient_accumulation_steps must be at least 1, and warmup at least 0.")
if threads:
    torch.set_num_threads(threads)
if on_cuda:
    torch.backends.cuda.matmul.allow_tf32 = True  # float32 peak measured as the workers run: TF32


def parse_variant(name):
    """'nesterov/imex2' -> ('nesterov/imex2', GPTConfig fields); 'gd' -> ('gd/lie_trotter', ...)."""
    residual, _, splitting = name.partition('/')
    splitting, k = splitting or 'lie_trotter', 1
    if splitting.startswith('imex') and splitting[4:].isdigit():
        splitting, k = 'imex', int(splitting[4:])
    label = f"{residual}/{splitting}" + (str(k) if splitting == 'imex' else '')
    model_args = dict(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size,
                      bias=False, residual=residual, splitting=splitting, imex_iters=k)
    try:
        GPTConfig(**model_args)  # checks the names and numbers before any worker starts
    except ValueError as e:
        fail(f"variant '{name}': {e}")
    return label, model_args


if variants == 'all':
    variants = ','.join(f'{r}/{s}' for r in RESIDUALS for s in SPLITTINGS) + ',' + \
        ','.join(f'{r}/imex2' for r in RESIDUALS)
parsed = dict(parse_variant(v) for v in ['gd'] + variants.split(',') if v)  # gd first: the baseline
names = list(parsed)


def machine_name():
    if on_cuda:
        return torch.cuda.get_device_name(device)
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if line.startswith('model name'))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


load_start = os.getloadavg()
name_of_machine = machine_name()
known = table_peak_flops(name_of_machine, dtype) if on_cuda else None  # model.py's table of GPU peaks
# else large square matmuls in the bench's dtype and threads; 2048 on CPU: as fast as larger sizes on our CPU
peak_flops = known or measure_peak_flops(device, dtype, max_n=8192 if on_cuda else 2048, repeats=10)
peak_source = f"{name_of_machine} {dtype} spec sheet" if known else "measured"
machine = dict(name=name_of_machine, device=device, threads=torch.get_num_threads(), torch=torch.__version__,
               python=platform.python_version(), date=datetime.datetime.now().isoformat(timespec='seconds'),
               omp_wait_policy=os.environ['OMP_WAIT_POLICY'], peak_flops=peak_flops, peak_source=peak_source,
               load_average_start=load_start)
print(f"machine: {name_of_machine}, {device}, {machine['threads']} threads, torch {torch.__version__}, "
      f"{machine['date']}, load average {load_start[0]:.2f}")
if known:
    print(f"peak: {peak_flops / 1e12:.0f} TFLOP/s ({peak_source})")
else:
    print(f"measured matmul peak: {peak_flops / 1e9:,.1f} GFLOP/s on {machine['threads']} threads ({dtype})")

# one worker per variant, all started before any timing, driven one at a time over their pipes
settings = dict(device=device, dtype=dtype, compile=compile, grad_clip=grad_clip, threads=threads,
                batch_size=batch_size, gradient_accumulation_steps=gradient_accumulation_steps, seed=seed)
workers = {}
for name in names:
    workers[name] = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--worker'], text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=os.environ)
    workers[name].stdin.write(jsonlib.dumps(dict(settings, model=parsed[name])) + '\n')
    workers[name].stdin.flush()


def receive(name):
    line = workers[name].stdout.readline()
    if not line:
        for w in workers.values():
            w.kill()
        fail(f"the worker of variant '{name}' stopped (its error, if any, is above).")
    return jsonlib.loads(line)


def run_steps(name, n):
    try:
        workers[name].stdin.write(f"{n}\n")
        workers[name].stdin.flush()
    except BrokenPipeError:
        pass  # the worker is gone: receive() says so
    return receive(name)


info = {name: receive(name) for name in names}
t_start = time.time()
if warmup:
    for name in names:
        run_steps(name, warmup)
times, cpu_times, peak_mem = {name: [] for name in names}, {name: [] for name in names}, {}
for r in tqdm(range(repeats), desc="rounds", unit="round"):
    for name in names[r % len(names):] + names[:r % len(names)]:
        answer = run_steps(name, 1)
        times[name] += answer['times']
        cpu_times[name] += answer['cpu_times']
        peak_mem[name] = answer['peak_mem_bytes']
for w in workers.values():
    w.stdin.close()
    w.wait()
elapsed = time.time() - t_start
machine['load_average_end'] = os.getloadavg()

tokens_per_step = batch_size * block_size * gradient_accumulation_steps
results = []
for name in names:
    median = statistics.median(times[name])
    results.append(dict(variant=name, **{k: parsed[name][k] for k in ('residual', 'splitting', 'imex_iters')},
                        **info[name], tokens_per_s=tokens_per_step / median, ms_per_step=median * 1e3,
                        step_times_ms=[t * 1e3 for t in times[name]], peak_mem_bytes=peak_mem[name],
                        cpu_ms_per_step=statistics.median(cpu_times[name]) * 1e3,
                        mfu=info[name]['flops_per_token'] * tokens_per_step / median / peak_flops))
gd = results[0]
for row in results:
    row['ratio_to_gd'] = row['tokens_per_s'] / gd['tokens_per_s']
    row['mem_ratio_to_gd'] = row['peak_mem_bytes'] / gd['peak_mem_bytes']
    # tokens per CPU-second vs gd: what the variant costs even when other jobs take the cores now and then
    row['cpu_ratio_to_gd'] = None if on_cuda else gd['cpu_ms_per_step'] / row['cpu_ms_per_step']
    # the memory a variant may add to gd's: its V_0 tables' own states (weights, gradient, two AdamW
    # moments, float32) plus 10% of gd's peak
    row['mem_over_gd_bytes'] = row['peak_mem_bytes'] - gd['peak_mem_bytes']
    row['mem_allowance_bytes'] = 16 * row['v0_table_params'] + 0.1 * gd['peak_mem_bytes']

mem_kind = "peak CUDA memory allocated" if on_cuda else \
    f"peak RSS of each variant's process, {gd['base_mem_bytes'] / 2 ** 20:,.0f} MiB of it Python and torch"
accumulation = f" x {gradient_accumulation_steps} micro-batches" if gradient_accumulation_steps > 1 else ""
print(f"\n{n_layer} layers, d={n_embd}, {n_head} heads, block {block_size}, batch {batch_size}{accumulation}, "
      f"vocab {vocab_size}; "
      f"{dtype}{', compiled' if compile else ''}; {gd['threads']} threads; "
      f"median of {repeats} steps after {warmup} warm-up; peak mem = {mem_kind}\n")
print("| variant | oracle calls | params | non-emb params | tok/s | ms/step | peak mem | FLOPs/token | MFU "
      "| tok/s vs gd | CPU time vs gd | mem vs gd | mem over gd / allowance |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in results:
    cpu_ratio = '-' if on_cuda else f"{row['cpu_ratio_to_gd']:.2f}x"
    print(f"| {row['variant']} | {row['oracle_calls']} | {row['params'] / 1e6:.2f}M | "
          f"{row['params_non_embedding'] / 1e6:.2f}M | {row['tokens_per_s']:,.0f} | {row['ms_per_step']:,.1f} | "
          f"{row['peak_mem_bytes'] / 2 ** 20:,.0f} MiB | {row['flops_per_token'] / 1e6:,.1f}M | "
          f"{row['mfu'] * 100:.1f}% | {row['ratio_to_gd']:.2f}x | {cpu_ratio} | {row['mem_ratio_to_gd']:.2f}x | "
          f"{row['mem_over_gd_bytes'] / 2 ** 20:,.0f} / {row['mem_allowance_bytes'] / 2 ** 20:,.0f} MiB |")
machine['cpu_share'] = None
if not on_cuda:
    # CPU time over wall time x threads: near 1 on an idle machine, lower when other jobs took the cores
    share = machine['cpu_share'] = sum(r['cpu_ms_per_step'] for r in results) / \
        sum(r['ms_per_step'] for r in results) / gd['threads']
    note = "" if share > 0.9 else ": other jobs shared the cores; the wall-clock columns are noisy, CPU time less so"
    print(f"\nCPU time vs gd: tokens per CPU-second (all threads) relative to gd. The steps got {share:.0%} of "
          f"their threads' time{note}.")
slowest = min(results, key=lambda r: r['ratio_to_gd'])
largest = max(results, key=lambda r: r['mem_ratio_to_gd'])
print(f"\n{len(names)} variants x {repeats} rounds in {elapsed:.0f}s (load average {load_start[0]:.2f} -> "
      f"{machine['load_average_end'][0]:.2f}); slowest {slowest['variant']} at {slowest['ratio_to_gd']:.2f}x gd "
      f"tokens/s; most memory {largest['variant']} at {largest['mem_ratio_to_gd']:.2f}x gd")

if json:
    with open(json, 'w') as f:
        jsonlib.dump(dict(machine=machine, config=config, results=results), f, indent=1)
    print(f"wrote {json}")
if plot:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(names)), 4.5), sharey=True)
    for ax, key, title in ((axes[0], 'ratio_to_gd', 'tokens/s'), (axes[1], 'mem_ratio_to_gd', 'peak memory')):
        ax.bar(range(len(names)), [r[key] for r in results], color=['tab:gray'] + ['tab:blue'] * (len(names) - 1))
        ax.axhline(1.0, color='black', linewidth=0.8)
        ax.set_xticks(range(len(names)), names, rotation=45, ha='right')
        ax.set_title(f"{title} relative to gd")
    fig.suptitle(f"{name_of_machine}, {machine['threads']} threads: {n_layer}L d{n_embd} block {block_size} "
                 f"batch {batch_size}, {dtype}", fontsize=9)
    fig.tight_layout()
    fig.savefig(plot, dpi=120)
    print(f"wrote {plot}")
