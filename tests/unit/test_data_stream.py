"""Streaming pretraining data (data.stream_train): split by node and exact skip. (A streamed run resumed, bit for bit,
on 1 and 2 processes: tests/matrix/test_resume_matrix.py.)"""

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig, load_config
from hf_llm.errors import ConfigError
from hf_llm.data.stream import (
    batched_train_stream,
    is_validation,
    stream_documents,
    train_blocks,
    train_documents,
    usable_texts,
)
from hf_llm.data.tokenizer import load_tokenizer, train_bpe_tokenizer
from hf_llm.pretrain import run_pretraining
from hf_llm.train.collate import PackedCollator

from ..conftest import sample_documents, tiny_overrides


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory) -> Path:
    """16 real documents cut to 200 characters: about a dozen 64-token blocks. Shared by the module: read only."""
    path = tmp_path_factory.mktemp("stream") / "short.jsonl"
    path.write_text("".join(json.dumps({"text": d["text"][:200]}) + "\n" for d in sample_documents(16)))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(short_corpus: Path) -> Path:
    texts = [json.loads(line)["text"] for line in short_corpus.read_text().splitlines()]
    out = short_corpus.parent / "tokenizer"
    train_bpe_tokenizer(texts, TokenizerConfig(vocab_size=400)).save_pretrained(str(out))
    return out


def _data(corpus: Path, **kw) -> DataConfig:
    return DataConfig(sources=[SourceConfig(path=str(corpus))], seq_len=64, validation_fraction=0.3, **kw)


@pytest.mark.parametrize("files", [1, 2])  # one file: every other document; two: one file per node
def test_nodes_see_disjoint_documents_whose_union_is_the_training_set(tmp_path, short_corpus, files):
    lines = short_corpus.read_text().splitlines()
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(files):
        (folder / f"part-{i}.jsonl").write_text("\n".join(lines[i::files]) + "\n")
    data = _data(folder)
    nodes = [list(usable_texts(train_documents(data, rank, 2), 0.3, validation=False)) for rank in (0, 1)]
    everything = [r["text"] for r in stream_documents(data)]
    train = [t for t in everything if not is_validation(t, 0.3)]
    assert nodes[0] and nodes[1] and not set(nodes[0]) & set(nodes[1])
    assert Counter(nodes[0] + nodes[1]) == Counter(train)
    assert 0 < len(train) < len(everything)  # some documents are held out, and never trained on


def test_skipping_blocks_continues_exactly(short_corpus, tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    data = _data(short_corpus)
    whole = list(train_blocks(data, tok, 0, 1))
    assert len(whole) > 5
    for k in (0, 1, 5, len(whole)):
        rest = list(train_blocks(data, tok, 0, 1, skip=k))
        assert len(rest) == len(whole) - k
        assert all(np.array_equal(a["input_ids"], b["input_ids"]) for a, b in zip(rest, whole[k:]))
    open_epoch = batched_train_stream(data, tok, 0, 1, 2, PackedCollator(tok.eos_token_id, tok.pad_token_id))
    batches = list(open_epoch(0, 0))
    assert len(batches) == len(whole) // 2
    resumed = list(open_epoch(0, 2))
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(resumed, batches[2:], strict=True))


def test_streaming_needs_a_tokenizer(tmp_path, short_corpus):
    with pytest.raises(ConfigError, match="needs tokenizer.name_or_path"):
        run_pretraining(load_config(None, tiny_overrides(tmp_path / "o", short_corpus, "data.stream_train=true")))
