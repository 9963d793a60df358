"""Trackers under `accelerate launch` with two processes (DDP over gloo): one run per tracker, each step logged
once and with the values of the run's own history (only the main process logs)."""

from __future__ import annotations

import json
import os
import subprocess
import pytest

from ..conftest import ACCELERATE, REPO, tiny_overrides

pytestmark = pytest.mark.slow  # launches 2 processes


def test_two_processes_log_one_run_per_tracker(tmp_path, shared_corpus, prepared_corpus, monkeypatch):
    store, out = tmp_path / "mlruns", tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "ACCELERATE_USE_CPU": "1", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"), "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
           "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
           "MLFLOW_TRACKING_URI": f"file:{store}", "MLFLOW_ALLOW_FILE_STORE": "true"}
    env.pop("WANDB_DIR", None)
    args = [*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "scripts/pretrain.py",
            *tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}",
                            "train.report_to=[tensorboard,wandb,mlflow]")]
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2  # a silent single-process launch would prove nothing

    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for reading the store here too
    client = MlflowClient(tracking_uri=f"file:{store}")
    (run,) = client.search_runs([client.get_experiment_by_name("hf_llm").experiment_id])
    for key in ("loss", "val_loss", "tokens_seen"):
        logged = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
        assert logged == [(p["step"], p[key]) for p in summary["history"] if key in p], key
    assert len(list((out / "logs" / "wandb").glob("offline-run-*"))) == 1
    assert len(list((out / "logs" / "hf_llm").glob("events.out.tfevents.*"))) == 1
