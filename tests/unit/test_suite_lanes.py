"""The suite's lanes: outside the slow lane a test cannot start a launch (conftest's guard), so the fast lane
(`pytest -m "not slow"`) stays fast; other processes still run."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import launched


def test_a_fast_lane_test_that_launches_fails_saying_to_mark_it_slow():
    with pytest.raises(AssertionError, match=r"starts 'accelerate.commands.launch' .* mark it @pytest.mark.slow"):
        subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--help"], capture_output=True)
    with pytest.raises(AssertionError, match="mark it @pytest.mark.slow"):
        subprocess.Popen([sys.executable, "scripts/pretrain.py", "--help"])


def test_other_processes_run_in_the_fast_lane():
    assert subprocess.run([sys.executable, "-c", "print('ok')"], capture_output=True, text=True).stdout == "ok\n"


@pytest.mark.parametrize("args, name", [
    ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "x.py"], "torch.distributed.run"),
    ("accelerate launch --num_processes 2 scripts/pretrain.py", "accelerate launch"),
    (["torchrun", "x.py"], "torchrun"),
    ([sys.executable, "scripts/prepare_data.py", "output_dir=o"], None),
])
def test_launchers_are_recognised(args, name):
    assert launched(args) == name
