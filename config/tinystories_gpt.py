# GPT: the nanoGPT baseline (gradient descent + Lie-Trotter splitting), at the YuriiFormer paper's TinyStories scale
# (GPT-2 small: 12 layers, 12 heads, width 768, context 1024; 10k steps of 491,520 tokens, ~4.9B tokens).
# Paper: best val loss 1.106 (final 1.114) (nats/token).
# The paper trains the 2-D block matrices with Muon and the rest with AdamW; Muon comes in a later
# issue, so for now AdamW trains everything here: expect losses somewhat above the paper's.
#
# data:   python data/tinystories/prepare.py
# 1 GPU:  python train.py config/tinystories_gpt.py
# 8 GPUs: torchrun --standalone --nproc_per_node=8 train.py config/tinystories_gpt.py --gradient_accumulation_steps=32
#         (30 does not divide by 8; 32 makes 4 micro-steps per GPU and 524,288 tokens/step)

out_dir = 'out-tinystories-gpt'
eval_interval = 250
eval_iters = 160  # 160 batches of 16 x 1024 tokens per evaluation, as in the paper
log_interval = 10
always_save_checkpoint = False  # keep the best-val checkpoint, which the paper reports

wandb_log = False  # override via command line if you like
wandb_project = 'yuriiformer'
wandb_run_name = 'tinystories-gpt'

dataset = 'tinystories'
batch_size = 16
gradient_accumulation_steps = 30  # for 1 GPU: 16 x 30 x 1024 = 491,520 tokens per step
block_size = 1024

n_layer = 12
n_head = 12
n_embd = 768
dropout = 0.0
bias = False

learning_rate = 6e-4  # the mu/beta/gamma scalars train at 5x this (3e-3), without weight decay
max_iters = 10000
lr_decay_iters = 10000
warmup_iters = 1000
min_lr = 6e-5
weight_decay = 1e-1
beta1 = 0.9
beta2 = 0.95
grad_clip = 1.0
