# Shared settings of bench/reproduce.py's "owt" grid: GPT vs YuriiFormer with GPT-2 BPE on the real
# OpenWebText sample in ../shared/data/openwebtext (~1.1M train / 0.13M val tokens), 3 seeds each:
# python data/openwebtext/prepare.py --sample
# python bench/reproduce.py owt
# At this size the 50,304-way softmax and its head take most of a step (d=96..256 all cost 1.0-1.8 s of
# CPU per 1,024 tokens, under load), so the budget (~20 min for 6 runs on 2 cores) goes to steps, not width.
# MEASURED (2026-11-26, 2 quiet cores, 2 runs at once with one thread each): gd 4.3 min, nesterov 4.5 min of CPU
# per run; the 6 runs take ~15 min of wall clock. Results: results/owt.md (README, "Results at CPU scale").
# An earlier tuning run (seed 1, under load): lr 6e-3 was worse than 2e-3 (7.27 vs 6.93 at step 250).

eval_interval = 50
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

learning_rate = 2e-3
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
