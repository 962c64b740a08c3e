# Polyak heavy-ball momentum (YuriiFormer without the lookahead) at the CPU scale of config/tinystories_cpu_nesterov.py (same model size, data and
# schedule; its comments give the measured speed, losses and samples of both gd and nesterov):
# python data/tinystories/prepare.py --sample
# python train.py config/tinystories_cpu_polyak.py   (from the repo root: the file runs the nesterov config first)
# python sample.py --out_dir=out-tinystories-cpu-polyak --start="Once upon a time" --num_samples=3 --max_new_tokens=200

exec(open('config/tinystories_cpu_nesterov.py').read())

out_dir = 'out-tinystories-cpu-polyak'
residual = 'polyak'
