"""
Speed of the data preparation (dataprep.py, GPT-2 BPE) on the real text in shared/data: tokens/s of
dataprep.tokenize_documents alone and of dataprep.prepare end to end (tokenize and write train.bin,
val.bin, meta.json), with 1 process and with num_proc.

$ python bench/prepare_speed.py                                # every folder of ../shared/data, 1 and all cores
$ python bench/prepare_speed.py --num_proc=4 --repeats=5 --json=prep.json
$ python bench/prepare_speed.py --data_dir=my_corpus --max_docs=1000

A dataset is a folder of data_dir holding .txt/.jsonl/.json/.parquet files (or data_dir itself, if
it holds such files), read once with dataprep.read_documents. Each repeat times 1 process and
num_proc processes in turn, so a busy machine's slow spells hit both alike; the table shows medians.
Without the data the script says so and exits 0 (there is nothing to measure).
"""
import os
os.environ.setdefault('TQDM_DISABLE', '1')  # prepare()'s progress bar would flood the output; set before tqdm loads

import json as jsonlib  # noqa: E402  `json` is a setting here: the output path
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import redirect_stdout  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, from anywhere
import dataprep  # noqa: E402
from configurator import apply_config  # noqa: E402

defaults = dict(
    data_dir=str(dataprep.SHARED_DATA),
    num_proc=os.cpu_count(),  # the parallel run's processes; 1 process is always measured too
    repeats=3,
    max_docs=0,  # only the first max_docs documents of each dataset; 0: all
    json='',  # also write the results to this file
)
config = apply_config(defaults, sys.argv[1:])
globals().update(config)

data_dir = Path(data_dir)
folders = sorted(p for p in data_dir.iterdir() if p.is_dir()) if data_dir.is_dir() else []
if data_dir.is_dir():
    folders.append(data_dir)  # files lying in data_dir itself form a dataset too
datasets = {}
for folder in folders:
    files = [f for f in sorted(folder.iterdir()) if f.is_file() and f.suffix.lower() in dataprep.SUFFIXES]
    if files:
        docs = [d for f in files for d in dataprep.read_documents(f)]
        datasets[folder.name] = dict(files=files, docs=docs[:max_docs] if max_docs else docs)
if not datasets:
    print(f"no data to measure: {data_dir} holds no folder of .txt, .jsonl, .json or .parquet files; skipped.")
    sys.exit(0)
procs = sorted({1, max(1, num_proc)})


def tokenize_time(docs, n):
    t0 = time.perf_counter()
    tokens = sum(len(ids) for ids in dataprep.tokenize_documents(docs, n))
    return time.perf_counter() - t0, tokens


def prepare_time(docs, n):
    is_val = dataprep.split_mask(len(docs), 0.1, 2357)
    with tempfile.TemporaryDirectory() as out, redirect_stdout(open(os.devnull, 'w')):
        t0 = time.perf_counter()
        dataprep.prepare(docs, is_val, out, n)
        return time.perf_counter() - t0


for _ in dataprep.tokenize_documents(["warm-up: load the encoding before any timing"]):
    pass
results = []
for name, ds in datasets.items():
    docs = ds['docs']
    times = {n: dict(tokenize=[], prepare=[]) for n in procs}
    tokens = None
    for r in range(repeats):
        for n in (procs if r % 2 == 0 else procs[::-1]):
            dt, tokens = tokenize_time(docs, n)
            times[n]['tokenize'].append(dt)
            times[n]['prepare'].append(prepare_time(docs, n))
    mb = sum(len(d.encode('utf-8')) for d in docs) / 1e6
    for n in procs:
        tok, prep = (statistics.median(times[n][k]) for k in ('tokenize', 'prepare'))
        results.append(dict(dataset=name, files=[str(f) for f in ds['files']], docs=len(docs), tokens=tokens,
                            megabytes=mb, num_proc=n, tokenize_tokens_per_s=tokens / tok,
                            prepare_tokens_per_s=tokens / prep, prepare_mb_per_s=mb / prep,
                            tokenize_s=times[n]['tokenize'], prepare_s=times[n]['prepare']))
    one = results[-len(procs)]
    for row in results[-len(procs):]:
        row['speedup_vs_1'] = row['prepare_tokens_per_s'] / one['prepare_tokens_per_s']

print(f"\n{os.cpu_count()} cores; median of {repeats}; GPT-2 BPE (tiktoken)\n")
print("| dataset | docs | MB | tokens | procs | tokenize tok/s | prepare tok/s | prepare MB/s | vs 1 proc |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for row in results:
    print(f"| {row['dataset']} | {row['docs']:,} | {row['megabytes']:.1f} | {row['tokens']:,} | {row['num_proc']} | "
          f"{row['tokenize_tokens_per_s']:,.0f} | {row['prepare_tokens_per_s']:,.0f} | {row['prepare_mb_per_s']:.2f} | "
          f"{row['speedup_vs_1']:.2f}x |")
if json:
    with open(json, 'w') as f:
        jsonlib.dump(dict(config=config, cores=os.cpu_count(), results=results), f, indent=1)
    print(f"\nwrote {json}")
