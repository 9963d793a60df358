"""The `hf-llm` console command: help that lists the config keys, every sub-command calling the job its script
calls with the same arguments, and user errors as exit status 2."""

from __future__ import annotations

import dataclasses
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from hf_llm.cli import COMMANDS, main

from ..conftest import REPO

SCRIPTS = {"prepare-data": "prepare_data.py", "plan": "plan.py", "pretrain": "pretrain.py", "finetune": "finetune.py",
           "evaluate": "evaluate.py", "push": "push_to_hub.py", "gguf": "export_gguf.py"}
# Arguments each command's job accepts; the job itself is replaced by a recorder.
ARGS = {"prepare-data": ["output_dir=prepared"], "plan": ["gpus=2", "nodes=1"], "pretrain": ["train.lr=0.5"],
        "finetune": ["train.max_steps=3"], "evaluate": ["model=some/model", "batch_size=2"],
        "push": ["folder", "me/repo", "--revision", "dev", "--no-private"],
        "gguf": ["runs/tiny/model", "--outtype", "q8_0"]}


def console_script() -> str:
    path = Path(sys.executable).parent / "hf-llm"
    assert path.is_file(), f"{path} is missing: run `pip install -e .` (setup.cfg declares the console script)"
    return str(path)


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _leaves(schema: type, prefix: str = "") -> list[str]:
    """Every dotted key a recipe can set, walked from the dataclasses (not from the help code)."""
    import typing

    hints = typing.get_type_hints(schema)
    keys = []
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            keys += _leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            keys.append(prefix + f.name)
    return keys


def test_console_script_help_lists_commands_and_their_keys(tmp_path):
    proc = _run([console_script(), "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    for name in COMMANDS:
        assert f"\n  {name} " in proc.stdout, name
    assert "keys: output_dir model.* tokenizer.* data.* train.* eval.* hub.*" in proc.stdout  # pretrain
    assert "sft.* adapter.*" in proc.stdout and "gpus nodes hours" in proc.stdout  # finetune, plan
    assert "accelerate launch scripts/pretrain.py" in proc.stdout


def test_console_script_command_help_lists_every_key_with_its_default_and_why(tmp_path):
    from hf_llm.config import RunConfig

    proc = _run([console_script(), "pretrain", "--help"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    shown = {line.split(" = ")[0].strip() for line in proc.stdout.splitlines() if " = " in line}
    keys = _leaves(RunConfig)
    assert len(keys) > 100 and not set(keys) - shown, sorted(set(keys) - shown)
    lines = {line.split(" = ")[0].strip(): line for line in proc.stdout.splitlines() if " = " in line}
    assert lines["train.lr"].split("#")[1].strip() == "[> 0] peak learning rate; small models take large rates"
    assert "tensorboard, wandb, mlflow" in lines["train.report_to"]
    assert "data.sources[].text_field = text" in proc.stdout  # the keys of one item of a list of sections
    assert proc.stdout.startswith("usage: hf-llm pretrain [RECIPE.yaml] [key=value ...]")


def test_command_help_shows_the_default_recipe_values(capsys):
    assert main(["finetune", "--help"]) == 0
    text = capsys.readouterr().out
    # finetune_lora_tiny.yaml sets these over the dataclass defaults (runs/finetune, 200 steps).
    assert "  output_dir = runs/tiny-chat " in text and "  train.max_steps = 60 " in text
    assert "  adapter.method = lora " in text and "configs/recipes/finetune_lora_tiny.yaml" in text


def _exit_code(call) -> int:
    """What a command returns, or the status it exits with (argparse exits on --help)."""
    try:
        return call()
    except SystemExit as e:
        return e.code


def _run_script(command: str, args: list[str], monkeypatch) -> int:
    script = REPO / "scripts" / SCRIPTS[command]
    monkeypatch.setattr(sys, "argv", [str(script), *args])
    return _exit_code(lambda: runpy.run_path(str(script), run_name="__main__"))


@pytest.mark.parametrize("command", list(COMMANDS))
def test_command_and_script_call_the_same_job_with_the_same_config(command, monkeypatch):
    import importlib

    calls = []
    module, name = COMMANDS[command].job.split(":")
    if command == "push":  # the job parses its own flags; record what reaches the Hub client
        module, name = "hf_llm.hub", "push_path"
        monkeypatch.setattr(importlib.import_module(module), name,
                            lambda *a, **k: calls.append((a, k)) or "https://hub.example/me/repo")
    elif command == "gguf":  # the same: record what reaches the writer
        module, name = "hf_llm.gguf", "export_gguf"
        monkeypatch.setattr(importlib.import_module(module), name,
                            lambda *a, **k: calls.append((a, k)) or Path(__file__))
    else:
        monkeypatch.setattr(importlib.import_module(module), name, lambda cfg: calls.append(cfg))
    assert main([command, *ARGS[command]]) == 0
    assert _run_script(command, ARGS[command], monkeypatch) == 0
    assert len(calls) == 2 and calls[0] == calls[1]
    if command == "pretrain":
        assert calls[0].train.lr == 0.5 and calls[0].output_dir == "runs/tiny"  # override on the default recipe
    if command == "push":
        assert calls[0][0] == ("folder", "me/repo") and calls[0][1]["revision"] == "dev"
        assert calls[0][1]["private"] is False
    if command == "gguf":
        assert calls[0][0] == ("runs/tiny/model", Path("runs/tiny/model/model-q8_0.gguf"), "q8_0")


@pytest.mark.parametrize("command", list(COMMANDS))
def test_script_help_is_the_command_help(command, monkeypatch, capsys):
    assert _exit_code(lambda: main([command, "--help"])) == 0
    ours = capsys.readouterr().out
    assert _run_script(command, ["--help"], monkeypatch) == 0
    theirs = capsys.readouterr().out
    assert theirs.startswith(f"usage: scripts/{SCRIPTS[command]}") and ours.startswith(f"usage: hf-llm {command}")
    # After the usage block (whose wrapping depends on the program's name), the same text.
    assert theirs.split("\n\n", 1)[1] == ours.split("\n\n", 1)[1]


def test_console_script_and_script_give_the_same_plan_from_any_folder(tmp_path):
    """A real process each: the installed console script, and the script by path from outside the checkout (no
    sys.path edits: the package is installed)."""
    args = ["model.preset=tiny", "gpu=H100", "gpus=1", "tokens=1e6"]
    command = _run([console_script(), "plan", *args], tmp_path)
    script = _run([sys.executable, str(REPO / "scripts" / "plan.py"), *args], tmp_path)
    assert command.returncode == 0 and script.returncode == 0, command.stderr + script.stderr
    assert "recommendation" in command.stdout and command.stdout == script.stdout


def test_scripts_do_not_edit_sys_path():
    for script in SCRIPTS.values():
        assert "sys.path" not in (REPO / "scripts" / script).read_text(), script


def test_user_errors_exit_with_status_2(capsys):
    assert main(["plan", "gpus=oops"]) == 2
    assert "error: invalid value for 'gpus'" in capsys.readouterr().err
    assert main(["pretrain", "train.lrr=1"]) == 2
    assert "did you mean train.lr" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["pretrian"])
    assert bad.value.code == 2 and "invalid choice: 'pretrian'" in capsys.readouterr().err
    assert main([]) == 2 and "COMMAND" in capsys.readouterr().out  # no command: the help, and a usage error
