"""DDP and DeepSpeed ZeRO 1/2/3 through the shipped accelerate configs, 2 processes on CPU (gloo).

Checks: each strategy trains (loss falls) and exports a loadable model; 2 processes × micro-batch b match
1 process × 2 accumulation steps of b. (ZeRO-3's export ≡ live model and resume: tests/matrix/test_export_matrix.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ..conftest import launch_pretraining, tiny_overrides

# Every test here launches 2 processes.
pytestmark = pytest.mark.slow


def _launch(config: str | None, out: Path, overrides: list[str]) -> dict:
    return launch_pretraining(config, out, overrides)


@pytest.fixture(scope="module")
def prepared(prepared_corpus) -> Path:
    """One prepared data folder for every run (the session's), so they see identical blocks."""
    return prepared_corpus


def _overrides(out: Path, prepared: Path, *extra: str) -> list[str]:
    return tiny_overrides(out, prepared, f"data.prepared={prepared}", "train.log_every=1", "train.max_steps=8",
                          "train.save_every=4", "eval.every=4", "eval.max_batches=2", *extra)


def _losses(summary: dict) -> list[float]:
    return [p["loss"] for p in summary["history"] if "loss" in p]


# DDP and ZeRO-2 train and export in the accumulation parity test below (which checks their exports load too).
@pytest.mark.parametrize("strategy", ["zero1", "zero3"])
def test_strategy_trains_and_exports(strategy, tmp_path, prepared):
    out = tmp_path / strategy
    summary = _launch(strategy, out, _overrides(out, prepared, "train.lr=1e-2"))
    assert summary["processes"] == 2, "the launch silently ran a single process"
    losses = _losses(summary)
    assert len(losses) == 8 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, losses
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(out / "model"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("strategy, precision", [("ddp", "fp32"), ("zero2", "fp32"), ("ddp", "bf16")])
def test_two_processes_equal_one_process_with_accumulation(strategy, precision, tmp_path, prepared):
    """fp32 agrees to 1e-4 over 8 steps; bf16 autocast to 2e-2, the bound for bf16 rounding compounded over the
    steps should the kernels differ (measured 0 on this CPU: each process runs exactly the micro-batches the
    accumulation steps run, and only the all-reduce, in fp32, sums them in another order)."""
    from hf_llm.train.run import cpu_supports_bf16

    if precision == "bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no native bf16")
    p = f"train.precision={precision}"
    single = _launch(None, tmp_path / "one", _overrides(tmp_path / "one", prepared, "train.grad_accum_steps=2", p))
    multi = _launch(strategy, tmp_path / "two", _overrides(tmp_path / "two", prepared, p))
    assert single["tokens_seen"] == multi["tokens_seen"] and single["precision"] == multi["precision"] == precision
    a, b = _losses(single), _losses(multi)
    assert len(a) == len(b) == 8
    tolerance = {"fp32": 1e-4, "bf16": 2e-2}[precision]
    assert max(abs(x - y) for x, y in zip(a, b)) <= tolerance, (a, b)
    assert sum(b[-3:]) / 3 < sum(b[:3]) / 3, b  # it trains
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "two" / "model"))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def _launch_finetuning(config: str | None, out: Path, overrides: list[str]) -> dict:
    """`accelerate launch scripts/finetune.py configs/recipes/dpo_lora_tiny.yaml` (one process when `config` is None)."""
    import json
    import subprocess

    from ..conftest import ACCELERATE, REPO, launch_environment

    head = ([*ACCELERATE, "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no"] if config is None else
            [*ACCELERATE, "--config_file", f"configs/accelerate/{config}.yaml"])
    proc = subprocess.run([*head, "scripts/finetune.py", "configs/recipes/dpo_lora_tiny.yaml", *overrides], cwd=REPO,
                          env=launch_environment(config == "ddp"), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads((out / "summary.json").read_text())


@pytest.mark.parametrize("strategy, method", [("ddp", "full"), ("ddp", "lora"), ("zero3", "full")])
def test_preference_two_processes_equal_one_process_with_accumulation(strategy, method, tmp_path):
    """DPO: 2 processes × 2 pairs ≡ 1 process × 2 accumulation steps of 2 pairs (every logged loss and reward
    metric, fp32 ≤1e-4). Full fine-tuning precomputes the reference log-probabilities on every process's share
    and gathers them (under ZeRO-3 too); LoRA disables its adapter (through the DDP wrapper)."""
    from ..unit.test_preference import make_base

    base = make_base(tmp_path / "base")
    def overrides(out: Path, *extra: str) -> list[str]:
        return [f"output_dir={out}", f"model.name_or_path={base}", f"adapter.method={method}", "adapter.dropout=0.0",
                "train.micro_batch_size=2", "train.max_steps=6", "train.log_every=1", "train.save_every=null",
                "eval.every=3", "train.precision=fp32", "train.report_to=[none]", "train.lr=5e-3",
                "preference.max_length=128", *extra]

    single = _launch_finetuning(None, tmp_path / "one", overrides(tmp_path / "one", "train.grad_accum_steps=2"))
    multi = _launch_finetuning(strategy, tmp_path / "two", overrides(tmp_path / "two"))
    assert multi["processes"] == 2, "the launch silently ran a single process"
    assert multi["preference"]["reference"] == ("precompute" if method == "full" else "adapters")
    for key in ("loss", "rewards/accuracy", "rewards/margin", "logps/chosen", "val_loss", "val_rewards/margin"):
        a = [p[key] for p in single["history"] if key in p]
        b = [p[key] for p in multi["history"] if key in p]
        assert a and len(a) == len(b) and max(abs(x - y) for x, y in zip(a, b)) <= 1e-4, (key, a, b)
