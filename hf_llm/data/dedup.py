"""Deduplication: exact (hash of normalised text) and near (MinHash over word n-grams, LSH banding, verification).

Both are split the same way. `dedup_keys` is the per-document step (the clean pass calls it from
`clean_keys_batch`): a 128-bit hash of the normalised text and a MinHash signature. The global step is split as the
passes run it (hf_llm/data/task_steps.py): `exact_partition` groups equal hashes of one hash partition, `near_pairs`
finds the verified candidate pairs of one group of LSH bands among what exact dedup kept, and `dedup_decisions`
joins the partitions and the pairs' connected components into one decision per document. It is numpy throughout
(sorting, grouping, vectorised union-find), so it scales to millions of documents on one machine without O(n^2)
work. In every cluster the document with the lowest index is kept and its index is the cluster id.
`near_duplicate_clusters` is the same near step over one array of signatures (one task, all bands).

Words, for near dedup and decontamination alike, are maximal runs of ASCII letters, digits and `_`, or of other
characters except Unicode punctuation and spaces (U+0080-U+00BF, U+2000-U+206F, U+3000-U+303F): so "Hello, world!"
and "hello world" give the same shingles, and so do ‘quoted’ and 'quoted'. The text is split on its UTF-8 bytes with
numpy, so there is no per-word Python work.

Languages written without spaces (Chinese, Japanese, Thai: a whitespace "word" there is a phrase or a sentence, and
any edit breaks it) are shingled by character: in a document whose non-space characters are at least
`UNSPACED_SHARE` CJK ideographs, kana or Thai, each such character is a token of its own (a run of Latin letters or
digits inside it stays one token) and the n-gram size is `char_ngram` instead of `ngram`. The choice is made per
document from its script alone, never from a model, so an eval example and a training page are cut alike.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..config.data_steps import DedupConfig, NearDedupConfig
from .language import UNSPACED_CHARS

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for the order-sensitive rolling combination
_EMPTY_SHINGLE = np.uint64(0x5BD1E9955BD1E995)  # the one shingle of a document with no words at all
_LENGTH_MIX = np.uint64(0xC2B2AE3D27D4EB4F)
_SHIFT_32 = np.uint64(32)
# Columns of the (permutations x shingles) matrix processed at once: 126 x 8,192 x 4 B = 4 MB, reused in place;
# measured fastest of 2k-16k (fewer numpy calls per shingle, and the buffer still fits in the L3 cache).
_CHUNK_SHINGLES = 8192
# Buckets up to this size are checked pair by pair (at most 1,128 pairs each); larger ones, which only masses of
# near-identical pages fill, are chained (member to first and to predecessor) so they stay linear in their size.
_ALL_PAIRS_BUCKET = 48


def _byte_classes() -> np.ndarray:
    word = np.zeros(256, dtype=bool)
    for lo, hi in ((ord("0"), ord("9")), (ord("A"), ord("Z")), (ord("a"), ord("z")), (0x80, 0xFF)):
        word[lo : hi + 1] = True
    word[ord("_")] = True
    return word


_WORD_BYTE = _byte_classes()  # read-only lookup table: is this UTF-8 byte part of a word
UNSPACED_SHARE = 0.3  # share of non-space characters in unspaced scripts from which a document is cut by character
_UNSPACED = re.compile(f"[{UNSPACED_CHARS}]")
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(8)] + [2**64 - 1], dtype=np.uint64)  # k low bytes set

# ----------------------------------------------------------------------------------------------- the step


def dedup_keys(texts: Sequence[str], cfg: DedupConfig) -> dict[str, np.ndarray]:
    """The per-document dedup keys of cleaned texts: {"hash": (n, 2) int64 halves of a 128-bit hash of the
    normalised text, "minhash": (n, num_perm) uint32 signatures (only with near dedup enabled)}."""
    keys = {"hash": exact_hashes(texts)}
    if cfg.near.enabled:
        keys["minhash"] = minhash_signatures(texts, cfg.near)
    return keys


@dataclass
class DedupDecisions:
    """Per document (of those `dedup_decisions` was given): dropped as an exact or a near copy, the index of the
    kept document it copies (-1 if none), and the cluster id (lowest index) of each step's survivors."""

    exact: np.ndarray  # bool
    near: np.ndarray  # bool
    representative: np.ndarray  # int64
    exact_cluster: np.ndarray  # int64 per candidate: index of the first copy (empty when exact dedup is off)
    near_cluster: np.ndarray  # int64 per exact survivor: index of its cluster's kept document (empty when off)


