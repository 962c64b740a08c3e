"""Data preparation: exact nanoGPT tokens, the prepare scripts end to end, and clean failures.

Tests marked needs_data read the real text files in ../shared/data and skip when it is absent.
"""
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import dataprep
from tokenizer import get_gpt2_encoding

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"{DATA} not found")
TS_A = DATA / "tinystories" / "tinystories_10Msubset_a.txt"
TS_2MIB = DATA / "tinystories" / "tinystories_v1_train_head_2MiB.txt"
OWT_1000 = DATA / "openwebtext" / "owt10k_val1000docs.txt"
OWT_100 = DATA / "openwebtext" / "owt_first100docs.txt"
EOT = 50256
# a few short documents with curly quotes, emoji and paragraphs, for inputs the tests write themselves
DOCS = [f"Story {i}. Tom saw a red ball.\n“Look!” he said. 🎈 It went up, up, up." for i in range(30)]


def run_prepare(*args, dataset="tinystories", env=None):
    script = ROOT / "data" / dataset / "prepare.py"
    return subprocess.run([sys.executable, str(script), *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def load_output(out_dir):
    meta = json.loads((out_dir / "meta.json").read_text())
    train, val = (np.memmap(out_dir / f"{split}.bin", dtype=np.uint16, mode="r") for split in ("train", "val"))
    return meta, np.array(train), np.array(val)


def token_bytes(docs, num_proc=1):
    return b"".join(ids.tobytes() for ids in dataprep.tokenize_documents(docs, num_proc))


def assert_clean_error(result, words):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert words in result.stderr


@needs_data
@pytest.mark.parametrize("num_proc", [1, 2])
@pytest.mark.parametrize("path, sha256", [
    (TS_A, "e5b7891429408a3252fe2b68c7fa95b108a8714147e52fb3988492f9c4235da1"),
    (OWT_1000, "f40e1be7f25566398cbaa863c801d88c8703782eecb72572972ec1db029199ea"),
], ids=["tinystories_a", "owt1000"])
def test_tokens_match_source_bin(path, sha256, num_proc):
    # a generator, as the hub path passes one: documents must come back in order from the worker pool
    data = token_bytes(iter(dataprep.read_documents(path)), num_proc)
    assert hashlib.sha256(data).hexdigest() == sha256


@needs_data
def test_read_documents_txt_layouts():
    assert len(dataprep.read_documents(TS_A)) == 3117
    assert len(dataprep.read_documents(OWT_1000)) == 1000
    # separator on its own line, truncated tail: the 2,316 complete stories, stripped
    docs = dataprep.read_documents(TS_2MIB)
    assert len(docs) == 2316
    assert docs[0].startswith("One day, a little girl named Lily found a needle in her room.")
    assert all(d and d == d.strip() and "<|endoftext|>" not in d for d in docs)
    assert TS_2MIB.read_text(encoding="utf-8").count(docs[-1] + "\n<|endoftext|>\n") == 1
    # no separator: one document, the whole file
    assert dataprep.read_documents(OWT_100) == [OWT_100.read_text(encoding="utf-8")]


@needs_data
def test_prepare_script_txt(tmp_path):
    result = run_prepare("--data-files", TS_A, "--out-dir", tmp_path, "--num-proc", 2)
    assert result.returncode == 0, result.stderr
    assert "tokens/s" in result.stdout
    assert "tokenizing" not in result.stderr  # no progress bar frames where stdout is not a terminal
    meta, train, val = load_output(tmp_path)
    enc = get_gpt2_encoding()
    n_tokens = len(enc.encode(TS_A.read_text(encoding="utf-8"), allowed_special={"<|endoftext|>"}))
    assert meta["train_tokens"] + meta["val_tokens"] == n_tokens == 622_159
    assert (len(train), len(val)) == (meta["train_tokens"], meta["val_tokens"])
    assert (meta["train_docs"], meta["val_docs"]) == (3117 - 31, 31)
    assert train[-1] == val[-1] == EOT
    assert ((train == EOT).sum(), (val == EOT).sum()) == (meta["train_docs"], meta["val_docs"])
    assert {k: meta[k] for k in ("vocab_size", "tokenizer", "eot_token", "source", "split", "seed", "val_fraction")} \
        == {"vocab_size": 50257, "tokenizer": "gpt2", "eot_token": EOT, "source": [str(TS_A)],
            "split": "seeded by document", "seed": 2357, "val_fraction": 0.01}
    # each split holds its own documents, in file order
    docs, is_val = dataprep.read_documents(TS_A), dataprep.split_mask(3117, 0.01, 2357)
    assert val.tobytes() == token_bytes(d for d, v in zip(docs, is_val) if v)
    assert train.tobytes() == token_bytes(d for d, v in zip(docs, is_val) if not v)


@needs_data
def test_truncated_file_and_seeds(tmp_path):
    outputs = {}
    for name, seed in [("first", 1), ("again", 1), ("other", 2)]:
        result = run_prepare("--data-files", TS_2MIB, "--out-dir", tmp_path / name, "--seed", seed, "--num-proc", 1)
        assert result.returncode == 0, result.stderr
        assert "dropped 807 characters" in result.stderr
        outputs[name] = load_output(tmp_path / name)
    meta, train, val = outputs["first"]
    assert meta["train_docs"] + meta["val_docs"] == 2316 and meta["seed"] == 1
    assert train.tobytes() == outputs["again"][1].tobytes() and val.tobytes() == outputs["again"][2].tobytes()
    assert val.tobytes() != outputs["other"][2].tobytes()
    assert len(train) + len(val) == len(outputs["other"][1]) + len(outputs["other"][2])


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".parquet"])
def test_record_files(tmp_path, suffix):
    path = tmp_path / f"docs{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(DOCS)))
    elif suffix == ".json":
        path.write_text(json.dumps([{"text": d} for d in DOCS]))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq
        pq.write_table(pa.table({"text": DOCS}), path)
    assert dataprep.read_documents(path) == DOCS


