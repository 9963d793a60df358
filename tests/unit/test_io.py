"""Publishing a folder is crash-safe: after a SIGKILL at any moment the target is the old complete folder or the
new complete one (hf_llm.io, used for exports, adapters, merged models, prepared data and checkpoints)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hf_llm import io
from hf_llm.io import publishing, recover_folder

FILES = 6

WRITER = """
import sys, time
from pathlib import Path
from hf_llm.io import publishing
target = Path(sys.argv[1])
version = 0
while True:
    version += 1
    with publishing(target) as tmp:
        for i in range({files}):
            (tmp / f"part-{{i}}").write_text(str(version) * 2000)
            time.sleep(0.0005)
        (tmp / "COMPLETE").write_text(str(version))
"""


def _check_complete(folder: Path) -> int:
    """The folder's version, asserting that it is whole and of one version."""
    assert folder.is_dir(), f"{folder} is missing"
    version = (folder / "COMPLETE").read_text()
    parts = sorted(folder.glob("part-*"))
    assert len(parts) == FILES, [p.name for p in parts]
    assert all(p.read_text() == version * 2000 for p in parts), "a mix of two versions"
    return int(version)


@pytest.mark.parametrize("atomic_exchange", [True, False], ids=["renameat2", "two-renames"])
def test_sigkill_at_any_moment_leaves_a_complete_folder(tmp_path, atomic_exchange):
    target = tmp_path / "model"
    code = WRITER.format(files=FILES)
    if not atomic_exchange:  # the fallback for systems without renameat2
        code = "import hf_llm.io as io; io.exchange = lambda a, b: False\n" + code
    rng = random.Random(0)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    versions = []
    for _ in range(12):
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], env=env)
        deadline = time.time() + 30
        while not (target / "COMPLETE").exists() and time.time() < deadline:  # at least one version published
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recover_folder(target)  # what the next publishing() (or reader) does first
        versions.append(_check_complete(target))
    assert max(versions) > 1, "the writer never replaced a folder, so no swap was interrupted"


def test_crash_between_the_two_renames_is_recovered(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with publishing(target) as tmp:
        (tmp / "v").write_text("old")
    monkeypatch.setattr(io, "exchange", lambda a, b: False)
    real_rename = os.rename
    calls = []

    def crash_on_second(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames")
        real_rename(src, dst)

    monkeypatch.setattr(io.os, "rename", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        with publishing(target) as tmp:
            (tmp / "v").write_text("new")
    monkeypatch.setattr(io.os, "rename", real_rename)
    assert not target.exists()  # the old folder is aside, the new one was never renamed in
    recover_folder(target)
    assert (target / "v").read_text() == "old"


def test_an_error_while_writing_keeps_the_old_folder_and_no_staging(tmp_path):
    target = tmp_path / "out"
    with publishing(target) as tmp:
        (tmp / "v").write_text("old")
    with pytest.raises(RuntimeError):
        with publishing(target) as tmp:
            (tmp / "v").write_text("half")
            raise RuntimeError("failed mid-write")
    assert (target / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
