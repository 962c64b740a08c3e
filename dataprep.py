"""Turn a text corpus into nanoGPT-format token files: train.bin, val.bin and meta.json.

Each document becomes enc.encode_ordinary(doc) + [eot] with GPT-2 BPE, as in nanoGPT. A .bin file is a flat
array of uint16 token ids: np.memmap(path, dtype=np.uint16, mode="r"). data/<dataset>/prepare.py calls
main() with its dataset's defaults; the functions below are also meant for tests and other tools.

With --tokenizer=char (as nanoGPT's shakespeare_char) a token is one character instead. The vocabulary is
every character of all documents, train and val, sorted, after id 0, which ends a document in place of
GPT-2's EOT. meta.json's "chars" is the itos list, chars[0] being "<|endoftext|>"; tokenizer.get_codec()
reads it back.
"""
import argparse
import itertools
import json
import os
import sys
import time
import urllib.error
import urllib.request
from multiprocessing import Pool
from pathlib import Path

if not sys.stdout.isatty():  # scheduler logs get no progress bars, ours or the libraries' (read at tqdm's import)
    os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
from tqdm import tqdm

from tokenizer import EOT, get_gpt2_encoding

SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
SHARED_DATA = Path(__file__).resolve().parent.parent / "shared" / "data"  # small real samples, for offline machines


class DataError(Exception):
    """Bad input or no reachable source: main() prints it as one line, without a traceback."""


# -----------------------------------------------------------------------------
# reading documents

