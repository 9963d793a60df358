"""train.compile: the auto rule, and regional compilation (each decoder layer in place, names unchanged). Compiling
is lazy, so these tests cost no compile time; the compiled run's export ≡ live model is
tests/matrix/test_export_matrix.py's compiled cells (slow)."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_llm.config import TrainConfig
from hf_llm.errors import ConfigError
from hf_llm.train.run import (COMPILE_MIN_CPU_FLOPS, COMPILE_MIN_STEPS, compile_regions, resolve_compile,
                              use_compile_cache)


def _compiled(module: torch.nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None


def test_auto_compiles_only_runs_long_enough_to_win_back_the_compile_time():
    long, short = COMPILE_MIN_STEPS, COMPILE_MIN_STEPS - 1
    assert resolve_compile("auto", long, "fp32", "cuda", None)
    assert not resolve_compile("auto", short, "bf16", "cuda", None)
    assert not resolve_compile("auto", long, "bf16", "cuda", 3)  # ZeRO-3 (true is refused there)
    assert resolve_compile("true", 1, "fp32", "cpu", None) and not resolve_compile("false", long, "bf16", "cuda", None)
    # On a CPU the run's FLOPs per process decide, not its steps: a big model's few steps win back the compile.
    assert resolve_compile("auto", 50, "bf16", "cpu", None, COMPILE_MIN_CPU_FLOPS)
    assert not resolve_compile("auto", 100_000, "bf16", "cpu", None, COMPILE_MIN_CPU_FLOPS * 0.99)
    assert not resolve_compile("auto", 100_000, "fp32", "cpu", None, COMPILE_MIN_CPU_FLOPS * 10)  # no gain in fp32
    assert not resolve_compile("auto", 100_000, "bf16", "cpu", 3, COMPILE_MIN_CPU_FLOPS * 10)


def test_the_default_run_compiles_on_a_cpu_and_a_short_one_does_not():
    """The default pretraining (tiny preset, 200 steps of 16 × 256 tokens, bf16) is past the measured break-even;
    the same model for 100 steps is not."""
    from hf_llm.config import load_config
    from hf_llm.model import build_model_config
    from hf_llm.train.metrics import model_flops_per_token

    cfg = load_config(None, [])
    config = build_model_config(cfg.model, cfg.tokenizer.vocab_size, {})
    per_step = model_flops_per_token(config, cfg.data.seq_len) * cfg.train.micro_batch_size * cfg.data.seq_len
    assert cfg.train.compile == "auto" and cfg.train.max_steps == 200
    assert resolve_compile("auto", 200, "bf16", "cpu", None, per_step * 200)
    assert not resolve_compile("auto", 100, "bf16", "cpu", None, per_step * 100)


def test_the_compile_cache_is_persistent_unless_the_user_chose_one(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "set")  # so that teardown restores what was there before
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert use_compile_cache() == tmp_path / "xdg" / "hf_llm" / "torch_compile"
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    assert cache_dir() == str(tmp_path / "xdg" / "hf_llm" / "torch_compile")  # what inductor will use
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "mine"))
    assert use_compile_cache() == tmp_path / "mine"


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
