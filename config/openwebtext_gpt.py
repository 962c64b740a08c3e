# GPT: the nanoGPT baseline (gradient descent + Lie-Trotter), at the YuriiFormer paper's OpenWebText scale (30k steps of 491,520 tokens; Muon + AdamW, shuffled epochs).
# Paper: val loss 2.99-3.02 (3.023 in v1, 2.990 in v2). (nats/token)
#
# data:   python data/openwebtext/prepare.py
# 1 GPU:  python train.py config/openwebtext_gpt.py   (from the repo root: the file runs config/openwebtext_base.py first)
# N GPUs: torchrun --standalone --nproc_per_node=N train.py config/openwebtext_gpt.py, with the micro-steps divisible
#         by N and 491,520 tokens/step kept: N = 2, 3, 5, 6 as is (30 micro-steps of 16);
#         N = 4 or 8: --batch_size=12 --gradient_accumulation_steps=40

exec(open('config/openwebtext_base.py').read())  # the paper's recipe; the variant follows

out_dir = 'out-openwebtext-gpt'
wandb_run_name = 'openwebtext-gpt'
