# YuriiFormer (Nesterov momentum + Lie-Trotter splitting), small enough to train on a 2-core CPU in about 5 minutes,
# on the TinyStories sample (~1.56M train tokens, GPT-2 BPE):
# python data/tinystories/prepare.py --sample
# python train.py config/tinystories_cpu_nesterov.py
# python sample.py --out_dir=out-tinystories-cpu-nesterov --start="Once upon a time" --num_samples=3 --max_new_tokens=200
# At this size the 50,304-way head and its softmax take most of a step (width 64 was only ~20% faster per
# token than 128), so the time goes to steps: small batches of 1,024 tokens, ~820k tokens in all.
# MEASURED on the 2-core dev machine (torch 2.13 CPU, fp32, 2 threads, model.py's chunked head), 1,024-token
#   steps, 60 steps with little else running: gd 3,164 tok/s, nesterov 2,739 tok/s (polyak not measured),
#   so the 800 steps take ~4.3 min (gd) and ~5 min (nesterov), plus ~15 s of evals; 2-3x longer while
#   other jobs share the machine (both full runs below took 17-18 min side by side at load ~5).
#   Val loss at step 800 (best = final; seed 1337, one run each): gd 4.200, nesterov 3.965 with LN_v's gain
#   starting at 1 (the paper's); with the default 0.03 (2026-11-29, warmup 30): 3.490 (2 threads, fresh clone,
#   2,974 tok/s, 4.9 min of training), 3.603 on one thread (the runs part between steps 20 and 100). With warmup
#   100 (2026-11-30, a slower machine, fresh clone, 2 threads): 3.388 at 2,009 tok/s, 7.3 min, no early spike.
#   Samples (temperature 0.8) are simple, loosely joined English: "Once upon a time for a time there was a
#   big ball. The two friends, "Mom too fast so much fun!" Timmy made it down to help?" (nesterov).

out_dir = 'out-tinystories-cpu-nesterov'
eval_interval = 200
eval_iters = 12  # 96 fixed windows of 128 tokens (12k tokens) per split and eval
log_interval = 10
always_save_checkpoint = False

dataset = 'tinystories'
batch_size = 8
gradient_accumulation_steps = 1
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False
residual = 'nesterov'

learning_rate = 6e-3  # a small model takes a high rate (3e-3..2e-2 learnt alike over the first 100 steps)
max_iters = 800
lr_decay_iters = 800
warmup_iters = 100  # 30 ended 0.08-0.31 higher in 3/3 seeds (results/warmup.md); 200 ties with 100
min_lr = 6e-4
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
