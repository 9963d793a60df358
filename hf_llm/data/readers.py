"""Tolerant record readers: every row of every source becomes one document record, bad rows included.

A record has the columns of `BASE_FEATURES` plus the source's own extra columns (an `id`, a `url`, ...), which
travel with the document until packing. A row that cannot be read — malformed JSON, invalid UTF-8, no text field,
text that is not a string — is still a record: `read_reason` says why and `read_detail` where (`file:line`), so it
ends in rejects/ instead of stopping the run. With `strict=True` the first such row raises instead.

What a file itself can do wrong is handled here too, so that no input problem ends in a raw traceback:
- a compressed file cut short (an interrupted download) or corrupt: the records before the cut are kept and one
  record with reason `truncated` (or `corrupt`) names the file and the cut; it reaches the warnings, rejects/ and the
  data card's read problems like any unreadable row;
- UTF-16 and UTF-32 files with a byte-order mark are decoded (to UTF-8, as they stream); one without a mark is an
  error that says so (`check_encoding`);
- a document over `SourceSpec.max_bytes` (data.max_document_bytes) becomes a `too_long` record without being held
  whole: JSON Lines and text are read in bounded pieces, so a 500 MB line costs about the limit in memory, not 500 MB.

The readers are plain generators (`iter_records`), so the same rows feed `Dataset.from_generator` (in memory) and
`IterableDataset.from_generator` (streaming). `datasets`' own json builder would abort on the first bad line.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io
import itertools
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
# Byte-order marks of the encodings decoded on the fly, longest first (UTF-32-LE's starts with UTF-16-LE's).
WIDE_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"),
             (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
PREVIEW_CHARS = 1000  # of a too_long document, kept in rejects/ to show what it was
JSON_TYPES = {int: "number", float: "number", bool: "boolean", list: "list", dict: "object"}


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
    max_bytes: Optional[int] = None  # data.max_document_bytes: a longer document is a too_long record; None = any
    extras: dict[str, Any] = field(default_factory=dict)  # record field → datasets feature
    renamed: dict[str, str] = field(default_factory=dict)  # record field → column name (reserved names moved)
    as_json: dict[str, bool] = field(default_factory=dict)  # schemaless field → store every value as JSON text

    def features(self):
        from datasets import Features

        return Features({**base_features(), **{self.renamed.get(k, k): f for k, f in self.extras.items()}})


# ------------------------------------------------------------------------------------------------ file access


def open_binary(path: str) -> BinaryIO:
    """A file opened for binary reading: decompressed by its suffix (.gz, .bz2, .xz, .zst), past a UTF-8 BOM, and
    transcoded to UTF-8 when a BOM says UTF-16 or UTF-32. A compressed stream that breaks off ends the file there;
    `cut_of(f)` then says where and why."""
    return io.BufferedReader(InputStream(path), buffer_size=1 << 16)


def cut_of(f: BinaryIO) -> Optional[tuple[str, str]]:
    """(reason, where and why) when the file `open_binary` returned broke off before its end, else None."""
    raw = getattr(f, "raw", None)
    return raw.cut if isinstance(raw, InputStream) else None


class InputStream(io.RawIOBase):
    """The bytes of one input file as UTF-8 text files hold them, read until the end or until the compressed data
    breaks off (then `cut` holds the reason and a detail naming the file and the offset)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.cut: Optional[tuple[str, str]] = None
        self.offset = 0  # decompressed bytes read from the file
        self._inner = _open_decompressed(path)
        # only a decompressor's errors mean "the data breaks off here"; a plain file's OSError is a real I/O error
        self._cut_errors = _cut_errors() if Path(path).suffix.lower() in (".gz", ".bz2", ".xz", ".zst", ".lz4") else ()
        # read1: one decompression step per call, so the bytes before a cut are returned before the error is
        # raised (a read(n) spanning several steps loses the ones it had gathered)
        self._read_inner = getattr(self._inner, "read1", self._inner.read)
        self._pending = b""
        self._decoder: Any = None
        head = b""
        while len(head) < 4 and (more := self._read(4 - len(head))):
            head += more
        for mark, encoding in WIDE_BOMS:
            if head.startswith(mark):
                self._decoder = codecs.getincrementaldecoder(encoding)("replace")
                self._pending = self._decoder.decode(head[len(mark):]).encode("utf-8")
                break
        else:
            # editors on Windows start UTF-8 files with a byte-order mark: it belongs to no record (or column name)
            self._pending = head[len(BOM):] if head.startswith(BOM) else head

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            raw = self._read(len(buffer))
            if self._decoder is None:
                self._pending = raw
            else:
                self._pending = self._decoder.decode(raw, final=not raw).encode("utf-8")
            if not raw:
                break
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _read(self, n: int) -> bytes:
        if self.cut is not None:
            return b""
        try:
            data = self._read_inner(n)
        except self._cut_errors as e:
            self.cut = _describe_cut(self.path, self.offset, e)
            return b""
        self.offset += len(data)
        return data

    def close(self) -> None:
        if not self.closed:
            self._inner.close()
        super().close()


