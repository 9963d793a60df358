"""SFT train/validation split with several sources: validation examples never reach training, also when sources
are upsampled to their weight and when examples are packed into rows."""

import json
from pathlib import Path

import pytest

from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.sft import SFTConfig, build_sft_datasets, complete_tokenizer, validation_counts
from hf_llm.train.collate import IGNORE_INDEX


def _rows(tag: str, n: int) -> list[dict]:
    # Distinct prompts and answers, so equal input_ids mean the same example, never a coincidence.
    return [{"prompt": f"Question {tag} {i}?", "completion": f"Answer {tag} {i}."} for i in range(n)]


@pytest.fixture(scope="module")
def tok():
    texts = [r["prompt"] + " " + r["completion"] for r in _rows("small", 20) + _rows("large", 200)]
    t = train_bpe_tokenizer(texts * 2, TokenizerConfig(vocab_size=320, min_frequency=2))
    complete_tokenizer(t, SFTConfig().chat_template)
    return t


def _sources(tmp_path: Path, fraction: float = 0.1, max_docs: int = 200) -> DataConfig:
    paths = []
    for tag, n in (("small", 20), ("large", 200)):
        path = tmp_path / f"{tag}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _rows(tag, n)))
        paths.append(path)
    # 1:1 weights: the 20-example source is repeated ~5 times to match the 200-example one.
    return DataConfig(sources=[SourceConfig(path=str(p), weight=1.0) for p in paths],
                      validation_fraction=fraction, max_validation_documents=max_docs)


def _examples(ds) -> list[tuple[int, ...]]:
    return [tuple(ids) for ids in ds["input_ids"]]


def _examples_in_rows(ds) -> list[tuple[int, ...]]:
    """The examples packed into rows: position ids restart at each one; the padding tail has no target."""
    found = []
    for ids, labels, pos in zip(ds["input_ids"], ds["labels"], ds["position_ids"]):
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(pos)]
        for a, b in zip(starts, starts[1:]):
            if any(t != IGNORE_INDEX for t in labels[a:b]):
                found.append(tuple(ids[a:b]))
    return found


def test_upsampled_source_does_not_leak_validation_into_training(tok, tmp_path):
    data = build_sft_datasets(_sources(tmp_path), SFTConfig(max_length=64), tok)
    train, validation = _examples(data.train), _examples(data.validation)
    leaked = set(validation) & set(train)
    assert not leaked, f"{len(leaked)} of {len(set(validation))} validation examples are also in training"
    assert len(validation) == len(set(validation))  # held out once each, never repeated
    texts = [tok.decode(ids) for ids in train]
    n_small = sum("Question small" in t for t in texts)
    assert abs(n_small - len(train) / 2) <= 1, (n_small, len(train))  # still 1:1 in training
    assert any("Question small" in tok.decode(ids) for ids in validation)  # both sources are validated
    assert any("Question large" in tok.decode(ids) for ids in validation)


def test_packed_rows_do_not_leak_validation_into_training(tok, tmp_path):
    data = build_sft_datasets(_sources(tmp_path), SFTConfig(max_length=64, packing=True), tok)
    train, validation = _examples_in_rows(data.train), _examples_in_rows(data.validation)
    assert validation and train
    leaked = set(validation) & set(train)
    assert not leaked, f"{len(leaked)} of {len(set(validation))} packed validation examples are also in training rows"
    assert len(validation) == len(set(validation))


def test_max_validation_documents_caps_the_whole_validation_set(tok, tmp_path):
    data = build_sft_datasets(_sources(tmp_path, fraction=0.5, max_docs=6), SFTConfig(max_length=64), tok)
    assert len(data.validation) == 6
    assert not set(_examples(data.validation)) & set(_examples(data.train))


@pytest.mark.parametrize("sizes, weights, fraction, cap, expected", [
    ([6, 6], [3.0, 1.0], 0.25, 200, [2, 1]),  # validation follows the mixture (9:3 of 12)
    ([20, 200], [1.0, 1.0], 0.1, 200, [2, 11]),  # the small source holds out no more than its own tenth
    ([20, 200], [1.0, 1.0], 0.5, 6, [3, 3]),  # the cap applies to the whole set, shared by the mixture
    ([1, 9], [1.0, 1.0], 0.5, 200, [0, 2]),  # a one-example source keeps its example for training
])
def test_validation_counts(sizes, weights, fraction, cap, expected):
    assert validation_counts(sizes, weights, fraction, cap) == expected
