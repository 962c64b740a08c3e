# Shared settings of bench/reproduce.py's "char" grid: the paper's TinyStories comparison at CPU scale,
# character-level, on the real TinyStories sample in ../shared/data/tinystories (~6.3M train / 0.70M val chars):
# python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char
# python bench/reproduce.py char
# reproduce.py adds out_dir, seed and each variant's model keys; by hand:
# python train.py config/repro_char.py --out_dir=out-repro-char --residual=nesterov
# MEASURED (seed 1, one thread each, two runs at once while other work held the load average at ~6-7 on the
# 2 cores, so wall times are ~2.5x a quiet machine's): gd val 1.2525 in 9.9 min wall / 3.7 min CPU;
# nesterov 1.2170 in 10.5 min wall / 4.3 min CPU. The 23 runs of the grid are ~28 gd runs of work
# (verlet/imex cost 1.6-2.2x): ~103 min of CPU, ~52 min with 2 jobs. Per-run times: results/char.md.

eval_interval = 100
eval_iters = 20  # 320 fixed windows of 128 chars (41k chars) per split and eval, the same for every run
log_interval = 10
always_save_checkpoint = False

dataset = 'tinystories_char'
batch_size = 16
gradient_accumulation_steps = 1
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False

# gd, seed 1, 1200 steps: lr 1e-3 -> val 1.457, 3e-3 -> 1.231, 6e-3 -> 1.208 (nesterov at 3e-3: 1.191)
learning_rate = 6e-3
max_iters = 1000  # 1200 steps would not leave both grids inside 75 minutes on 2 cores
lr_decay_iters = 1000
warmup_iters = 100
min_lr = 6e-4
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

device = 'cpu'
compile = False