def exact_partition(idx: np.ndarray, hashes: np.ndarray) -> dict[str, np.ndarray]:
    """Exact dedup of one hash partition (the exact pass's task; one partition holds every document in process):
    `idx` are the global indices of its candidates, ascending, `hashes` their (n, 2) int64 hashes. Returns the
    candidates, the cluster id of each (global index of its first copy), the dropped copies and their kept copy."""
    records = np.ascontiguousarray(hashes, dtype=np.int64).view([("hi", "<i8"), ("lo", "<i8")]).ravel()
    cluster, drop = find_exact_duplicates(records)
    drop = np.asarray(drop, dtype=np.int64)
    return {"candidates": idx, "cluster": idx[cluster] if len(cluster) else np.zeros(0, np.int64),
            "dropped": idx[drop], "representative": idx[cluster[drop]] if len(drop) else drop}


def dedup_decisions(n: int, candidates: np.ndarray, exact_parts: list[dict], near_pairs: Optional[np.ndarray],
                    cfg: DedupConfig) -> DedupDecisions:
    """The global decision over `n` documents from the passes' results: `exact_parts` (one `exact_partition` per
    hash partition) and the near pass's verified pairs (global indices; None when near dedup is off). `candidates`
    (bool per document) passed every filter; near dedup clusters what exact dedup left of them."""
    exact, near = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    rep = np.full(n, -1, dtype=np.int64)
    exact_cluster = near_cluster = np.zeros(0, dtype=np.int64)
    if cfg.exact.enabled:
        for part in exact_parts:
            exact[part["dropped"]] = True
            rep[part["dropped"]] = part["representative"]
        exact_cluster = np.concatenate([part["cluster"] for part in exact_parts])
    if cfg.near.enabled:
        cand = np.flatnonzero(candidates & ~exact)
        labels = connected_components(n, near_pairs if near_pairs is not None else np.zeros((0, 2), np.int64))
        near_cluster = labels[cand]
        drop = cand[near_cluster != cand]
        near[drop] = True
        rep[drop] = labels[drop]
    return DedupDecisions(exact, near, rep, exact_cluster, near_cluster)


# ---------------------------------------------------------------------------------------------------------- exact


def _exact_form(text: str) -> str:
    """Lowercase and collapse all whitespace runs to one space, so trivial reformatting is still an exact copy."""
    return " ".join(text.lower().split())


def exact_hashes(texts: Sequence[str]) -> np.ndarray:
    """128-bit blake2b digests of the normalised texts as (n, 2) int64 (Arrow has no uint64-safe Python ints);
    stable across processes and runs, unlike Python's salted `hash`. (A numpy version of the normal form was
    measured only ~10% faster: not worth its code.)"""
    digests = b"".join(hashlib.blake2b(_exact_form(t or "").encode("utf-8"), digest_size=16).digest() for t in texts)
    return np.frombuffer(digests, dtype="<i8").reshape(len(texts), 2).copy()


def find_exact_duplicates(hashes: Any) -> tuple[np.ndarray, list[int]]:
    """Cluster equal hashes. Returns (cluster id per document = index of its first occurrence, indices to drop).

    `hashes` is anything `np.unique` sorts: a 1-D array (of structured (hi, lo) records, say) or a list of strings.
    """
    if len(hashes) == 0:
        return np.zeros(0, dtype=np.int64), []
    _, first, inverse = np.unique(np.asarray(hashes), return_index=True, return_inverse=True)
    cluster = first[inverse.reshape(-1)].astype(np.int64)
    return cluster, np.flatnonzero(cluster != np.arange(len(cluster))).tolist()


