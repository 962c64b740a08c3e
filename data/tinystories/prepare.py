"""TinyStories as GPT-2 tokens: train.bin, val.bin and meta.json in this folder (see dataprep.py).

python data/tinystories/prepare.py                      # roneneldan/TinyStories from the hub, its own splits
python data/tinystories/prepare.py --sample             # ~1.5M tokens, for quick CPU runs
python data/tinystories/prepare.py --data-files PATH... # local files
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for dataprep and tokenizer
import dataprep

if __name__ == "__main__":
    # the hub's train/validation splits hold ~471.6M/2.37M tokens, the split the YuriiFormer paper reports
    dataprep.main(name="tinystories", hub="roneneldan/TinyStories", hub_val_split="validation",
                  sample_docs=6000, sample_val_docs=1000, out_dir=Path(__file__).parent)
