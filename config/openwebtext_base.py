# The YuriiFormer paper's OpenWebText recipe (its section 3), shared by config/openwebtext_*.py, which run this
# file first and then set their variant. On its own it trains the GPT baseline.
# GPT-2 small (12 layers, 12 heads, width 768, context 1024, no biases, no dropout); 30k steps of
# 16 x 30 x 1024 = 491,520 tokens (~14.7B tokens) in the paper's order: shuffled epochs of
# non-overlapping windows. Muon (lr 0.004) for the block matrices; AdamW (6e-4, scalars 3e-3) for the rest;
# linear warmup 3k steps, cosine to 0.1x peak; grad clip 1.0; bf16 on GPU.
# 1 GPU:  python train.py config/openwebtext_base.py   (run from the repo root)
# N GPUs: the micro-steps must divide by N and 491,520 tokens/step stay: N = 2, 3, 5, 6 as is (30 micro-steps
#         of 16); N = 4 or 8: --batch_size=12 --gradient_accumulation_steps=40

out_dir = 'out-openwebtext-gpt'
eval_interval = 500
eval_iters = 160  # 160 batches of 16 x 1024 tokens per evaluation, as in the paper
log_interval = 10
always_save_checkpoint = True  # ckpt.pt at every eval: a crash loses one eval interval; best.pt is kept apart

wandb_log = False  # override via command line if you like
wandb_project = 'yuriiformer'
wandb_run_name = 'openwebtext-gpt'

dataset = 'openwebtext'
data_order = 'epoch'
batch_size = 16
gradient_accumulation_steps = 30  # for 1 GPU: 16 x 30 x 1024 = 491,520 tokens per step
block_size = 1024

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False
# the paper's momentum settings, named so that another default in model.py leaves these runs as the paper's:
# V_0 from its own tables, LN_v after every velocity update with its gain starting at 1, and the initial
# mu = beta = 1/2, gamma = ln 2 of the reproduction that matched the paper (raw parameters 0)
v0 = 'embed'
velocity_norm = True
velocity_gain_init = 1.0
mu_init = 0.5
beta_init = 0.5
gamma_init = 0.6931471805599453

optimizer = 'muon'
muon_lr = 0.004 # Muon's peak, for the 2-D matrices inside the blocks
learning_rate = 6e-4  # AdamW's peak; the mu/beta/gamma scalars train at 5x this (3e-3), without weight decay
max_iters = 30000
lr_decay_iters = 30000
warmup_iters = 3000
min_lr = 6e-5
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