# ---------------------------------------------------------------------------------------------------- shingling


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """Finaliser that spreads every input bit over the output (uint64, wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _combine(word_hashes: np.ndarray) -> np.uint64:
    """Order-sensitive hash of a word sequence shorter than the n-gram (the rolling formula, unvectorised)."""
    acc = np.uint64(0)
    for h in word_hashes:
        acc = acc * _GOLDEN + h
    return acc


def _word_mask(buf: np.ndarray) -> np.ndarray:
    """True at the UTF-8 bytes that belong to words (see the module docstring)."""
    mask = _WORD_BYTE[buf]
    if len(buf) > 1 and (buf[:-1] >= 0xC2).any():  # a non-ASCII character: look for punctuation and spaces
        second = buf[1:]
        lead = buf[:-1]
        two = np.flatnonzero((lead == 0xC2) & (second < 0xC0))  # U+0080-U+00BF
        three = np.flatnonzero(((lead == 0xE2) & ((second == 0x80) | (second == 0x81)))  # U+2000-U+207F ...
                               | ((lead == 0xE3) & (second == 0x80)))  # ... and U+3000-U+303F
        three = three[(buf[three] != 0xE2) | (buf[three + 1] == 0x80) | (buf[three + 2] < 0xB0)]  # not U+2070-207F
        for k in range(2):
            mask[two + k] = False
        for k in range(3):
            mask[three + k] = False
    return mask


def _word_hashes(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """uint64 hash of each word buf[starts[i]:ends[i]]: its first and last 8 bytes and its length, mixed. Exact
    (collision-free) for words of up to 16 bytes; for longer ones two words differing only in the middle collide,
    which at worst makes two rare shingles equal."""
    padded = np.concatenate([buf, np.zeros(8, dtype=np.uint8)])
    window = np.lib.stride_tricks.as_strided(padded, shape=(len(buf), 8), strides=(1, 1), writeable=False)
    length = ends - starts
    # Little-endian: a word's own bytes are the low ones of its 8-byte window; the mask clears the bytes after it.
    h = window[starts].view("<u8").ravel() & _LOW_BYTES[np.minimum(length, 8)]
    long = np.flatnonzero(length > 8)
    if len(long):
        h[long] ^= _splitmix64(window[ends[long] - 8].view("<u8").ravel())
    return _splitmix64(h + length.astype(np.uint64) * _LENGTH_MIX)


def unspaced_documents(texts: Sequence[str]) -> np.ndarray:
    """bool per text: cut into character n-grams (see the module docstring). ASCII texts are decided at C speed."""
    out = np.zeros(len(texts), dtype=bool)
    for i, t in enumerate(texts):
        if t and not t.isascii():
            visible = len(t) - t.count(" ") - t.count("\n")
            out[i] = len(_UNSPACED.findall(t)) >= UNSPACED_SHARE * max(1, visible)
    return out


def ngram_hashes(
    texts: Sequence[str], ngram: int, lowercase: bool = True, char_ngram: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hash every word n-gram of every text to uint64, for the whole batch at once.

    Returns (hashes, doc_offsets, word_counts): the n-grams of text i are hashes[doc_offsets[i]:doc_offsets[i+1]].
    A text with fewer than `ngram` words yields one hash of all its words (an empty text a fixed constant), so
    every text has at least one entry. With `char_ngram` > 0, texts in unspaced scripts (`unspaced_documents`) are
    cut into tokens of one character of those scripts and hashed as `char_ngram`-grams (their counts are tokens).
    """
    char = unspaced_documents(texts) if char_ngram else np.zeros(len(texts), dtype=bool)
    if not char.any():
        return _ngram_hashes(texts, ngram, lowercase, False)
    if char.all():
        return _ngram_hashes(texts, char_ngram, lowercase, True)
    groups = [np.flatnonzero(~char), np.flatnonzero(char)]
    parts = [_ngram_hashes([texts[i] for i in g], n, lowercase, c) for g, n, c in zip(groups, (ngram, char_ngram),
                                                                                      (False, True))]
    where = np.zeros((len(texts), 2), dtype=np.int64)  # (group, position in it) of every text
    for k, g in enumerate(groups):
        where[g] = np.stack([np.full(len(g), k), np.arange(len(g))], axis=1)
    pieces = [parts[k][0][parts[k][1][j] : parts[k][1][j + 1]] for k, j in where]
    counts = np.array([parts[k][2][j] for k, j in where], dtype=np.int64)
    sizes = np.array([len(p) for p in pieces], dtype=np.int64)
    return np.concatenate(pieces), np.concatenate([[0], np.cumsum(sizes)]), counts


