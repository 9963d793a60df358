"""Reading a `Dataset` or an `IterableDataset` batch by batch, the same way, for the pipeline's passes."""

from __future__ import annotations

from itertools import chain
from typing import Any, Iterator, Optional

import numpy as np

from .pack import arrow_lists_to_numpy, id_dtype

BATCH = 1000  # rows per batch in every pass


def iter_batches(ds, columns: list[str], rows: Optional[np.ndarray] = None, desc: str = "",
                 total: Optional[int] = None) -> Iterator[tuple[np.ndarray, dict]]:
    """(row indices, {column: values}) batch by batch, optionally only `rows` (sorted indices), with a progress bar.

    Values are the same in both modes: numeric columns and fixed-size lists (MinHash) as numpy arrays, token ids
    as an Arrow list array (in memory) or Python lists (streaming) for `_token_ids`, anything else as Python
    objects. A Dataset jumps straight to `rows`; an IterableDataset has no random access: it is read and filtered
    (`total`, when known from an earlier pass, only sizes its progress bar).
    """
    from datasets import IterableDataset
    from tqdm.auto import tqdm

    streaming = isinstance(ds, IterableDataset)
    kinds = {c: _kind(ds.features[c]) for c in columns}
    total = len(rows) if rows is not None else (total if streaming else len(ds))
    bar = tqdm(total=total, desc=desc, unit="doc", disable=not desc or not _progress_enabled(), leave=False)
    try:
        if streaming:
            yield from _iter_stream(ds, columns, kinds, rows, bar)
            return
        view = ds.select(rows) if rows is not None else ds
        fast = [c for c in columns if kinds[c] != "object"]  # read through Arrow: no Python objects per value
        slow = [c for c in columns if kinds[c] == "object"]  # decoded by datasets (JSON columns included)
        parts = []
        if fast:
            parts.append(view.select_columns(fast).with_format("arrow").iter(batch_size=BATCH))
        if slow:
            parts.append(view.select_columns(slow).iter(batch_size=BATCH))
        start = 0
        for chunk in zip(*parts):
            batch: dict[str, Any] = {}
            for part in chunk:
                if isinstance(part, dict):
                    batch.update(part)
                else:
                    batch.update({c: _arrow_values(part.column(c), kinds[c]) for c in part.column_names})
            n = len(batch[columns[0]])
            idx = rows[start : start + n] if rows is not None else np.arange(start, start + n)
            start += n
            bar.update(n)
            yield idx, batch
    finally:
        bar.close()


def _iter_stream(ds, columns: list[str], kinds: dict, rows: Optional[np.ndarray],
                 bar) -> Iterator[tuple[np.ndarray, dict]]:
    wanted = None
    if rows is not None:
        wanted = np.zeros(int(rows[-1]) + 1 if len(rows) else 0, dtype=bool)
        wanted[rows] = True
    start = 0
    for batch in ds.select_columns(columns).iter(batch_size=BATCH):
        n = len(batch[columns[0]])
        idx = np.arange(start, start + n)
        start += n
        if wanted is not None:
            sel = np.zeros(n, dtype=bool)
            inside = idx < len(wanted)
            sel[inside] = wanted[idx[inside]]
            if sel.any():
                pick = np.flatnonzero(sel)
                batch = {c: [batch[c][k] for k in pick] for c in columns}
                idx = idx[pick]
            elif start >= len(wanted):
                break  # nothing further is wanted: stop reading the stream
            else:
                continue
        bar.update(len(idx))
        yield idx, {c: _python_values(batch[c], kinds[c]) for c in columns}


def _kind(feature) -> str:
    """How a column travels through `iter_batches`: number, matrix (fixed-size list), ids (list) or object."""
    from datasets import List, Sequence, Value

    if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint", "float")):
        return "number"
    if isinstance(feature, (List, Sequence)) and isinstance(getattr(feature, "feature", None), Value):
        return "matrix" if getattr(feature, "length", -1) not in (-1, None) else "ids"
    return "object"


def _arrow_values(column, kind: str) -> Any:
    import pyarrow as pa

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if kind == "matrix":
        return column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), column.type.list_size)
    if kind == "number":
        return column.to_numpy(zero_copy_only=False)
    return column  # ids: the caller flattens them


def _python_values(values: list, kind: str) -> Any:
    if kind == "number":
        return np.asarray(values)
    if kind == "matrix":
        return np.asarray(values).reshape(len(values), -1)
    return values


def _progress_enabled() -> bool:
    from datasets.utils.logging import is_progress_bar_enabled

    return is_progress_bar_enabled()


def token_ids(ids, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a batch (an Arrow list column, or Python lists when streaming) → (flat, lengths)."""
    if isinstance(ids, list):
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        if ids and all(isinstance(x, np.ndarray) for x in ids):
            flat = np.concatenate(ids).astype(id_dtype(vocab), copy=False)
        else:
            flat = np.fromiter(chain.from_iterable(ids), dtype=id_dtype(vocab), count=int(lengths.sum()))
        return flat, lengths
    flat, lengths = arrow_lists_to_numpy(ids)
    return flat.astype(id_dtype(vocab), copy=False), lengths.astype(np.int64)


def take_documents(flat: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of the documents where `rows` (bool per document) is set."""
    return flat[np.repeat(rows, lengths)], lengths[rows]
