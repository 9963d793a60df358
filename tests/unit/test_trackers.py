"""Experiment trackers (`train.report_to`): the setting's checks, a tracker that is missing or does not start, and
one tiny offline run whose scalars and config are read back from TensorBoard's event files, wandb's offline run
file and an MLflow file store, with tokens in the environment that must appear in none of them."""

from __future__ import annotations

import importlib.util
import json
import struct
import sys
from pathlib import Path

import pytest

from hf_llm.cli import main
from hf_llm.config import TrainConfig, load_config, save_config
from hf_llm.errors import ConfigError, HfLlmError
from hf_llm.pretrain import run_pretraining
from hf_llm.train.run import make_accelerator, start_run

from ..conftest import tiny_overrides

# What the loop logs at every log_every / eval.every step, and every tracker must receive.
SCALARS = ("loss", "val_loss", "lr", "grad_norm", "tokens_per_second", "mfu", "tokens_seen")
HF_TOKEN = "hf_" + "T0kenThatMustNotLeak" * 2
WANDB_KEY = "0123456789abcdef" * 2 + "wandbkey"


@pytest.mark.parametrize("overrides, trackers", [
    ([], ["tensorboard"]),
    (["train.report_to=[wandb,mlflow,wandb]"], ["wandb", "mlflow"]),
    (["train.report_to=wandb"], ["wandb"]),
    (["train.report_to=wandb,MLflow"], ["wandb", "mlflow"]),
    (["train.report_to=[none]"], []),
    (["train.report_to=none"], []),
    (["train.report_to=[]"], []),
    (["train.tensorboard=false"], []),  # the deprecated flag, as old recipes and some tests still write it
    (["train.tensorboard=true"], ["tensorboard"]),
    (["train.report_to=[wandb]", "train.tensorboard=false"], ["wandb"]),
])
def test_report_to_resolves_and_round_trips(tmp_path, overrides, trackers):
    cfg = load_config(None, overrides)
    assert cfg.train.trackers == trackers
    again = load_config(save_config(cfg, tmp_path / "config.yaml"))
    assert again == cfg and again.train.trackers == trackers


@pytest.mark.parametrize("overrides, message", [
    (["train.report_to=[none,wandb]"], "mixes none with trackers"),
    (["train.report_to=[comet_ml]"], r"unknown tracker\(s\) \['comet_ml'\]; choose from"),
    (["train.report_to=5"], "must be a list of tracker names"),
    (["train.report_to=[tensorboard,wandb]", "train.tensorboard=false"], "contradicts"),
    (["train.report_to=[none]", "train.tensorboard=true"], "contradicts"),
])
def test_report_to_mistakes_are_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def _without(monkeypatch, module: str, how: str) -> None:
    """Make `module` look uninstalled, the two ways a missing package shows."""
    if how == "find_spec":
        real = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a))
    else:
        monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("tracker, how", [("wandb", "find_spec"), ("mlflow", "sys.modules")])
def test_missing_tracker_package_fails_before_anything_runs(tmp_path, small_corpus, monkeypatch, capsys,
                                                            tracker, how):
    _without(monkeypatch, tracker, how)
    out = tmp_path / "run"
    overrides = tiny_overrides(out, small_corpus, f"train.report_to=[tensorboard,{tracker}]")
    with pytest.raises(ConfigError, match=rf"asks for \['{tracker}'\].*pip install -e '\.\[{tracker}\]'"):
        run_pretraining(load_config(None, overrides))
    assert not out.exists()  # no data prepared, no config written, no step taken
    # What a user of the command sees: the message and exit status 2.
    assert main(["pretrain", *overrides]) == 2
    assert f"error: train.report_to asks for ['{tracker}']" in capsys.readouterr().err
    assert not out.exists()


def test_a_tracker_accelerate_would_skip_is_an_error(tmp_path, monkeypatch):
    """accelerate drops a tracker it judges unavailable (package metadata) with a debug message only."""
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(ConfigError, match=r"accelerate does not see the package for train.report_to=\['wandb'\]"):
        make_accelerator(TrainConfig(report_to=["wandb"]), "fp32", tmp_path)


def test_a_tracker_that_cannot_start_fails_before_data_preparation(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"nosuchscheme://user:{HF_TOKEN}@host")
    out = tmp_path / "run"
    with pytest.raises(HfLlmError, match="a tracker did not start.*set MLFLOW_TRACKING_URI") as err:
        run_pretraining(load_config(None, tiny_overrides(out, small_corpus, "train.report_to=[mlflow]")))
    assert HF_TOKEN not in str(err.value) and "nosuchscheme" in str(err.value)
    assert not (out / "data").exists() and not (out / "checkpoints").exists()


