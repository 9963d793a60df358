"""Reading a `Dataset` (an Arrow file of a pass) batch by batch, for the passes."""

from __future__ import annotations

from typing import Any, Iterator, Optional

import numpy as np

from .pack import arrow_lists_to_numpy, id_dtype

BATCH = 1000  # rows per batch in every pass


def iter_batches(ds, columns: list[str], rows: Optional[np.ndarray] = None, desc: str = "",
                 total: Optional[int] = None) -> Iterator[tuple[np.ndarray, dict]]:
    """(row indices, {column: values}) batch by batch, optionally only `rows` (sorted indices), with a progress bar.

    Numeric columns and fixed-size lists (MinHash) come as numpy arrays, token ids as an Arrow list array (for
    `token_ids`), anything else as Python objects. `total` sizes the progress bar (default: the rows read).
    """
    from tqdm.auto import tqdm

    kinds = {c: _kind(ds.features[c]) for c in columns}
    total = len(rows) if rows is not None else (total or len(ds))
    bar = tqdm(total=total, desc=desc, unit="doc", disable=not desc or not _progress_enabled(), leave=False)
    try:
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


def _progress_enabled() -> bool:
    from datasets.utils.logging import is_progress_bar_enabled

    return is_progress_bar_enabled()


def token_ids(ids, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of a batch (an Arrow list column) → (flat, lengths)."""
    flat, lengths = arrow_lists_to_numpy(ids)
    return flat.astype(id_dtype(vocab), copy=False), lengths.astype(np.int64)


def take_documents(flat: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tokens of the documents where `rows` (bool per document) is set."""
    return flat[np.repeat(rows, lengths)], lengths[rows]
