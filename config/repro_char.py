# Shared settings of bench/reproduce.py's "char" and "width" grids: the paper's TinyStories comparison at CPU scale,
# character-level, on the real TinyStories sample in ../shared/data/tinystories (~6.3M train / 0.70M val chars):
# python data/tinystories/prepare.py --sample --tokenizer=char --out-dir data/tinystories_char
# python bench/reproduce.py char
# reproduce.py adds out_dir, seed, the swept learning_rate (min_lr a tenth of it) and each model's keys; by hand:
# python train.py config/repro_char.py --out_dir=out-repro-char --residual=nesterov
# MEASURED (2026-11-29, 2 quiet cores, 2 runs at once with one thread each, eval every 100 steps): a run of gd,
# polyak or nesterov (lie_trotter) takes 2.8-2.9 min of CPU, 2.4-2.5 of it training; an eval ~2 s.
# Results: results/char.md; the single-rate runs of 2026-11-29: results/single_lr/char.md.

eval_interval = 50  # 21 points on the curve for time-to-loss; 10 more evals than at 100 cost ~20 s a run (+12%)
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

# gd, seed 1, 1200 steps: lr 1e-3 -> val 1.457, 3e-3 -> 1.231, 6e-3 -> 1.208 (nesterov at 3e-3: 1.191); the grids
# sweep it (bench/reproduce.py), this is the rate of a run by hand
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
