"""Invariants of downstream evaluation over processes: the same metrics on 1 and 2 processes for the same weights
(each process scores a shard, the scores are gathered), and a failure on one process is raised on every process
instead of leaving the others waiting in a collective."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from ..conftest import REPO

SCRIPT = REPO / "tests" / "integration" / "downstream_world.py"
pytestmark = pytest.mark.slow  # every test launches 1 or 2 processes


def _launch(processes: int, out, mode: str = "score") -> list[dict]:
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "PYTHONPATH": str(REPO)}
    head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes), "--num_machines",
            "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if processes > 1:
        head.append("--multi_gpu")
    out.mkdir()
    proc = subprocess.run([*head, str(SCRIPT), mode, str(out)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = [json.loads((out / f"rank-{rank}.json").read_text()) for rank in range(len(list(out.iterdir())))]
    assert [r["processes"] for r in lines] == [processes] * processes, "the launch ran another number of processes"
    return lines


def test_task_metrics_are_the_same_on_one_and_two_processes(tmp_path):
    (one,), two = _launch(1, tmp_path / "one"), _launch(2, tmp_path / "two")
    assert two[0]["metrics"] == two[1]["metrics"]
    assert two[0]["metrics"].keys() == one["metrics"].keys()
    for key, value in one["metrics"].items():
        assert two[0]["metrics"][key] == pytest.approx(value, rel=1e-5), key


def test_a_failure_on_one_process_is_raised_on_every_process(tmp_path):
    rank0, rank1 = _launch(2, tmp_path / "fail", "fail-on-rank-1")
    assert rank1["error"] == "injected failure on rank 1"
    assert rank0["error"] == "downstream scoring failed on another process"