def _cut_errors() -> tuple[type, ...]:
    """What decompressors raise on data that stops or breaks: EOFError (cut short), zlib/lzma errors, OSError
    (gzip's BadGzipFile for a wrong CRC, bz2's invalid stream), zstandard's own error."""
    errors: tuple[type, ...] = (EOFError, zlib.error, lzma.LZMAError, OSError)
    try:
        import zstandard

        errors += (zstandard.ZstdError,)
    except ImportError:
        pass
    return errors


def _describe_cut(path: str, offset: int, e: BaseException) -> tuple[str, str]:
    reason = "truncated" if isinstance(e, EOFError) else "corrupt"
    what = "ends before its end marker" if reason == "truncated" else "is corrupt"
    size = Path(path).stat().st_size if Path(path).exists() else 0
    return reason, (f"{path}: the compressed data {what} ({type(e).__name__}: {e}) after {offset:,} decompressed "
                    f"bytes ({size:,} bytes on disk)")


AGAIN = "download or copy the file again (an interrupted transfer?)"


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
            cut = cut_of(f)
    except OSError as e:  # a file that is not what its suffix says (e.g. not gzip at all)
        raise DataError(f"{path}: cannot be read ({type(e).__name__}: {e}); check that the file is complete and "
                        f"that its suffix names its compression") from None
    if cut is not None:
        raise DataError(f"{cut[1]}, and holds no text before that point; {AGAIN}")
    return True


def check_encoding(path: str) -> None:
    """An error for a text file in an encoding the readers cannot tell by itself: UTF-16 or UTF-32 without a
    byte-order mark shows as NUL bytes between the characters (ASCII text: every second or fourth byte)."""
    with open_binary(path) as f:
        head = f.read(1 << 16)
    nul = head.count(0)
    if len(head) >= 16 and nul >= len(head) // 4:
        first = head.index(0)
        guess = "UTF-32" if nul >= len(head) * 0.7 else "UTF-16"  # ASCII text: 3/4 of UTF-32, 1/2 of UTF-16 is NUL
        name = f"{guess}{'LE' if first % 2 else 'BE'}"
        raise DataError(
            f"{path}: {nul:,} of its first {len(head):,} bytes are NUL (the first at byte {first}): it looks like "
            f"{name} without a byte-order mark, which cannot be told from UTF-8 for sure. Convert it to UTF-8 "
            f"(e.g. iconv -f {name} -t UTF-8 {path} > out.txt) or save it with a byte-order mark")


def json_type(value: Any) -> str:
    """A value's JSON type name (number, list, object, boolean) or else its Python type name."""
    return JSON_TYPES.get(type(value), type(value).__name__)


