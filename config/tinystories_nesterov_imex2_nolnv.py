# Nesterov + IMEX, k = 2, without LN_v (about 2x compute), at the YuriiFormer paper's TinyStories scale (GPT-2 small, 10k steps of 491,520 tokens; Muon + AdamW, shuffled epochs).
# Paper: no number for this cell; the paper's 1.070 is the +LNv run; without LN_v the stream may diverge (IC, MS). (nats/token)
#
# data:   python data/tinystories/prepare.py
# 1 GPU:  python train.py config/tinystories_nesterov_imex2_nolnv.py   (from the repo root: the file runs config/tinystories_base.py first)
# N GPUs: torchrun --standalone --nproc_per_node=N train.py config/tinystories_nesterov_imex2_nolnv.py, with the micro-steps divisible
#         by N and 491,520 tokens/step kept: N = 2, 3, 5, 6 as is (30 micro-steps of 16);
#         N = 4 or 8: --batch_size=12 --gradient_accumulation_steps=40

exec(open('config/tinystories_base.py').read())  # the paper's recipe; the variant follows

out_dir = 'out-tinystories-nesterov-imex2-nolnv'
wandb_run_name = 'tinystories-nesterov-imex2-nolnv'
residual = 'nesterov'
splitting = 'imex'
imex_iters = 2
velocity_norm = False
