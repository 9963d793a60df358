"""Load text sources (local files or Hub datasets) into `datasets` and mix them by weight."""

from __future__ import annotations

import glob
import os
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import DataConfig, HfLlmError, SourceConfig


class DataError(HfLlmError):
    """Missing, empty or malformed data."""


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
    """A file, a folder (every data file below it) or a glob → sorted file list; an error if nothing matches."""
    if os.path.isdir(path):
        files = [str(p) for p in sorted(Path(path).rglob("*")) if p.is_file() and _data_suffix(str(p)) in SUFFIX_FORMATS]
    elif any(ch in path for ch in "*?["):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
    else:
        files = [path] if os.path.isfile(path) else []
    if not files:
        raise DataError(
            f"data source {path!r} matches no file; give an existing file, folder or glob "
            f"(working directory: {os.getcwd()}), or set format: hub for a Hub dataset id"
        )
    return files


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
        files = resolve_files(src.path)
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


def _non_empty(batch: dict) -> list[bool]:
    return [isinstance(t, str) and bool(t.strip()) for t in batch["text"]]


def mixture_counts(sizes: list[int], weights: list[float], lengths: Optional[list[float]] = None) -> list[int]:
    """Documents to draw from each source so that source i gets weights[i]/sum(weights) of the mixture.

    The mixture keeps the total size of the inputs (documents, or characters when `lengths` gives the mean
    document length of each source, a proxy for tokens before tokenisation); a source whose share exceeds
    what it holds is repeated.
    """
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"source weights must be non-negative with a positive sum, got {weights}")
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    per_doc = np.asarray(lengths if lengths is not None else [1.0] * len(sizes), dtype=np.float64)
    total = float((np.asarray(sizes) * per_doc).sum())
    return [int(round(s * total / max(d, 1e-9))) for s, d in zip(shares, per_doc)]


def sample_indices(size: int, count: int, seed: int) -> np.ndarray:
    """`count` row indices from `size` rows: whole passes plus a seeded random remainder, shuffled."""
    rng = np.random.default_rng(seed)
    whole, rest = divmod(count, size)
    idx = np.concatenate([np.tile(np.arange(size), whole), rng.choice(size, rest, replace=False)])
    return rng.permutation(idx)


def load_sources(cfg: DataConfig):
    """Load, clean out empty texts, and mix every source of `cfg` into one in-memory dataset."""
    from datasets import concatenate_datasets

    parts, stats = [], {}
    for i, src in enumerate(cfg.sources):
        ds = load_source(src)
        n_in = len(ds)
        ds = ds.filter(_non_empty, batched=True, num_proc=_procs(cfg, n_in))
        label = source_label(src)
        stats[label] = {"documents_in": n_in, "empty_dropped": n_in - len(ds)}
        if len(ds) == 0:
            raise DataError(f"source {src.path!r} has no non-empty text in column {src.text_field!r}")
        parts.append(ds.select_columns(["text", "source"]))
    if len(parts) == 1 and cfg.sources[0].weight > 0:
        mixed = parts[0]
    else:
        lengths = None
        if cfg.mix_by == "tokens":
            lengths = [float(np.mean([len(t) for t in p.select(range(min(len(p), 2000)))["text"]])) for p in parts]
        counts = mixture_counts([len(p) for p in parts], [s.weight for s in cfg.sources], lengths)
        chosen = []
        for i, (p, c) in enumerate(zip(parts, counts)):
            if c > 0:
                chosen.append(p.select(sample_indices(len(p), c, cfg.seed + i)))
        mixed = concatenate_datasets(chosen)
        for label, c in zip(stats, counts):
            stats[label]["documents_mixed"] = c
    return mixed, stats


def _procs(cfg: DataConfig, n: int) -> Optional[int]:
    # Forking workers costs more than it saves on small inputs.
    return cfg.num_proc if cfg.num_proc > 1 and n >= 10_000 else None