def read_documents(path):
    """The documents of one .txt, .jsonl, .json or .parquet file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist or is not a file")
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise DataError(f"{path}: unsupported file type {suffix or '(none)'!r}, use .txt, .jsonl, .json or .parquet")
    try:
        if suffix == ".txt":
            return _split_txt(path.read_text(encoding="utf-8"), path)
        if suffix == ".parquet":
            return _read_parquet(path)
        text = path.read_text(encoding="utf-8")
        if suffix == ".json" and text.lstrip().startswith("["):  # one JSON array of records
            records = json.loads(text)
        else:  # JSON lines, which is also what `datasets` writes for .json
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        return _texts([r.get("text") if isinstance(r, dict) else None for r in records], path)
    except UnicodeDecodeError:
        raise DataError(f"{path} is not valid UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e})") from None


def _read_parquet(path):
    import pyarrow as pa  # comes with `datasets`
    import pyarrow.parquet as pq
    try:
        if "text" not in pq.read_schema(path).names:
            raise DataError(f"{path} has no 'text' column")
        return _texts(pq.read_table(path, columns=["text"]).column("text").to_pylist(), path)
    except pa.ArrowException as e:
        raise DataError(f"{path} is not a readable parquet file ({e})") from None


def _split_txt(text, path):
    if EOT not in text:  # no separator: the whole file is one document (boundaries unknown)
        return [text] if text.strip() else []
    docs = text.split(EOT)
    if text.endswith(EOT):  # exact join: "".join(doc + EOT for doc in docs)
        return docs[:-1]
    # TinyStories .txt layout: the separator on a line of its own. What follows the last one is only the
    # final newline, or a document cut off mid-way (the 2 MiB sample), so drop it
    if docs[-1].strip():
        print(f"{path}: dropped {len(docs[-1]):,} characters after the last {EOT} (an unterminated document)",
              file=sys.stderr)
    return [d.strip() for d in docs[:-1]]


def _texts(values, path):
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise DataError(f"{path}: record {i + 1} has no 'text' string field")
    return values


def list_files(paths):
    """Expand folders into the supported files inside them (sorted); files keep the order given."""
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise DataError(f"{p} holds no .txt, .jsonl, .json or .parquet files")
            files += found
        else:
            files.append(p)  # read_documents() says if it is missing or of the wrong type
    return files


def split_mask(n_docs, val_fraction, seed):
    """Seeded split by document: a bool array, True for the round(n_docs * val_fraction) (at least 1) val docs."""
    if n_docs < 2:
        raise DataError(f"need at least 2 documents to split into train and val, found {n_docs}")
    if not 0 < val_fraction < 1:
        raise DataError(f"--val-fraction must be between 0 and 1, got {val_fraction}")
    n_val = min(n_docs - 1, max(1, round(n_docs * val_fraction)))
    is_val = np.zeros(n_docs, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(n_docs)[:n_val]] = True
    return is_val


# -----------------------------------------------------------------------------
# the Hugging Face hub

def _hub_reachable(timeout=5):
    """A quick check first: offline, `datasets` retries for about 25 s before it gives up."""
    request = urllib.request.Request(os.environ.get("HF_ENDPOINT", "https://huggingface.co"), method="HEAD")
    try:
        urllib.request.urlopen(request, timeout=timeout).close()
    except urllib.error.HTTPError:
        return True  # the server answered
    except (OSError, ValueError):  # no DNS, refused, timed out, bad HF_ENDPOINT
        return False
    return True


def load_hub(name, streaming=False, num_proc=None, allow_partial=False):
    """The dataset's splits (a dict-like of split name -> dataset) from the hub, or the hub's cache offline, and
    where they came from (load_dataset_or_parquet)."""
    offline = any(os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")
                  for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    message = (f"could not reach the Hugging Face hub to get {name}: pass --data-files PATH... to prepare "
               f"local files instead" + ("" if streaming else " (or --sample for a small sample)"))
    if not offline and not _hub_reachable():
        raise DataError(message)
    try:
        if streaming:
            return load_dataset_or_parquet(name, streaming=True, allow_partial=allow_partial)
        return load_dataset_or_parquet(name, num_proc=num_proc, allow_partial=allow_partial)
    except ConnectionError:  # e.g. HF_HUB_OFFLINE=1 and no cached copy
        raise DataError(message) from None


SCRIPT_ERROR = "Dataset scripts are no longer supported"  # datasets >= 4 on a dataset built by a loading script
PARQUET_REVISION = "refs/convert/parquet"  # the hub's parquet conversion of every public dataset


def parquet_note(name):
    print(f"note: {name} is built by a loading script, which this version of datasets no longer runs; "
          f"reading the hub's parquet conversion of it (revision='{PARQUET_REVISION}') instead")


def hub_snapshot(name, revision=None):
    """(the commit the hub serves for dataset name at revision, a branch or ref (None: main), and the files it holds
    there), or (None, []) when the hub cannot say (offline: the cache is read)."""
    from huggingface_hub import HfApi
    try:
        info = HfApi().dataset_info(name, revision=revision, timeout=10)
    except Exception:
        return None, []
    return info.sha, [s.rfilename for s in info.siblings or []]


def load_dataset_or_parquet(name, *args, allow_partial=False, **kwargs):
    """datasets.load_dataset(name, ...) at the commit the hub serves now, falling back to the hub's parquet
    conversion for script-based datasets (Skylion007/openwebtext, Rowan/hellaswag), which datasets 4 and later no
    longer load. The converter stops at a size limit per split and names such folders partial-<split>: a partial
    conversion is refused unless allow_partial. Returns (the dataset, its provenance for meta.json)."""
    import datasets  # slow to import, and only needed here
    commit, _ = hub_snapshot(name)
    try:
        return datasets.load_dataset(name, *args, revision=commit, **kwargs), {"revision": commit}
    except Exception as e:
        if SCRIPT_ERROR not in str(e):
            raise
    parquet_note(name)
    commit, files = hub_snapshot(name, PARQUET_REVISION)
    partial = sorted({os.path.dirname(f) for f in files if os.path.basename(os.path.dirname(f)).startswith("partial-")})
    if partial and not allow_partial:
        raise DataError(f"the hub's parquet conversion of {name} (commit {commit}) is partial ({', '.join(partial)}: "
                        f"the converter stops at a size limit per split), so it holds only part of the dataset; "
                        f"prepare its full files with --data-files PATH..., or take the part knowingly with "
                        f"--allow-partial (recorded in meta.json)")
    return datasets.load_dataset(name, *args, revision=commit or PARQUET_REVISION, **kwargs), \
        {"revision": commit, "ref": PARQUET_REVISION, "partial": partial}


def hub_texts(ds, batch_size=1000):
    """The documents of a hub dataset split, in order, without holding them all in memory."""
    for batch in ds.iter(batch_size=batch_size):
        yield from batch["text"]


# -----------------------------------------------------------------------------
# tokenizing and writing

_enc = None


def _init_worker():
    global _enc
    _enc = get_gpt2_encoding()


def _encode(doc):
    ids = _enc.encode_ordinary(doc)
    ids.append(_enc.eot_token)
    # GPT-2's 50,257 ids fit in uint16; bytes pass between processes ~20x cheaper than numpy arrays
    return np.array(ids, dtype=np.uint16).tobytes()


def char_vocab(docs):
    """The char tokenizer's itos: id 0 ends a document, then every character in docs, sorted."""
    chars = set()
    for doc in docs:
        chars.update(doc)
    if len(chars) >= 2 ** 16:
        raise DataError(f"{len(chars):,} distinct characters do not fit uint16 ids; use the gpt2 tokenizer")
    return [EOT] + sorted(chars)


