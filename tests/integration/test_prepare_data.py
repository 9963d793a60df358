"""scripts/prepare_data.py as a user runs it, then scripts/pretrain.py on its folder (data.prepared=PATH)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from datasets import load_from_disk

from ..conftest import REPO, tiny_overrides


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow  # runs prepare_data and pretraining as processes
def test_prepare_then_pretrain_on_the_prepared_folder(tmp_path, small_corpus):
    with small_corpus.open("a") as f:
        f.write('{"id": "broken", "text": "unterminated\n')  # a bad line: reported and kept in rejects/
    prepared = tmp_path / "prepared"
    proc = _run(["scripts/prepare_data.py", f"output_dir={prepared}", f"data.sources=[{{path: '{small_corpus}'}}]",
                 "data.seq_len=64", "data.packing=best_fit", "tokenizer.vocab_size=512"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert f"prepared {prepared}" in proc.stdout and "pass 5/6 pack" in proc.stderr
    for name in ("train", "validation", "rejects", "tokenizer", "data_card.json", "DATA_CARD.md", "data_config.yaml"):
        assert (prepared / name).exists(), name
    card = json.loads((prepared / "data_card.json").read_text())
    assert card["read_problems"]["count"] == 1 and card["read_problems"]["first"][0].startswith(f"{small_corpus}:121")
    assert "malformed" in load_from_disk(str(prepared / "rejects"))["reason"]
    assert set(load_from_disk(str(prepared / "train")).column_names) == {"input_ids", "position_ids", "labels"}

    out = tmp_path / "run"
    proc = _run(["scripts/pretrain.py", *tiny_overrides(out, small_corpus, f"data.prepared={prepared}",
                                                          "train.max_steps=4", "train.save_every=4", "eval.every=4")])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["unigram_val_loss"] == card["unigram_validation_loss"]
    assert (out / "model" / "model.safetensors").is_file()


def test_bad_input_exits_2_with_a_clear_message(tmp_path):
    proc = _run(["scripts/prepare_data.py", f"output_dir={tmp_path / 'o'}",
                 f"data.sources=[{{path: '{tmp_path}/none*.jsonl'}}]"])
    assert proc.returncode == 2 and "matches no file" in proc.stderr
    proc = _run(["scripts/prepare_data.py", "data.seq_len=abc"])
    assert proc.returncode == 2 and "data.seq_len" in proc.stderr
