"""Invariant: an export gives the logits of the live model that wrote it, over compile {off, on} × {full model,
LoRA adapter, LoRA merged} on one process (fp32, ≤1e-5; the compiled full model is checked by the compiled bf16
resume cell of tests/matrix/test_resume_matrix.py), and ZeRO-3 on 2 processes (the gathered export gives the
sharded live model's validation loss, ≤1e-4; compile is refused there, tested below).

The live model's logits are taken inside the job, on the very object the job hands to its export function, so
the comparison covers every wrapper (compile, DDP, PEFT) between the trained weights and the folder.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hf_llm.config import load_config
from hf_llm.errors import ConfigError

from ..conftest import REPO, launch_pretraining, tiny_overrides

CHAT = REPO / "tests" / "data" / "chat_sample.jsonl"
PAIRS = REPO / "tests" / "data" / "preference_sample.jsonl"
IDS = torch.randint(0, 500, (2, 24), generator=torch.Generator().manual_seed(0))


@torch.no_grad()
def _logits(model, ids: torch.Tensor = IDS) -> torch.Tensor:
    was = model.training
    model.eval()
    out = model(input_ids=ids, use_cache=False).logits.float().clone()
    model.train(was)
    return out


def _capture(monkeypatch, module, name: str, store: dict) -> None:
    """Wrap `module.name` (an export function taking the live model second) to record that model's logits."""
    real = getattr(module, name)

    def wrapped(accelerator, model, *args, **kwargs):
        store[name] = _logits(model)
        return real(accelerator, model, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)


# The compiled pretraining cell is the compiled resume cell (tests/matrix/test_resume_matrix.py), which checks
# export ≡ live on its uninterrupted run: one compile instead of two.
@pytest.mark.parametrize("compile", [False], ids=["eager"])
def test_pretraining_export_equals_live_model(compile, shared_corpus, prepared_corpus, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import hf_llm.pretrain as job

    seen: dict[str, torch.Tensor] = {}
    _capture(monkeypatch, job, "export_model", seen)
    out = tmp_path / "run"
    job.run_pretraining(load_config(None, tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}",
                                                         f"train.compile={str(compile).lower()}",
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
def test_lora_adapter_and_merged_exports_equal_live_model(compile, objective, tiny_base_model, tmp_path, monkeypatch):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    import hf_llm.finetune as job

    seen: dict[str, torch.Tensor] = {}
    _capture(monkeypatch, job, "export_adapter", seen)
    out = tmp_path / "lora"
    overrides = [f"output_dir={out}", f"model.name_or_path={tiny_base_model}", f"data.sources=[{{path: '{CHAT}'}}]",
                 "sft.max_length=128", "train.micro_batch_size=8", "train.max_steps=4", "train.lr=5e-2",
                 "train.warmup_steps=1", "train.save_every=null", "eval.every=4", "train.tensorboard=false",
                 "train.precision=fp32", "eval.sample_prompts=[]", "adapter.method=lora", "adapter.merge=true",
                 f"train.compile={str(compile).lower()}"]
    if objective == "preference":  # DPO on pairs, the reference being the base with the adapter disabled
        overrides += ["objective=preference", f"data.sources=[{{path: '{PAIRS}'}}]", "preference.max_length=128",
                      "train.micro_batch_size=4", "train.lr=1e-2"]
    job.run_finetuning(load_config(None, overrides, schema=job.FinetuneRunConfig))
    live = seen["export_adapter"]
    base = AutoModelForCausalLM.from_pretrained(str(tiny_base_model))
    assert (_logits(base) - live).abs().max().item() > 1e-3  # the adapter changed the model
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(tiny_base_model)),
                                        str(out / "adapter"))
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


@pytest.mark.slow
def test_zero3_two_processes_export_equals_live_model(tmp_path, prepared_corpus):
    """ZeRO-3 through the shipped config, 2 processes: the live (sharded) model's last validation loss covered blocks
    0..15 (2 batches of 4 on each of 2 processes); the gathered export must give the same loss on the same blocks.
    The same cell stops at step 4 and resumes: ZeRO-3's sharded optimizer state comes back (losses ≤1e-5; the
    bit-identical resume matrix is tests/matrix/test_resume_matrix.py)."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from hf_llm.data.pipeline import load_prepared
    from hf_llm.train.collate import PackedCollator
    from hf_llm.train.loop import evaluate_loss
    from hf_llm.train.stages import build_eval_loader

    def overrides(out: Path, *extra: str) -> list[str]:
        return tiny_overrides(out, prepared_corpus, f"data.prepared={prepared_corpus}", "train.log_every=1",
                              "train.max_steps=8", "train.save_every=4", "eval.every=4", "eval.max_batches=2", *extra)

    def losses(summary: dict) -> list[float]:
        return [p["loss"] for p in summary["history"] if "loss" in p]

    full = launch_pretraining("zero3", tmp_path / "full", overrides(tmp_path / "full"))
    assert full["processes"] == 2, "the launch silently ran a single process"
    prep = load_prepared(prepared_corpus)
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "full" / "model"), dtype=torch.float32)
    loader = build_eval_loader(prep.validation.select(range(16)), 4, PackedCollator(prep.tokenizer.eos_token_id))
    loss, _, _ = evaluate_loss(Accelerator(cpu=True), model, loader)
    assert abs(loss - full["final_val_loss"]) <= 1e-4, (loss, full["final_val_loss"])

    part = tmp_path / "part"
    launch_pretraining("zero3", part, overrides(part, "train.stop_after_steps=4"))
    resumed = launch_pretraining("zero3", part, overrides(part, "train.resume_from=latest"))
    assert max(abs(x - y) for x, y in zip(losses(full)[4:], losses(resumed)[-4:])) <= 1e-5
