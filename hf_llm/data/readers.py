"""Tolerant record readers: every row of every source becomes one document record, bad rows included.

A record has the columns of `BASE_FEATURES` plus the source's own extra columns (an `id`, a `url`, ...), which
travel with the document until packing. A row that cannot be read — malformed JSON, invalid UTF-8, no text field,
text that is not a string — is still a record: `read_reason` says why and `read_detail` where (`file:line`), so it
ends in rejects/ instead of stopping the run. With `strict=True` the first such row raises instead.

The readers are plain generators (`iter_records`), so the same rows feed `Dataset.from_generator` (in memory) and
`IterableDataset.from_generator` (streaming). `datasets`' own json builder would abort on the first bad line.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import logging
import lzma
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional

from ..errors import DataError

logger = logging.getLogger(__name__)

BASE_COLUMNS = ("text", "source", "origin", "read_reason", "read_detail")
# Column names the pipeline adds on the way; a source column with one of these names is kept as meta_<name>.
RESERVED = frozenset(BASE_COLUMNS) | {
    "original_text", "reason", "detail", "pii_email", "pii_ip", "pii_phone", "hash_hi", "hash_lo", "minhash",
    "contaminated_by", "chars_in", "chars_out", "input_ids", "n_tokens",
}
PEEK_RECORDS = 1000  # JSON records read up front to learn a source's extra columns
BOM = b"\xef\xbb\xbf"


def base_features():
    from datasets import Features, Value

    return Features({name: Value("string") for name in BASE_COLUMNS})


@dataclass
class SourceSpec:
    """What a configured source resolves to: its files, format and the extra columns its records carry."""

    path: str
    label: str
    fmt: str  # txt | jsonl | json | parquet | csv | hub
    files: list[str]
    text_field: str = "text"
    txt_sample_by: str = "paragraph"
    hub_name: Optional[str] = None
    hub_split: str = "train"
    hub_revision: Optional[str] = None
    extras: dict[str, Any] = field(default_factory=dict)  # record field → datasets feature
    renamed: dict[str, str] = field(default_factory=dict)  # record field → column name (reserved names moved)
    as_json: dict[str, bool] = field(default_factory=dict)  # schemaless field → store every value as JSON text

    def features(self):
        from datasets import Features

        return Features({**base_features(), **{self.renamed.get(k, k): f for k, f in self.extras.items()}})


# ------------------------------------------------------------------------------------------------ file access


def open_binary(path: str) -> BinaryIO:
    """A file opened for binary reading, decompressed by its suffix (.gz, .bz2, .xz, .zst), past a UTF-8 BOM."""
    f = _open_decompressed(path)
    if not hasattr(f, "peek"):
        f = io.BufferedReader(f)
    # editors on Windows start UTF-8 files with a byte-order mark: it belongs to no record (or CSV column name)
    if f.peek(len(BOM))[: len(BOM)] == BOM:
        f.read(len(BOM))
    return f


def _open_decompressed(path: str) -> BinaryIO:
    suffix = Path(path).suffix.lower()
    if suffix == ".gz":
        return gzip.open(path, "rb")
    if suffix == ".bz2":
        return bz2.open(path, "rb")
    if suffix == ".xz":
        return lzma.open(path, "rb")
    if suffix in (".zst", ".lz4"):
        try:
            import zstandard  # optional: only for .zst corpora
        except ImportError:
            raise DataError(f"{path}: reading {suffix} needs the zstandard package; or decompress the file") from None
        return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))  # noqa: SIM115
    return open(path, "rb")  # noqa: SIM115


def is_blank(path: str) -> bool:
    """Whether a file holds no data: nothing, or only whitespace (and a BOM) once decompressed.

    Read until its first other byte, so a data file costs one small read whatever its size.
    """
    try:
        with open_binary(path) as f:
            while chunk := f.read(1 << 16):
                if chunk.strip():
                    return False
    except (OSError, EOFError, zlib.error, lzma.LZMAError) as e:
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); check that the file is complete and "
                          f"that its suffix names its compression") from e
    return True


def decode(raw: bytes) -> tuple[str, Optional[int]]:
    """UTF-8 text and None, or (text with U+FFFD replacements, offset of the first invalid byte)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "replace"), e.start


