"""The per-document steps of the data pipeline, as batched functions for `datasets.map`.

`clean_keys_batch` runs every document-level decision that needs no other document: normalisation, PII, quality
filters, and the keys the global steps need (exact hash, MinHash signature, eval-set overlap). `tokenize_batch`
encodes. The clean and pack passes call them batch by batch (task_steps.py, task_pack.py).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..config.data_steps import CleanConfig, DecontamConfig, DedupConfig
from .clean import clean_document, count_words
from .decontam import NgramIndex, contamination_batch
from .dedup import dedup_keys
from .language import language_decision

# set by the readers (hf_llm/data/readers.py); the text is not usable
READ_REASONS = ("malformed", "invalid_utf8", "missing_text", "wrong_type", "too_long", "truncated", "corrupt")


def step_features(features, dedup: DedupConfig):
    """The schema `clean_keys_batch` writes: the source's columns plus the cleaned text's keys."""
    from datasets import Features, List, Value

    added = {
        "original_text": Value("string"),  # the text as read: what rejects/ keeps
        "reason": Value("string"),  # None = kept so far
        "detail": Value("string"),
        "pii_email": Value("int32"), "pii_ip": Value("int32"), "pii_phone": Value("int32"),
        "chars_in": Value("int64"), "chars_out": Value("int64"),
        "hash_hi": Value("int64"), "hash_lo": Value("int64"),  # 128-bit hash of the normalised text (signed halves)
        "contaminated_by": Value("string"),
        "language": Value("string"),  # ISO 639 code identified by lid.176 ("" for text without letters)
        "language_score": Value("float32"),  # the model's probability of that language
        "words_out": Value("int32"),  # words of the cleaned text, as its language's rules count them (fertility)
    }
    if dedup.near.enabled:
        added["minhash"] = List(Value("uint32"), length=dedup.near.num_perm)
    return Features({**features, **added})


def clean_keys_batch(batch: dict[str, list], clean: CleanConfig, dedup: DedupConfig,
                     index: Optional[NgramIndex] = None, decontam: Optional[DecontamConfig] = None,
                     languages: Sequence[str] = (), language_min_score: float = 0.0) -> dict[str, list]:
    """Clean every document and compute its dedup and decontamination keys; no row is dropped.

    Each document's language is identified (columns `language`, `language_score`); one outside `languages`
    (data.languages; empty keeps all) or below `language_min_score` gets reason "language".

    `reason` is None for a document that passed every filter (it may still be a duplicate: that needs all keys).
    Rejected rows keep their text, so rejects/ can show what was dropped; their keys are zeros.
    """
    texts_in: list[Any] = batch["text"]
    n = len(texts_in)
    reasons: list[Optional[str]] = list(batch["read_reason"])
    details: list[Optional[str]] = list(batch["read_detail"])
    texts: list[Any] = list(texts_in)
    pii = {"email": [0] * n, "ip": [0] * n, "phone": [0] * n}
    language: list[str] = [""] * n
    score = [0.0] * n
    for i, text in enumerate(texts_in):
        if reasons[i] is not None:
            continue
        reason, texts[i], counts, language[i], score[i] = clean_document(text, clean, languages, language_min_score)
        reasons[i] = reason
        if reason == "language":
            details[i] = language_decision(language[i], score[i], languages, language_min_score)
        for kind, c in counts.items():
            pii[kind][i] = c
    ok = [i for i in range(n) if reasons[i] is None]
    hashes = np.zeros((n, 2), dtype=np.int64)
    sig = np.zeros((n, dedup.near.num_perm if dedup.near.enabled else 0), dtype=np.uint32)
    if ok:
        keys = dedup_keys([texts[i] for i in ok], dedup)
        hashes[ok] = keys["hash"]
        if dedup.near.enabled:
            sig[ok] = keys["minhash"]
    contaminated: list[Optional[str]] = [None] * n
    if index is not None and decontam is not None and ok:
        flags = contamination_batch({"text": [texts[i] for i in ok]}, index, decontam)["contaminated_by"]
        for i, name in zip(ok, flags):
            contaminated[i] = name
    out = dict(batch)
    out.update({
        "text": texts, "original_text": texts_in, "reason": reasons, "detail": details,
        "pii_email": pii["email"], "pii_ip": pii["ip"], "pii_phone": pii["phone"],
        "chars_in": [len(t) if isinstance(t, str) else 0 for t in texts_in],
        "chars_out": [len(texts[i]) if reasons[i] is None else 0 for i in range(n)],
        "hash_hi": hashes[:, 0], "hash_lo": hashes[:, 1], "contaminated_by": contaminated,
        "language": language, "language_score": score,
        "words_out": [count_words(texts[i], language[i]) if reasons[i] is None else 0 for i in range(n)],
    })
    if dedup.near.enabled:
        out["minhash"] = list(sig)
    return out


def tokenize_features(features, vocab_size: int):
    from datasets import Features, List, Value

    from .pack import id_dtype

    return Features({**features, "input_ids": List(Value(id_dtype(vocab_size).name)), "n_tokens": Value("int32")})


def tokenize_batch(texts: list, reasons: list, indices: list[int], encoder, keep: np.ndarray, eos: int,
                   bos: Optional[int], vocab_size: int) -> dict[str, list]:
    """Token counts of every cleaned document (for the statistics) and ids of the kept ones (for packing).

    Reads only `text` and `reason` (map's input_columns), so the other columns are never paged in.
    `keep[i]` says whether row i (of this source) survived every step; other rows get an empty id array.
    EOS ends each document; BOS starts it when the tokenizer's family expects one.
    """
    from .pack import id_dtype, with_specials

    n = len(indices)
    usable = [i for i in range(n) if reasons[i] not in READ_REASONS and isinstance(texts[i], str) and texts[i]]
    dtype = id_dtype(vocab_size)
    flat, lengths = encoder.encode_flat([texts[i] for i in usable])
    flat, lengths = with_specials(flat, lengths, eos, bos, dtype)
    docs = np.split(flat, np.cumsum(lengths)[:-1]) if len(usable) else []
    empty = np.zeros(0, dtype=dtype)
    ids = [empty] * n
    n_tokens = np.zeros(n, dtype=np.int32)
    for i, doc in zip(usable, docs):
        n_tokens[i] = len(doc)
        if keep[indices[i]]:
            ids[i] = doc
    return {"input_ids": ids, "n_tokens": n_tokens}
