"""Pack token ids into fixed-length blocks that keep documents apart.

Each document becomes `[BOS] tokens EOS` (`with_specials`; `steps.tokenize_batch` encodes). Two packers, both fed
documents in order, batch by batch, so the blocks do not depend on where batches are cut:

- `ConcatPacker` (concatenate-and-chunk): documents end to end, cut every `seq_len` tokens; no padding, a
  document may straddle two blocks, the tail shorter than a block is dropped. The collator
  (`hf_llm.train.collate`) restarts position ids after every EOS, which keeps packed documents apart.
  Concatenation runs on flat numpy buffers (no Python lists), which is what makes it several times faster than
  run_clm's `group_texts`.
- `BestFitPacker`: whole documents placed into blocks by best-fit decreasing over a window of documents; a
  document is cut only when it is longer than a block. Blocks are padded, and carry explicit `position_ids`
  (restarting at each document, and for the padding) and `labels` (-100 on padding and on each document's
  first token), which the collator uses as they are.
"""

from __future__ import annotations

import bisect
import math
from pathlib import Path
from typing import Optional

import numpy as np

IGNORE_INDEX = -100  # the label transformers' loss skips; the collators and SFT import it from here


def with_specials(flat: np.ndarray, lengths: np.ndarray, eos: int, bos: Optional[int], dtype: np.dtype
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Put EOS after every document (and BOS before it) in a flat id stream, without a Python loop."""
    extra = 1 + (bos is not None)
    new_lengths = lengths + extra
    ends = np.cumsum(new_lengths)
    out = np.empty(int(ends[-1]) if len(ends) else 0, dtype=dtype)
    starts = ends - new_lengths
    body = np.ones(len(out), dtype=bool)
    body[ends - 1] = False
    if bos is not None:
        body[starts] = False
        out[starts] = bos
    out[ends - 1] = eos
    out[body] = flat
    return out, new_lengths


def id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def label_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.int16) if vocab_size <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


def position_dtype(seq_len: int) -> np.dtype:
    return np.dtype(np.uint16) if seq_len <= np.iinfo(np.uint16).max + 1 else np.dtype(np.int32)


def arrow_lists_to_numpy(lists) -> tuple[np.ndarray, np.ndarray]:
    """A pyarrow list array → (flat values, length of each list), zero-copy where Arrow allows."""
    import pyarrow as pa

    if isinstance(lists, pa.ChunkedArray):
        lists = lists.combine_chunks()
    return lists.flatten().to_numpy(zero_copy_only=False), lists.value_lengths().to_numpy(zero_copy_only=False)


def pack_ids(flat: np.ndarray, seq_len: int, dtype: np.dtype) -> tuple[np.ndarray, int]:
    """Cut the flat stream into [n_blocks, seq_len]; returns the blocks and the tokens left over at the end."""
    n_blocks = len(flat) // seq_len
    blocks = flat[: n_blocks * seq_len].astype(dtype, copy=False).reshape(n_blocks, seq_len)
    return blocks, len(flat) - n_blocks * seq_len


class ConcatPacker:
    """Concatenate-and-chunk, incrementally: `add` documents, get back the blocks they complete."""

    def __init__(self, seq_len: int, dtype: np.dtype):
        self.seq_len, self.dtype = seq_len, np.dtype(dtype)
        self.carry = np.zeros(0, dtype=self.dtype)
        self.position = 0  # tokens seen so far: where the next document starts in the stream
        self.stats = {"documents": 0, "tokens": 0, "blocks": 0, "documents_split": 0}

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        if len(lengths):
            ends = self.position + np.cumsum(lengths)
            starts = ends - lengths
            # a document is split when its first and last token fall in different blocks
            self.stats["documents_split"] += int(((starts // self.seq_len) != ((ends - 1) // self.seq_len)).sum())
            self.position = int(ends[-1])
        self.stats["documents"] += len(lengths)
        self.stats["tokens"] += len(flat)
        buf = np.concatenate([self.carry, flat.astype(self.dtype, copy=False)]) if len(self.carry) else flat
        blocks, rest = pack_ids(buf, self.seq_len, self.dtype)
        self.carry = np.array(buf[len(buf) - rest :], dtype=self.dtype)
        self.stats["blocks"] += len(blocks)
        return {"input_ids": blocks}

    def finish(self) -> dict[str, np.ndarray]:
        self.stats.update(padding_tokens=0, tokens_dropped_at_end=len(self.carry), seq_len=self.seq_len)
        self.carry = self.carry[:0]
        return {"input_ids": np.zeros((0, self.seq_len), dtype=self.dtype)}


def best_fit_bins(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit-decreasing: item indices grouped into bins of `capacity` (each length at most `capacity`).

    Longest first, each into the bin with the least room that still fits it; ties keep input order.
    """
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted: bisect finds the tightest fit
    bins: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        n = lengths[i]
        at = bisect.bisect_left(free, (n, -1))
        if at < len(free):
            space, b = free.pop(at)
        else:
            space, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if space - n > 0:
            bisect.insort(free, (space - n, b))
    return bins


class BestFitPacker:
    """Best-fit decreasing over windows of `window` documents: whole documents per block wherever they fit.

    Deterministic in the order documents arrive, whatever the batch boundaries.
    """

    def __init__(self, seq_len: int, window: int, pad_token_id: int, vocab_size: int):
        self.seq_len, self.window, self.pad = seq_len, window, pad_token_id
        self.dtypes = {"input_ids": id_dtype(vocab_size), "position_ids": position_dtype(seq_len),
                       "labels": label_dtype(vocab_size)}
        self.pending: list[np.ndarray] = []
        self.stats = {"documents": 0, "tokens": 0, "blocks": 0, "documents_split": 0, "padding_tokens": 0}

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> dict[str, np.ndarray]:
        self.stats["documents"] += len(lengths)
        self.stats["tokens"] += len(flat)
        self.pending.extend(np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else [])
        out = []
        while len(self.pending) >= self.window:
            out.append(self._pack(self.pending[: self.window]))
            self.pending = self.pending[self.window :]
        return _stack(out, self.seq_len, self.dtypes)

    def finish(self) -> dict[str, np.ndarray]:
        out = [self._pack(self.pending)] if self.pending else []
        self.pending = []
        self.stats.update(tokens_dropped_at_end=0, seq_len=self.seq_len)
        return _stack(out, self.seq_len, self.dtypes)

    def _pack(self, docs: list[np.ndarray]) -> dict[str, np.ndarray]:
        L = self.seq_len
        rows: list[list[np.ndarray]] = []  # each block: its pieces in order
        pieces: list[np.ndarray] = []
        for doc in docs:
            full, rest = divmod(len(doc), L)
            if len(doc) > L:
                self.stats["documents_split"] += 1
            rows.extend([doc[k * L : (k + 1) * L]] for k in range(full))  # a long document's whole blocks
            if rest:
                pieces.append(doc[full * L :])
        rows.extend([pieces[i] for i in members] for members in best_fit_bins([len(p) for p in pieces], L))
        self.stats["padding_tokens"] += len(rows) * L - sum(len(p) for row in rows for p in row)
        self.stats["blocks"] += len(rows)
        return render_rows(rows, None, L, self.pad, self.dtypes)


def render_rows(rows: list[list[np.ndarray]], labels: Optional[list[list[np.ndarray]]], seq_len: int,
                pad_token_id: int, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Blocks of `seq_len` from rows of pieces (documents, SFT examples) laid end to end, then padding.

    Position ids restart at 0 for every piece and for the padding tail, which transformers turns into a
    block-causal mask: a piece never attends to another one in the same block, nor to the padding. Labels are the
    pieces' own (`labels`, same shape as `rows`) or, when None, each piece's ids with its first token masked (a
    document's first token is not predicted from the one before it); padding gets IGNORE_INDEX.
    """
    ids = np.full((len(rows), seq_len), pad_token_id, dtype=dtypes["input_ids"])
    pos = np.empty((len(rows), seq_len), dtype=dtypes["position_ids"])
    out_labels = np.full((len(rows), seq_len), IGNORE_INDEX, dtype=dtypes["labels"])
    for r, pieces in enumerate(rows):
        at = 0
        for k, piece in enumerate(pieces):
            n = len(piece)
            ids[r, at : at + n] = piece
            pos[r, at : at + n] = np.arange(n)
            if labels is None:
                out_labels[r, at + 1 : at + n] = piece[1:]
            else:
                out_labels[r, at : at + n] = labels[r][k]
            at += n
        pos[r, at:] = np.arange(seq_len - at)
    return {"input_ids": ids, "position_ids": pos, "labels": out_labels}


def _stack(parts: list[dict[str, np.ndarray]], seq_len: int, dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    if not parts:
        return {k: np.zeros((0, seq_len), dtype=d) for k, d in dtypes.items()}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def check_packing(packing: str, pad_token_id: Optional[int]) -> None:
    """best_fit pads its blocks: it needs a pad token (checked as soon as the tokenizer is known)."""
    if packing == "best_fit" and pad_token_id is None:
        from ..errors import DataError

        raise DataError("data.packing=best_fit needs a tokenizer with a pad token; set one or use packing=concat")


def make_packer(packing: str, seq_len: int, vocab_size: int, pad_token_id: Optional[int], window: int = 1000):
    check_packing(packing, pad_token_id)
    if packing == "best_fit":
        return BestFitPacker(seq_len, window, pad_token_id, vocab_size)
    return ConcatPacker(seq_len, id_dtype(vocab_size))


class BlockWriter:
    """Appends packed blocks to an Arrow file as fixed-size lists (one task's shard of the prepared split)."""

    def __init__(self, path: str | Path, seq_len: int, dtypes: dict[str, np.dtype]):
        from datasets import Features, List, Value
        from datasets.arrow_writer import ArrowWriter

        self.path, self.seq_len = str(path), seq_len
        features = Features({k: List(Value(np.dtype(d).name), length=seq_len) for k, d in dtypes.items()})
        self.writer = ArrowWriter(features=features, path=self.path)

    def write(self, blocks: dict[str, np.ndarray]) -> None:
        import pyarrow as pa

        if not len(next(iter(blocks.values()))):
            return
        columns = {k: pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), self.seq_len)
                   for k, v in blocks.items()}
        self.writer.write_table(pa.table(columns))

    def close(self) -> None:
        self.writer.finalize()


def packer_dtypes(packer) -> dict[str, np.dtype]:
    return packer.dtypes if isinstance(packer, BestFitPacker) else {"input_ids": packer.dtype}


def blocks_to_dataset(blocks: np.ndarray):
    """A `datasets.Dataset` with one fixed-size `input_ids` list per block, built from the array in one step."""
    import pyarrow as pa
    from datasets import Dataset

    flat = pa.array(blocks.reshape(-1))
    column = pa.FixedSizeListArray.from_arrays(flat, blocks.shape[1])
    return Dataset(pa.table({"input_ids": column}))


def unigram_cross_entropy_from_counts(train_counts: np.ndarray, eval_counts: np.ndarray) -> float:
    """Cross-entropy (nats/token) of the eval tokens under an add-one-smoothed unigram model of the training tokens,
    from token counts (which the pipeline adds up batch by batch): the baseline a language model must beat by a wide
    margin to show that it learns context."""
    if eval_counts.sum() == 0:
        return math.nan
    n = max(len(train_counts), len(eval_counts))
    train = np.pad(train_counts, (0, n - len(train_counts))).astype(np.float64) + 1.0
    evals = np.pad(eval_counts, (0, n - len(eval_counts))).astype(np.float64)
    logp = np.log(train / train.sum())
    return float(-(evals * logp).sum() / evals.sum())
