"""Options next to the defaults: fp16 skipped steps, `precision=auto` on GPUs without native bf16, MFU of
adapter training, and the process-group timeout."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from hf_llm.config import TrainConfig, load_config
from hf_llm.errors import ConfigError

from ..conftest import REPO, tiny_overrides


def test_a_skipped_fp16_step_does_not_advance_the_schedule(tmp_path, shared_corpus, prepared_corpus, monkeypatch):
    """Under fp16 the grad scaler skips steps whose gradients overflow; the LR schedule must not run ahead."""
    from accelerate.optimizer import AcceleratedOptimizer

    from hf_llm.pretrain import run_pretraining

    monkeypatch.setattr(AcceleratedOptimizer, "step_was_skipped", property(lambda self: True))
    summary = run_pretraining(load_config(None, tiny_overrides(tmp_path / "o", shared_corpus, "train.log_every=1",
                                                               f"data.prepared={prepared_corpus}",
                                                               "train.warmup_steps=4")))
    lrs = [p["lr"] for p in summary["history"] if "lr" in p]
    assert len(lrs) == 6 and len(set(lrs)) == 1, lrs  # every step was skipped: the schedule stays at step 0


def test_optimizer_step_advances_the_schedule_when_taken():
    from hf_llm.train.loop import optimizer_step

    p = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    p.grad = torch.ones(2)
    assert optimizer_step(SimpleNamespace(optimizer_step_was_skipped=False), opt, sched)
    assert sched.get_last_lr() == [0.5] and p.grad is None
    p.grad = torch.ones(2)
    assert not optimizer_step(SimpleNamespace(optimizer_step_was_skipped=True), opt, sched)
    assert sched.get_last_lr() == [0.5]


def _fake_gpu(monkeypatch, name: str, native_bf16: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: name)
    # torch reports emulated bf16 as supported unless including_emulation=False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native_bf16 or including_emulation)


def test_auto_precision_avoids_emulated_bf16(monkeypatch):
    from hf_llm.train.run import resolve_precision

    _fake_gpu(monkeypatch, "Tesla T4", native_bf16=False)
    assert resolve_precision("auto") == "fp16"
    with pytest.raises(ConfigError, match="no bf16 support"):
        resolve_precision("bf16")
    _fake_gpu(monkeypatch, "NVIDIA H100", native_bf16=True)
    assert resolve_precision("auto") == "bf16"


def test_mfu_of_adapter_training_charges_frozen_weights_4n():
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_llm.estimate import flops_per_token, shape_from_config
    from hf_llm.finetune import AdapterConfig, apply_adapter
    from hf_llm.train.metrics import frozen_matmul_params, model_flops_per_token

    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=256, tie_word_embeddings=True)
    full = LlamaForCausalLM(config)
    assert frozen_matmul_params(full) == 0
    lora = apply_adapter(LlamaForCausalLM(config), AdapterConfig(r=4))
    linear = sum(m.in_features * m.out_features for m in full.modules() if isinstance(m, torch.nn.Linear))
    assert frozen_matmul_params(lora) == linear  # every base projection and the (tied) output layer
    shape, T = shape_from_config(config), 32
    attention = 4 * shape.num_layers * shape.num_heads * shape.head_dim * T
    n = (flops_per_token(shape, T, training=False) - attention) / 2  # the matmul weights the estimate counts
    assert n == pytest.approx(linear, rel=0.01)  # (the estimate's N also holds the norms' few weights)
    assert model_flops_per_token(config, T) == pytest.approx(6 * n + 3 * attention)
    assert model_flops_per_token(config, T, frozen_matmul_params(lora)) == pytest.approx(
        6 * n + 3 * attention - 2 * linear)  # ≈ 4N + attention: no weight gradients for the frozen base


def test_process_group_timeout_is_a_setting():
    from hf_llm.train.run import process_group_kwargs

    train = TrainConfig(dist_timeout_minutes=90)
    assert process_group_kwargs(train, 1, cuda=False) == []
    (cpu,) = process_group_kwargs(train, 2, cuda=False)
    assert cpu.backend == "gloo" and cpu.timeout.total_seconds() == 90 * 60
    (gpu,) = process_group_kwargs(train, 8, cuda=True)
    assert gpu.to_kwargs() == {"timeout": cpu.timeout}  # NCCL's own 10-minute default is replaced
    with pytest.raises(ConfigError, match="dist_timeout_minutes"):
        TrainConfig(dist_timeout_minutes=0)


BARRIER = """
import os, sys, time
from pathlib import Path
from hf_llm.config import TrainConfig
from hf_llm.errors import HfLlmError
from hf_llm.train.run import make_accelerator, wait_for_main
train = TrainConfig(dist_timeout_minutes=0.05)
acc = make_accelerator(train, "fp32", Path(sys.argv[1]))
assert acc.num_processes == 2, acc.num_processes
if acc.is_main_process:
    time.sleep(8)  # 'preparing the data' for longer than the 3-second timeout
try:
    wait_for_main(acc, train, "preparing the data")
except HfLlmError as e:
    print("HFLLM-ERROR:", e, flush=True)
    os._exit(2)
"""


@pytest.mark.slow  # launches 2 processes (torch.distributed.run)
def test_a_slow_main_process_times_out_with_what_to_do(tmp_path):
    script = tmp_path / "barrier.py"
    script.write_text(BARRIER)
    env = {"ACCELERATE_USE_CPU": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "HFLLM-ERROR" in out, out[-3000:]
    assert "train.dist_timeout_minutes=0.05" in out and "scripts/prepare_data.py" in out
