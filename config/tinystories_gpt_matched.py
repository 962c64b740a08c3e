# Ablation: GPT widened to YuriiFormer's parameter count, at the YuriiFormer paper's TinyStories scale:
# is the gain just the 39.4M parameters of the V_0 tables? Counted with model.py (tied head, no biases):
#   this, width 896 with 16 heads of 56:  161,617,792 parameters
#   config/tinystories_nesterov.py:       163,812,168 parameters (-1.3% here)
# (12 heads of 75 at width 900 give 162,857,700, -0.6%, but heads of 56 suit GPU attention kernels better.)
# Paper: no number for this cell; compare with GPT's 1.106 and Nesterov's 1.078 (nats/token).
#
# data:   python data/tinystories/prepare.py
# 1 GPU:  python train.py config/tinystories_gpt_matched.py   (from the repo root: the file runs config/tinystories_base.py first)
# N GPUs: torchrun --standalone --nproc_per_node=N train.py config/tinystories_gpt_matched.py, with the micro-steps divisible
#         by N and 491,520 tokens/step kept: N = 2, 3, 5, 6 as is (30 micro-steps of 16);
#         N = 4 or 8: --batch_size=12 --gradient_accumulation_steps=40

exec(open('config/tinystories_base.py').read())  # the paper's recipe; the variant follows

out_dir = 'out-tinystories-gpt-matched'
wandb_run_name = 'tinystories-gpt-matched'
n_head = 16
n_embd = 896