def tokenize_documents(docs, num_proc=1, chars=None):
    """Yield each document's tokens, encode_ordinary(doc) + [eot] as a uint16 array, in document order.
    docs can be any iterable: with num_proc > 1, worker processes pull it a chunk at a time.
    With chars (from char_vocab), each character's id then 0 instead, in this process: it is fast."""
    if chars is not None:
        codepoints = np.array([ord(c) for c in chars[1:]], dtype=np.uint32)  # sorted, so id = position + 1
        for doc in docs:
            ids = np.searchsorted(codepoints, np.frombuffer(doc.encode("utf-32-le"), dtype=np.uint32)) + 1
            yield np.append(ids, 0).astype(np.uint16)
        return
    _init_worker()  # here too: forked workers then start with the encoding tiktoken has cached
    if num_proc <= 1:
        for data in map(_encode, docs):
            yield np.frombuffer(data, dtype=np.uint16)
        return
    with Pool(num_proc, initializer=_init_worker) as pool:
        for data in pool.imap(_encode, docs, chunksize=64):
            yield np.frombuffer(data, dtype=np.uint16)


def prepare(docs, is_val, out_dir, num_proc=1, meta=None, tokenizer="gpt2"):
    """Tokenize docs into out_dir/train.bin, val.bin and meta.json; document i goes to val if is_val[i].
    docs is read once, in order, and tokens go straight to disk: memory does not grow with the corpus
    (except with tokenizer="char", whose vocabulary needs a pass of its own over docs, held in memory).
    Everything is written to temp files renamed at the end: a failure never damages existing files."""
    chars = None
    if tokenizer == "char":
        docs = docs if isinstance(docs, list) else list(docs)
        chars = char_vocab(docs)
        header = {"vocab_size": len(chars), "tokenizer": "char", "eot_token": 0, "dtype": "uint16"}
    else:
        enc = get_gpt2_encoding()
        header = {"vocab_size": enc.n_vocab, "tokenizer": enc.name, "eot_token": enc.eot_token, "dtype": "uint16"}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = ("train.bin", "val.bin", "meta.json")
    tmp = {n: out_dir / f"{n}.{os.getpid()}.tmp" for n in names}
    tokens, n_docs = {False: 0, True: 0}, {False: 0, True: 0}
    t0 = time.time()
    try:
        with open(tmp["train.bin"], "wb") as ftrain, open(tmp["val.bin"], "wb") as fval:
            progress = tqdm(tokenize_documents(docs, num_proc, chars), total=len(is_val), unit="docs",
                            desc="tokenizing", disable=None if sys.stdout.isatty() else True)
            for v, ids in zip(map(bool, is_val), progress, strict=True):
                (fval if v else ftrain).write(ids.tobytes())
                tokens[v] += len(ids)
                n_docs[v] += 1
        dt = time.time() - t0
        meta = {**header, **(meta or {}), "train_tokens": tokens[False], "val_tokens": tokens[True],
                "train_docs": n_docs[False], "val_docs": n_docs[True]}
        if chars is not None:
            meta["chars"] = chars
        tmp["meta.json"].write_text(json.dumps(meta, indent=2) + "\n")
        for n in names:
            os.replace(tmp[n], out_dir / n)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)
    total = tokens[False] + tokens[True]
    print(f"train {tokens[False]:,} tokens ({n_docs[False]:,} docs), val {tokens[True]:,} tokens "
          f"({n_docs[True]:,} docs) in {out_dir}; tokenized in {dt:.1f}s, {total / max(dt, 1e-6):,.0f} tokens/s")
    return meta


# -----------------------------------------------------------------------------
# command line

