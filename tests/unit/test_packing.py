import numpy as np
import pytest
import torch

from hf_llm.config import ModelConfig, TokenizerConfig
from hf_llm.data.pack import pack_ids, unigram_cross_entropy_from_counts
from hf_llm.data.steps import tokenize_batch
from hf_llm.data.tokenizer import BatchEncoder, train_bpe_tokenizer
from hf_llm.model import build_model, build_model_config
from hf_llm.train.collate import IGNORE_INDEX, PackedCollator, document_position_ids

EOS = 1


def test_position_ids_restart_after_eos():
    ids = torch.tensor([[5, 6, EOS, 7, 8, 9, EOS, 4], [EOS, 3, 3, EOS, EOS, 2, 2, 2]])
    assert document_position_ids(ids, EOS).tolist() == [[0, 1, 2, 0, 1, 2, 3, 0], [0, 0, 1, 2, 0, 0, 1, 2]]


def test_labels_skip_cross_document_targets():
    batch = PackedCollator(EOS)([{"input_ids": [5, 6, EOS, 7, 8, EOS]}])
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 6, EOS, IGNORE_INDEX, 8, EOS]]


def test_pack_keeps_all_tokens_in_order():
    flat = np.arange(10)
    blocks, leftover = pack_ids(flat, 4, np.dtype(np.int32))
    assert blocks.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]] and leftover == 2


def test_tokenize_appends_eos_and_keeps_literal_separator_as_text():
    tok = train_bpe_tokenizer(["hello world. " * 20, "more text here"], TokenizerConfig(vocab_size=300))
    out = tokenize_batch(["hello <|endoftext|> world"], [None], [0], BatchEncoder(tok), np.ones(1, dtype=bool),
                         tok.eos_token_id, None, len(tok))["input_ids"][0].tolist()
    assert out[-1] == tok.eos_token_id and out.count(tok.eos_token_id) == 1


def test_unigram_cross_entropy_of_uniform_stream():
    ids = np.repeat(np.arange(4), 1000)
    counts = np.bincount(ids, minlength=4)
    assert unigram_cross_entropy_from_counts(counts, counts) == pytest.approx(np.log(4), rel=1e-3)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_block_logits_equal_documents_alone(attn):
    torch.manual_seed(0)
    config = build_model_config(ModelConfig(preset="tiny", overrides={
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 100}))
    config.eos_token_id = EOS
    model = build_model(config, attn_implementation=attn).eval()
    gen = torch.Generator().manual_seed(1)
    docs = [torch.cat([torch.randint(2, 100, (n,), generator=gen), torch.tensor([EOS])]) for n in (7, 12, 4, 9)]
    block = torch.cat(docs)[None]
    batch = PackedCollator(EOS)([{"input_ids": block[0]}])
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        start = 0
        for doc in docs:
            alone = model(input_ids=doc[None], use_cache=False).logits[0]
            diff = (packed[start:start + len(doc)] - alone).abs().max().item()
            assert diff <= 1e-4, f"document at {start} sees other documents ({attn}): max diff {diff}"
            start += len(doc)
