"""Tolerant source readers: every format, globs, Hub ids (a local dataset folder), extra columns, bad input."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_llm.config import SourceConfig
from hf_llm.data.mixture import mixture_counts, mixture_passes, validation_share, validation_size
from hf_llm.data.sources import document_dataset, open_source
from hf_llm.errors import DataError


def records(tmp_path: Path, src: SourceConfig, strict: bool = False, streaming: bool = False) -> list[dict]:
    spec = open_source(src)
    ds = document_dataset(spec, strict, streaming, cache_dir=str(tmp_path / "cache"))
    return list(ds)


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    lines = [json.dumps(r).encode() for r in rows]
    for at, raw in (raw_lines or {}).items():
        lines.insert(at, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_txt_document_paragraph_and_line(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("first para\nstill first\n\n\nsecond para\n\nthird\n")
    para = records(tmp_path, SourceConfig(path=str(f)))
    assert [r["text"] for r in para] == ["first para\nstill first", "second para", "third"]
    assert [r["origin"] for r in para] == [f"{f}:1", f"{f}:5", f"{f}:7"]
    assert {r["source"] for r in para} == {"a"}
    lines = records(tmp_path, SourceConfig(path=str(f), txt_sample_by="line"))
    assert [r["text"] for r in lines] == ["first para", "still first", "second para", "third"]
    whole = records(tmp_path, SourceConfig(path=str(f), txt_sample_by="document"))
    assert len(whole) == 1 and whole[0]["text"].startswith("first para") and whole[0]["origin"] == str(f)


def test_jsonl_extra_columns_keep_their_types_and_malformed_lines_are_records(tmp_path):
    f = write_jsonl(tmp_path / "c.jsonl", [{"id": 7, "url": "http://a", "text": "one"},
                                          {"id": "x8", "text": "two", "meta": {"k": [1, 2]}},
                                          {"text": None}, {"body": "no text field"}, {"text": 3}],
                    raw_lines={2: b'{"id": 9, "text": "unterminated', 3: b"[1, 2]"})
    rows = records(tmp_path, SourceConfig(path=str(f)))
    assert [r["read_reason"] for r in rows] == [None, None, "malformed", "malformed", None, "missing_text", "wrong_type"]
    # JSON has no schema: string fields stay strings; others keep their JSON text, which json.loads gives back
    assert rows[0]["url"] == "http://a" and rows[1]["url"] is None
    assert json.loads(rows[0]["id"]) == 7 and json.loads(rows[1]["id"]) == "x8"
    assert json.loads(rows[1]["meta"]) == {"k": [1, 2]} and rows[0]["meta"] is None
    assert rows[2]["read_detail"].startswith(f"{f}:3: malformed JSON") and rows[2]["text"].startswith('{"id": 9')
    assert rows[4]["text"] is None  # null text is read; the clean step calls it empty
    assert rows[4]["read_detail"] == f"{f}:5: field 'text' is null"
    assert "field 'text' is a number, not a string; set text_field" in rows[6]["read_detail"]
    with pytest.raises(DataError, match=rf"{f}:3: malformed JSON.*data.strict=true"):
        records(tmp_path, SourceConfig(path=str(f)), strict=True)


def test_invalid_utf8_is_located_and_replaced(tmp_path):
    f = write_jsonl(tmp_path / "u.jsonl", [{"text": "fine"}], raw_lines={1: b'{"text": "caf\xe9"}'})
    rows = records(tmp_path, SourceConfig(path=str(f)))
    assert rows[1]["read_reason"] == "invalid_utf8"
    assert rows[1]["read_detail"].startswith(f"{f}:2: invalid UTF-8 at byte 13 of the line (0xE9)")
    assert "\ufffd" in rows[1]["text"]
    t = tmp_path / "u.txt"
    t.write_bytes(b"good block\n\nbad \xff line\nmore\n")
    rows = records(tmp_path, SourceConfig(path=str(t)))
    assert rows[0]["read_reason"] is None and rows[1]["read_reason"] == "invalid_utf8"
    assert rows[1]["read_detail"].startswith(f"{t}:3: invalid UTF-8 at byte 4 of the line (0xFF); ")
    assert rows[1]["read_detail"].endswith("needs converting, e.g. iconv -f CP1252 -t UTF-8")
    with pytest.raises(DataError, match="invalid UTF-8"):
        records(tmp_path, SourceConfig(path=str(t)), strict=True)


def test_json_array_and_data_field(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"text": "x", "id": 1}, {"text": "y", "id": 2}]))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"version": 1, "data": [{"text": "z"}]}))
    assert [r["text"] for r in records(tmp_path, SourceConfig(path=str(a)))] == ["x", "y"]
    assert [r["origin"] for r in records(tmp_path, SourceConfig(path=str(b)))] == [f"{b}#0"]


def test_parquet_csv_glob_and_gzip(tmp_path):
    pq.write_table(pa.table({"doc": ["p1", "p2"], "id": [1, 2]}), tmp_path / "p.parquet")
    rows = records(tmp_path, SourceConfig(path=str(tmp_path / "p.parquet"), text_field="doc"))
    assert [(r["text"], r["id"]) for r in rows] == [("p1", 1), ("p2", 2)]

    with open(tmp_path / "c.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerows([["id", "text"], ["1", "a, quoted\nmultiline text"], ["2", "b", "extra field"], ["3", "c"]])
    rows = records(tmp_path, SourceConfig(path=str(tmp_path / "c.csv")))
    assert [r["read_reason"] for r in rows] == [None, "malformed", None]
    assert rows[0]["text"] == "a, quoted\nmultiline text" and rows[2]["id"] == "3"
    assert "3 fields where the header has 2" in rows[1]["read_detail"]

    for i in range(3):
        with gzip.open(tmp_path / f"part-{i}.jsonl.gz", "wt") as f:
            f.write(json.dumps({"text": f"doc {i}"}) + "\n")
    rows = records(tmp_path, SourceConfig(path=str(tmp_path / "part-*.jsonl.gz")))
    assert [r["text"] for r in rows] == ["doc 0", "doc 1", "doc 2"]


def test_hub_source_by_id_with_config_and_split(tmp_path):
    """A Hub id goes through datasets.load_dataset(path, name, split=, revision=); a local dataset folder stands in
    for the Hub (no network in tests)."""
    repo = tmp_path / "hub_ds"
    (repo / "data").mkdir(parents=True)
    train = pa.table({"content": ["h1", "h2", "h3"], "url": ["u1", "u2", "u3"]})
    pq.write_table(train, repo / "data" / "train.parquet")
    pq.write_table(pa.table({"content": ["t1"], "url": ["u4"]}), repo / "data" / "test.parquet")
    src = SourceConfig(path=str(repo), format="hub", split="test", text_field="content", name=None)
    rows = records(tmp_path, src)
    assert [(r["text"], r["url"]) for r in rows] == [("t1", "u4")]
    assert rows[0]["origin"] == f"{repo}[test]#0"
    with pytest.raises(DataError, match="could not load Hub dataset"):
        records(tmp_path, SourceConfig(path=str(tmp_path / "nope"), format="hub"))


def test_string_fields_that_look_like_json_stay_strings(tmp_path):
    rows = [{"id": "null", "text": "a"}, {"id": "123", "text": "b"}, {"id": "true", "text": "c"}]
    f = write_jsonl(tmp_path / "j.jsonl", rows)
    assert [r["id"] for r in records(tmp_path, SourceConfig(path=str(f)))] == ["null", "123", "true"]


def test_streaming_reads_the_same_records(tmp_path):
    f = write_jsonl(tmp_path / "s.jsonl", [{"text": f"t{i}", "id": i} for i in range(5)], raw_lines={2: b"oops"})
    assert records(tmp_path, SourceConfig(path=str(f))) == records(tmp_path, SourceConfig(path=str(f)), streaming=True)


@pytest.mark.parametrize("name,content", [
    ("c.jsonl", '{"body": "x", "id": 1}\n'),
    ("c.csv", "body,id\nx,1\n"),
])
def test_missing_text_column_lists_the_columns(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=r"no column 'text'; its columns are \['body', 'id'\]"):
        open_source(SourceConfig(path=str(tmp_path / name)))


def test_path_matching_no_file(tmp_path):
    with pytest.raises(DataError, match="matches no file"):
        open_source(SourceConfig(path=str(tmp_path / "missing-*.jsonl")))


def test_mixture_counts_and_passes():
    assert mixture_counts([100, 10], [1.0, 1.0]) == [55, 55]
    passes = mixture_passes(10, 25, seed=0)
    assert [len(p) for p in passes] == [10, 10, 5]
    assert np.array_equal(passes[0], np.arange(10)) and np.all(np.diff(passes[2]) > 0)
    assert mixture_passes(10, 25, seed=0)[2].tolist() == passes[2].tolist()  # seeded


def test_validation_size_is_a_capped_share_that_leaves_training_documents():
    assert validation_size(1000, 0.02, 200) == 20
    assert validation_size(100_000, 0.02, 200) == 200  # the cap
    assert validation_size(10, 0.01) == 1  # at least one
    assert validation_size(2, 0.9) == 1 and validation_share(2, 0.9) == 2  # a hold-out never takes every document