def _record(text: Any, source: str, origin: str, reason: Optional[str] = None, detail: Optional[str] = None) -> dict:
    return {"text": text, "source": source, "origin": origin, "read_reason": reason, "read_detail": detail}


def _bad(strict: bool, reason: str, detail: str, text: Optional[str], spec: SourceSpec, origin: str) -> dict:
    if strict:
        raise DataError(f"{detail} (data.strict=true stops here; without it the row goes to rejects/)")
    return _record(text, spec.label, origin, reason, detail)


# ---------------------------------------------------------------------------------------------------- records


def iter_records(spec: SourceSpec, files: list[str], strict: bool = False) -> Iterator[dict]:
    """Every record of `files` (all of `spec.files`, or a shard of them) in a fixed order."""
    readers = {"txt": _txt_records, "jsonl": _json_records, "json": _json_records, "csv": _csv_records,
               "parquet": _parquet_records, "hub": _hub_records}
    for path in files:
        yield from readers[spec.fmt](spec, path, strict)


def _from_mapping(spec: SourceSpec, row: dict, origin: str, strict: bool, unknown: set) -> dict:
    """A record from one JSON object / table row: text checks, the `source` column, extra columns."""
    if spec.text_field not in row:
        rec = _bad(strict, "missing_text", f"{origin}: no field {spec.text_field!r} (fields: {sorted(row)})", None,
                   spec, origin)
    else:
        text = row[spec.text_field]
        if text is None or isinstance(text, str):
            rec = _record(text, spec.label, origin)
        else:
            rec = _bad(strict, "malformed", f"{origin}: field {spec.text_field!r} is a {type(text).__name__}, "
                       f"not a string", json.dumps(text, default=str), spec, origin)
    if row.get("source") is not None and spec.text_field != "source":
        rec["source"] = str(row["source"])
    for key, value in row.items():
        if key in spec.extras:
            if key in spec.as_json and value is not None and (spec.as_json[key] or not isinstance(value, str)):
                value = json.dumps(value, ensure_ascii=False)
            rec[spec.renamed.get(key, key)] = value
        elif key not in (spec.text_field, "source") and key not in unknown:
            unknown.add(key)
            logger.warning("%s: field %r first appears after the first %d records and is not kept", origin, key,
                           PEEK_RECORDS)
    for key in spec.extras:
        rec.setdefault(spec.renamed.get(key, key), None)
    return rec


def _json_lines(path: str) -> Iterator[tuple[int, bytes]]:
    with open_binary(path) as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.strip():
                yield lineno, raw


