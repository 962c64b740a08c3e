# Nesterov + IMEX, k = 2 corrections, with LN_v ('+LNv'; about 2x compute), at the YuriiFormer paper's TinyStories scale (GPT-2 small, 10k steps of 491,520 tokens; Muon + AdamW, shuffled epochs).
# Paper: val loss 1.070 (IMEX+LNv, k = 2), the best TinyStories number. (nats/token)
#
# data:   python data/tinystories/prepare.py
# 1 GPU:  python train.py config/tinystories_nesterov_imex2.py   (from the repo root: the file runs config/tinystories_base.py first)
# N GPUs: torchrun --standalone --nproc_per_node=N train.py config/tinystories_nesterov_imex2.py, with the micro-steps divisible
#         by N and 491,520 tokens/step kept: N = 2, 3, 5, 6 as is (30 micro-steps of 16);
#         N = 4 or 8: --batch_size=12 --gradient_accumulation_steps=40

exec(open('config/tinystories_base.py').read())  # the paper's recipe; the variant follows

out_dir = 'out-tinystories-nesterov-imex2'
wandb_run_name = 'tinystories-nesterov-imex2'
residual = 'nesterov'
splitting = 'imex'
imex_iters = 2
