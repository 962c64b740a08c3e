# Shared settings of bench/reproduce.py's "ts" grid: the owt grid's model, steps and schedule with GPT-2 BPE on
# the TinyStories sample in ../shared/data/tinystories (~1.56M train / 0.17M val tokens):
# python data/tinystories/prepare.py --sample
# python bench/reproduce.py ts

exec(open('config/repro_owt.py').read())

dataset = 'tinystories'
