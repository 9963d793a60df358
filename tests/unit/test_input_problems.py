"""Input files as users have them: downloads cut short, Windows encodings, text fields that hold numbers, one giant
line. Each ends in kept records plus a named reject, or in a clear error; never in a raw traceback."""

from __future__ import annotations

import bz2
import codecs
import gzip
import json
import logging
import lzma
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from hf_llm import cli
from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig
from hf_llm.data.pipeline import build_prepared_data
from hf_llm.data.readers import iter_records
from hf_llm.data.sources import document_dataset, open_source
from hf_llm.errors import DataError

from ..conftest import REPO, sample_documents

TOK = TokenizerConfig(vocab_size=320)


def records(tmp_path: Path, path: Path, strict: bool = False, max_bytes=None, streaming: bool = False,
            **src) -> list[dict]:
    src_config = SourceConfig(path=str(path), **src)
    spec = open_source(src_config) if max_bytes is None else open_source(src_config, max_bytes)
    return list(document_dataset(spec, strict, streaming, cache_dir=str(tmp_path / "cache")))


def lines(n: int) -> bytes:
    return b"".join(json.dumps({"id": i, "text": f"document {i} " + "word " * 40}).encode() + b"\n" for i in range(n))


# ------------------------------------------------------------------------------------------ truncated downloads

COMPRESSORS = {
    ".gz": (gzip.compress, lambda: zlib.decompressobj(wbits=31)),
    ".bz2": (lambda data: bz2.compress(data, 1), bz2.BZ2Decompressor),  # 100 kB blocks: a cut leaves whole ones
    ".xz": (lzma.compress, lzma.LZMADecompressor),
}


def cut_file(tmp_path: Path, suffix: str, n: int = 2000, keep: float = 0.6) -> tuple[Path, int]:
    """A .jsonl.SUFFIX cut to `keep` of its bytes, and how many complete lines its readable part holds."""
    compress, decompressor = COMPRESSORS[suffix]
    whole = compress(lines(n))
    cut = whole[: int(len(whole) * keep)]
    path = tmp_path / f"corpus.jsonl{suffix}"
    path.write_bytes(cut)
    return path, decompressor().decompress(cut).count(b"\n")


@pytest.mark.parametrize("suffix", list(COMPRESSORS))
def test_a_truncated_file_keeps_the_records_before_the_cut(tmp_path, suffix, caplog):
    path, complete = cut_file(tmp_path, suffix)
    with caplog.at_level(logging.WARNING, logger="hf_llm.data.readers"):
        rows = records(tmp_path, path)
    kept, last = rows[:-1], rows[-1]
    assert complete > 100
    assert [r["text"] for r in kept] == [json.loads(x)["text"] for x in lines(2000).splitlines()[:complete]]
    assert all(r["read_reason"] is None for r in kept)
    assert last["read_reason"] == "truncated" and last["origin"] == f"{path}#cut"
    assert last["read_detail"].startswith(f"{path}: the compressed data ends before its end marker (EOFError")
    assert "the records before that point are kept" in last["read_detail"] and "download or copy" in last["read_detail"]
    assert last["read_detail"] in caplog.text
    assert records(tmp_path, path, streaming=True) == rows  # the IterableDataset (data.stream_train) too


