"""FSDP2 on CPU (gloo), launched as the README says: `ACCELERATE_USE_CPU=1 accelerate launch --config_file
configs/accelerate/fsdp.yaml` (2 processes). accelerate itself drops FSDP on a CPU launch and runs DDP; the toolkit
switches it back to accelerate's FSDP2 (hf_llm.train.run.fsdp_on_cpu), so these cells run accelerate's own FSDP2
code: `fully_shard` per decoder layer, sharded checkpoints (torch.distributed.checkpoint), the gathered export.

Cells (fp32):
- FSDP2 ≡ DDP ≡ one process × 2 accumulation steps: every step's loss within 1e-4 (measured ~1e-6 here);
- export ≡ live: the gathered safetensors export gives the live sharded model's last validation loss (≤1e-4);
- resume twice (stop at 2, at 4, finish) ≡ uninterrupted: every exported tensor and every logged loss bit-identical;
- LoRA under FSDP2 ≡ LoRA on one process × 2 accumulation steps; the adapter and the merged model export;
- the chunked loss: refused under FSDP (`train.fused_loss=true` stops the launch before any data work; `auto` runs
  the model's own loss and says so in the summary).
Every run's summary, log line and model card state the strategy it really ran. What cannot be honoured is refused:
the FSDP config launched without ACCELERATE_USE_CPU on a machine without GPUs (accelerate would set up no
parallelism at all: each process training its own replica) stops with the reason (the unit cells of that check are in
tests/unit/test_launch_strategy.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ..conftest import REPO, reset_accelerate_state, sample_documents, tiny_overrides

pytestmark = pytest.mark.slow

ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]
STEPS = 6
CHAT = REPO / "tests" / "data" / "chat_sample.jsonl"
LORA_RECIPE = REPO / "configs" / "recipes" / "finetune_lora_tiny.yaml"


def _launch(config: str, overrides: list[str], script: str = "scripts/pretrain.py", cpu: bool = True,
            check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)
    if cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    proc = subprocess.run([*ACCELERATE, "--config_file", f"configs/accelerate/{config}.yaml", script, *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return proc


def _run(config: str, out: Path, overrides: list[str], script: str = "scripts/pretrain.py") -> dict:
    proc = _launch(config, overrides, script)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2, "the launch silently ran a single process"
    summary["log"] = proc.stdout + proc.stderr
    return summary


def _in_process(overrides: list[str], finetune: bool = False) -> dict:
    from hf_llm.config import load_config

    try:
        if finetune:
            from hf_llm.finetune import FinetuneRunConfig, run_finetuning

            return run_finetuning(load_config(LORA_RECIPE, overrides, schema=FinetuneRunConfig))
        from hf_llm.pretrain import run_pretraining

        return run_pretraining(load_config(None, overrides))
    finally:
        reset_accelerate_state()


def _losses(summary: dict) -> list[float]:
    return [p["loss"] for p in summary["history"] if "loss" in p]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig
    from hf_llm.data.pipeline import build_prepared_data

    root = tmp_path_factory.mktemp("fsdp")
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in sample_documents(120)))
    build_prepared_data(DataConfig(sources=[SourceConfig(path=str(corpus))], seq_len=64),
                        TokenizerConfig(vocab_size=512), root / "prepared")
    return root / "prepared"


def _overrides(out: Path, prepared: Path, *extra: str) -> list[str]:
    return tiny_overrides(out, prepared, f"data.prepared={prepared}", "train.log_every=1", f"train.max_steps={STEPS}",
                          "train.save_every=2", "train.keep_last=3", "eval.every=3", "eval.max_batches=2",
                          "train.lr=3e-3", *extra)


@pytest.fixture(scope="module")
def runs(prepared, tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """The same 6 steps three ways: FSDP2 and DDP (2 processes × micro-batch 4), one process × 2 × 4."""
    root = tmp_path_factory.mktemp("fsdp_runs")
    done = {}
    for name, config in (("fsdp", "fsdp"), ("ddp", "ddp")):
        done[name] = (root / name, _run(config, root / name, _overrides(root / name, prepared)))
    done["one"] = (root / "one", _in_process(_overrides(root / "one", prepared, "train.grad_accum_steps=2")))
    return done


def test_fsdp2_equals_ddp_equals_one_process_with_accumulation(runs):
    fsdp, ddp, one = (runs[k][1] for k in ("fsdp", "ddp", "one"))
    assert (fsdp["strategy"], ddp["strategy"], one["strategy"]) == ("FSDP2", "DDP", "single process")
    assert "strategy: FSDP2 over 2 process(es) on cpu" in fsdp["log"]
    assert "| strategy | FSDP2 |" in (runs["fsdp"][0] / "model" / "README.md").read_text()
    assert fsdp["fused_loss"] is False and ddp["fused_loss"] is True  # auto: the chunked loss is refused under FSDP
    assert fsdp["tokens_seen"] == ddp["tokens_seen"] == one["tokens_seen"]
    a, b, c = _losses(fsdp), _losses(ddp), _losses(one)
    assert len(a) == len(b) == len(c) == STEPS
    assert max(abs(x - y) for x, y in zip(a, b)) <= 1e-4, (a, b)
    assert max(abs(x - y) for x, y in zip(a, c)) <= 1e-4, (a, c)
    # Really sharded: each checkpoint holds one torch.distributed.checkpoint shard per process, not a state dict.
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        shards = sorted(p.name for p in (runs["fsdp"][0] / "checkpoints" / "step-2" / part).glob("*.distcp"))
        assert shards == ["__0_0.distcp", "__1_0.distcp"], (part, shards)
    # The exports agree with each other to the same tolerance.
    fsdp_file, one_file = (load_file(str(runs[k][0] / "model" / "model.safetensors")) for k in ("fsdp", "one"))
    # The same tensors: the gathered state dict's copy of the tied head is not stored twice (drop_tied_copies).
    assert fsdp_file.keys() == one_file.keys() and "lm_head.weight" not in fsdp_file
    worst = max((fsdp_file[k] - one_file[k]).abs().max().item() for k in one_file)
    assert worst <= 1e-4, worst


def test_fsdp2_export_equals_live_sharded_model(runs, prepared):
    """The live (sharded) model's last validation loss covered blocks 0..15 (2 batches of 4 on each of 2 processes);
    the gathered export must give the same loss on the same blocks."""
    from accelerate import Accelerator
    from transformers import AutoModelForCausalLM

    from hf_llm.data.pipeline import load_prepared
    from hf_llm.train.collate import PackedCollator
    from hf_llm.train.loop import evaluate_loss
    from hf_llm.train.stages import build_eval_loader

    out, summary = runs["fsdp"]
    prep = load_prepared(prepared)
    model = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype=torch.float32)
    loader = build_eval_loader(prep.validation.select(range(16)), 4, PackedCollator(prep.tokenizer.eos_token_id))
    loss, _, _ = evaluate_loss(Accelerator(cpu=True), model, loader)
    assert abs(loss - summary["final_val_loss"]) <= 1e-4, (loss, summary["final_val_loss"])


def test_fsdp2_resumed_twice_equals_uninterrupted(runs, prepared, tmp_path):
    full_out, full = runs["fsdp"]
    part = tmp_path / "part"
    segments = ((2, ["train.stop_after_steps=2"]), (4, ["train.resume_from=latest", "train.stop_after_steps=4"]),
                (STEPS, ["train.resume_from=latest"]))
    for stop, extra in segments:
        resumed = _run("fsdp", part, _overrides(part, prepared, *extra))
        assert resumed["steps"] == stop and (stop == 2 or f"resumed from {part / 'checkpoints'}" in resumed["log"])
    a, b = (load_file(str(out / "model" / "model.safetensors")) for out in (full_out, part))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), \
        [k for k in a if not torch.equal(a[k], b[k])]
    by_step = lambda s: {p["step"]: p["loss"] for p in s["history"] if "loss" in p}  # noqa: E731
    assert list(by_step(full)) == list(range(1, STEPS + 1)) and by_step(resumed) == by_step(full)
    assert resumed["final_val_loss"] == full["final_val_loss"]
    assert resumed["strategy"] == "FSDP2"


def test_fused_loss_true_is_refused_under_fsdp2_before_any_data_work(prepared, tmp_path):
    out = tmp_path / "fused"
    proc = _launch("fsdp", _overrides(out, prepared, "train.fused_loss=true"), check=False)
    assert proc.returncode != 0
    assert "train.fused_loss=true cannot apply under FSDP" in proc.stdout + proc.stderr
    assert not (out / "data").exists() and not (out / "checkpoints").exists()


def test_fsdp_config_without_use_cpu_on_a_cpu_machine_is_refused(prepared, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("on a GPU machine this launch is honoured")
    out = tmp_path / "dropped"
    proc = _launch("fsdp", _overrides(out, prepared), cpu=False, check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "the launcher started 2 processes but accelerate set up NO over 2" in text and "ACCELERATE_USE_CPU=1" in text
    assert not (out / "checkpoints").exists()


# ------------------------------------------------------------------------------------------------ LoRA


@pytest.fixture(scope="module")
def base_model(prepared, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fsdp_lora_base") / "run"
    _in_process(tiny_overrides(out, prepared, f"data.prepared={prepared}", "train.max_steps=4", "train.lr=3e-2",
                               "train.save_every=null", "eval.every=4"))
    return out / "model"


def _lora_overrides(out: Path, base: Path, *extra: str) -> list[str]:
    return [f"output_dir={out}", f"model.name_or_path={base}", f"data.sources=[{{path: '{CHAT}'}}]",
            "sft.max_length=128", "train.micro_batch_size=4", f"train.max_steps={STEPS}", "train.lr=2e-2",
            "train.warmup_steps=2", "train.save_every=3", "train.log_every=1", "eval.every=3", "eval.max_batches=2",
            "train.report_to=[none]", "train.precision=fp32", "adapter.dropout=0.0", *extra]


def test_lora_under_fsdp2_equals_one_process_with_accumulation(base_model, tmp_path):
    """adapter.dropout=0: dropout masks are drawn per process, so with dropout the runs would differ by design."""
    fsdp_out, one_out = tmp_path / "fsdp", tmp_path / "one"
    fsdp = _run("fsdp", fsdp_out, [str(LORA_RECIPE), *_lora_overrides(fsdp_out, base_model)],
                script="scripts/finetune.py")
    one = _in_process(_lora_overrides(one_out, base_model, "train.grad_accum_steps=2"), finetune=True)
    assert fsdp["strategy"] == "FSDP2" and fsdp["method"] == "lora"
    a, b = _losses(fsdp), _losses(one)
    assert len(a) == len(b) == STEPS and max(abs(x - y) for x, y in zip(a, b)) <= 1e-4, (a, b)
    adapters = [load_file(str(o / "adapter" / "adapter_model.safetensors")) for o in (fsdp_out, one_out)]
    assert adapters[0].keys() == adapters[1].keys() and adapters[0]
    assert max((adapters[0][k] - adapters[1][k]).abs().max().item() for k in adapters[0]) <= 1e-4
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(str(fsdp_out / "merged"))
    assert all(torch.isfinite(p).all() for p in merged.parameters())