def _unspaced_lead(buf: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """True at the first byte of every word character of an unspaced script: U+3040-U+9FFF (kana, CJK), U+F900-FAFF,
    U+0E00-0E7F (Thai), all 3 bytes long in UTF-8 (the CJK punctuation below U+3040 is no word byte anyway)."""
    lead = np.zeros(len(buf), dtype=bool)
    if len(buf) < 3:
        return lead
    first, second = buf[:-2], buf[1:-1]
    lead[:-2] = (((first >= 0xE3) & (first <= 0xE9)) | ((first == 0xEF) & (second >= 0xA4) & (second <= 0xAB))
                 | ((first == 0xE0) & ((second == 0xB8) | (second == 0xB9))))
    return lead & mask


def _ngram_hashes(texts: Sequence[str], ngram: int, lowercase: bool, char: bool) -> tuple[np.ndarray, np.ndarray,
                                                                                            np.ndarray]:
    """`ngram_hashes` for texts cut one way: words, or (`char`) words with every unspaced character alone."""
    with np.errstate(over="ignore"):  # all uint64 arithmetic here is deliberately modulo 2^64
        encoded = [((t.lower() if lowercase else t) if t else "").encode("utf-8") for t in texts]
        buf = np.frombuffer(b"\n".join(encoded), dtype=np.uint8)  # "\n" is no word byte: words never span texts
        doc_start = np.cumsum([0] + [len(e) + 1 for e in encoded[:-1]]) if encoded else np.zeros(0, np.int64)
        mask = _word_mask(buf)
        edges = np.flatnonzero(np.diff(mask.view(np.int8), prepend=np.int8(0), append=np.int8(0)))
        starts, ends = edges[0::2], edges[1::2]  # a word starts and ends at alternate edges
        if char:  # every unspaced character is a token: cut before it and after it, inside words
            lead = np.flatnonzero(_unspaced_lead(buf, mask))
            cut = np.zeros(len(buf) + 1, dtype=bool)  # marks, not sorting: linear in the batch's bytes
            cut[lead] = True
            cut[lead + 3] = True
            cut[1:-1] &= mask[1:] & mask[:-1]  # only inside a word: its edges are cut already
            cut[0] = cut[-1] = False
            start_mark, end_mark = cut.copy(), cut
            start_mark[starts] = True
            end_mark[ends] = True
            starts, ends = np.flatnonzero(start_mark), np.flatnonzero(end_mark)
        flat = _word_hashes(buf, starts, ends) if len(starts) else np.zeros(0, dtype=np.uint64)
        word_start = np.append(np.searchsorted(starts, doc_start), len(starts)).astype(np.int64)
        counts = np.diff(word_start)

        # Rolling combination of n consecutive words at every position; a window is kept if it ends inside its
        # document, which drops the last n - 1 positions of each (and every position of a shorter document).
        padded = np.concatenate([flat, np.zeros(ngram - 1, dtype=np.uint64)])
        rolled = np.zeros(len(flat), dtype=np.uint64)
        for k in range(ngram):  # loop over n-gram positions, not documents
            np.multiply(rolled, _GOLDEN, out=rolled)
            rolled += padded[k : k + len(flat)]
        valid = np.ones(len(flat), dtype=bool)
        for k in range(1, ngram):
            tail = word_start[1:] - k
            valid[tail[tail >= word_start[:-1]]] = False
        out = rolled[valid]
        short = np.flatnonzero(counts < ngram)  # rare: fewer words than the n-gram size, one shingle of them all
        if len(short):
            whole = [_combine(flat[word_start[i] : word_start[i + 1]]) if counts[i] else _EMPTY_SHINGLE for i in short]
            at = np.cumsum(np.maximum(counts - ngram + 1, 0))[short] - np.maximum(counts[short] - ngram + 1, 0)
            out = np.insert(out, at, np.array(whole, dtype=np.uint64))
        doc_offsets = np.concatenate([[0], np.cumsum(np.maximum(counts - ngram + 1, 1))])
        return out, doc_offsets, counts


# ------------------------------------------------------------------------------------------------------ minhash


def _permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients of h(x) = (a*x + b) mod 2^32, a odd: one bijection of 32-bit values per signature slot.

    Affine maps mod 2^32 are a weak family for structured keys, but the keys here are the top 32 bits of 64-bit
    shingle hashes, i.e. uniformly random: measured on random sets, the estimate is unbiased and its spread matches
    sqrt(J(1-J)/k) at J = 0.3-0.7 (as the Mersenne-prime family's does). In uint32 numpy multiplies and reduces in
    SIMD, ~3x faster per slot than the uint64 arithmetic a 2^31-1 modulus needs.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32) | np.uint32(1)
    b = rng.integers(0, 2**32, size=num_perm, dtype=np.uint64).astype(np.uint32)
    return a, b


def minhash_signatures(texts: Sequence[str], cfg: NearDedupConfig) -> np.ndarray:
    """MinHash signatures of word n-gram sets (character n-grams in unspaced scripts), (len(texts), num_perm) uint32.

    All shingles of the batch form one row; each chunk of it is broadcast against the permutation column to a
    (num_perm, shingles) matrix, and per-document minima are taken along the contiguous axis with
    `np.minimum.reduceat` (measured ~3x faster than reducing across rows), so there is no Python loop over
    documents or permutations.
    """
    a, b = _permutations(cfg.num_perm, cfg.seed)
    a, b = a[:, None], b[:, None]
    shingles, offsets, _ = ngram_hashes(texts, cfg.ngram, cfg.lowercase, cfg.char_ngram)
    x = (shingles >> _SHIFT_32).astype(np.uint32)
    sig = np.full((len(texts), cfg.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
    # One reused buffer, written in place: avoids allocating (and page-faulting) fresh temporaries per step.
    buf = np.empty((cfg.num_perm, min(_CHUNK_SHINGLES, len(shingles))), dtype=np.uint32)
    with np.errstate(over="ignore"):  # the multiply wraps modulo 2^32 on purpose
        for s in range(0, len(shingles), _CHUNK_SHINGLES):
            e = min(s + _CHUNK_SHINGLES, len(shingles))
            y = buf[:, : e - s]
            np.multiply(a, x[s:e], out=y)
            y += b
            # Documents overlapping this chunk, and where each starts inside it (every doc has >= 1 shingle).
            d0 = int(np.searchsorted(offsets, s, side="right")) - 1
            d1 = int(np.searchsorted(offsets, e, side="left"))
            starts = np.maximum(offsets[d0:d1], s) - s
            np.minimum(sig[d0:d1], np.minimum.reduceat(y, starts, axis=1).T, out=sig[d0:d1])
    return sig


# --------------------------------------------------------------------------------------------- LSH + clustering


def band_keys(sig: np.ndarray, rows: int) -> np.ndarray:
    """One uint64 key per (band, document) of `sig`'s columns taken `rows` at a time: shape (bands, n). Equal bands
    give equal keys; a 64-bit collision between different bands is ~n^2 / 2^64 likely, and verification would reject
    it anyway. The near pass gives each task the columns of its group of bands."""
    keys = np.zeros((sig.shape[1] // rows, sig.shape[0]), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for r in range(rows):  # loop over rows of a band; vectorised over bands and documents
            keys = keys * _GOLDEN + sig[:, r::rows].T.astype(np.uint64)
    return _splitmix64(keys)


def _bucket_pairs(band_key: np.ndarray) -> np.ndarray:
    """Pair codes i * n + j (i < j) for one band: every pair inside buckets of up to _ALL_PAIRS_BUCKET members,
    each member with the first and with its predecessor in larger buckets."""
    n = len(band_key)
    order = np.argsort(band_key, kind="stable")  # stable: each bucket lists its indices ascending, so i < j
    sorted_keys = band_key[order]
    new = np.concatenate([[True], sorted_keys[1:] != sorted_keys[:-1]])
    if new.all():
        return np.zeros(0, dtype=np.int64)
    pos = np.arange(n)
    first = np.maximum.accumulate(np.where(new, pos, 0))  # position of each member's bucket's first member
    rank = pos - first  # members before this one in its bucket
    size = np.diff(np.append(np.flatnonzero(new), n))[np.cumsum(new) - 1]
    small = size <= _ALL_PAIRS_BUCKET
    m = np.where(small, rank, 0)  # a member of a small bucket pairs with every earlier member
    later = np.repeat(pos, m)
    earlier = np.repeat(first, m) + (np.arange(int(m.sum())) - np.repeat(np.cumsum(m) - m, m))
    big = np.flatnonzero(~small & (rank > 0))
    i = np.concatenate([order[earlier], order[first[big]], order[big - 1]]).astype(np.int64)
    j = np.concatenate([order[later], order[big], order[big]]).astype(np.int64)
    return np.unique(i * n + j)


def candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """Unique (i, j), i < j, pairs sharing at least one band bucket, shape (m, 2), from `band_keys` (bands, n): all
    bands, or one task's group.

    Every pair of a bucket is compared when buckets are small, as they are when pages only share a template: a
    copy and its original may sit in a bucket with unrelated pages between them. A bucket of over
    _ALL_PAIRS_BUCKET members is chained (2 * (size - 1) pairs instead of size^2 / 2), so 100k copies of one
    boilerplate page stay linear.
    """
    n = max(keys.shape[1], 1)
    per_band = [_bucket_pairs(band_key) for band_key in keys]
    codes = np.unique(np.concatenate(per_band)) if per_band else np.zeros(0, dtype=np.int64)
    return np.stack([codes // n, codes % n], axis=1)


def near_pairs(keys: np.ndarray, signatures_of: Callable[[np.ndarray], np.ndarray], cfg: NearDedupConfig) -> np.ndarray:
    """The near pass's task: candidate pairs over its `band_keys` (bands, n), verified on the full signatures when
    `cfg.verify` (`signatures_of(rows)` reads only the rows a pair names). Indices are columns of `keys`."""
    pairs = candidate_pairs(keys)
    return verified_pairs(pairs, signatures_of, cfg.threshold) if cfg.verify else pairs


def verified_pairs(pairs: np.ndarray, signatures_of: Callable[[np.ndarray], np.ndarray],
                   threshold: float) -> np.ndarray:
    """The pairs whose estimated Jaccard reaches `threshold`; `signatures_of(rows)` gives the full signatures of the
    (sorted) rows the pairs name, so only those are read (from a memory map, say)."""
    if not len(pairs):
        return pairs
    members = np.unique(pairs)
    compact = np.searchsorted(members, pairs)
    return pairs[estimated_jaccard(signatures_of(members), compact) >= threshold]


def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Fraction of equal signature slots for each pair: an unbiased estimate of their Jaccard similarity."""
    out = np.empty(len(pairs), dtype=np.float64)
    for s in range(0, len(pairs), chunk):  # bounds the (pairs x num_perm) comparison matrix
        p = pairs[s : s + chunk]
        out[s : s + chunk] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


def connected_components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Label each of n nodes with the lowest index in its connected component (vectorised union-find).

    Alternates hooking (each edge pulls both ends' labels down to the smaller one) with pointer jumping
    (label = label of label) until nothing changes: O(log n) rounds of numpy work instead of a Python loop per edge.
    Labels only ever decrease and always name a node of the same component, so at the fixed point every node
    carries its component's minimum.
    """
    labels = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return labels
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        low = np.minimum(labels[i], labels[j])
        new = labels.copy()
        np.minimum.at(new, i, low)
        np.minimum.at(new, j, low)
        while True:  # compress paths fully before the next hooking round
            jumped = new[new]
            if np.array_equal(jumped, new):
                break
            new = jumped
        if np.array_equal(new, labels):
            return labels
        labels = new


def near_duplicate_clusters(signatures: Any, cfg: NearDedupConfig) -> tuple[np.ndarray, list[int]]:
    """Cluster near-duplicate documents from their MinHash signatures.

    LSH band buckets give candidate pairs; with `cfg.verify` a pair is kept only if its estimated Jaccard is at
    least `cfg.threshold`; connected components of the kept pairs are the clusters. Returns (cluster id per
    document = lowest index in its cluster, indices to drop = every member but that lowest one).
    `signatures` is a (n, num_perm) array (a memory map, say) or a list of per-document arrays.
    """
    sig = np.asarray(signatures, dtype=np.uint32)
    if sig.size == 0:
        return np.zeros(0, dtype=np.int64), []
    if sig.ndim != 2 or sig.shape[1] != cfg.num_perm:
        raise ValueError(f"near dedup: expected signatures of shape (n, {cfg.num_perm}), got {sig.shape}")
    pairs = near_pairs(band_keys(sig, cfg.rows), lambda rows: sig[rows], cfg)
    cluster = connected_components(len(sig), pairs)
    return cluster, np.flatnonzero(cluster != np.arange(len(sig))).tolist()
