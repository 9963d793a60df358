"""Text sources (local files, globs, folders, Hub datasets) as `datasets`; the mixture's arithmetic is mixture.py.

`open_source` + `document_dataset` are the data pipeline's tolerant path: every row becomes a document record
(see `readers.py`), in memory (`Dataset`) or streamed (`IterableDataset`) from the same generator.
`load_source` is the quick path for callers that want typed columns from a well-formed file (fine-tuning,
evaluation): it uses `datasets`' own builders and raises on the first malformed row. It is not a copy of the first:
the tolerant readers keep nested fields (SFT's `messages` lists) as JSON text, which SFT would have to decode.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
from pathlib import Path
from typing import Iterator, Optional

from ..config import SourceConfig
from ..errors import DataError, HfLlmError
from ..shipped import shipped_path
from .readers import SourceSpec, check_encoding, find_columns, is_blank, iter_records

logger = logging.getLogger(__name__)


SUFFIX_FORMATS = {
    ".txt": "txt", ".text": "txt", ".md": "txt",
    ".jsonl": "jsonl", ".json": "json", ".ndjson": "jsonl",
    ".parquet": "parquet", ".csv": "csv",
}
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst", ".lz4")
BUILDERS = {"txt": "text", "jsonl": "json", "json": "json", "parquet": "parquet", "csv": "csv"}


def _data_suffix(path: str) -> str:
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    while suffixes and suffixes[-1] in COMPRESSION_SUFFIXES:
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def resolve_files(path: str) -> list[str]:
    """A file, a folder (every data file below it) or a glob → sorted file list; an error if nothing matches.
    A relative name that exists neither from the working directory nor as a glob match there is looked up among the
    files the toolkit ships (hf_llm.shipped: the bundled corpus of the default recipe)."""
    given, path = path, shipped_path(path)
    if os.path.isdir(path):
        files = [str(p) for p in sorted(Path(path).rglob("*"))
                 if p.is_file() and _data_suffix(str(p)) in SUFFIX_FORMATS]
    elif any(ch in path for ch in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    else:
        files = [path] if os.path.isfile(path) else []
    if not files:
        raise DataError(
            f"data source {given!r} matches no file; give an existing file, folder or glob "
            f"(working directory: {os.getcwd()}), or set format: hub for a Hub dataset id"
        )
    return files


def drop_empty_files(path: str, files: list[str]) -> list[str]:
    """`files` less the empty ones (a warning each: one empty shard need not stop a run); an error if all are."""
    blank = [is_blank(f) for f in files]
    if all(blank):
        what = (f"{files[0]} is empty" if len(files) == 1 else
                f"every file is empty ({len(files)} files: {', '.join(files[:3])}{', ...' if len(files) > 3 else ''})")
        raise DataError(f"data source {path!r}: {what} (no bytes, or only whitespace); add data to it or remove it "
                        f"from data.sources")
    for f in (f for f, b in zip(files, blank) if b):
        logger.warning("%s is empty; skipped (data source %r)", f, path)
    return [f for f, b in zip(files, blank) if not b]


def no_records_error(spec: SourceSpec) -> DataError:
    files = ", ".join(spec.files[:3]) + (", ..." if len(spec.files) > 3 else "")
    return DataError(f"source {spec.path!r} holds no records ({files}: a CSV header only, an empty JSON array, ...); "
                     f"add data to it or remove it from data.sources")


# What to do when every row of a source was rejected for one reason (the most frequent one is named).
UNUSABLE_HINTS = {
    "invalid_utf8": "The file is not UTF-8 (Latin-1 or Windows-1252?): convert it, e.g. iconv -f CP1252 -t UTF-8 "
                    "IN > OUT (UTF-16 and UTF-32 are read when the file starts with a byte-order mark)",
    "malformed": "Check that the file is in the format its suffix says (or set the source's format)",
    "wrong_type": "Set text_field to the field that holds the text",
    "missing_text": "Set text_field to the field that holds the text",
    "too_long": "Raise data.max_document_bytes, or split the documents",
    "truncated": "Download or copy the file again",
    "corrupt": "Download or copy the file again",
    "empty": "Every text is empty or blank: check text_field",
}


def no_usable_text_error(spec: SourceSpec, rejected: dict[str, int], problems: list[str]) -> DataError:
    """The error for a source none of whose rows is usable: how many rows failed for which reason, the first
    unreadable row of this source (file, line, byte), and what to do about the most frequent reason."""
    counts = ", ".join(f"{n} {reason}" for reason, n in sorted(rejected.items(), key=lambda kv: -kv[1]))
    first = next((p for p in problems if any(p.startswith(f) for f in spec.files)), None)
    top = max(rejected, key=lambda r: rejected[r]) if rejected else None
    hint = UNUSABLE_HINTS.get(top, "See rejects/ of a non-strict run for each row's reason")
    if first and "iconv" in first:
        hint = "The file is not UTF-8: convert it (see above)"
    return DataError(f"source {spec.path!r} has no usable text in column {spec.text_field!r}: "
                     f"{sum(rejected.values())} rows read, all rejected ({counts})"
                     f"{'; the first: ' + first if first else ''}. {hint}")


def infer_format(files: list[str]) -> str:
    formats = {SUFFIX_FORMATS.get(_data_suffix(f)) for f in files}
    if None in formats or len(formats) != 1:
        raise DataError(
            f"cannot tell the format of {files[:3]}{'...' if len(files) > 3 else ''}: "
            f"set format to one of txt, jsonl, json, parquet, csv (one format per source)"
        )
    return formats.pop()


def source_label(src: SourceConfig) -> str:
    return src.name or Path(src.path.rstrip("/*")).name.split(".")[0] or src.path


def load_source(src: SourceConfig, streaming: bool = False):
    """One source as a dataset with a `text` column (renamed from `src.text_field`) and a `source` column."""
    from datasets import load_dataset

    fmt = src.format
    if fmt == "hub":
        ds = load_dataset(src.path, src.name, split=src.split, revision=src.revision, streaming=streaming)
    else:
        files = drop_empty_files(src.path, resolve_files(src.path))
        fmt = infer_format(files) if fmt == "auto" else fmt
        if fmt not in BUILDERS:
            raise DataError(f"unknown format {fmt!r} for {src.path}; use auto, txt, jsonl, json, parquet, csv or hub")
        kwargs = {"sample_by": src.txt_sample_by} if fmt == "txt" else {}
        try:
            ds = load_dataset(BUILDERS[fmt], data_files=files, split="train", streaming=streaming, **kwargs)
        except Exception as e:  # datasets wraps parser errors in several types
            raise DataError(f"could not read {src.path} as {fmt}: {type(e).__name__}: {e}") from e
    columns = list(ds.column_names or ds.features or [])
    if src.text_field not in columns:
        raise DataError(
            f"source {src.path!r} has no column {src.text_field!r}; its columns are {columns}. "
            f"Set text_field to one of them."
        )
    if src.text_field != "text":
        if "text" in columns:
            ds = ds.remove_columns(["text"])
        ds = ds.rename_column(src.text_field, "text")
    label = source_label(src)
    if "source" not in columns:
        ds = ds.add_column("source", [label] * len(ds)) if not streaming else ds.map(lambda x: {"source": label})
    return ds


# ------------------------------------------------------------------------------------ the pipeline's path


def open_source(src: SourceConfig, max_document_bytes: Optional[int] = None) -> SourceSpec:
    """Resolve a configured source: files (an error if none match), format, and the columns its records carry.
    A document longer than `max_document_bytes` (data.max_document_bytes) is read as a too_long reject."""
    if src.format == "hub":
        fmt, files = "hub", [src.path]
    else:
        files = resolve_files(src.path)
        fmt = infer_format(files) if src.format == "auto" else src.format
        if fmt not in BUILDERS:
            raise DataError(f"unknown format {fmt!r} for {src.path}; use auto, txt, jsonl, json, parquet, csv or hub")
        files = drop_empty_files(src.path, files)
        if fmt != "parquet":
            for f in files:
                check_encoding(f)
    if src.txt_sample_by not in ("document", "paragraph", "line"):
        raise DataError(f"txt_sample_by must be document, paragraph or line, got {src.txt_sample_by!r}")
    spec = SourceSpec(path=src.path, label=source_label(src), fmt=fmt, files=files, text_field=src.text_field,
                      txt_sample_by=src.txt_sample_by, hub_name=src.name if fmt == "hub" else None,
                      hub_split=src.split, hub_revision=src.revision, max_bytes=max_document_bytes)
    find_columns(spec)
    return spec


def document_dataset(spec: SourceSpec, strict: bool, streaming: bool, cache_dir: Optional[str] = None,
                     num_proc: Optional[int] = None):
    """Every record of one source: a `Dataset` written under `cache_dir`, or a lazy `IterableDataset`.

    Both come from the same generator with the same features, so they hold the same rows in the same order.
    Files are the generator's shards: `num_proc` workers read different files, and `split_dataset_by_node`
    gives each node its own files when streaming.
    """
    from datasets import Dataset, IterableDataset

    kwargs = {"spec": spec, "files": list(spec.files), "strict": strict}
    if streaming:
        return IterableDataset.from_generator(iter_records, features=spec.features(), gen_kwargs=kwargs)
    procs = num_proc if num_proc and num_proc > 1 and len(spec.files) > 1 else None
    with unwrap_generation_errors():
        try:
            return Dataset.from_generator(iter_records, features=spec.features(), gen_kwargs=kwargs,
                                          cache_dir=cache_dir, num_proc=procs, split="train")
        except Exception:
            # datasets cannot build a table of no rows ("corresponds to no data"): name the source instead
            if next(iter_records(spec, spec.files), None) is None:
                raise no_records_error(spec) from None
            raise


@contextlib.contextmanager
def unwrap_generation_errors() -> Iterator[None]:
    """`datasets` wraps errors raised inside a generator; give the user our own message back."""
    try:
        yield
    except Exception as exc:
        cause: Optional[BaseException] = exc
        while cause is not None and not isinstance(cause, HfLlmError):
            cause = cause.__cause__ or cause.__context__
        if cause is not None and cause is not exc:
            raise cause.with_traceback(None) from None
        raise
