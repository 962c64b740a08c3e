"""
Sample from a trained model (nanoGPT's sample.py): a checkpoint written by train.py, a nanoGPT
checkpoint, or OpenAI's GPT-2 weights.

$ python sample.py --out_dir=out-tinystories-cpu-nesterov --start="Once upon a time" --num_samples=3
$ python sample.py --init_from=gpt2-xl --start=FILE:prompt.txt
$ python sample.py --init_from=hf-tinystories-nesterov     # a folder written by convert.py --to=hf, or its Hub id
"""
import os
import sys
import traceback
from contextlib import nullcontext

import torch

from checkpoints import CheckpointError, load_model, tokenizer_of
from configurator import apply_config

cuda = torch.cuda.is_available()
defaults = dict(
    # 'resume' (a checkpoint in out_dir), or a Hugging Face folder: a path or Hub id (convert.py --to=hf), 'gpt2-xl', ...
    init_from='resume',
    out_dir='out',  # ignored if init_from is not 'resume'
    checkpoint='best',  # 'best': out_dir/best.pt (best val loss) when there is one, else ckpt.pt; 'latest': ckpt.pt
    start='<|endoftext|>',  # the prompt; "<|endoftext|>" starts a new document. "FILE:prompt.txt" reads a file
    num_samples=10,  # number of samples to draw
    max_new_tokens=500,  # number of tokens generated in each sample
    temperature=0.8,  # 1.0 = no change, < 1.0 = less random, > 1.0 = more random
    top_k=200,  # keep only the top_k most likely tokens, 0 keeps all
    seed=1337,
    device='cuda' if cuda else 'cpu',  # 'cpu', 'cuda', 'cuda:1', 'mps', ...
    dtype='float32',  # 'float32' | 'bfloat16' | 'float16'; default set by device below
    compile=False,  # torch.compile the forward pass
    debug=False,  # print the Python traceback behind an error message
)
config = apply_config(defaults, sys.argv[1:])
# dtype defaults by the chosen device, as in train.py: read the arguments again with that default
on_cuda = config['device'].startswith('cuda') and cuda
defaults['dtype'] = 'bfloat16' if on_cuda and torch.cuda.is_bf16_supported() else 'float32'
config = apply_config(defaults, sys.argv[1:])
globals().update(config)  # as in nanoGPT, every setting is a plain global from here on


def fail(msg):
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(1)


if device.startswith('cuda') and not cuda:
    fail(f"device='{device}' but PyTorch sees no CUDA GPU here; use --device=cpu.")
if dtype not in ('float32', 'bfloat16', 'float16'):
    fail(f"dtype='{dtype}' is not one of float32, bfloat16, float16.")
if on_cuda and dtype == 'bfloat16' and not torch.cuda.is_bf16_supported():
    fail(f"dtype='bfloat16' but this GPU ({torch.cuda.get_device_name()}) does not support it; use --dtype=float16.")
torch.manual_seed(seed)
device_type = 'cuda' if device.startswith('cuda') else 'cpu'
if device_type == 'cuda':
    torch.cuda.manual_seed(seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
ptdtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16, 'float16': torch.float16}[dtype]
ctx = nullcontext() if dtype == 'float32' else torch.amp.autocast(device_type=device_type, dtype=ptdtype)

# the prompt text, read before the slower model load
if start.startswith('FILE:'):
    if not os.path.isfile(start[5:]):
        fail(f"the prompt file {start[5:]} does not exist.")
    with open(start[5:], 'r', encoding='utf-8') as f:
        start = f.read()

# model, and the tokenizer of the dataset it was trained on, whose meta.json names it (as nanoGPT's meta.pkl)
if init_from == 'resume':
    try:
        model, ckpt, ckpt_path = load_model(out_dir, checkpoint)  # ours or nanoGPT's
        encode, decode, _ = tokenizer_of(ckpt, model, ckpt_path)
    except CheckpointError as e:
        fail(str(e))
    print(f"sampling from {ckpt_path} (iter {ckpt.get('iter_num')})", file=sys.stderr)
else:  # Hugging Face format: a folder written by convert.py --to=hf, a Hub id, OpenAI's 'gpt2', ...
    try:
        model, ckpt, _ = load_model(init_from, hub=True)
        encode, decode, _ = tokenizer_of(ckpt, model, init_from)  # the folder's own tokenizer
    except CheckpointError as e:
        fail(str(e))
model.eval()
model.to(device)
if compile:
    # generate() calls self(...), so compile the forward it reaches; the context grows, hence dynamic
    model.forward = torch.compile(model.forward, dynamic=True)

try:
    start_ids = encode(start)
except ValueError as e:
    fail(f"the prompt cannot be encoded: {e}")
if not start_ids:
    fail("the prompt is empty; give some text with --start, or --start='<|endoftext|>' for a new document.")
x = torch.tensor(start_ids, dtype=torch.long, device=device)[None, ...]

# run generation
with torch.no_grad():
    with ctx:
        for k in range(num_samples):
            y = model.generate(x, max_new_tokens, temperature=temperature, top_k=top_k or None)
            print(decode(y[0].tolist()))
            print('---------------')
