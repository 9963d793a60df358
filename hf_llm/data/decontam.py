"""Decontamination: flag training documents that share a word n-gram (13 by default) with an evaluation example.

Texts in scripts written without spaces (zh, ja, th) are compared as character n-grams (`char_ngram`, 20 by
default), chosen per text by its script as near dedup does (dedup.py), so an edit no longer hides a whole sentence.

Text is compared as words: runs of letters/digits, so punctuation, line breaks and spacing never matter, and case
does not matter either unless `lowercase=False`. Every word 13-gram of every eval example is hashed to 64 bits
and kept in one sorted numpy array; a training batch is checked with one `np.searchsorted`. A 64-bit collision
is ~|index| / 2^64 likely per lookup, i.e. never in practice.

Eval sources (see `DecontamConfig`):
  eval_files     local files: `path.txt` (one example per non-empty line) or `path.jsonl` (one JSON object per line,
                 text in `text_field`; `path.jsonl:field` names another field; a list of strings counts as that many
                 examples). `.gz` variants of both are read too.
  eval_datasets  Hub datasets as `name[:config]:split:field`, e.g. `cais/mmlu:all:test:question` or
                 `openai/gsm8k:main:test:question`, loaded with `datasets.load_dataset(name, config, split=split)`.
Each source's name in `contaminated_by` is the entry exactly as written in the config.
"""

from __future__ import annotations

import gzip
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from ..config.data_steps import DecontamConfig
from ..errors import ConfigError, DataError
from .dedup import ngram_hashes, unspaced_documents

logger = logging.getLogger(__name__)

_CHUNK = 1000  # eval texts hashed per call: bounds memory for eval sets streamed as iterables


@dataclass
class NgramIndex:
    """Sorted, unique 64-bit n-gram hashes of the eval sets and, for each, the eval set it came from."""

    hashes: np.ndarray  # uint64, sorted ascending, unique
    owners: np.ndarray  # int32 index into `names` (the first eval set listed wins when several share an n-gram)
    names: list[str]
    ngram: int
    lowercase: bool
    short_examples: dict[str, int]  # examples with fewer than `ngram` words: too short to match, only counted
    char_ngram: int = 0  # n-gram size in characters for texts in unspaced scripts (0: words; dedup.ngram_hashes)


def _long_enough(texts: list[str], counts: np.ndarray, ngram: int, char_ngram: int) -> np.ndarray:
    """bool per text: it has a full n-gram (of characters where its script is cut by character)."""
    need = np.where(unspaced_documents(texts), char_ngram, ngram) if char_ngram else ngram
    return counts >= need


def build_ngram_index(
    texts_by_eval_name: dict[str, Iterable[str]], ngram: int = 13, lowercase: bool = True, char_ngram: int = 20
) -> NgramIndex:
    """Index every word n-gram of every eval example (character `char_ngram`-grams of examples in unspaced scripts),
    remembering which eval set it belongs to."""
    all_hashes, all_owners, short = [], [], {}
    for owner, (name, texts) in enumerate(texts_by_eval_name.items()):
        short[name] = 0
        for chunk in _chunks(texts, _CHUNK):
            hashes, offsets, counts = ngram_hashes(chunk, ngram, lowercase, char_ngram)
            full = _long_enough(chunk, counts, ngram, char_ngram)
            keep = np.repeat(full, np.diff(offsets))  # drop the whole-text shingle of short examples
            short[name] += int((~full).sum())
            all_hashes.append(hashes[keep])
            all_owners.append(np.full(int(keep.sum()), owner, dtype=np.int32))
        if short[name]:
            msg = "decontam: %d examples of %s have fewer than %d words and cannot be matched"
            logger.warning(msg, short[name], name, ngram)
    hashes = np.concatenate(all_hashes) if all_hashes else np.zeros(0, dtype=np.uint64)
    owners = np.concatenate(all_owners) if all_owners else np.zeros(0, dtype=np.int32)
    unique, first = np.unique(hashes, return_index=True)  # first occurrence = earliest listed eval set
    return NgramIndex(unique, owners[first], list(texts_by_eval_name), ngram, lowercase, short, char_ngram)


