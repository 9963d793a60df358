"""benchmarks/gpu_check.py cannot run here (it needs a CUDA GPU); it must import anywhere and, without a GPU, stop
at once with a message saying so."""

from __future__ import annotations

import json

import torch


def test_gpu_check_without_a_gpu_says_so(monkeypatch, capsys):
    from benchmarks import gpu_check

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    message = json.loads(capsys.readouterr().out)["error"]
    assert "needs a CUDA GPU" in message


def test_every_cell_is_run_by_default_and_guarded(monkeypatch, capsys):
    from benchmarks import gpu_check

    assert "fsdp2_lora" in gpu_check.CHECKS and "fsdp2" in gpu_check.CHECKS
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--only", "fsdp2_lora"]) == 2
    assert "needs a CUDA GPU" in json.loads(capsys.readouterr().out)["error"]


def test_a_launch_that_ran_another_strategy_fails_its_cell(monkeypatch, tmp_path):
    """The FSDP2 cells pass only if the run says it ran FSDP2: a launch config silently replaced must not pass."""
    import subprocess
    from pathlib import Path
    from types import SimpleNamespace

    from benchmarks import gpu_check

    ran = {"strategy": "DDP"}

    def fake_launch(cmd, **kwargs):
        out = Path(cmd[cmd.index("--launched") + 1])
        (out / "gpu_check.json").write_text(json.dumps({"loss_falls": True, "export_vs_live_max_logit_diff": 0.0,
                                                         "strategy": ran["strategy"]}))
        return SimpleNamespace(returncode=0, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_launch)
    monkeypatch.setattr(gpu_check.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    assert gpu_check.launch("fsdp2", "fsdp.yaml", [], strategy="FSDP2")["ok"] is False
    ran["strategy"] = "FSDP2"
    assert gpu_check.launch("fsdp2", "fsdp.yaml", [], strategy="FSDP2")["ok"] is True

    from transformers import LlamaConfig, LlamaForCausalLM

    tiny = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                       num_key_value_heads=1)
    LlamaForCausalLM(tiny).save_pretrained(str(tmp_path / "merged"))
    lora = {"ok": True, "strategy": "DDP", "output_dir": str(tmp_path)}
    monkeypatch.setattr(gpu_check, "finetune_lora", lambda *a, **k: dict(lora))
    assert gpu_check.fsdp2_lora()["ok"] is False
    lora["strategy"] = "FSDP2"
    result = gpu_check.fsdp2_lora()
    assert result["ok"] is True and result["merged_loads"] == "LlamaForCausalLM"
