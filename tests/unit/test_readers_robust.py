"""Input files as they come in the wild: JSON Lines named .json (streamed), a byte-order mark, empty files; and
output folders that always load (empty rejects/) and replace the old folder whole."""

from __future__ import annotations

import gzip
import json
import logging
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from datasets import load_from_disk

from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig
from hf_llm.data.pipeline import build_prepared_data
from hf_llm.data.readers import iter_records
from hf_llm.data.sources import document_dataset, open_source
from hf_llm.errors import DataError

from ..conftest import REPO, sample_documents

BOM = b"\xef\xbb\xbf"
TOK = TokenizerConfig(vocab_size=320)


def records(tmp_path: Path, path: Path, streaming: bool = False, **src) -> list[dict]:
    spec = open_source(SourceConfig(path=str(path), **src))
    return list(document_dataset(spec, False, streaming, cache_dir=str(tmp_path / "cache")))


def renamed(rows: list[dict], old: Path, new: Path) -> list[dict]:
    """Rows with one file's name replaced by another's, to compare two files holding the same content."""
    return [{k: v.replace(str(old), str(new)) if isinstance(v, str) else v for k, v in r.items()} for r in rows]


# ------------------------------------------------------------------------------ JSON Lines in a .json file


def jsonl_bytes(n: int) -> bytes:
    lines = [json.dumps({"id": i, "text": f"document {i} " + "word " * 30}) for i in range(n)]
    lines[3] = '{"id": 3, "text": "no closing quote}'
    lines[7] = "[1, 2]"
    return ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("streaming", [False, True])
def test_json_lines_named_json_reads_like_jsonl(tmp_path, streaming):
    content = jsonl_bytes(12)
    a, b = tmp_path / "c.json", tmp_path / "c.jsonl"
    a.write_bytes(content)
    b.write_bytes(content)
    rows = records(tmp_path, a, streaming)
    assert rows == renamed(records(tmp_path, b, streaming), b, a)
    assert rows[3]["read_reason"] == "malformed" and rows[3]["read_detail"].startswith(f"{a}:4: malformed JSON")
    assert rows[7]["read_detail"] == f"{a}:8: a JSON list, not an object"
    assert [r["origin"] for r in rows[:2]] == [f"{a}:1", f"{a}:2"]


def test_json_lines_named_json_is_streamed_not_read_whole(tmp_path):
    """A multi-GB .json shard of JSON Lines must not be read into memory: peak memory stays far below its size."""
    f = tmp_path / "big.json"
    f.write_bytes(jsonl_bytes(20_000))
    size = f.stat().st_size
    assert size > 3_000_000
    tracemalloc.start()
    try:
        spec = open_source(SourceConfig(path=str(f)))  # learns the columns from the first rows
        n = sum(1 for _ in iter_records(spec, spec.files))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 20_000
    assert peak < size / 4, f"peak {peak:,} bytes reading a {size:,}-byte JSON Lines file"


def test_json_documents_still_parse_whole(tmp_path):
    pretty = tmp_path / "pretty.json"
    pretty.write_text(json.dumps({"version": 1, "data": [{"text": "x"}, {"text": "y"}]}, indent=2))
    one_line = tmp_path / "one.json"
    one_line.write_text(json.dumps({"text": "single"}) + "\n")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"text": "a"}, {"text": "b"}], indent=1))
    assert [(r["text"], r["origin"]) for r in records(tmp_path, pretty)] == [("x", f"{pretty}#0"), ("y", f"{pretty}#1")]
    assert [r["text"] for r in records(tmp_path, one_line)] == ["single"]
    assert [r["text"] for r in records(tmp_path, array)] == ["a", "b"]


# ------------------------------------------------------------------------------------------ byte-order mark


CONTENTS = {
    "c.jsonl": b'{"text": "first", "id": 1}\n{"text": "second", "id": 2}\n',
    "c.json": b'[{"text": "first", "id": 1}, {"text": "second", "id": 2}]',
    "lines.json": b'{"text": "first", "id": 1}\n{"text": "second", "id": 2}\n',
    "c.txt": b"first paragraph\n\nsecond paragraph\n",
    "c.csv": b"text,id\r\nfirst,1\r\nsecond,2\r\n",
}


@pytest.mark.parametrize("name,sample_by", [*((n, "paragraph") for n in CONTENTS), ("c.txt", "document"),
                                            ("c.txt", "line"), ("c.jsonl.gz", "paragraph")])
def test_byte_order_mark_is_not_part_of_the_first_record(tmp_path, name, sample_by):
    content = CONTENTS[name.removesuffix(".gz")]
    (tmp_path / "plain").mkdir()
    (tmp_path / "bom").mkdir()
    plain, marked = tmp_path / "plain" / name, tmp_path / "bom" / name  # same name: same source label
    opener = gzip.open if name.endswith(".gz") else open
    with opener(plain, "wb") as f:
        f.write(content)
    with opener(marked, "wb") as f:
        f.write(BOM + content)
    rows = records(tmp_path, marked, txt_sample_by=sample_by)
    expected = records(tmp_path, plain, txt_sample_by=sample_by)
    assert renamed(rows, marked, plain) == expected
    assert all(r["read_reason"] is None for r in rows) and not rows[0]["text"].startswith("\ufeff")
    assert "\ufeff" not in json.dumps(rows, ensure_ascii=False)  # no column name or value keeps the mark either


