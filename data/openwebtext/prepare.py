"""OpenWebText as GPT-2 tokens: train.bin, val.bin and meta.json in this folder (see dataprep.py).

python data/openwebtext/prepare.py                      # Skylion007/openwebtext from the hub (~54GB download)
python data/openwebtext/prepare.py --sample             # ~1.2M tokens, for quick CPU runs
python data/openwebtext/prepare.py --data-files PATH... # local files
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for dataprep and tokenizer
import dataprep

if __name__ == "__main__":
    # the hub has only a train split: hold out 0.05% of the documents for val, as nanoGPT does
    dataprep.main(name="openwebtext", hub="Skylion007/openwebtext", hub_val_fraction=0.0005,
                  sample_docs=1000, out_dir=Path(__file__).parent,
                  hub_rows={"train": 8_013_769})  # the full dataset (its dataset card)
