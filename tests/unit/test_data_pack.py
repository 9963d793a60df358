"""Packers (concat-and-chunk, best-fit), the fast byte-level BPE encoder, and the unigram baseline from counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_llm.config import ModelConfig, TokenizerConfig
from hf_llm.data.pack import (
    IGNORE_INDEX,
    BestFitPacker,
    ConcatPacker,
    pack_ids,
    unigram_cross_entropy_from_counts,
)
from hf_llm.data.tokenizer import BatchEncoder, train_bpe_tokenizer
from hf_llm.model import build_model, build_model_config
from hf_llm.train.collate import PackedCollator

from ..conftest import sample_documents

EOS, PAD = 1, 0


def documents(seed: int, n: int, low: int = 2, high: int = 40) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.append(rng.integers(2, 100, rng.integers(low, high)), EOS).astype(np.uint16) for _ in range(n)]


def feed(packer, docs: list[np.ndarray], batch: int) -> dict[str, np.ndarray]:
    parts = []
    for s in range(0, len(docs), batch):
        chunk = docs[s : s + batch]
        parts.append(packer.add(np.concatenate(chunk), np.array([len(d) for d in chunk])))
    parts.append(packer.finish())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_concat_packer_is_pack_ids_whatever_the_batches():
    docs = documents(0, 200)
    flat = np.concatenate(docs)
    expected, leftover = pack_ids(flat, 16, np.dtype(np.uint16))
    for batch in (1, 7, 200):
        packer = ConcatPacker(16, np.uint16)
        assert np.array_equal(feed(packer, docs, batch)["input_ids"], expected)
        assert packer.stats["tokens_dropped_at_end"] == leftover and packer.stats["tokens"] == len(flat)
    ends = np.cumsum([len(d) for d in docs])
    assert packer.stats["documents_split"] == int((((ends - [len(d) for d in docs]) // 16) != ((ends - 1) // 16)).sum())


def test_best_fit_keeps_documents_whole_and_isolated():
    seq_len = 48
    docs = documents(1, 300, high=70)  # some longer than a block
    out = [feed(BestFitPacker(seq_len, 64, PAD, 100), docs, b) for b in (1, 13, 300)]
    for other in out[1:]:
        assert all(np.array_equal(out[0][k], other[k]) for k in out[0])  # batch boundaries do not matter
    ids, pos, labels = out[0]["input_ids"], out[0]["position_ids"].astype(int), out[0]["labels"].astype(int)
    pieces = []
    for r in range(len(ids)):
        starts = np.flatnonzero(pos[r] == 0).tolist() + [seq_len]
        for s, e in zip(starts[:-1], starts[1:]):
            assert np.array_equal(pos[r, s:e], np.arange(e - s))
            assert labels[r, s] == IGNORE_INDEX  # no target across a document boundary
            if ids[r, s] == PAD:  # padding: one segment at the end, never a target
                assert e == seq_len and (ids[r, s:e] == PAD).all() and (labels[r, s:e] == IGNORE_INDEX).all()
            else:
                assert np.array_equal(labels[r, s + 1 : e], ids[r, s + 1 : e])
                pieces.append(ids[r, s:e])
    # every short document appears whole in exactly one block; long ones as block-sized pieces plus a tail
    whole = sorted(tuple(d) for d in docs if len(d) <= seq_len)
    found = sorted(tuple(p) for p in pieces if p[-1] == EOS and tuple(p) in set(whole))
    assert found == whole
    assert sum(len(p) for p in pieces) == sum(len(d) for d in docs)
    packer = BestFitPacker(seq_len, 64, PAD, 100)
    feed(packer, docs, 50)
    assert packer.stats["padding_tokens"] == int((ids == PAD).sum())
    assert packer.stats["documents_split"] == sum(len(d) > seq_len for d in docs)


def test_best_fit_block_through_the_model_isolates_documents_and_padding():
    torch.manual_seed(0)
    config = build_model_config(ModelConfig(preset="tiny", overrides={
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100}))
    config.eos_token_id = EOS
    model = build_model(config, attn_implementation="sdpa").eval()
    docs = [d for d in documents(2, 6, low=5, high=14)]
    block = BestFitPacker(64, 10, PAD, 100)
    out = feed(block, docs, 10)
    assert len(out["input_ids"]) == 1 and (out["input_ids"][0] == PAD).any()
    batch = PackedCollator(EOS, PAD)([{k: v[0].tolist() for k, v in out.items()}])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        pos = batch["position_ids"][0]
        starts = torch.nonzero(pos == 0).flatten().tolist() + [64]
        for s, e in zip(starts[:-1], starts[1:]):
            if batch["input_ids"][0, s] == PAD:
                continue
            alone = model(input_ids=batch["input_ids"][:, s:e], use_cache=False).logits[0]
            assert (logits[s:e] - alone).abs().max() <= 1e-4
        loss = model(**batch, use_cache=False).loss
        noisy = dict(batch, input_ids=batch["input_ids"].clone())
        pad = noisy["input_ids"] == PAD
        noisy["input_ids"][pad] = torch.randint(2, 100, (int(pad.sum()),))
        assert torch.allclose(model(**noisy, use_cache=False).loss, loss)  # padding never reaches the loss


def test_batch_encoder_matches_the_tokenizer():
    texts = [d["text"] for d in sample_documents(40)]
    tok = train_bpe_tokenizer(texts, TokenizerConfig(vocab_size=400))
    enc = BatchEncoder(tok)
    assert enc.fast
    tricky = ["\x1c\x1d a\x1fb", "  \u3000x", "a\u2029\u2029b", "😀😀!!", "ⅷ Ⅷ ² x²", "'S 'll 'LL", "tab\t",
              "\r\n\r\n", "", " ", "<|endoftext|> stays text", "naïve café — “quotes”"]
    flat, lengths = enc.encode_flat(texts + tricky)
    ids = [a.tolist() for a in np.split(flat, np.cumsum(lengths)[:-1])]
    assert ids == tok(texts + tricky, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def test_unigram_from_counts_matches_ids():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 50, 1000), rng.integers(0, 50, 300)
    p = (np.bincount(a, minlength=50) + 1) / (len(a) + 50)  # add-one smoothing over the 50 ids
    assert unigram_cross_entropy_from_counts(np.bincount(a, minlength=50), np.bincount(b, minlength=50)) == \
        pytest.approx(-np.log(p[b]).mean())