def test_a_truncated_file_is_named_in_the_data_card_and_strict_stops_with_status_2(tmp_path, capsys):
    docs = "".join(json.dumps({"text": d["text"]}) + "\n" for d in sample_documents(60)).encode()
    whole = gzip.compress(docs)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(whole[: len(whole) * 3 // 4])
    data = DataConfig(sources=[SourceConfig(path=str(path))], seq_len=64)
    data.clean.gopher_repetition.enabled = False
    card = build_prepared_data(data, TOK, tmp_path / "out").card
    assert card["rejections"].get("truncated") == 1
    (problem,) = [p for p in card["read_problems"]["first"] if "ends before its end marker" in p]
    assert problem.startswith(f"{path}: the compressed data") and "decompressed bytes" in problem
    assert f"{path}: the compressed data" in (tmp_path / "out" / "DATA_CARD.md").read_text()
    assert cli.main(["prepare-data", f"output_dir={tmp_path / 'strict'}", "data.strict=true",
                     f"data.sources=[{{path: '{path}'}}]"]) == 2
    err = capsys.readouterr().err
    # the error starts its own line (after a progress bar cleared with a carriage return in process mode)
    assert f"error: {path}: the compressed data ends" in err.replace("\r", "\n").splitlines()[-1]
    assert "data.strict=true stops here" in err
    assert "Traceback" not in err and not (tmp_path / "strict").exists()


@pytest.mark.parametrize("name", ["c.txt.gz", "c.csv.gz", "c.json.gz"])
def test_other_formats_cut_short_end_in_a_truncated_record(tmp_path, name):
    content = {"c.txt.gz": b"".join(b"paragraph %d of the text\n\n" % i for i in range(2000)),
               "c.csv.gz": b"text,id\n" + b"".join(b"row %d,%d\n" % (i, i) for i in range(2000)),
               "c.json.gz": json.dumps([{"text": f"doc {i}"} for i in range(2000)]).encode()}[name]
    whole = gzip.compress(content)
    path = tmp_path / name
    path.write_bytes(whole[: len(whole) // 2])
    rows = records(tmp_path, path)
    assert rows[-1]["read_reason"] == "truncated" and str(path) in rows[-1]["read_detail"]
    assert all(r["read_reason"] is None for r in rows[:-1])
    if name != "c.json.gz":  # a JSON document cut short has no complete record
        assert len(rows) > 10


def test_a_corrupt_compressed_file_keeps_what_came_before(tmp_path):
    whole = bytearray(gzip.compress(lines(400)))
    whole[len(whole) // 2] ^= 0xFF  # one flipped byte in the deflate stream
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(bytes(whole))
    rows = records(tmp_path, path)
    assert rows[-1]["read_reason"] in ("corrupt", "truncated") and str(path) in rows[-1]["read_detail"]


# --------------------------------------------------------------------------------------------------- encodings


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
@pytest.mark.parametrize("name,content", [
    ("c.txt", "first paragraph, café\n\nsecond paragraph — ünïcode 日本語\n"),
    ("c.jsonl", '{"text": "first, café"}\n{"text": "second — 日本語"}\n'),
    ("c.csv", "text,id\r\n\"first, café\",1\r\nsecond 日本語,2\r\n"),
])
def test_utf16_and_utf32_with_a_byte_order_mark_are_decoded(tmp_path, encoding, name, content):
    (tmp_path / "wide").mkdir()
    (tmp_path / "utf8").mkdir()
    bom = {"utf-16-le": codecs.BOM_UTF16_LE, "utf-16-be": codecs.BOM_UTF16_BE, "utf-32-le": codecs.BOM_UTF32_LE,
           "utf-32-be": codecs.BOM_UTF32_BE}[encoding]
    wide, utf8 = tmp_path / "wide" / name, tmp_path / "utf8" / name
    wide.write_bytes(bom + content.encode(encoding))
    utf8.write_bytes(content.encode("utf-8"))
    got = [{k: v.replace(str(wide), str(utf8)) if isinstance(v, str) else v for k, v in r.items()}
           for r in records(tmp_path, wide)]
    assert got == records(tmp_path, utf8)
    assert all(r["read_reason"] is None for r in got) and len(got) == 2


@pytest.mark.parametrize("encoding,name", [("utf-16-le", "UTF-16LE"), ("utf-16-be", "UTF-16BE"),
                                           ("utf-32-le", "UTF-32LE")])
def test_utf16_without_a_byte_order_mark_is_an_error_naming_it(tmp_path, encoding, name):
    path = tmp_path / "export.txt"
    path.write_bytes("A Windows export\n\nwith two paragraphs of text in it\n".encode(encoding))
    with pytest.raises(DataError, match=rf"{path}: .* are NUL \(the first at byte \d\): it looks like {name} without a "
                                        rf"byte-order mark.*iconv -f {name} -t UTF-8"):
        records(tmp_path, path)


def test_a_file_in_latin1_names_the_encoding_problem(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes("".join(json.dumps({"text": f"café numéro {i} " + "déjà " * 60}, ensure_ascii=False) + "\n"
                             for i in range(20)).encode("latin-1"))
    data = DataConfig(sources=[SourceConfig(path=str(path))], seq_len=64)
    with pytest.raises(DataError) as e:
        build_prepared_data(data, TOK, tmp_path / "out")
    message = str(e.value)
    assert "has no usable text in column 'text': 20 rows read, all rejected (20 invalid_utf8)" in message
    assert f"the first: {path}:1: invalid UTF-8 at byte 13 of the line (0xE9)" in message
    assert "Latin-1 or Windows-1252 needs converting, e.g. iconv -f CP1252 -t UTF-8" in message


# ---------------------------------------------------------------------------------------------- text field types


def test_a_parquet_text_column_of_integers_is_an_error_naming_the_type(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3], "body": ["a", "b", "c"]}), path)
    with pytest.raises(DataError, match=r"column 'text' holds int64 values, not text .*set text_field to a string "
                                        r"column \(\['body'\]\)"):
        records(tmp_path, path)


def test_json_text_that_is_never_a_string_is_an_error_naming_the_types(tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"text": 1, "body": "x"}\n{"text": [1, 2]}\n{"text": null}\n{"text": 2.5}\n')
    with pytest.raises(DataError, match=r"field 'text' holds no string in the first 4 records \(2 number, 1 list, "
                                        r"1 null\); set text_field to the field that holds the text \(\['body'\]\)"):
        records(tmp_path, path)


def test_json_text_of_another_type_is_a_wrong_type_reject_naming_it(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "fine"}\n{"text": 7}\n{"text": ["a"]}\n{"text": {"k": 1}}\n{"text": true}\n'
                    '{"text": null}\n')
    rows = records(tmp_path, path)
    assert [r["read_reason"] for r in rows] == [None, "wrong_type", "wrong_type", "wrong_type", "wrong_type", None]
    assert [r["read_detail"].split(": ", 1)[1].split(",")[0] for r in rows[1:5]] == [
        "field 'text' is a number", "field 'text' is a list", "field 'text' is a object", "field 'text' is a boolean"]
    assert rows[5]["read_detail"] == f"{path}:6: field 'text' is null"
    with pytest.raises(DataError, match=rf"{path}:2: field 'text' is a number, not a string"):
        records(tmp_path, path, strict=True)


# ----------------------------------------------------------------------------------------------- too long


@pytest.mark.parametrize("name,sample_by", [("c.jsonl", "paragraph"), ("c.txt", "line"), ("c.txt", "paragraph"),
                                            ("c.txt", "document"), ("c.csv", "paragraph"), ("c.parquet", "paragraph")])
def test_a_document_over_the_limit_is_rejected_too_long_when_read(tmp_path, name, sample_by):
    texts = ["short one", "x" * 5000, "short two"]
    path = tmp_path / name
    if name == "c.jsonl":
        path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    elif name == "c.csv":
        path.write_text("text\n" + "".join(t + "\n" for t in texts))
    elif name == "c.parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"text": texts}), path)
    else:
        path.write_text(("\n\n" if sample_by == "paragraph" else "\n").join(texts) + "\n")
    rows = records(tmp_path, path, max_bytes=1000, txt_sample_by=sample_by)
    if sample_by == "document":
        (row,) = rows
    else:
        assert [r["text"] for r in rows if r["read_reason"] is None] == ["short one", "short two"]
        (row,) = [r for r in rows if r["read_reason"]]
    assert row["read_reason"] == "too_long" and "over data.max_document_bytes=1,000" in row["read_detail"]
    assert row["text"].endswith(" [...]") and len(row["text"]) <= 1010  # a preview, not the document


PEAK = """
import json, re, sys
import datasets, pyarrow.parquet  # noqa: F401 (imported before the baseline: the readers use them)
from hf_llm.config import SourceConfig
from hf_llm.data.readers import iter_records
from hf_llm.data.sources import open_source
# VmHWM (this process's peak RSS), not ru_maxrss: Linux carries the parent's high-water mark over fork and exec
peak_kb = lambda: int(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
before = peak_kb()
spec = open_source(SourceConfig(path=sys.argv[1]), int(sys.argv[2]) if sys.argv[2] != "none" else None)
reasons = [r["read_reason"] for r in iter_records(spec, spec.files)]
print(json.dumps({"reasons": reasons, "grew_kb": peak_kb() - before}))
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak RSS from /proc")
def test_a_giant_line_is_skipped_in_bounded_memory(tmp_path):
    """A 24 MB line (limit 1 MiB) raises the reader's peak memory by about the limit, not by the line: measured in
    a fresh process (peak RSS). Without a limit the same line costs more than its size."""
    path = tmp_path / "giant.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"text": "before"}\n{"text": "' + b"lorem ipsum " * (24 * 2**20 // 12) + b'"}\n{"text": "after"}\n')
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

    def run(limit: str) -> dict:
        proc = subprocess.run([sys.executable, "-c", PEAK, str(path), limit], env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    bounded = run(str(2**20))
    assert bounded["reasons"] == [None, "too_long", None]
    assert bounded["grew_kb"] < 8 * 1024, bounded  # < 8 MB for a 24 MB line
    unbounded = run("none")
    assert unbounded["reasons"] == [None, None, None] and unbounded["grew_kb"] > 24 * 1024, unbounded