def decode(raw: bytes) -> tuple[str, Optional[int]]:
    """UTF-8 text and None, or (text with U+FFFD replacements, offset of the first invalid byte)."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "replace"), e.start


def invalid_utf8(where: str, raw: bytes, at: int) -> str:
    """Where a line stops being UTF-8, the byte, and what to do about a file that is not UTF-8."""
    return (f"{where}: invalid UTF-8 at byte {at} of the line (0x{raw[at]:02X}); the readers take UTF-8 (or "
            f"UTF-16/32 with a byte-order mark): a file in Latin-1 or Windows-1252 needs converting, e.g. iconv -f "
            f"CP1252 -t UTF-8")


def _record(text: Any, source: str, origin: str, reason: Optional[str] = None, detail: Optional[str] = None) -> dict:
    return {"text": text, "source": source, "origin": origin, "read_reason": reason, "read_detail": detail}


def _bad(strict: bool, reason: str, detail: str, text: Optional[str], spec: SourceSpec, origin: str) -> dict:
    if strict:
        raise DataError(f"{detail} (data.strict=true stops here; without it the row goes to rejects/)")
    if reason in ("truncated", "corrupt"):  # once per file: worth a line in the log, not only in rejects/
        logger.warning("%s", detail)
    return _record(text, spec.label, origin, reason, detail)


def _too_long(spec: SourceSpec, origin: str, size: int, head: bytes, strict: bool) -> dict:
    preview = head[: PREVIEW_CHARS * 4].decode("utf-8", "replace")[:PREVIEW_CHARS]
    return _bad(strict, "too_long", f"{origin}: {size:,} bytes, over data.max_document_bytes={spec.max_bytes:,}; "
                f"skipped unread (raise the limit to keep such documents)", preview + " [...]", spec, origin)


def _cut_record(spec: SourceSpec, path: str, f: BinaryIO, strict: bool, partial: Optional[bytes]) -> Iterator[dict]:
    """The record that says file `path` broke off (none when it did not); `partial` is the incomplete last piece."""
    cut = cut_of(f)
    if cut is not None:
        text = decode(partial)[0] if partial else None
        detail = f"{cut[1]}; the records before that point are kept, the rest of the file is lost: {AGAIN}"
        yield _bad(strict, cut[0], detail, text, spec, f"{path}#cut")


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
        if text is None:  # a missing value: rejected as empty by the clean step, the detail says why
            rec = _record(None, spec.label, origin, detail=f"{origin}: field {spec.text_field!r} is null")
        elif not isinstance(text, str):
            rec = _bad(strict, "wrong_type", f"{origin}: field {spec.text_field!r} is a {json_type(text)}, not a "
                       f"string; set text_field to the field that holds the text", json.dumps(text, default=str)[:1000],
                       spec, origin)
        elif spec.max_bytes is not None and len(text) > spec.max_bytes // 4 and \
                (size := len(text.encode("utf-8"))) > spec.max_bytes:
            rec = _too_long(spec, origin, size, text[:PREVIEW_CHARS].encode("utf-8"), strict)
        else:
            rec = _record(text, spec.label, origin)
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


def _lines(f: BinaryIO, limit: Optional[int]) -> Iterator[tuple[int, bytes, int]]:
    """(line number, line, size) of each line of `f`; a line over `limit` bytes is never held whole: it comes
    back as its first `limit` bytes with its full size, the rest read in pieces and dropped."""
    chunk = 1 << 20 if limit is None else limit + 1
    for lineno in itertools.count(1):
        raw = f.readline(chunk) if limit is not None else f.readline()
        if not raw:
            return
        size = len(raw)
        if limit is not None and size > limit and not raw.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                size += len(rest)
            size += len(rest)
        yield lineno, raw, size


def _json_lines(path: str, limit: Optional[int] = None) -> Iterator[tuple[int, bytes, int]]:
    with open_binary(path) as f:
        for lineno, raw, size in _lines(f, limit):
            if raw.strip():
                yield lineno, raw, size


def _json_document(path: str, limit: Optional[int] = None) -> Optional[list]:
    """The records of a file holding one JSON document (an array or an object), or None for JSON Lines.

    An object file is told apart from JSON Lines by its first two non-blank lines, so JSON Lines (even named .json)
    is then read line by line and never held whole in memory; only a real document is parsed whole.
    """
    lines = _json_lines(path, limit)
    try:
        first = next(lines, None)
        more = first is not None and next(lines, None) is not None
    finally:
        lines.close()
    start = first[1][:64].lstrip()[:1] if first is not None else b""  # [:64]: no copy of a long first line
    if start == b"{" and first[2] > len(first[1]):  # over the limit: not parsed here
        if more:
            return None  # JSON Lines whose first record is too long
    elif start == b"{":
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
        cut = cut_of(f)
    try:
        return _document_records(json.loads(raw))
    except (json.JSONDecodeError, UnicodeDecodeError):
        if cut is not None:
            raise TruncatedInput(*cut) from None
        if start == b"{":
            return None  # JSON Lines whose first line is cut short
        raise


class TruncatedInput(Exception):
    """A JSON document whose compressed file broke off: (reason, detail) as `cut_of` gives them."""


def _document_records(doc: Any) -> list:
    if isinstance(doc, list):
        return doc
    lists = [v for v in doc.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    return lists[0] if lists else [doc]  # {"data": [...]} as datasets' json builder reads it, or one record


def _json_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    unknown: set = set()
    if spec.fmt == "json":
        try:
            records = _json_document(path, spec.max_bytes)
        except TruncatedInput as e:
            yield _bad(strict, e.args[0], f"{e.args[1]}; a JSON document cut short has no complete record: {AGAIN}",
                       None, spec, path)
            return
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
    with open_binary(path) as f:
        partial = None
        for lineno, raw, size in _lines(f, spec.max_bytes):
            if not raw.strip():
                continue
            origin = f"{path}:{lineno}"
            if size > len(raw) or (spec.max_bytes is not None and size > spec.max_bytes):
                yield _too_long(spec, origin, size, raw, strict)
                continue
            if not raw.endswith(b"\n") and cut_of(f) is not None:
                partial = raw  # the line the cut went through: part of the truncated record, not a malformed one
                break
            line, bad_byte = decode(raw)
            if bad_byte is not None:
                yield _bad(strict, "invalid_utf8", invalid_utf8(origin, raw, bad_byte), line, spec, origin)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield _bad(strict, "malformed", f"{origin}: malformed JSON: {e.msg} (column {e.colno})",
                           line.rstrip("\n"), spec, origin)
                continue
            if not isinstance(row, dict):
                yield _bad(strict, "malformed", f"{origin}: a JSON {type(row).__name__}, not an object",
                           line.rstrip("\n"), spec, origin)
                continue
            yield _from_mapping(spec, row, origin, strict, unknown)
        yield from _cut_record(spec, path, f, strict, partial)


def _txt_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    """txt: the whole file, each blank-line-separated block, or each non-blank line is one document."""
    limit = spec.max_bytes

    def emit(chunk: list[bytes], first_line: int, size: int) -> dict:
        origin = path if spec.txt_sample_by == "document" else f"{path}:{first_line}"
        raw = b"\n".join(chunk)
        if limit is not None and size > limit:
            return _too_long(spec, origin, size, raw, strict)
        text, bad_byte = decode(raw)
        if bad_byte is not None:
            line = first_line + raw[:bad_byte].count(b"\n")
            at = bad_byte - (raw.rfind(b"\n", 0, bad_byte) + 1)
            return _bad(strict, "invalid_utf8", invalid_utf8(f"{path}:{line}", raw.split(b"\n")[line - first_line],
                                                             at), text, spec, origin)
        return _record(text, spec.label, origin)

    with open_binary(path) as f:
        if spec.txt_sample_by == "document":
            head = f.read() if limit is None else f.read(limit + 1)
            size = len(head)
            while limit is not None and size > limit and (more := f.read(1 << 20)):
                size += len(more)
            if cut_of(f) is not None:
                yield from _cut_record(spec, path, f, strict, head[:PREVIEW_CHARS * 4])
            else:
                yield emit([head], 1, size)
            return
        block: list[bytes] = []
        start, block_size, partial = 0, 0, None
        for lineno, raw, size in _lines(f, limit):
            if not raw.endswith(b"\n") and cut_of(f) is not None:
                partial = b"\n".join([*block, raw])  # the paragraph or line the cut went through
                block = []
                break
            line = raw.rstrip(b"\r\n")
            if spec.txt_sample_by == "line":
                if line.strip():
                    yield emit([line], lineno, size - (len(raw) - len(line)))
            elif line.strip():
                if not block:
                    start, block_size = lineno, 0
                if limit is None or block_size <= limit:  # past the limit, only the size is counted
                    block.append(line)
                block_size += size - (len(raw) - len(line)) + (1 if block_size else 0)
            elif block:
                yield emit(block, start, block_size)
                block = []
        if block:
            yield emit(block, start, block_size)
        yield from _cut_record(spec, path, f, strict, partial)


def _csv_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    """CSV rows; a row may span lines (quoted newlines), so the row the cut of a truncated file went through is held
    back one row and reported with the cut. A too_long row is rejected once read (CSV has no line to skip)."""
    csv.field_size_limit(sys.maxsize)  # documents are longer than csv's 128 KB default field limit
    unknown: set = set()
    binary = open_binary(path)
    with io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None) or []
        held: Optional[dict] = None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                origin = f"{path}:{reader.line_num}"
                rec = _bad(strict, "malformed", f"{origin}: malformed CSV: {e}", None, spec, origin)
            else:
                if not row:
                    continue
                rec = _csv_row(spec, header, row, f"{path}:{reader.line_num}", strict, unknown)
            if held is not None:
                yield held
            held = rec
        if cut_of(binary) is not None:
            yield from _cut_record(spec, path, binary, strict, None if held is None else
                                   (held["text"] or "").encode("utf-8", "replace")[:PREVIEW_CHARS * 4])
        elif held is not None:
            yield held


def _csv_row(spec: SourceSpec, header: list[str], row: list[str], origin: str, strict: bool, unknown: set) -> dict:
    fixed = [_fix_surrogates(v) for v in row]
    if fixed != row:
        return _bad(strict, "invalid_utf8", f"{origin}: invalid UTF-8 (a file in Latin-1 or Windows-1252 needs "
                    f"converting, e.g. iconv -f CP1252 -t UTF-8)", ",".join(fixed), spec, origin)
    if len(row) != len(header):
        return _bad(strict, "malformed", f"{origin}: {len(row)} fields where the header has {len(header)}",
                    ",".join(row), spec, origin)
    return _from_mapping(spec, dict(zip(header, row)), origin, strict, unknown)


def _fix_surrogates(value: str) -> str:
    """csv reads with errors=surrogateescape; invalid bytes come back as lone surrogates, replaced here."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _parquet_records(spec: SourceSpec, path: str, strict: bool) -> Iterator[dict]:
    unknown: set = set()
    row_index = 0
    batches = parquet_file(path).iter_batches(batch_size=1000)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid / ArrowIOError: a cut or damaged row group
            yield _bad(strict, "corrupt", f"{path}: unreadable after row {row_index:,} ({type(e).__name__}: {e}); "
                       f"the rows before are kept: {AGAIN}", None, spec, f"{path}#cut")
            return
        for row in batch.to_pylist():
            yield _from_mapping(spec, row, f"{path}#{row_index}", strict, unknown)
            row_index += 1