def _json_document(path: str) -> Optional[list]:
    """The records of a file holding one JSON document (an array or an object), or None for JSON Lines.

    An object file is told apart from JSON Lines by its first two non-blank lines, so JSON Lines (even named .json)
    is then read line by line and never held whole in memory; only a real document is parsed whole.
    """
    lines = _json_lines(path)
    try:
        first = next(lines, None)
        more = first is not None and next(lines, None) is not None
    finally:
        lines.close()
    start = first[1][:64].lstrip()[:1] if first is not None else b""  # [:64]: no copy of a long first line
    if start == b"{":
        line, bad_byte = decode(first[1])
        if bad_byte is not None:
            return None  # not UTF-8: the line is a JSON Lines reject
        try:
            doc = json.loads(line)
        except json.JSONDecodeError as e:
            # a document spanning lines breaks only between tokens, so its first line fails exactly at its end;
            # a line that fails earlier is a broken record, and the file JSON Lines
            if e.pos < len(line.rstrip()):
                return None
        else:
            return None if more else _document_records(doc)  # a complete object and more after it: JSON Lines
    elif start != b"[":
        return None
    with open_binary(path) as f:
        raw = f.read()
    try:
        return _document_records(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        if start == b"{":
            return None  # JSON Lines whose first line is cut short
        raise


def _document_records(doc: Any) -> list:
    if isinstance(doc, list):
        return doc
    lists = [v for v in doc.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    return lists[0] if lists else [doc]  # {"data": [...]} as datasets' json builder reads it, or one record


def _json_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    unknown: set = set()
    if spec.fmt == "json":
        try:
            records = _json_document(path)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            with open_binary(path) as f:
                text, _ = decode(f.read())
            yield _bad(strict, "malformed", f"{path}: not valid JSON: {e}", text, spec, path)
            return
        if records is not None:
            for i, row in enumerate(records):
                origin = f"{path}#{i}"
                if isinstance(row, dict):
                    yield _from_mapping(spec, row, origin, strict, unknown)
                else:
                    yield _bad(strict, "malformed", f"{origin}: a {type(row).__name__}, not a JSON object",
                               json.dumps(row, default=str), spec, origin)
            return
    for lineno, raw in _json_lines(path):
        origin = f"{path}:{lineno}"
        line, bad_byte = decode(raw)
        if bad_byte is not None:
            yield _bad(strict, "invalid_utf8", f"{origin}: invalid UTF-8 at byte {bad_byte} of the line", line,
                       spec, origin)
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            yield _bad(strict, "malformed", f"{origin}: malformed JSON: {e.msg} (column {e.colno})", line.rstrip("\n"),
                       spec, origin)
            continue
        if not isinstance(row, dict):
            yield _bad(strict, "malformed", f"{origin}: a JSON {type(row).__name__}, not an object", line.rstrip("\n"),
                       spec, origin)
            continue
        yield _from_mapping(spec, row, origin, strict, unknown)


def _txt_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    """txt: the whole file, each blank-line-separated block, or each non-blank line is one document."""

    def emit(chunk: list[bytes], first_line: int) -> dict:
        origin = path if spec.txt_sample_by == "document" else f"{path}:{first_line}"
        raw = b"\n".join(chunk)
        text, bad_byte = decode(raw)
        if bad_byte is not None:
            line = first_line + raw[:bad_byte].count(b"\n")
            return _bad(strict, "invalid_utf8", f"{path}:{line}: invalid UTF-8", text, spec, origin)
        return _record(text, spec.label, origin)

    with open_binary(path) as f:
        if spec.txt_sample_by == "document":
            yield emit([f.read()], 1)
            return
        block: list[bytes] = []
        start = 0
        for lineno, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\r\n")
            if spec.txt_sample_by == "line":
                if line.strip():
                    yield emit([line], lineno)
            elif line.strip():
                if not block:
                    start = lineno
                block.append(line)
            elif block:
                yield emit(block, start)
                block = []
        if block:
            yield emit(block, start)


def _csv_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    csv.field_size_limit(sys.maxsize)  # documents are longer than csv's 128 KB default field limit
    unknown: set = set()
    with io.TextIOWrapper(open_binary(path), encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                origin = f"{path}:{reader.line_num}"
                yield _bad(strict, "malformed", f"{origin}: malformed CSV: {e}", None, spec, origin)
                continue
            origin = f"{path}:{reader.line_num}"
            if not row:
                continue
            fixed = [_fix_surrogates(v) for v in row]
            if fixed != row:
                yield _bad(strict, "invalid_utf8", f"{origin}: invalid UTF-8", ",".join(fixed), spec, origin)
            elif len(row) != len(header):
                yield _bad(strict, "malformed", f"{origin}: {len(row)} fields where the header has {len(header)}",
                           ",".join(row), spec, origin)
            else:
                yield _from_mapping(spec, dict(zip(header, row)), origin, strict, unknown)


def _fix_surrogates(value: str) -> str:
    """csv reads with errors=surrogateescape; invalid bytes come back as lone surrogates, replaced here."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _parquet_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    import pyarrow.parquet as pq

    unknown: set = set()
    row_index = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1000):
        for row in batch.to_pylist():
            yield _from_mapping(spec, row, f"{path}#{row_index}", strict, unknown)
            row_index += 1


def load_hub(spec: SourceSpec, streaming: bool = True):
    """The Hub dataset of a `format: hub` source (a local dataset folder works the same way)."""
    from datasets import load_dataset

    try:
        return load_dataset(spec.path, spec.hub_name, split=spec.hub_split, revision=spec.hub_revision,
                            streaming=streaming)
    except Exception as e:  # network, missing dataset, bad config or split: all surface as one clear message
        raise DataError(f"could not load Hub dataset {spec.path!r} (config {spec.hub_name!r}, split "
                          f"{spec.hub_split!r}, revision {spec.hub_revision!r}): {type(e).__name__}: {e}") from e


def _hub_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    unknown: set = set()
    for i, row in enumerate(load_hub(spec)):
        yield _from_mapping(spec, row, f"{spec.path}[{spec.hub_split}]#{i}", strict, unknown)


# -------------------------------------------------------------------------------------------- extra columns


def _peek_json_rows(spec: SourceSpec) -> list[dict]:
    rows: list[dict] = []
    for path in spec.files:
        if spec.fmt == "json":
            try:
                records = _json_document(path)
            except (json.JSONDecodeError, UnicodeDecodeError):
                records = []
            if records is not None:
                rows.extend(r for r in records[:PEEK_RECORDS] if isinstance(r, dict))
                if len(rows) >= PEEK_RECORDS:
                    return rows
                continue
        for _, raw in _json_lines(path):
            try:
                row = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(row, dict):
                rows.append(row)
            if len(rows) >= PEEK_RECORDS:
                return rows
    return rows


def find_columns(spec: SourceSpec) -> list[str]:
    """The source's column names (text field included), and fill `spec.extras` with the extra ones."""
    from datasets import Value

    as_json: dict[str, bool] = {}
    if spec.fmt in ("jsonl", "json"):
        rows = _peek_json_rows(spec)
        columns = list(dict.fromkeys(k for r in rows for k in r))
        if rows and not any(spec.text_field in r for r in rows):
            _missing_column(spec, columns)
        # JSON has no schema: a field whose values are all strings stays a string column; any other field is kept
        # as each value's JSON text ("7", "[1, 2]", "{...}"), which json.loads gives back exactly
        extras = {k: Value("string") for k in columns}
        as_json = {k: not all(isinstance(r[k], str) for r in rows if r.get(k) is not None) for k in columns}
    elif spec.fmt == "csv":
        with io.TextIOWrapper(open_binary(spec.files[0]), encoding="utf-8", errors="replace", newline="") as f:
            columns = next(csv.reader(f), [])
        extras = {k: Value("string") for k in columns}
    elif spec.fmt == "parquet":
        import pyarrow.parquet as pq
        from datasets import Features

        features = Features.from_arrow_schema(pq.read_schema(spec.files[0]))
        columns, extras = list(features), dict(features)
    elif spec.fmt == "hub":
        ds = load_hub(spec)
        features = ds.features
        if features is None:  # some streamed datasets only know their columns after the first row
            first = next(iter(ds), {})
            features = {k: Value("string") for k in first}
            as_json = {k: True for k in first}
        columns, extras = list(features), dict(features)
    else:  # txt
        return ["text"]
    if spec.fmt != "jsonl" and spec.fmt != "json" and spec.text_field not in columns:
        _missing_column(spec, columns)
    spec.extras = {k: f for k, f in extras.items() if k not in (spec.text_field, "source")}
    spec.as_json = {k: v for k, v in as_json.items() if k in spec.extras}
    spec.renamed = {k: f"meta_{k}" for k in spec.extras if k in RESERVED}
    return columns


def _missing_column(spec: SourceSpec, columns: list[str]) -> None:
    raise DataError(
        f"source {spec.path!r} has no column {spec.text_field!r}; its columns are {columns}. "
        f"Set text_field to one of them."
    )