def main(name, hub, out_dir, sample_docs, hub_val_split=None, hub_val_fraction=None, sample_val_docs=0,
         hub_rows=None, argv=None):
    """Command line of data/<name>/prepare.py. hub_val_split names the hub's own val split, if it has one;
    otherwise the hub's train split is split by document with hub_val_fraction. hub_rows: {split: documents} of
    the full dataset, checked when it comes whole from the hub."""
    mirror = SHARED_DATA / name
    parser = argparse.ArgumentParser(
        description=f"Tokenize {name} with GPT-2 BPE (or characters) into train.bin, val.bin (uint16) and meta.json. "
                    f"By default the full dataset comes from the Hugging Face hub ({hub}).",
        epilog=f"--sample uses every file in {mirror} when that folder exists (offline machines, CI), split by "
               f"document with --val-fraction 0.1 unless given; otherwise it streams only the first "
               f"{sample_docs} train documents from the hub"
               + (f" and the first {sample_val_docs} {hub_val_split} documents." if hub_val_split
                  else ", split the same way.")
               + " Local files: .txt documents are separated by <|endoftext|> (a file without one is a single "
                 "document); .jsonl, .json and .parquet need a 'text' field.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--data-files", nargs="+", metavar="PATH",
                        help="local files, or folders meaning every supported file inside (sorted), instead of "
                             "the hub; split by document with --val-fraction and --seed")
    source.add_argument("--sample", action="store_true",
                        help="a small real sample, about 1-2M tokens, for quick CPU runs (see below)")
    parser.add_argument("--out-dir", default=str(out_dir), help="where to write (default: %(default)s)")
    parser.add_argument("--val-fraction", type=float,
                        help="fraction of documents for val: default 0.01 for --data-files, 0.1 for --sample"
                             + (f", {hub_val_fraction} for the hub" if hub_val_fraction
                                else f"; the full hub dataset uses its own {hub_val_split} split"))
    parser.add_argument("--tokenizer", choices=("gpt2", "char"), default="gpt2",
                        help="gpt2: GPT-2 BPE (default); char: one token per character, the vocabulary being every "
                             "character of the documents, plus id 0 for end of document (see dataprep.py)")
    parser.add_argument("--seed", type=int, default=2357, help="seed of the split by document (default: 2357)")
    parser.add_argument("--num-proc", type=int, default=os.cpu_count(),
                        help="tokenizer processes (default: all cores, %(default)s)")
    parser.add_argument("--allow-partial", action="store_true",
                        help="take a partial copy of the hub dataset (a parquet conversion cut at the converter's "
                             "size limit, or fewer documents than the full dataset has), recorded in meta.json")
    args = parser.parse_args(argv)

    val_fraction = args.val_fraction
    if val_fraction is None:
        val_fraction = 0.1 if args.sample else 0.01 if args.data_files else hub_val_fraction
    try:
        if args.sample and mirror.is_dir():
            args.data_files = [mirror]
        if args.data_files:
            files = list_files(args.data_files)
            docs = [d for f in files for d in read_documents(f)]
            if not docs:
                raise DataError(f"found no documents in {', '.join(map(str, files))}")
            is_val = split_mask(len(docs), val_fraction, args.seed)
            meta = {"source": [str(f) for f in files], "split": "seeded by document",
                    "seed": args.seed, "val_fraction": val_fraction}
        elif args.sample:  # stream just a slice, so nothing big is downloaded
            # the first documents of a partial conversion are the dataset's first documents
            ds, provenance = load_hub(hub, streaming=True, allow_partial=True)
            train = [row["text"] for row in ds["train"].take(sample_docs)]
            source = f"{hub}: first {len(train)} train docs"
            if hub_val_split:
                val = [row["text"] for row in ds[hub_val_split].take(sample_val_docs)]
                docs, is_val = train + val, [False] * len(train) + [True] * len(val)
                meta = {"source": f"{source}, first {len(val)} {hub_val_split} docs", "split": "hub splits",
                        "seed": None, "val_fraction": None}
            else:
                docs, is_val = train, split_mask(len(train), val_fraction, args.seed)
                meta = {"source": source, "split": "seeded by document", "seed": args.seed,
                        "val_fraction": val_fraction}
            meta.update(provenance)
        else:
            ds, provenance = load_hub(hub, num_proc=args.num_proc, allow_partial=args.allow_partial)
            rows = {split: len(ds[split]) for split in ds}
            short = {s: (rows.get(s, 0), n) for s, n in (hub_rows or {}).items() if rows.get(s, 0) != n}
            if short and not args.allow_partial:
                raise DataError(f"{hub} came with " + ", ".join(f"{got:,} {s} documents where the full dataset has "
                                                                 f"{n:,}" for s, (got, n) in short.items())
                                + "; prepare its full files with --data-files PATH..., or take these knowingly with "
                                  "--allow-partial (recorded in meta.json)")
            if hub_val_split:
                train, val = ds["train"], ds[hub_val_split]
                docs = itertools.chain(hub_texts(train), hub_texts(val))
                is_val = np.repeat([False, True], [len(train), len(val)])
                meta = {"source": hub, "split": "hub splits", "seed": None, "val_fraction": None}
            else:
                docs, is_val = hub_texts(ds["train"]), split_mask(len(ds["train"]), val_fraction, args.seed)
                meta = {"source": hub, "split": "seeded by document", "seed": args.seed,
                        "val_fraction": val_fraction}
            meta.update(provenance, hub_rows=rows)
        prepare(docs, is_val, args.out_dir, max(1, args.num_proc), meta, args.tokenizer)
    except DataError as e:
        sys.exit(f"{parser.prog}: error: {e}")
