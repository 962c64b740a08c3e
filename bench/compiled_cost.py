"""
What the momentum update costs a compiled training step, without a GPU: Inductor's own counts on CPU.

$ python bench/compiled_cost.py --variants=gd,nesterov,polyak

Per variant, one training step (bf16 autocast, the full-logits loss that CUDA takes) is compiled with 1 and with 2
layers, so the embeddings and the head drop out of the difference: Dynamo's graphs and graph breaks, then
Inductor's generated kernels and bytes read and written (forward and backward) per layer, in bytes per element of
one (batch, block_size, n_embd) activation; and each variant's extra over gd per substep. A graph break means the
code after it runs eagerly; the bytes are the memory traffic a GPU pays for the update (CPU Inductor fuses less
than its CUDA backend, so read them as an upper bound). A variant is residual or residual/splitting.
"""
import json as json_lib  # --json is a setting
import logging
import os
import sys

import torch
import torch._dynamo
import torch._inductor.config
import torch._inductor.metrics as inductor_metrics
from torch._dynamo.utils import counters

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root, from anywhere
from configurator import apply_config  # noqa: E402
from model import GPT, GPTConfig, SPLITTINGS  # noqa: E402

config = apply_config(dict(
    variants='gd,nesterov,polyak',  # gd first: the baseline of the extra per substep
    n_head=4,
    n_embd=64,
    block_size=256,
    batch_size=8,
    vocab_size=512,
    json='',  # also write the results here
), sys.argv[1:])
globals().update(config)

# count every graph afresh: no caches, and Inductor's metrics on (they are only gathered while its log is enabled)
torch._inductor.config.fx_graph_cache = False
torch._functorch.config.enable_autograd_cache = False
torch._logging.set_logs(inductor_metrics=True)
logging.getLogger("torch._inductor").handlers.clear()  # gathered, not printed


def compiled_step(residual, splitting, n_layer):
    torch._dynamo.reset()
    counters.clear()
    inductor_metrics.reset()
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block_size, vocab_size=vocab_size,
                          bias=False, residual=residual, splitting=splitting))
    x, y = torch.randint(vocab_size, (2, batch_size, block_size))
    with torch.autocast('cpu', dtype=torch.bfloat16):
        _, loss = torch.compile(model)(x, y)
    loss.backward()
    return dict(graphs=counters['stats']['unique_graphs'], graph_breaks=sum(counters['graph_break'].values()),
                break_reasons=dict(counters['graph_break']), kernels=inductor_metrics.generated_kernel_count,
                bytes=inductor_metrics.num_bytes_accessed)


elements = batch_size * block_size * n_embd
results = []
for variant in variants.split(','):
    residual, splitting = (variant.split('/') + ['lie_trotter'])[:2]
    one, two = compiled_step(residual, splitting, 1), compiled_step(residual, splitting, 2)
    results.append(dict(variant=f"{residual}/{splitting}", substeps=len(SPLITTINGS[splitting]),
                        graphs=two['graphs'], graph_breaks=two['graph_breaks'], break_reasons=two['break_reasons'],
                        kernels_per_layer=two['kernels'] - one['kernels'],
                        bytes_per_element_per_layer=(two['bytes'] - one['bytes']) / elements))
    print(f"{variant}: {results[-1]['graph_breaks']} graph breaks", file=sys.stderr)
base = results[0]
for row in results[1:]:
    row['extra_bytes_per_element_per_substep'] = \
        (row['bytes_per_element_per_layer'] - base['bytes_per_element_per_layer']) / row['substeps']
    row['extra_kernels_per_substep'] = (row['kernels_per_layer'] - base['kernels_per_layer']) / row['substeps']

print(f"\ntorch {torch.__version__}, Inductor on CPU, bf16 autocast, one training step (forward and backward); "
      f"bytes per element of one ({batch_size}, {block_size}, {n_embd}) activation\n")
print(f"| variant | graphs | graph breaks | kernels per layer | bytes/element per layer | extra per substep over "
      f"{base['variant']} |\n|---|---:|---:|---:|---:|---|")
for row in results:
    extra = (f"{row['extra_bytes_per_element_per_substep']:+.1f} B/element, {row['extra_kernels_per_substep']:+.2f} "
             f"kernels" if row is not base else "-")
    print(f"| {row['variant']} | {row['graphs']} | {row['graph_breaks']} | {row['kernels_per_layer']} | "
          f"{row['bytes_per_element_per_layer']:.1f} | {extra} |")
for row in results:
    for reason, count in row['break_reasons'].items():
        print(f"{row['variant']}: {count} graph break(s): {reason.splitlines()[0]}")
if json:
    with open(json, 'w') as f:
        json_lib.dump(dict(torch=torch.__version__, config=config, results=results), f, indent=1)
worst = max(results[1:], key=lambda r: r['extra_bytes_per_element_per_substep'], default=base)
print(f"\n{len(results)} variants, {sum(r['graph_breaks'] for r in results)} graph breaks in all; most extra traffic: "
      f"{worst['variant']}" + (f" at {worst['extra_bytes_per_element_per_substep']:+.1f} B/element per substep"
                               if worst is not base else ""))