# ------------------------------------------------------------------------------------------------ empty files


@pytest.mark.parametrize("name,content", [("e.jsonl", b""), ("e.json", b"  \n\n"), ("e.txt", b"\n \t\n"),
                                          ("e.csv", b""), ("e.parquet", b""), ("e.jsonl.gz", None)])
@pytest.mark.parametrize("streaming", [False, True])
def test_an_empty_file_is_a_clear_error(tmp_path, name, content, streaming):
    f = tmp_path / name
    if content is None:
        with gzip.open(f, "wb") as g:
            g.write(BOM + b"\n")
    else:
        f.write_bytes(content)
    with pytest.raises(DataError, match=rf"{f} is empty .*add data to it or remove it from data.sources"):
        records(tmp_path, f, streaming)


@pytest.mark.parametrize("name,content", [("h.csv", b"text,id\n"), ("a.json", b"[]")])
@pytest.mark.parametrize("streaming", [False, True])
def test_a_file_without_records_is_a_clear_error(tmp_path, name, content, streaming):
    f = tmp_path / name
    f.write_bytes(content)
    data = DataConfig(sources=[SourceConfig(path=str(f))], lazy_read=streaming)
    with pytest.raises(DataError, match=rf"source {str(f)!r} holds no records"):
        build_prepared_data(data, TOK, tmp_path / "out")


def test_an_empty_file_among_others_is_skipped_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "shards"
    folder.mkdir()
    (folder / "a.jsonl").write_text('{"text": "one"}\n')
    (folder / "b.jsonl").write_bytes(b"")
    (folder / "c.jsonl").write_text('{"text": "three"}\n')
    with caplog.at_level(logging.WARNING, logger="hf_llm.data.sources"):
        rows = records(tmp_path, folder)
    assert [r["text"] for r in rows] == ["one", "three"]
    assert f"{folder / 'b.jsonl'} is empty; skipped" in caplog.text
    (folder / "a.jsonl").write_bytes(b" \n")
    (folder / "c.jsonl").write_bytes(BOM)
    with pytest.raises(DataError, match=r"data source .* every file is empty \(3 files: .*a.jsonl"):
        records(tmp_path, folder)


def test_prepare_data_script_exits_2_on_an_empty_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "scripts/prepare_data.py", f"output_dir={tmp_path / 'o'}",
                           f"data.sources=[{{path: '{empty}'}}]"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{empty} is empty" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()


# -------------------------------------------------------------------------------------------- output folders


def corpus(path: Path, bad_line: bool) -> Path:
    lines = [json.dumps({"id": f"d{i}", "text": d["text"]}) for i, d in enumerate(sample_documents(30))]
    if bad_line:
        lines.insert(4, '{"id": "broken", "text": "no closing quote}')
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def rebuilt(tmp_path_factory):
    """A folder prepared from input with one bad line, then prepared again, into the same path, from clean input."""
    root = tmp_path_factory.mktemp("rebuilt")
    out = root / "out" / "prepared"

    def build(bad_line: bool, name: str):
        src = corpus(root / name, bad_line)
        data = DataConfig(sources=[SourceConfig(path=str(src))], seq_len=64, save_documents=True)
        data.clean.gopher_repetition.enabled = False  # two of these real documents fail it: the clean run has none
        return build_prepared_data(data, TOK, out)

    first = build(True, "first.jsonl")
    before = {p: load_from_disk(str(out / p)).features for p in ("rejects", "documents")}
    (out / "stale.txt").write_text("left from the first run")
    second = build(False, "second.jsonl")
    return first, second, before, out


def test_no_rejects_still_writes_a_loadable_rejects_folder(rebuilt):
    first, second, before, out = rebuilt
    assert first.card["rejections"] == {"malformed": 1} and second.card["rejections"] == {}
    rejects = load_from_disk(str(out / "rejects"))
    assert rejects.num_rows == 0 and rejects.features == before["rejects"]
    assert rejects.column_names == ["text", "source", "origin", "language", "language_score", "reason", "detail", "id"]
    for folder in ("train", "validation", "documents"):
        assert load_from_disk(str(out / folder)).num_rows > 0, folder
    assert load_from_disk(str(out / "documents")).features == before["documents"]


def test_a_rerun_replaces_the_folder_whole_and_leaves_no_staging_behind(rebuilt):
    _, second, _, out = rebuilt
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "data_card.json").read_text())["sources"]["second"]["path"].endswith("second.jsonl")
    assert sorted(p.name for p in out.parent.iterdir()) == ["prepared"]
    assert not (out / ".work").exists()
