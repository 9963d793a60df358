"""Invariant: an export gives the logits of the live model that wrote it, over compile {off, on} × {full model,
LoRA adapter, LoRA merged} on one process (fp32, ≤1e-5). The ZeRO-3 / 2-process cell is
tests/integration/test_distributed.py::test_zero3_resume_and_export_equal_live_model (compile is refused there,
tested below).

The live model's logits are taken inside the job, on the very object the job hands to its export function, so
the comparison covers every wrapper (compile, DDP, PEFT) between the trained weights and the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hf_llm.config import load_config
from hf_llm.errors import ConfigError

from ..conftest import REPO, sample_documents, tiny_overrides, reset_accelerate_state

CHAT = REPO / "tests" / "data" / "chat_sample.jsonl"
PAIRS = REPO / "tests" / "data" / "preference_sample.jsonl"
IDS = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def _logits(model) -> torch.Tensor:
    was = model.training
    model.eval()
    out = model(input_ids=IDS, use_cache=False).logits.float().clone()
    model.train(was)
    return out


def _capture(monkeypatch, module, name: str, store: dict) -> None:
    """Wrap `module.name` (an export function taking the live model second) to record that model's logits."""
    real = getattr(module, name)

    def wrapped(accelerator, model, *args, **kwargs):
        store[name] = _logits(model)
        return real(accelerator, model, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("export_matrix") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in sample_documents(60)))
    return path


@pytest.fixture(scope="module")
def base_model(corpus, tmp_path_factory) -> Path:
    from hf_llm.pretrain import run_pretraining

    out = tmp_path_factory.mktemp("export_base") / "run"
    run_pretraining(load_config(None, tiny_overrides(out, corpus, "train.max_steps=4", "train.save_every=null",
                                                     "train.lr=3e-2", "eval.every=4")))
    reset_accelerate_state()
    return out / "model"


@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_pretraining_export_equals_live_model(compile, corpus, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import hf_llm.pretrain as job

    seen: dict[str, torch.Tensor] = {}
    _capture(monkeypatch, job, "export_model", seen)
    out = tmp_path / "run"
    job.run_pretraining(load_config(None, tiny_overrides(out, corpus, f"train.compile={str(compile).lower()}",
                                                         "train.max_steps=3", "train.save_every=null",
                                                         "eval.every=3", "train.lr=3e-2")))
    exported = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    diff = (_logits(exported) - seen["export_model"]).abs().max().item()
    assert diff <= 1e-5, f"export differs from the live model by {diff} (compile={compile})"
    # Not a vacuous match: the trained model is far from a fresh initialisation of the same config.
    fresh = AutoModelForCausalLM.from_config(exported.config)
    assert (_logits(fresh) - seen["export_model"]).abs().max().item() > 1e-2


@pytest.mark.parametrize("objective", ["sft", pytest.param("preference", marks=pytest.mark.slow)])
@pytest.mark.parametrize("compile", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["eager", "compiled"])
def test_lora_adapter_and_merged_exports_equal_live_model(compile, objective, base_model, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import hf_llm.finetune as job

    seen: dict[str, torch.Tensor] = {}
    _capture(monkeypatch, job, "export_adapter", seen)
    out = tmp_path / "lora"
    overrides = [f"output_dir={out}", f"model.name_or_path={base_model}", f"data.sources=[{{path: '{CHAT}'}}]",
                 "sft.max_length=128", "train.micro_batch_size=8", "train.max_steps=4", "train.lr=5e-2",
                 "train.warmup_steps=1", "train.save_every=null", "eval.every=4", "train.tensorboard=false",
                 "train.precision=fp32", "eval.sample_prompts=[]", "adapter.method=lora", "adapter.merge=true",
                 f"train.compile={str(compile).lower()}"]
    if objective == "preference":  # DPO on pairs, the reference being the base with the adapter disabled
        overrides += ["objective=preference", f"data.sources=[{{path: '{PAIRS}'}}]", "preference.max_length=128",
                      "train.micro_batch_size=4", "train.lr=1e-2"]
    job.run_finetuning(load_config(None, overrides, schema=job.FinetuneRunConfig))
    live = seen["export_adapter"]
    base = AutoModelForCausalLM.from_pretrained(str(base_model))
    assert (_logits(base) - live).abs().max().item() > 1e-3  # the adapter changed the model
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(base_model)), str(out / "adapter"))
    assert (_logits(adapted) - live).abs().max().item() <= 1e-5
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))
    assert (_logits(merged) - live).abs().max().item() <= 1e-4  # folding B·A into W rounds in fp32


def test_compile_with_zero3_is_refused_before_training():
    from types import SimpleNamespace

    from hf_llm.config import TrainConfig
    from hf_llm.train.run import check_deepspeed

    plugin = SimpleNamespace(deepspeed_config={"zero_optimization": {"stage": 3}})
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin), num_processes=2)
    with pytest.raises(ConfigError, match="train.compile=true does not work with ZeRO-3"):
        check_deepspeed(accelerator, TrainConfig(compile=True), "fp32")
