"""Streaming pretraining data (`data.stream_train`): documents read lazily, split by node, packed on the fly.

For corpora whose packed blocks do not fit on disk. Nothing is written: every process reads its own part of the
sources (`datasets.distributed.split_dataset_by_node`: whole files when they divide evenly among the processes,
else every `world`-th document), tokenises it and cuts it into `seq_len` blocks as it goes (the packers of
pack.py, so the blocks are the same as a prepared folder's for the same documents in the same order).

- Validation: a document is held out when the hash of its text falls below `validation_fraction` (deterministic,
  independent of sharding and of the order of the sources); the first `max_validation_documents` of those are the
  validation set, the others are used for nothing. No held-out document ever reaches the training stream.
- Epochs: a process whose stream ends starts it again (same order: there is no shuffling in this path).
- Exact resume: epoch `e` of a process's stream is deterministic, so skipping the micro-batches it consumed
  gives exactly the next block. The cost is reading and tokenising those documents again (no forward pass).
- The pipeline's cleaning, deduplication and decontamination need a global pass and are not applied here.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterator, Optional

import numpy as np

from ..config import DataConfig
from .pack import blocks_to_dataset, id_dtype, make_packer, with_specials
from .mixture import mixture_shares
from .sources import document_dataset, open_source
from ..errors import ConfigError, DataError
from .steps import READ_REASONS

DOCS_PER_BATCH = 256  # documents tokenised together: large enough for the batch encoder, small in memory


def is_validation(text: str, fraction: float) -> bool:
    """Whether a document is held out: the first 8 bytes of its text's SHA-1 as a number in [0, 1)."""
    digest = hashlib.sha1(text.encode("utf-8", "replace")).digest()[:8]
    return int.from_bytes(digest, "big") / 2.0**64 < fraction


def stream_documents(data: DataConfig):
    """All configured sources as one streamed `IterableDataset` of records (interleaved by weight when several)."""
    from datasets import interleave_datasets

    specs = [open_source(src, data.max_document_bytes) for src in data.sources]
    streams = [document_dataset(spec, data.strict, streaming=True) for spec in specs]
    if len(streams) == 1:
        return streams[0]
    shares = mixture_shares([src.weight for src in data.sources])
    return interleave_datasets(streams, probabilities=shares.tolist(), seed=data.seed,
                               stopping_strategy="all_exhausted")


def usable_texts(records, fraction: float, validation: bool) -> Iterator[str]:
    """Texts of readable, non-empty records on one side of the validation hold-out."""
    for rec in records:
        text = rec["text"]
        if rec.get("read_reason") in READ_REASONS or not text or not text.strip():
            continue
        if is_validation(text, fraction) == validation:
            yield text


def pack_texts(texts: Iterator[str], tokenizer, seq_len: int, packing: str = "concat",
               best_fit_window: int = 1000) -> Iterator[dict[str, np.ndarray]]:
    """Blocks (one dict of `seq_len` arrays each) of `texts`: `[BOS] tokens EOS` per document, packed as pack.py."""
    from .tokenizer import BatchEncoder, adds_bos

    encoder = BatchEncoder(tokenizer)
    bos = tokenizer.bos_token_id if adds_bos(tokenizer) else None
    dtype = id_dtype(len(tokenizer))
    packer = make_packer(packing, seq_len, len(tokenizer), tokenizer.pad_token_id, best_fit_window)

    def rows(blocks: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        for i in range(len(blocks["input_ids"])):
            yield {k: v[i] for k, v in blocks.items()}

    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == DOCS_PER_BATCH:
            yield from rows(packer.add(*with_specials(*encoder.encode_flat(batch), tokenizer.eos_token_id, bos, dtype)))
            batch = []
    if batch:
        yield from rows(packer.add(*with_specials(*encoder.encode_flat(batch), tokenizer.eos_token_id, bos, dtype)))
    yield from rows(packer.finish())


def train_documents(data: DataConfig, rank: int, world: int):
    """This process's share of the documents (an `IterableDataset`); validation is filtered out when iterated."""
    from datasets.distributed import split_dataset_by_node

    return split_dataset_by_node(stream_documents(data), rank=rank, world_size=world)


def train_blocks(data: DataConfig, tokenizer, rank: int, world: int, skip: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of this process's training blocks, after skipping the first `skip` of them."""
    from itertools import islice

    docs = usable_texts(train_documents(data, rank, world), data.validation_fraction, validation=False)
    return islice(pack_texts(docs, tokenizer, data.seq_len, data.packing, data.best_fit_window), skip, None)


def validation_dataset(data: DataConfig, tokenizer):
    """The held-out documents (the first `max_validation_documents` of them), packed: a `datasets.Dataset`."""
    from itertools import islice

    texts = islice(usable_texts(stream_documents(data), data.validation_fraction, validation=True),
                   data.max_validation_documents)
    blocks = list(pack_texts(texts, tokenizer, data.seq_len, data.packing, data.best_fit_window))
    if not blocks:
        raise DataError(f"no validation block of {data.seq_len} tokens: the held-out documents (a "
                        f"validation_fraction={data.validation_fraction} share by text hash) are too few or too short")
    if set(blocks[0]) == {"input_ids"}:
        return blocks_to_dataset(np.stack([b["input_ids"] for b in blocks]))
    from datasets import Dataset

    return Dataset.from_dict({k: [b[k] for b in blocks] for k in blocks[0]})


def batched_train_stream(data: DataConfig, tokenizer, rank: int, world: int, micro_batch_size: int,
                         collate: Callable[[list[dict[str, Any]]], Any]) -> Callable[[int, int], Iterator[Any]]:
    """`open(epoch, skip_batches)` → this process's collated micro-batches of that epoch after `skip_batches`.

    The loop's `StepBatches` (hf_llm.train.stages) calls it at every epoch start and on resume; an incomplete last
    batch is dropped.
    Every epoch is the same stream (no shuffling), so `epoch` only says where the loop is.
    """

    def open_epoch(epoch: int, skip_batches: int) -> Iterator[Any]:
        del epoch  # the order does not depend on it
        blocks = train_blocks(data, tokenizer, rank, world, skip_batches * micro_batch_size)
        while True:
            rows = [row for _, row in zip(range(micro_batch_size), blocks)]
            if len(rows) < micro_batch_size:
                return
            yield collate(rows)

    return open_epoch


def check_stream_config(data: DataConfig, tokenizer_path: Optional[str]) -> None:
    """What `data.stream_train` needs, checked before anything is read."""
    if not tokenizer_path:
        raise ConfigError("data.stream_train=true needs tokenizer.name_or_path (an existing tokenizer): training one "
                          "takes a pass over the data; train it with scripts/prepare_data.py on a sample first")
    if data.prepared:
        raise ConfigError("data.stream_train=true reads data.sources; it cannot be combined with data.prepared")


__all__ = ["batched_train_stream", "check_stream_config", "is_validation", "pack_texts", "stream_documents",
           "train_blocks", "train_documents", "validation_dataset"]
