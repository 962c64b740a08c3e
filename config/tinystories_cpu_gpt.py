# GPT (the nanoGPT baseline), small enough to train on a 2-core CPU in about 5 minutes,
# on the TinyStories sample (~1.56M train tokens, GPT-2 BPE):
# python data/tinystories/prepare.py --sample
# python train.py config/tinystories_cpu_gpt.py
# python sample.py --out_dir=out-tinystories-cpu-gpt --start="Once upon a time" --num_samples=3 --max_new_tokens=200
# At this size the 50,304-way head and its softmax take most of a step (width 64 was only ~20% faster per
# token than 128), so the time goes to steps: small batches of 1,024 tokens, ~510k tokens in all.
# MEASURED on the 2-core dev machine (torch 2.13 CPU, fp32, 2 threads), 1,024-token steps, quiet machine:
#   gd 1,816 tok/s, nesterov 1,656 tok/s (polyak not measured), so the 500 steps take ~4.7 min (gd) and
#   ~5.2 min (nesterov), plus ~20 s of evals. Whole runs on the same machine while other jobs ran
#   (load 4-6) took 11.2 min (gd) and 8.2 min (nesterov).
#   Val loss at step 500 (best = final; seed 1337, one run each): gd 4.476, nesterov 4.372.
#   Samples (temperature 0.8) are simple, loosely joined English: "Once upon a time, there was a small
#   dog. They said, Tim was sad. He said, ..." (nesterov).

out_dir = 'out-tinystories-cpu-gpt'
eval_interval = 125
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

learning_rate = 6e-3  # a small model takes a high rate (3e-3..2e-2 learnt alike over the first 100 steps)
max_iters = 500
lr_decay_iters = 500
warmup_iters = 30
min_lr = 6e-4
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
