"""A non-editable install runs from any folder: the wheel carries the recipes, presets, launch configs, scripts and
the sample corpus, and relative names resolve from the working directory first, then among the shipped files.
(`.ci/run` also installs the wheel into a fresh venv and trains two steps in an empty folder.)"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from hf_llm import shipped
from hf_llm.config import ModelConfig, load_config
from hf_llm.data.sources import resolve_files
from hf_llm.planner import PlanConfig, run_plan

REPO = Path(__file__).resolve().parents[2]


def test_setup_ships_what_the_package_looks_for():
    tree = ast.parse((REPO / "setup.py").read_text())
    (listed,) = [ast.literal_eval(n.value) for n in tree.body
                 if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "SHIPPED"]
    assert listed == shipped.SHIPPED_NAMES
    for name in listed:
        assert (REPO / name).exists(), name
    manifest = (REPO / "MANIFEST.in").read_text()  # an sdist must carry them too (python -m build goes through it)
    for name in listed:
        assert name in manifest, name


def test_relative_names_resolve_from_the_working_directory_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Nothing here: the shipped corpus, recipe and preset (the checkout's, in a checkout).
    assert Path(resolve_files("data/sample/corpus.jsonl.gz")[0]) == REPO / "data/sample/corpus.jsonl.gz"
    assert load_config("configs/recipes/pretrain_tiny.yaml").model.preset == "tiny"
    # A user's own file of the same name wins.
    (tmp_path / "data/sample").mkdir(parents=True)
    (tmp_path / "data/sample/corpus.jsonl.gz").write_bytes(b"")
    assert resolve_files("data/sample/corpus.jsonl.gz") == ["data/sample/corpus.jsonl.gz"]
    assert shipped.shipped_path("no/such/file.jsonl") == "no/such/file.jsonl"  # the caller's error names it


def test_planned_deepspeed_launch_is_whole_from_another_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_plan(PlanConfig(model=ModelConfig(preset="7b"), seq_len=4096, gpu="H100", gpus=16, nodes=2, hours=72,
                        write_dir="launch"))
    launch = yaml.safe_load(Path("launch/accelerate.yaml").read_text())
    ds_file = Path(launch["deepspeed_config"]["deepspeed_config_file"])
    assert ds_file.is_file() and ds_file.parent == Path("launch")  # accelerate reads it from the working directory
    assert json.loads(ds_file.read_text()) == json.loads((REPO / "configs/deepspeed" / ds_file.name).read_text())


CHECK_INSTALL = """
import json, pathlib, sys
import hf_llm
from hf_llm.cli import main, COMMANDS
from hf_llm.data.sources import resolve_files
print(json.dumps({
    "package": hf_llm.__file__,
    "corpus": resolve_files("data/sample/corpus.jsonl.gz")[0],
}))
status = [main(["plan", "model.preset=7b", "write_dir=launch", "gpus=16", "seq_len=4096"]),
          main(["pretrain", "--help"]), main(["finetune", "--help"]), main(["prepare-data", "--help"])]
sys.exit(max(status))
"""


@pytest.mark.slow  # builds a wheel (~10 s)
def test_built_wheel_runs_from_an_empty_folder(tmp_path):
    """The wheel unpacked alone on the path (not the checkout): the plan, the default recipes and the corpus."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", str(REPO),
                    "-w", str(tmp_path / "dist")], check=True, capture_output=True, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("hf_llm-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run([sys.executable, "-c", CHECK_INSTALL], cwd=work, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    found = json.loads(proc.stdout.splitlines()[0])
    assert Path(found["package"]).is_relative_to(site)  # the installed copy ran, not the checkout
    assert Path(found["corpus"]) == site / "hf_llm/_shipped/data/sample/corpus.jsonl.gz"
    assert "the default recipe" in proc.stdout and "is missing" not in proc.stdout
    assert "runs/tiny-chat" in proc.stdout  # the finetune recipe's values, read from the wheel
    launch = yaml.safe_load((work / "launch/accelerate.yaml").read_text())
    assert (work / launch["deepspeed_config"]["deepspeed_config_file"]).is_file()
