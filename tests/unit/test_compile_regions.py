"""train.compile: the auto rule, and regional compilation (each decoder layer in place, names unchanged). Compiling
is lazy, so these tests cost no compile time; the compiled run's export ≡ live model is
tests/matrix/test_export_matrix.py's compiled cells (slow)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_llm.config import TrainConfig
from hf_llm.errors import ConfigError
from hf_llm.train.run import COMPILE_MIN_STEPS, compile_regions, resolve_compile


def _compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_auto_compiles_only_runs_long_enough_to_win_back_the_compile_time():
    long, short = COMPILE_MIN_STEPS, COMPILE_MIN_STEPS - 1
    assert resolve_compile("auto", long, "bf16", "cpu", None)
    assert resolve_compile("auto", long, "fp32", "cuda", None)
    assert not resolve_compile("auto", short, "bf16", "cuda", None)
    assert not resolve_compile("auto", long, "fp32", "cpu", None)  # measured: no gain in fp32 on CPU
    assert not resolve_compile("auto", long, "bf16", "cuda", 3)  # ZeRO-3 (true is refused there)
    assert resolve_compile("true", 1, "fp32", "cpu", None) and not resolve_compile("false", long, "bf16", "cuda", None)


def test_compile_setting_is_checked():
    assert TrainConfig().compile == "auto" and TrainConfig(compile=False).compile == "false"
    with pytest.raises(ConfigError, match="train.compile must be one of"):
        TrainConfig(compile="maybe")


def test_regional_compile_compiles_each_decoder_layer_in_place():
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                         num_attention_heads=4, num_key_value_heads=2))
    names = sorted(model.state_dict())
    assert compile_regions(model) == 3
    assert all(_compiled(layer) for layer in model.model.layers)
    assert not _compiled(model) and not _compiled(model.lm_head)
    assert sorted(model.state_dict()) == names  # checkpoints and exports keep the model's own names


def test_a_model_naming_no_layer_class_is_compiled_whole():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert compile_regions(model) == 0 and _compiled(model)
