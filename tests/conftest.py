"""Shared fixtures: offline mode, a small real-text corpus, tiny model configs, clean accelerate state."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "corpus.jsonl.gz"

# A model small enough that a training step takes milliseconds.
TINY_MODEL = [
    "model.overrides.hidden_size=32",
    "model.overrides.intermediate_size=64",
    "model.overrides.num_hidden_layers=2",
    "model.overrides.num_attention_heads=4",
    "model.overrides.num_key_value_heads=2",
]


def sample_documents(n: int, source: str | None = None) -> list[dict]:
    docs = []
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if source is None or doc["source"] == source:
                docs.append(doc)
            if len(docs) >= n:
                break
    return docs


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """120 real documents from the bundled corpus as a jsonl file (about 350 KB)."""
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in sample_documents(120)))
    return path


def tiny_overrides(out: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={out}",
        f"data.sources=[{{path: '{corpus}'}}]",
        "data.seq_len=64",
        "tokenizer.vocab_size=512",
        "train.micro_batch_size=4",
        "train.max_steps=6",
        "train.warmup_steps=2",
        "train.log_every=2",
        "train.save_every=3",
        "train.precision=fp32",
        "train.report_to=[none]",
        "eval.every=3",
        "eval.max_batches=2",
        "eval.sample_prompts=[]",
        *TINY_MODEL,
        *extra,
    ]


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU spinning OpenMP threads make them
    many times slower; restored after each test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def reset_accelerate():
    """accelerate keeps process-wide singletons; each test gets a fresh state."""
    yield
    reset_accelerate_state()


def reset_accelerate_state() -> None:
    """Fresh accelerate singletons: after each test, and between several in-process runs in one test or fixture."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