def parquet_file(path: str):
    """A pyarrow ParquetFile, or a DataError naming the file (one cut short has no footer and cannot be read)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e}); a file cut short (an "
                        f"interrupted download) has no footer: {AGAIN}") from None


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
                records = _json_document(path, spec.max_bytes)
            except (json.JSONDecodeError, UnicodeDecodeError, TruncatedInput):
                records = []
            if records is not None:
                rows.extend(r for r in records[:PEEK_RECORDS] if isinstance(r, dict))
                if len(rows) >= PEEK_RECORDS:
                    return rows
                continue
        for _, raw, size in _json_lines(path, spec.max_bytes):
            if size > len(raw):
                continue  # too long: the readers reject it
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
        _check_json_text_types(spec, rows)
        # JSON has no schema: a field whose values are all strings stays a string column; any other field is kept
        # as each value's JSON text ("7", "[1, 2]", "{...}"), which json.loads gives back exactly
        extras = {k: Value("string") for k in columns}
        as_json = {k: not all(isinstance(r[k], str) for r in rows if r.get(k) is not None) for k in columns}
    elif spec.fmt == "csv":
        with io.TextIOWrapper(open_binary(spec.files[0]), encoding="utf-8", errors="replace", newline="") as f:
            columns = next(csv.reader(f), [])
        extras = {k: Value("string") for k in columns}
    elif spec.fmt == "parquet":
        from datasets import Features

        features = Features.from_arrow_schema(parquet_file(spec.files[0]).schema_arrow)
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
    if spec.fmt in ("parquet", "hub"):
        _check_column_type(spec, extras)
    spec.extras = {k: f for k, f in extras.items() if k not in (spec.text_field, "source")}
    spec.as_json = {k: v for k, v in as_json.items() if k in spec.extras}
    spec.renamed = {k: f"meta_{k}" for k in spec.extras if k in RESERVED}
    return columns


def _check_column_type(spec: SourceSpec, features: dict) -> None:
    """A typed column (Parquet, Hub) that holds no text is an error naming its type, not a row-by-row reject."""
    from datasets import Value

    feature = features[spec.text_field]
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string", "string_view"):
        return
    texts = [k for k, f in features.items() if isinstance(f, Value) and f.dtype in ("string", "large_string")]
    kind = feature.dtype if isinstance(feature, Value) else type(feature).__name__
    raise DataError(f"source {spec.path!r}: column {spec.text_field!r} holds {kind} values, not text "
                    f"({spec.files[0]}); set text_field to a string column ({texts or 'there is none'})")


def _check_json_text_types(spec: SourceSpec, rows: list[dict]) -> None:
    """JSON has no schema: when none of the first records holds a string in the text field, the field is the wrong
    one, and saying so beats rejecting every row."""
    values = [r[spec.text_field] for r in rows if spec.text_field in r]
    if not values or any(isinstance(v, str) for v in values):
        return
    kinds: dict[str, int] = {}
    for v in values:
        kind = "null" if v is None else json_type(v)
        kinds[kind] = kinds.get(kind, 0) + 1
    strings = sorted({k for r in rows for k, v in r.items() if isinstance(v, str)})
    raise DataError(f"source {spec.path!r}: field {spec.text_field!r} holds no string in the first {len(rows)} "
                    f"records ({', '.join(f'{n} {k}' for k, n in kinds.items())}); set text_field to the field that "
                    f"holds the text ({strings or 'no field holds strings'})")


def _missing_column(spec: SourceSpec, columns: list[str]) -> None:
    raise DataError(
        f"source {spec.path!r} has no column {spec.text_field!r}; its columns are {columns}. "
        f"Set text_field to one of them."
    )
