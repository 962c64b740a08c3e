"""The character-level tokenizer: prepare.py --tokenizer=char and tokenizer.get_codec.

Tests marked needs_data read the real text files in ../shared/data and skip when it is absent.
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import dataprep
from tokenizer import EOT, char_codec, get_codec

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not found")
TS_A = DATA / "tinystories" / "tinystories_10Msubset_a.txt"  # "".join(doc + EOT for doc in docs), exactly
OWT_1000 = DATA / "openwebtext" / "owt10k_val1000docs.txt"


def run_prepare(*args):
    return subprocess.run([sys.executable, str(ROOT / "data" / "tinystories" / "prepare.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def load(out_dir):
    meta = json.loads((out_dir / "meta.json").read_text())
    return meta, *(np.fromfile(out_dir / f"{split}.bin", dtype=np.uint16) for split in ("train", "val"))


@needs_data
@pytest.mark.parametrize("path", [TS_A, OWT_1000], ids=["tinystories_a", "owt1000"])
def test_char_prepare_round_trip(tmp_path, path):
    result = run_prepare("--data-files", path, "--out-dir", tmp_path, "--tokenizer", "char", "--val-fraction", 0.1)
    assert result.returncode == 0, result.stderr
    meta, train, val = load(tmp_path)
    text = path.read_text(encoding="utf-8")
    docs = dataprep.read_documents(path)
    assert text == "".join(d + EOT for d in docs)

    # the vocabulary: id 0 ends a document, then every character of train and val, sorted, once each
    chars = meta["chars"]
    assert (meta["tokenizer"], meta["eot_token"], meta["vocab_size"]) == ("char", 0, len(chars))
    assert chars[0] == EOT and chars[1:] == sorted(set("".join(docs)))
    assert len(train) + len(val) == len(text) - len(docs) * (len(EOT) - 1)
    assert max(train.max(), val.max()) == len(chars) - 1

    # each split decodes to its own documents, each closed by EOT, in file order
    encode, decode = get_codec(tmp_path)
    is_val = dataprep.split_mask(len(docs), 0.1, 2357)
    assert decode(val.tolist()) == "".join(d + EOT for d, v in zip(docs, is_val) if v)
    assert decode(train.tolist()) == "".join(d + EOT for d, v in zip(docs, is_val) if not v)
    assert (val == 0).sum() == meta["val_docs"] and (train == 0).sum() == meta["train_docs"]
    # encode, as sample.py uses it on a prompt, agrees with the .bin files and inverts decode
    assert decode(encode(text)) == text
    assert encode("".join(d + EOT for d, v in zip(docs, is_val) if not v)) == train.tolist()


def test_char_codec_edges():
    encode, decode = char_codec([EOT, "\n", " ", "a", "b", "é"])
    assert encode(f"ab é\n{EOT}{EOT}ba") == [3, 4, 2, 5, 1, 0, 0, 4, 3]
    assert decode([3, 0, 4, 63]) == f"a{EOT}b"  # ids past the vocabulary (model padding) are dropped
    with pytest.raises(ValueError, match="'xz'"):
        encode("zax")


def test_gpt2_codec_is_the_default(tmp_path):
    encode, decode = get_codec(tmp_path)  # no meta.json: GPT-2, as nanoGPT
    assert encode(f"Hello world{EOT}") == [15496, 995, 50256]
    assert decode([15496, 995, 50300]) == "Hello world"
    (tmp_path / "meta.json").write_text(json.dumps({"tokenizer": "sentencepiece"}))
    with pytest.raises(ValueError, match="unknown tokenizer 'sentencepiece'"):
        get_codec(tmp_path)


def test_char_docs_from_jsonl(tmp_path):
    docs = ["Tom saw a “red” ball. 🎈", "Sue ran.\nShe was happy!", "", "Zoë"] * 5
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    result = run_prepare("--data-files", path, "--out-dir", tmp_path / "out", "--tokenizer=char", "--val-fraction", 0.2)
    assert result.returncode == 0, result.stderr
    meta, train, val = load(tmp_path / "out")
    assert meta["chars"][1:] == sorted(set("".join(docs)))
    _, decode = get_codec(tmp_path / "out")
    assert sorted(decode(np.concatenate([train, val]).tolist()).split(EOT)[:-1]) == sorted(docs)


def test_bad_tokenizer_fails_clearly(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text(f"One.{EOT}Two.{EOT}")
    result = run_prepare("--data-files", path, "--out-dir", tmp_path / "out", "--tokenizer=bpe")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "argument --tokenizer: invalid choice: 'bpe'" in result.stderr
    assert not (tmp_path / "out").exists()
