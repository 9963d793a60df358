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