def test_prepare_script_jsonl(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    result = run_prepare("--data-files", path, "--out-dir", tmp_path / "out", "--val-fraction", 0.1)
    assert result.returncode == 0, result.stderr
    meta, train, val = load_output(tmp_path / "out")
    enc = get_gpt2_encoding()
    assert len(train) + len(val) == sum(len(enc.encode_ordinary(d)) + 1 for d in DOCS)
    assert (meta["train_docs"], meta["val_docs"]) == (27, 3)


@pytest.mark.parametrize("name, content, args, words", [
    ("missing.txt", None, [], "does not exist"),
    ("table.csv", "text\nhello\n", [], "unsupported file type '.csv'"),
    ("docs.jsonl", '{"story": "a"}\n{"story": "b"}\n', [], "no 'text' string field"),
    ("broken.json", '[{"text": "a"}', [], "not valid JSON"),
    ("empty.txt", "\n", [], "found no documents"),
    ("one.txt", "A single story.<|endoftext|>", [], "at least 2 documents"),
    ("two.txt", "One.<|endoftext|>Two.<|endoftext|>", ["--val-fraction", 1.5], "between 0 and 1"),
], ids=["missing", "extension", "no_text_field", "bad_json", "no_docs", "one_doc", "val_fraction"])
def test_bad_input_fails_cleanly(tmp_path, name, content, args, words):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = run_prepare("--data-files", path, "--out-dir", tmp_path / "out", *args)
    assert_clean_error(result, words)
    assert not (tmp_path / "out" / "train.bin").exists()


def test_empty_folder_fails_cleanly(tmp_path):
    (tmp_path / "notes.md").write_text("not a data file")
    assert_clean_error(run_prepare("--data-files", tmp_path, "--out-dir", tmp_path / "out"), "holds no")


@pytest.mark.parametrize("dataset", ["tinystories", "openwebtext"])
@pytest.mark.parametrize("offline_env", [{"HF_HUB_OFFLINE": "1"}, {"HF_ENDPOINT": "http://127.0.0.1:9"}],
                         ids=["HF_HUB_OFFLINE", "dead_endpoint"])
def test_offline_without_files_says_what_to_do(tmp_path, dataset, offline_env):
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(offline_env, HF_HOME=str(tmp_path / "hf"))  # an empty cache, even on a machine that has one
    t0 = time.time()
    result = run_prepare("--out-dir", tmp_path / "out", dataset=dataset, env=env)
    assert time.time() - t0 < 15
    assert_clean_error(result, "pass --data-files PATH")


@pytest.mark.parametrize("script_based", [False, True], ids=["parquet", "script"])
@pytest.mark.parametrize("sample", [False, True], ids=["full", "sample"])
@pytest.mark.parametrize("val_split", ["validation", None], ids=["hub_splits", "seeded"])
def test_hub_source(tmp_path, monkeypatch, capsys, sample, val_split, script_based):
    # the hub code paths, with a stand-in for load_dataset: the real download can't be tested offline. A
    # script-based dataset (datasets >= 4 refuses it) loads only from the hub's parquet conversion.
    datasets = pytest.importorskip("datasets")
    splits = {"train": DOCS[:20], "validation": DOCS[20:]}

    def load_dataset(name, streaming=False, num_proc=None, revision=None):
        assert name == "someone/stories"
        if script_based and revision != "c0ffee-parquet":  # the commit of refs/convert/parquet
            raise RuntimeError("Dataset scripts are no longer supported, but found stories.py")
        ds = {split: datasets.Dataset.from_dict({"text": docs}) for split, docs in splits.items()}
        return {split: d.to_iterable_dataset() for split, d in ds.items()} if streaming else ds

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(dataprep, "_hub_reachable", lambda: True)
    monkeypatch.setattr(dataprep, "hub_snapshot", lambda name, revision=None: (
        "c0ffee-parquet" if revision == "refs/convert/parquet" else "c0ffee-main", ["default/train/0000.parquet"]))
    dataprep.main(name="no-local-mirror", hub="someone/stories", out_dir=tmp_path, sample_docs=15, sample_val_docs=4,
                  hub_val_split=val_split, hub_val_fraction=0.1,
                  argv=["--num-proc", "1"] + (["--sample"] if sample else []))
    notes = [line for line in capsys.readouterr().out.splitlines() if "parquet" in line]
    assert notes == (["note: someone/stories is built by a loading script, which this version of datasets no "
                      "longer runs; reading the hub's parquet conversion of it (revision='refs/convert/parquet') "
                      "instead"] if script_based else [])
    meta, train, val = load_output(tmp_path)
    assert meta["revision"] == ("c0ffee-parquet" if script_based else "c0ffee-main")
    if not sample:
        assert meta["hub_rows"] == {"train": 20, "validation": len(DOCS) - 20}
    train_docs = DOCS[:15] if sample else DOCS[:20]
    if val_split:
        val_docs = DOCS[20:24] if sample else DOCS[20:]
        assert (meta["split"], meta["train_docs"], meta["val_docs"]) == ("hub splits", len(train_docs), len(val_docs))
        assert (train.tobytes(), val.tobytes()) == (token_bytes(train_docs), token_bytes(val_docs))
    else:
        is_val = dataprep.split_mask(len(train_docs), 0.1, 2357)
        assert (meta["split"], meta["val_fraction"]) == ("seeded by document", 0.1)
        assert (meta["train_docs"], meta["val_docs"]) == (len(train_docs) - 2, 2)
        assert val.tobytes() == token_bytes(d for d, v in zip(train_docs, is_val) if v)


def test_partial_parquet_conversion_is_refused(tmp_path, monkeypatch, capsys):
    """A stand-in hub: the parquet conversion of a script-based dataset laid out as the hub's converter does when a
    split passes its size limit (default/partial-train/), read by the real load_dataset from local parquet files.
    Refused with one sentence, no file written; with --allow-partial it is taken, and meta.json says so. The full
    dataset's row count (openwebtext's 8,013,769) is checked as well."""
    datasets = pytest.importorskip("datasets")
    hub = tmp_path / "hub"
    for folder, docs in (("default/partial-train", DOCS[:20]), ("default/validation", DOCS[20:])):
        (hub / folder).mkdir(parents=True)
        datasets.Dataset.from_dict({"text": docs}).to_parquet(hub / folder / "0000.parquet")
    real_load = datasets.load_dataset

    def load_dataset(name, num_proc=None, revision=None):
        if revision != "c0ffee":
            raise RuntimeError("Dataset scripts are no longer supported, but found stories.py")
        return real_load("parquet", data_files={p.parent.name.removeprefix("partial-"): str(p)
                                                for p in hub.rglob("*.parquet")})
    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(dataprep, "_hub_reachable", lambda: True)
    monkeypatch.setattr(dataprep, "hub_snapshot", lambda name, revision=None: (
        "c0ffee" if revision == "refs/convert/parquet" else "main-commit",
        [str(p.relative_to(hub)) for p in hub.rglob("*.parquet")]))
    args = dict(name="no-local-mirror", hub="someone/stories", sample_docs=15, hub_val_split="validation")
    with pytest.raises(SystemExit) as exit:
        dataprep.main(**args, out_dir=tmp_path / "out", argv=["--num-proc", "1"])
    assert "parquet conversion of someone/stories (commit c0ffee) is partial (default/partial-train" in str(exit.value)
    assert "--allow-partial" in str(exit.value) and not (tmp_path / "out").exists()
    layout = dataprep.hub_snapshot
    monkeypatch.setattr(dataprep, "hub_snapshot", lambda name, revision=None: (  # no partial- folder
        "c0ffee" if revision == "refs/convert/parquet" else "main-commit", []))
    with pytest.raises(SystemExit) as exit:
        dataprep.main(**args, out_dir=tmp_path / "out", hub_rows={"train": 8_013_769}, argv=["--num-proc", "1"])
    assert "came with 20 train documents where the full dataset has 8,013,769" in str(exit.value)
    assert not (tmp_path / "out").exists()
    monkeypatch.setattr(dataprep, "hub_snapshot", layout)
    dataprep.main(**args, out_dir=tmp_path / "out", argv=["--num-proc", "1", "--allow-partial"])
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert {k: meta[k] for k in ("source", "revision", "ref", "partial", "hub_rows", "train_docs", "val_docs")} == {
        "source": "someone/stories", "revision": "c0ffee", "ref": "refs/convert/parquet",
        "partial": ["default/partial-train"], "hub_rows": {"train": 20, "validation": len(DOCS) - 20},
        "train_docs": 20, "val_docs": len(DOCS) - 20}


@needs_data
@pytest.mark.parametrize("dataset", ["tinystories", "openwebtext"])
def test_sample_uses_local_mirror(tmp_path, dataset):
    result = run_prepare("--sample", "--out-dir", tmp_path, dataset=dataset)
    assert result.returncode == 0, result.stderr
    meta, train, val = load_output(tmp_path)
    assert meta["source"] == [str(p) for p in sorted((DATA / dataset).glob("*.txt"))]
    assert (meta["split"], meta["val_fraction"]) == ("seeded by document", 0.1)
    assert 1_000_000 < len(train) + len(val) < 2_000_000
    assert meta["val_docs"] == round(0.1 * (meta["train_docs"] + meta["val_docs"]))


def test_failure_keeps_existing_files(tmp_path):
    (tmp_path / "train.bin").write_bytes(b"old tokens")

    def docs():
        yield DOCS[0]
        raise RuntimeError("connection lost")

    with pytest.raises(RuntimeError):
        dataprep.prepare(docs(), [False, True, False], tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["train.bin"]
    assert (tmp_path / "train.bin").read_bytes() == b"old tokens"
