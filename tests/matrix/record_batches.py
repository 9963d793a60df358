"""scripts/pretrain.py with a recorder of what the loop trains on, for the resume matrix.

`accelerate launch tests/matrix/record_batches.py [key=value ...]` (no recipe: the config is the schema's
defaults plus the overrides, as `load_config(None, overrides)` gives in-process). With RECORD_BATCHES_TO=FOLDER
every process appends one line per optimizer step to FOLDER/consumed-rank{R}.jsonl: a digest of each micro-batch
`train_step` received, so a test can tell which batches a resumed segment really trained on.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Callable

ENV = "RECORD_BATCHES_TO"


def batch_digest(batch: dict) -> str:
    """A short digest of a micro-batch's token ids and targets (equal digests: the same training rows)."""
    h = hashlib.sha1()
    for key in ("input_ids", "labels", "completion_mask"):  # completion_mask: preference pairs
        if key in batch:
            h.update(batch[key].contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def recording(train_step: Callable, folder: str | Path) -> Callable:
    """`train_step` that first appends its micro-batches' digests to folder/consumed-rank{R}.jsonl."""
    folder = Path(folder)

    def recorded(accelerator, model, micro_batches, *args, **kwargs):
        line = json.dumps([batch_digest(b) for b in micro_batches])
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"consumed-rank{accelerator.process_index}.jsonl", "a") as f:
            f.write(line + "\n")
        return train_step(accelerator, model, micro_batches, *args, **kwargs)

    return recorded


def read_consumed(folder: str | Path, rank: int) -> list[list[str]]:
    """The recorded steps of one process: a list (one entry per optimizer step) of micro-batch digests."""
    path = Path(folder) / f"consumed-rank{rank}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's hf_llm, like scripts/ do
    from hf_llm.cli import run_cli
    from hf_llm.pretrain import run_pretraining
    from hf_llm.train import loop

    if os.environ.get(ENV):
        loop.train_step = recording(loop.train_step, os.environ[ENV])
    return run_cli(run_pretraining, None)


if __name__ == "__main__":
    sys.exit(main())