def test_none_starts_no_tracker_and_writes_no_logs(tmp_path):
    cfg = load_config(None, [f"output_dir={tmp_path / 'run'}", "train.report_to=[none]"])
    accelerator, out, _ = start_run(cfg, "fp32")
    assert accelerator.log_with == [] and accelerator.trackers == []
    assert (out / "config.yaml").is_file() and not (out / "logs").exists()


def test_start_run_saves_the_users_config_and_returns_the_resolved_one(tmp_path):
    overrides = [f"output_dir={tmp_path / 'run'}", "train.report_to=[none]", "train.micro_batch_size=2",
                 "train.global_batch_size=8"]
    cfg = load_config(None, overrides)
    accelerator, out, run_cfg = start_run(cfg, "fp32")
    assert load_config(out / "config.yaml") == cfg == load_config(None, overrides)  # nothing written into it
    assert cfg.train.grad_accum_steps == 1
    assert run_cfg.train.grad_accum_steps == 4 == accelerator.gradient_accumulation_steps  # 8 / (2 x 1 process)
    assert run_cfg == load_config(None, [*overrides, "train.grad_accum_steps=4"])


# ---------------------------------------------------------------------------------------------- one offline run


def wandb_records(run_dir: Path) -> list:
    """The records of wandb's offline run file (`run-ID.wandb`): a LevelDB-style log of protobuf `Record`s in
    32 KiB blocks, after a 7-byte `:W&B` header. wandb ships no Python reader since its Go core took over."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("run-*.wandb")
    data = path.read_bytes()
    ident, magic, _version = struct.unpack("<4sHB", data[:7])
    assert ident == b":W&B" and magic == 0xBEE1, "not a wandb run file"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a record is complete
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _series(history: list[dict], key: str) -> list[tuple[int, float]]:
    return [(point["step"], point[key]) for point in history if key in point]


def test_trackers_receive_the_loop_scalars_and_the_config_without_tokens(tmp_path, shared_corpus, prepared_corpus,
                                                                         monkeypatch, one_thread):
    store = tmp_path / "mlruns"
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)  # ignored offline, but present as on a user's machine
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{store}")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 asks for this opt-in to a file store
    out = tmp_path / "tiny-run"
    summary = run_pretraining(load_config(None, tiny_overrides(
        out, shared_corpus, f"data.prepared={prepared_corpus}", "train.report_to=[tensorboard,wandb,mlflow]",
        "train.project=hf-llm-test",
        f"hub.endpoint=https://user:{HF_TOKEN}@hub.example",  # a token pasted into a value is scrubbed too
    )))
    history = summary["history"]
    expected = {key: _series(history, key) for key in SCALARS}
    assert all(expected.values()), f"the loop logged no {[k for k, v in expected.items() if not v]}"
    scrubbed_endpoint = "https://user:***@hub.example"

    # MLflow: one finished run in the experiment named by train.project, each scalar's whole series.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"file:{store}")
    experiment = client.get_experiment_by_name("hf-llm-test")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "tiny-run" and run.info.status == "FINISHED"
    for key, series in expected.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)] == series, key
    params = run.data.params
    assert params["train.lr"] == "0.003" and params["model.overrides.hidden_size"] == "32"
    assert json.loads(params["train.report_to"]) == ["tensorboard", "wandb", "mlflow"]
    assert params["hub.endpoint"] == scrubbed_endpoint

    # wandb: the offline run file under OUTPUT_DIR/logs holds the same series and the config.
    (run_dir,) = (out / "logs" / "wandb").glob("offline-run-*")
    records = wandb_records(run_dir)
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_record.project == "hf-llm-test" and run_record.display_name == "tiny-run"
    rows = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    for key, series in expected.items():
        assert [(row["_step"], row[key]) for row in rows if key in row] == series, key
    config = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update}
    assert config["train.lr"] == 0.003 and config["train.max_steps"] == 6
    assert config["hub.endpoint"] == scrubbed_endpoint
    assert any(r.WhichOneof("record_type") == "exit" for r in records)  # finished, so `wandb sync` uploads all

    # TensorBoard: event files in OUTPUT_DIR/logs/<project>, values as float32.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "logs" / "hf-llm-test"))
    events.Reload()
    for key, series in expected.items():
        logged = [(e.step, e.value) for e in events.Scalars(key)]
        assert [s for s, _ in logged] == [s for s, _ in series], key
        assert [v for _, v in logged] == pytest.approx([v for _, v in series], rel=1e-6), key

    # No token anywhere the trackers wrote: run files, debug logs, captured console, params, hparams.
    written = [p for root in (out / "logs", store) for p in root.rglob("*") if p.is_file()]
    assert len(written) > 20
    for path in written:
        data = path.read_bytes()
        assert HF_TOKEN.encode() not in data and WANDB_KEY.encode() not in data, f"a token leaked into {path}"
