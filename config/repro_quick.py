# bench/reproduce.py's "quick" grid: a tiny model for a few steps, to check the harness end to end in
# seconds (tests/test_reproduce.py). Its losses mean nothing.
# python bench/reproduce.py quick --dataset=DIR --results=DIR

eval_interval = 10
eval_iters = 2
log_interval = 3  # not a divisor of eval_interval: exercises reading training time between log lines
always_save_checkpoint = False

dataset = 'tinystories_char'
batch_size = 4
gradient_accumulation_steps = 1
block_size = 32

n_layer = 1
n_head = 2
n_embd = 32
dropout = 0.0
bias = False

learning_rate = 1e-2
max_iters = 20
lr_decay_iters = 20
warmup_iters = 2
min_lr = 1e-3

device = 'cpu'
compile = False
