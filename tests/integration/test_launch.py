"""Real `accelerate launch` runs of scripts/pretrain.py on CPU: one process, two processes (DDP over gloo),
a run killed with SIGKILL that resumes from its last complete checkpoint, and 2 processes on a folder
prepared by the executor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from ..conftest import ACCELERATE, REPO, tiny_overrides

# Every test here launches processes. (Bit-identical resume, streamed and on 2 processes included, is proven in
# tests/matrix/test_resume_matrix.py; here a SIGKILLed run resumes.)
pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(extra)
    return env


def _launch(args: list[str], env: dict[str, str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def test_single_process_launch_completes_and_exports(tmp_path, small_corpus):
    """The one launch that prepares its data itself, as a user's first run does."""
    out = tmp_path / "run"
    proc = _launch([*ACCELERATE, "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                    "--dynamo_backend", "no", "scripts/pretrain.py", *tiny_overrides(out, small_corpus)], _env())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 1 and summary["steps"] == 6
    assert "hf_llm pretraining summary" in proc.stdout
    assert (out / "model" / "model.safetensors").is_file() and (out / "config.yaml").is_file()


def test_two_process_launch_completes_and_exports(tmp_path, shared_corpus, prepared_corpus):
    out = tmp_path / "ddp"
    # --multi_gpu with ACCELERATE_USE_CPU gives real DDP over gloo; a world size of 1 would pass silently, so check it.
    _launch([*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no", "scripts/pretrain.py",
             *tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}")],
            _env(ACCELERATE_USE_CPU="1"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6
    assert summary["tokens_seen"] == 6 * 4 * 64 * 2

    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(str(out / "model")) is not None


def test_sigkill_then_resume_from_latest(tmp_path, shared_corpus, prepared_corpus):
    out = tmp_path / "killed"
    args = [sys.executable, "scripts/pretrain.py",
            *tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}", "train.max_steps=400",
                            "train.save_every=2", "train.keep_last=3", "eval.every=1000", "train.resume_from=latest")]
    proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    ckpts = out / "checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and not any(p.name.startswith("step-") for p in ckpts.glob("step-*")):
        time.sleep(0.05)
    time.sleep(0.3)  # land the kill at an arbitrary point, possibly during a save
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = sorted(int(p.name.split("-")[1]) for p in ckpts.glob("step-*"))
    assert done, "no checkpoint was written before the kill"
    resumed = _launch(args[:-1] + ["train.resume_from=latest", "train.max_steps=" + str(done[-1] + 2)], _env())
    summary = json.loads((out / "summary.json").read_text())
    assert f"resumed from {ckpts / f'step-{done[-1]}'}" in resumed.stdout
    assert summary["steps"] == done[-1] + 2


def test_two_process_pretraining_on_executor_shards(tmp_path, small_corpus):
    """A folder prepared on the local executor (one train/ shard per task) is read by `data.prepared` and trained
    on with 2 processes. (Resume on a prepared folder is exact whatever its shards: the loop's tests cover it.)"""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    lines = small_corpus.read_text().splitlines()
    for k in range(3):
        (corpus / f"part-{k}.jsonl").write_text("\n".join(lines[k::3]) + "\n")
    data = tmp_path / "data"
    _launch([sys.executable, "scripts/prepare_data.py", f"output_dir={data}", f"data.sources=[{{path: '{corpus}'}}]",
             "data.seq_len=64", "tokenizer.vocab_size=512", "executor.kind=local", "executor.tasks=3",
             "executor.workers=1", "executor.dedup_tasks=1"], _env())
    assert len(list((data / "train").glob("data-*-of-00003.arrow"))) == 3
    out = tmp_path / "run"
    _launch([*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
             "--dynamo_backend", "no", "scripts/pretrain.py",
             *tiny_overrides(out, small_corpus, f"data.prepared={data}")],
            _env(ACCELERATE_USE_CPU="1"))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6
    assert summary["tokens_seen"] == 6 * 4 * 64 * 2