def contamination_batch(
    batch: dict[str, list[Any]], index: NgramIndex, cfg: DecontamConfig, text_field: str = "text"
) -> dict[str, list[str | None]]:
    """{"contaminated_by": name of an eval set sharing an n-gram with the doc, or None}; `clean_keys_batch` calls it."""
    if (cfg.ngram, cfg.lowercase, cfg.char_ngram) != (index.ngram, index.lowercase, index.char_ngram):
        raise ConfigError(
            f"decontam: index built with ngram={index.ngram}, char_ngram={index.char_ngram}, "
            f"lowercase={index.lowercase} but config has ngram={cfg.ngram}, char_ngram={cfg.char_ngram}, "
            f"lowercase={cfg.lowercase}; rebuild the index from this config"
        )
    texts = [t or "" for t in batch[text_field]]
    result: list[str | None] = [None] * len(texts)
    if not texts or not len(index.hashes):
        return {"contaminated_by": result}
    hashes, offsets, counts = ngram_hashes(texts, index.ngram, index.lowercase, index.char_ngram)
    doc_of = np.repeat(np.arange(len(texts)), np.diff(offsets))
    pos = np.minimum(np.searchsorted(index.hashes, hashes), len(index.hashes) - 1)
    full = _long_enough(texts, counts, index.ngram, index.char_ngram)
    hit = (index.hashes[pos] == hashes) & full[doc_of]  # short docs have no n-gram to match
    docs, first = np.unique(doc_of[hit], return_index=True)  # the first matching n-gram of each doc names the set
    for d, owner in zip(docs.tolist(), index.owners[pos[hit]][first].tolist()):
        result[d] = index.names[owner]
    return {"contaminated_by": result}


# ------------------------------------------------------------------------------------------------ eval sources


def load_eval_texts(cfg: DecontamConfig) -> dict[str, list[str]]:
    """Read every eval source named in the config: {entry as written: list of example texts}."""
    out: dict[str, list[str]] = {}
    for spec in cfg.eval_files:
        out[spec] = read_eval_file(spec, cfg.text_field)
    for spec in cfg.eval_datasets:
        out[spec] = load_hub_eval_texts(spec)
    return out


def read_eval_file(spec: str, default_field: str = "text") -> list[str]:
    """Examples of a local eval file: `x.txt` (one per non-empty line) or `x.jsonl[:field]`, optionally `.gz`."""
    path_str, field_name = spec, default_field
    head, sep, tail = spec.rpartition(":")
    if sep and head.endswith((".jsonl", ".jsonl.gz")) and tail:
        path_str, field_name = head, tail
    path = Path(path_str)
    if not path.is_file():
        raise DataError(f"decontam: eval file {str(path)!r} not found (eval_files entry {spec!r})")
    kind = path.name.removesuffix(".gz").rsplit(".", 1)[-1]
    if kind not in ("txt", "jsonl"):
        raise DataError(f"decontam: eval file {spec!r} must end in .txt or .jsonl (optionally .gz)")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        lines = f.readlines()
    if kind == "txt":
        return [line.strip() for line in lines if line.strip()]
    texts: list[str] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"decontam: {spec!r} line {lineno} is not valid JSON: {e}") from e
        if field_name not in record:
            raise DataError(
                f"decontam: {spec!r} line {lineno} has no field {field_name!r} (fields: {sorted(record)}); "
                f"name the field as 'path.jsonl:field'"
            )
        texts.extend(_as_texts(record[field_name], f"{spec!r} line {lineno}"))
    return texts


def parse_eval_dataset_spec(spec: str) -> tuple[str, str | None, str, str]:
    """Split `name[:config]:split:field` into (name, config or None, split, field)."""
    parts = spec.split(":")
    if len(parts) == 3 and all(parts):
        return parts[0], None, parts[1], parts[2]
    if len(parts) == 4 and all(parts):
        return parts[0], parts[1], parts[2], parts[3]
    raise ConfigError(
        f"decontam: eval_datasets entry {spec!r} must be 'name[:config]:split:field', "
        f"e.g. 'cais/mmlu:all:test:question' or 'openai/gsm8k:main:test:question'"
    )


def load_hub_eval_texts(spec: str) -> list[str]:
    """Examples of one Hub eval set, `name[:config]:split:field`, via `datasets.load_dataset`."""
    from datasets import load_dataset  # deferred: only this path needs the Hub machinery

    name, config, split, field_name = parse_eval_dataset_spec(spec)
    ds = load_dataset(name, config, split=split)
    if field_name not in ds.column_names:
        raise DataError(f"decontam: {spec!r} has no column {field_name!r} (columns: {ds.column_names})")
    texts: list[str] = []
    for value in ds[field_name]:
        texts.extend(_as_texts(value, repr(spec)))
    return texts


def build_index_from_config(cfg: DecontamConfig) -> NgramIndex:
    """Load every configured eval source and index its n-grams."""
    if not cfg.eval_files and not cfg.eval_datasets:
        raise ConfigError("decontam: enabled but no eval_files or eval_datasets are configured")
    return build_ngram_index(load_eval_texts(cfg), cfg.ngram, cfg.lowercase, cfg.char_ngram)


def _as_texts(value: Any, where: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise DataError(f"decontam: {where}: expected a string or a list of strings, got {type(value).__name__}")


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for t in texts:
        chunk.append(t or "")
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
