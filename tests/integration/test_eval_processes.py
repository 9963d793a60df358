"""Invariant: validation loss is the same on 1 and 2 processes for the same weights, also when the validation set
does not divide by the world size (the prepared loader pads the last batches with repeated rows)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

SCRIPT = REPO / "tests" / "integration" / "eval_world.py"
pytestmark = pytest.mark.slow  # launches 1 and 2 processes


def _launch(processes: int, out) -> dict:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--num_machines",
            "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        head.append("--multi_gpu")
    proc = subprocess.run([*head, str(SCRIPT), str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
    assert result["processes"] == processes, "the launch silently ran another number of processes"
    return result


def test_validation_loss_is_the_same_on_one_and_two_processes(tmp_path):
    one, two = _launch(1, tmp_path / "one"), _launch(2, tmp_path / "two")
    # 7 rows of 24 tokens, two documents each: 2 × (11 + 11) targets per row, each row counted once.
    assert one["targets"] == two["targets"] == 7 * 22
    assert abs(one["loss"] - two["loss"]) <= 1e-5, (one, two)
