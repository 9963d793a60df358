"""Exact and near (MinHash/LSH) deduplication: correctness of each piece and quality on a planted corpus."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from hf_llm.config import ConfigError
from hf_llm.data.dedup import (
    DedupConfig,
    NearDedupConfig,
    connected_components,
    deduplicate,
    estimated_jaccard,
    exact_hash_batch,
    find_exact_duplicates,
    minhash_batch,
    minhash_signatures,
    near_duplicate_clusters,
    ngram_hashes,
)

# ------------------------------------------------------------------------------------------- synthetic corpus


def make_vocab(rng: np.random.Generator, size: int = 3000) -> list[str]:
    """English-like words: 1-3 consonant-vowel syllables, optionally closed by a consonant."""
    cons, vows = list("bcdfghklmnprstvwz"), ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
    words: set[str] = set()
    while len(words) < size:
        n = rng.integers(1, 4)
        w = "".join(rng.choice(cons) + rng.choice(vows) for _ in range(n))
        words.add(w + (rng.choice(cons) if rng.random() < 0.5 else ""))
    return sorted(words)


def replace_span(rng: np.random.Generator, words: list[str], vocab: list[str], frac: float) -> list[str]:
    """Replace one contiguous run of round(frac * len) words, like an edited sentence or a changed footer."""
    out = list(words)
    k = max(1, round(frac * len(out)))
    start = int(rng.integers(0, len(out) - k + 1))
    out[start : start + k] = rng.choice(vocab, size=k).tolist()
    return out


@dataclass
class Corpus:
    texts: list[str]
    exact_pairs: list[tuple[int, int]]  # (first occurrence, later planted exact copy) in corpus order
    near_pairs: list[tuple[int, int]]  # (first occurrence, later planted near copy): ~5% of words changed
    related: list[int]  # the later member of pairs sharing ~75% of their text: J ~ 0.6, NOT near duplicates


def make_corpus(seed: int = 0, n_base: int = 1800, n_each: int = 100) -> Corpus:
    """~2,000 docs of 100-300 words with planted exact copies, near copies and related (below-threshold) pairs."""
    rng = np.random.default_rng(seed)
    vocab = make_vocab(rng)
    base = [rng.choice(vocab, size=int(rng.integers(100, 301))).tolist() for _ in range(n_base)]
    docs = [" ".join(w) for w in base]
    kinds = []  # (original base index, kind) for each planted document, appended after the originals
    for i in range(n_each):
        w = base[i]
        if i % 2:  # half the exact copies differ only in case and whitespace, which normalisation removes
            docs.append("  ".join(w).upper() + "\n")
        else:
            docs.append(" ".join(w))
        kinds.append((i, "exact"))
    for i in range(n_each, 2 * n_each):
        docs.append(" ".join(replace_span(rng, base[i], vocab, 0.05)))
        kinds.append((i, "near"))
    for i in range(2 * n_each, 3 * n_each):
        docs.append(" ".join(replace_span(rng, base[i], vocab, 0.25)))
        kinds.append((i, "related"))
    # Shuffle so copies can come before their originals: the later one of each pair is the one to drop.
    order = rng.permutation(len(docs))
    pos = np.empty_like(order)
    pos[order] = np.arange(len(order))
    pairs: dict[str, list[tuple[int, int]]] = {"exact": [], "near": [], "related": []}
    for j, (orig, kind) in enumerate(kinds):
        a, b = int(pos[orig]), int(pos[n_base + j])
        pairs[kind].append((min(a, b), max(a, b)))
    return Corpus([docs[k] for k in order], pairs["exact"], pairs["near"], [b for _, b in pairs["related"]])


def recall_precision(flagged: set[int], planted: set[int]) -> tuple[float, float]:
    """recall = planted duplicates flagged / planted; precision = flagged docs that are planted copies / flagged."""
    hit = len(flagged & planted)
    return hit / len(planted), (hit / len(flagged) if flagged else 1.0)


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    return make_corpus()


# -------------------------------------------------------------------------------------------------- config


def test_bands_times_rows_must_equal_num_perm():
    with pytest.raises(ConfigError, match="bands \\* rows must equal num_perm"):
        NearDedupConfig(num_perm=128, bands=10, rows=8)
    assert NearDedupConfig(num_perm=64, bands=8, rows=8).num_perm == 64


def test_config_is_an_omegaconf_structured_config():
    cfg = OmegaConf.merge(OmegaConf.structured(DedupConfig), {"near": {"threshold": 0.7}})
    assert OmegaConf.to_object(cfg) == DedupConfig(near=NearDedupConfig(threshold=0.7))
    with pytest.raises(ConfigError, match="bands \\* rows"):  # validation also runs on a merged YAML value
        OmegaConf.to_object(OmegaConf.merge(cfg, {"near": {"num_perm": 256}}))


# --------------------------------------------------------------------------------------------------- exact


def test_exact_hash_is_stable_and_normalised():
    out = exact_hash_batch({"text": ["Hello   World\n", "hello world", "hello  world!", "", None]})["exact_hash"]
    assert out[0] == out[1] == hashlib.blake2b(b"hello world", digest_size=16).hexdigest()  # no per-process salt
    assert out[2] != out[0]  # punctuation is content for exact dedup
    assert out[3] == out[4]  # empty and missing text hash alike and do not crash


def test_find_exact_duplicates_keeps_first_occurrence():
    cluster, drop = find_exact_duplicates(["a", "b", "a", "b", "c", "a"])
    assert cluster.tolist() == [0, 1, 0, 1, 4, 0]
    assert drop == [2, 3, 5]
    cluster, drop = find_exact_duplicates([])
    assert len(cluster) == 0 and drop == []


def test_exact_dedup_quality(corpus: Corpus):
    hashes = exact_hash_batch({"text": corpus.texts})["exact_hash"]
    cluster, drop = find_exact_duplicates(hashes)
    recall, precision = recall_precision(set(drop), {b for _, b in corpus.exact_pairs})
    print(f"exact: recall={recall:.3f} precision={precision:.3f}")
    assert recall >= 0.95 and precision >= 0.99
    for first, later in corpus.exact_pairs:  # the copy joins the first occurrence's cluster, which is kept
        assert cluster[later] == cluster[first] == first


# ---------------------------------------------------------------------------------------------------- near


def test_short_and_empty_documents_get_a_signature():
    cfg = NearDedupConfig()
    sig = minhash_signatures(["", "", "a b", "A, b!", "one two three four five six"], cfg)
    assert sig.shape == (5, 128) and sig.dtype == np.uint32
    assert (sig[0] == sig[1]).all()  # two empty texts are duplicates of each other
    assert (sig[2] == sig[3]).all()  # fewer words than the n-gram: the whole doc is one shingle; case/punct ignored
    assert (sig[2] != sig[0]).any() and (sig[2] != sig[4]).any()
    cluster, drop = near_duplicate_clusters(sig, cfg)
    assert cluster.tolist() == [0, 0, 2, 2, 4] and drop == [1, 3]


def test_signature_matches_naive_minhash_and_does_not_depend_on_the_batch():
    cfg = NearDedupConfig(num_perm=32, bands=4, rows=8, ngram=3)
    rng = np.random.default_rng(1)
    long_doc = " ".join(f"w{i}" for i in rng.integers(0, 500, size=1500))  # spans several internal chunks
    texts = ["the quick brown fox jumps", long_doc, "x y"]
    sig = minhash_signatures(texts, cfg)
    # Naive reference: one permutation at a time, with Python integers.
    a_b = np.random.default_rng(cfg.seed)
    a = a_b.integers(1, 2**31 - 1, size=32, dtype=np.uint64)
    b = a_b.integers(0, 2**31 - 1, size=32, dtype=np.uint64)
    hashes, offsets, _ = ngram_hashes(texts, 3)
    for d in range(len(texts)):
        xs = [int(h) % (2**31 - 1) for h in hashes[offsets[d] : offsets[d + 1]]]
        ref = [min((int(a[k]) * x + int(b[k])) % (2**31 - 1) for x in xs) for k in range(32)]
        assert sig[d].tolist() == ref
    alone = minhash_batch({"text": [long_doc]}, cfg)["minhash"][0]
    assert (alone == sig[1]).all()


def test_estimated_jaccard_tracks_true_jaccard():
    rng = np.random.default_rng(2)
    vocab = make_vocab(rng, 2000)
    cfg = NearDedupConfig(num_perm=256, bands=32, rows=8)
    errors = []
    for frac in (0.05, 0.2, 0.5):
        w = rng.choice(vocab, size=300).tolist()
        v = replace_span(rng, w, vocab, frac)
        sa, sb = ({tuple(x[i : i + 5]) for i in range(len(x) - 4)} for x in (w, v))
        true = len(sa & sb) / len(sa | sb)
        est = estimated_jaccard(minhash_signatures([" ".join(w), " ".join(v)], cfg), np.array([[0, 1]]))[0]
        errors.append(abs(est - true) / np.sqrt(true * (1 - true) / cfg.num_perm))
    assert max(errors) < 4  # within 4 standard errors of the MinHash estimator


def test_clusters_are_transitive_and_keep_the_lowest_index():
    cfg = NearDedupConfig()
    s = np.random.default_rng(3).integers(0, 2**31 - 1, size=(6, 128), dtype=np.uint32)
    s[4] = s[1]  # 1 ~ 4
    s[5] = s[4]  # 4 ~ 5, so 1, 4, 5 form one cluster
    s[3, :120] = s[0, :120]  # 0 ~ 3 at estimated J = 120/128 = 0.94
    cluster, drop = near_duplicate_clusters(list(s), cfg)  # a column of per-document arrays is accepted
    assert cluster.tolist() == [0, 1, 2, 0, 1, 1]
    assert drop == [3, 4, 5]


def test_huge_bucket_stays_linear():
    # 20,000 copies of one boilerplate page share every bucket: pairs must grow linearly, not quadratically.
    cfg = NearDedupConfig()
    sig = np.tile(np.arange(128, dtype=np.uint32), (20_000, 1))
    cluster, drop = near_duplicate_clusters(sig, cfg)
    assert (cluster == 0).all() and len(drop) == 19_999


def test_connected_components_matches_brute_force():
    rng = np.random.default_rng(4)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        pairs = np.sort(rng.integers(0, n, size=(int(rng.integers(0, 50)), 2)), axis=1)
        parent = list(range(n))

        def root(x: int) -> int:
            while parent[x] != x:
                x = parent[x]
            return x

        for i, j in pairs:
            ri, rj = root(int(i)), root(int(j))
            parent[max(ri, rj)] = min(ri, rj)
        assert connected_components(n, pairs).tolist() == [root(x) for x in range(n)]


def test_near_dedup_quality(corpus: Corpus):
    # As in the pipeline, near dedup runs on what exact dedup kept.
    _, exact_drop = find_exact_duplicates(exact_hash_batch({"text": corpus.texts})["exact_hash"])
    survivors = np.setdiff1d(np.arange(len(corpus.texts)), exact_drop)
    # The default threshold (0.75): these copies have true J 0.83-0.88 (one 5% span on 100-300 words), within 1-2
    # standard errors (0.035 at 128 permutations) of 0.8, so at 0.8 recall would be a coin toss for short docs.
    cfg = NearDedupConfig()
    assert cfg.threshold == 0.75
    sig = minhash_signatures([corpus.texts[i] for i in survivors], cfg)
    cluster, drop = near_duplicate_clusters(sig, cfg)
    flagged = set(survivors[drop].tolist())
    recall, precision = recall_precision(flagged, {b for _, b in corpus.near_pairs})
    print(f"near: recall={recall:.3f} precision={precision:.3f} flagged={len(flagged)}")
    assert recall >= 0.95 and precision >= 0.99
    assert not flagged & set(corpus.related)  # J ~ 0.6 pairs are related documents, not near duplicates
    where = {int(doc): k for k, doc in enumerate(survivors)}
    for first, later in corpus.near_pairs:
        if later in flagged:  # the copy is clustered with the first occurrence, which is kept
            assert cluster[where[later]] == where[first] and first not in flagged
    # Without verification, LSH alone also merges some related pairs: verification is what keeps precision.
    unverified = NearDedupConfig(threshold=0.75, verify=False)
    _, drop_unverified = near_duplicate_clusters(sig, unverified)
    assert set(survivors[drop_unverified].tolist()) & set(corpus.related)


def test_deduplicate_dataset_keeps_first_rows_in_order():
    words = " ".join(f"w{i}" for i in range(200))
    near = words.replace("w100 w101 w102", "x y z")  # 3 of 200 words changed: J ~ 0.93
    ds = Dataset.from_dict({"text": [words, "other text entirely here", words.upper(), near, ""], "id": list(range(5))})
    out, stats = deduplicate(ds, DedupConfig(), batch_size=2)
    assert out["id"] == [0, 1, 4]
    assert stats == {"documents": 5, "exact_removed": 1, "near_removed": 1}
