# Shared settings of bench/reproduce.py's "owt" grid: GPT, the parameter-matched GPT, Polyak and YuriiFormer with
# GPT-2 BPE on the real OpenWebText sample in ../shared/data/openwebtext (~1.1M train / 0.13M val tokens):
# python data/openwebtext/prepare.py --sample
# python bench/reproduce.py owt
# At this size the 50,304-way softmax and its head take most of a step (d=96..256 all cost 1.0-1.8 s of
# CPU per 1,024 tokens, under load), so the budget goes to steps, not width.
# MEASURED (2026-11-29, 2 quiet cores, 2 runs at once with one thread each, eval every 50 steps): gd 4.1 min,
# nesterov 4.2-4.4 min of CPU per run, 3.3-3.6 of it training; an eval ~6 s. Results: results/owt.md; the
# single-rate runs of 2026-11-26/29: results/single_lr/owt.md.
# An earlier tuning run (seed 1, under load): lr 6e-3 was worse than 2e-3 (7.27 vs 6.93 at step 250).

eval_interval = 25  # 15 points on the curve for time-to-loss; 7 more evals than at 50 cost ~40 s a run (+16%)
eval_iters = 12  # 96 fixed windows of 128 tokens (12k tokens) per split and eval, the same for every run
log_interval = 10
always_save_checkpoint = False

dataset = 'openwebtext'
batch_size = 8
gradient_accumulation_steps = 1
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False

learning_rate = 2e-3  # the grids sweep it (bench/reproduce.py); this is the rate of a run by hand
max_iters = 350
lr_decay_iters = 350
warmup_iters = 35
min_lr = 2e-4
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

device = 'cpu'
compile = False
