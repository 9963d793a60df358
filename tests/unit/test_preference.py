"""Preference tuning (DPO, IPO, SimPO) on the one loop: pair formats and bad pairs, the losses against TRL's
trainers, the reference model (adapters disabled, precomputed, frozen copy), accumulation, and a learnable
preference reaching high held-out reward accuracy from the exported policy."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from hf_llm.config import TokenizerConfig, load_config
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.errors import DataError
from hf_llm.finetune import FinetuneRunConfig, run_finetuning
from hf_llm.preference_data import (PreferenceConfig, build_preference_datasets, encode_pair, fit_pair,
                                    split_implicit)
from hf_llm.sft import DEFAULT_CHAT_TEMPLATE, prepare_tokenizer
from hf_llm.train.preference import PairCollator, PreferenceObjective, compute_reference_logps, sequence_logps

from ..conftest import REPO, reset_accelerate_state

RECIPE = REPO / "configs" / "recipes" / "dpo_lora_tiny.yaml"
PAIRS = REPO / "tests" / "data" / "preference_sample.jsonl"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny random Llama and a BPE tokenizer learned from the preference sample, saved as a model folder."""
    from transformers import LlamaConfig, LlamaForCausalLM

    rows = [json.loads(line) for line in PAIRS.read_text().splitlines()]
    texts = [m["content"] for r in rows for part in ("prompt", "chosen", "rejected") for m in r[part]]
    tok = train_bpe_tokenizer(texts * 3, TokenizerConfig(vocab_size=400, min_frequency=2))
    prepare_tokenizer(tok, DEFAULT_CHAT_TEMPLATE)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    out = tmp_path_factory.mktemp("base") / "model"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _overrides(out: Path, base: Path, *extra: str) -> list[str]:
    return [f"output_dir={out}", f"model.name_or_path={base}", "train.precision=fp32", "train.report_to=[none]",
            "train.save_every=null", *extra]


def _run(out: Path, base: Path, *extra: str) -> dict:
    try:
        return run_finetuning(load_config(RECIPE, _overrides(out, base, *extra), schema=FinetuneRunConfig))
    finally:
        reset_accelerate_state()


def test_smoke(base, tmp_path):
    s = _run(tmp_path / "run", base, "train.max_steps=4", "eval.every=2")
    print(json.dumps({k: s[k] for k in ("preference", "preference_metrics", "skipped")}, indent=1))
