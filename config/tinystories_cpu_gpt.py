# GPT (the nanoGPT baseline), small enough to train on a 2-core CPU in about 5 minutes
# on the TinyStories sample (~1.56M train tokens, GPT-2 vocabulary):
# python data/tinystories/prepare.py --sample
# python train.py config/tinystories_cpu_gpt.py
# python sample.py --out_dir=out-tinystories-cpu-gpt --start="Once upon a time" --num_samples=3 --max_new_tokens=200
# MEASURED: TODO

out_dir = 'out-tinystories-cpu-gpt'
eval_interval = 100
eval_iters = 10
log_interval = 10
always_save_checkpoint = False

dataset = 'tinystories'
batch_size = 16
gradient_accumulation_steps = 1
block_size = 128

n_layer = 4
n_head = 4
n_embd = 128
dropout = 0.0
bias = False

learning_rate = 3e-3
max_iters = 300
lr_decay_iters = 300
warmup_iters = 20
min_lr = 3e-4
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0

device = 'cpu'
compile = False
