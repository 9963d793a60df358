"""Shared fixtures: offline mode, a small real-text corpus, tiny model configs, clean accelerate state.

Built once per session and shared by every test that does not test preparation itself (read them, never write into
them; a test that changes a corpus or a folder copies it first):
  shared_corpus      120 real documents as a jsonl file (what `small_corpus` copies per test)
  prepared_corpus    that corpus prepared with the tiny runs' data settings (`tiny_overrides`): pass
                     `data.prepared=<it>` to a run and it trains on exactly what it would have prepared itself
  tiny_tokenizer     the prepared folder's tokenizer (BPE, 512 entries)
  tiny_base_run      a finished tiny pretraining run on it (12 steps, high LR so the weights leave their initial
                     scale; checkpoints at 6 and 12); `tiny_base_model` is its exported folder
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "data" / "sample" / "corpus.jsonl.gz"

# A model small enough that a training step takes milliseconds.
TINY_MODEL = [
    "model.overrides.hidden_size=32",
    "model.overrides.intermediate_size=64",
    "model.overrides.num_hidden_layers=2",
    "model.overrides.num_attention_heads=4",
    "model.overrides.num_key_value_heads=2",
]


def sample_documents(n: int, source: str | None = None) -> list[dict]:
    docs = []
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if source is None or doc["source"] == source:
                docs.append(doc)
            if len(docs) >= n:
                break
    return docs


def write_documents(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


@pytest.fixture(scope="session")
def shared_corpus(tmp_path_factory) -> Path:
    """120 real documents from the bundled corpus as a jsonl file (about 350 KB). Shared: never write to it."""
    return write_documents(tmp_path_factory.mktemp("shared") / "corpus.jsonl", sample_documents(120))


@pytest.fixture
def small_corpus(tmp_path: Path, shared_corpus: Path) -> Path:
    """The shared corpus copied for one test, which may change it."""
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(shared_corpus.read_bytes())
    return path


@pytest.fixture(scope="session")
def prepared_corpus(shared_corpus: Path, tmp_path_factory) -> Path:
    """The shared corpus prepared as a tiny run on it would (same data and tokenizer settings). Shared: read only."""
    from hf_llm.config import load_config
    from hf_llm.data.pipeline import build_prepared_data

    root = tmp_path_factory.mktemp("shared_prepared")
    cfg = load_config(None, tiny_overrides(root / "unused", shared_corpus))
    build_prepared_data(cfg.data, cfg.tokenizer, root / "prepared")
    return root / "prepared"


@pytest.fixture(scope="session")
def tiny_tokenizer(prepared_corpus: Path) -> Path:
    """The shared prepared folder's tokenizer (byte-level BPE of 512 entries learned on the shared corpus)."""
    return prepared_corpus / "tokenizer"


@pytest.fixture(scope="session")
def tiny_base_run(shared_corpus: Path, prepared_corpus: Path, tmp_path_factory) -> Path:
    """A finished tiny pretraining run on the shared prepared folder: 12 steps at a high LR (so its embeddings leave
    their initial scale and fine-tuning has something to start from), checkpoints at steps 6 and 12, the export in
    `model/`. Shared: read only (fine-tune from it, load it; never resume into it)."""
    from hf_llm.config import load_config
    from hf_llm.pretrain import run_pretraining

    import torch

    out = tmp_path_factory.mktemp("shared_base") / "run"
    threads = torch.get_num_threads()
    run_pretraining(load_config(None, tiny_overrides(out, shared_corpus, f"data.prepared={prepared_corpus}",
                                                     "train.max_steps=12", "train.lr=3e-2", "train.save_every=6",
                                                     "eval.every=12", "train.cpu_threads=1")))
    reset_accelerate_state()
    torch.set_num_threads(threads)  # whichever test asked for it first keeps its own setting
    return out


@pytest.fixture(scope="session")
def tiny_base_model(tiny_base_run: Path) -> Path:
    return tiny_base_run / "model"


def tiny_overrides(out: Path, corpus: Path, *extra: str) -> list[str]:
    return [
        f"output_dir={out}",
        f"data.sources=[{{path: '{corpus}'}}]",
        "data.seq_len=64",
        "tokenizer.vocab_size=512",
        "train.micro_batch_size=4",
        "train.max_steps=6",
        "train.warmup_steps=2",
        "train.log_every=2",
        "train.save_every=3",
        "train.precision=fp32",
        "train.report_to=[none]",
        "eval.every=3",
        "eval.max_batches=2",
        "eval.sample_prompts=[]",
        *TINY_MODEL,
        *extra,
    ]


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy shared CPU spinning OpenMP threads make them
    many times slower; restored after each test."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# What only the slow lane may start: multi-process launchers and the training scripts run as processes.
LAUNCHERS = ("accelerate.commands.launch", "accelerate launch", "torch.distributed.run", "torchrun",
             "scripts/pretrain.py", "scripts/finetune.py")


def launched(args) -> str | None:
    """The launcher a subprocess command line starts, if any."""
    line = args if isinstance(args, str) else " ".join(str(a) for a in args)
    return next((name for name in LAUNCHERS if name in line), None)


@pytest.fixture(autouse=True)
def launches_only_in_the_slow_lane(request, monkeypatch):
    """A test outside the slow lane that starts a launch fails at once, saying to mark it `slow`: the fast lane
    (`pytest -m "not slow"`) stays fast because it cannot launch."""
    if request.node.get_closest_marker("slow") is None:
        real = subprocess.Popen

        class Guarded(real):
            def __init__(self, args, *rest, **kwargs):
                name = launched(args)
                if name is not None:
                    raise AssertionError(f"{request.node.nodeid} starts {name!r} as a process: mark it "
                                         "@pytest.mark.slow (the fast lane launches nothing)")
                super().__init__(args, *rest, **kwargs)

        monkeypatch.setattr(subprocess, "Popen", Guarded)
    yield


@pytest.fixture(autouse=True)
def reset_accelerate():
    """accelerate keeps process-wide singletons; each test gets a fresh state."""
    yield
    reset_accelerate_state()


def reset_accelerate_state() -> None:
    """Fresh accelerate singletons: after each test, and between several in-process runs in one test or fixture."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def launch_environment(cpu_ddp: bool = False, **extra: str) -> dict[str, str]:
    """The environment of a launched run: offline; `ACCELERATE_USE_CPU` only for DDP (with DeepSpeed it would silently
    turn the run into DDP)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("ACCELERATE_USE_CPU", None)
    if cpu_ddp:
        env["ACCELERATE_USE_CPU"] = "1"
    env.update(extra)
    return env


def launch_pretraining(config: str | None, out: Path, overrides: list[str], timeout: int = 900) -> dict:
    """`accelerate launch scripts/pretrain.py` with a shipped accelerate config (`configs/accelerate/<config>.yaml`),
    or on one process when `config` is None; returns the run's summary. Tests that call it are marked `slow`."""
    if config is None:
        head = [*ACCELERATE, "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
                "--dynamo_backend", "no"]
    else:
        head = [*ACCELERATE, "--config_file", f"configs/accelerate/{config}.yaml"]
    proc = subprocess.run([*head, "scripts/pretrain.py", *overrides], cwd=REPO,
                          env=launch_environment(config == "ddp"), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    return json.loads((out / "summary.json").read_text())
