"""Resumable checkpoints (accelerate state + loop state) and the Hub-ready export."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..config import ConfigError

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


@dataclass
class LoopState:
    """Everything besides tensors that a resumed run needs to continue exactly."""

    step: int = 0  # optimizer steps done
    tokens_seen: int = 0  # global, every position of every block
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches this process consumed in the current epoch
    elapsed_seconds: float = 0.0
    stream_positions: list[list[int]] = field(default_factory=list)  # data.stream_train: [epoch, batches] per process
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    history: list[dict[str, Any]] = field(default_factory=list)  # logged points, for the model card's curve


def save_checkpoint(accelerator, root: str | Path, state: LoopState, keep_last: int) -> Path:
    """Write `root/step-N` atomically: everything goes to a hidden temporary folder that is renamed when complete.

    A crash mid-write leaves only the temporary folder, which `latest_checkpoint` never picks.
    """
    root = Path(root)
    final = root / f"step-{state.step}"
    tmp = root / f".tmp-step-{state.step}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    # Each process consumed its own shard of batches; record them all (they are equal by construction).
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps(asdict(state), indent=1))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        prune_checkpoints(root, keep_last)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / STATE_FILE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Optional[Path]:
    found = list_checkpoints(root)
    return found[-1] if found else None


def prune_checkpoints(root: str | Path, keep_last: int) -> None:
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def resolve_resume(resume_from: Optional[str], root: str | Path) -> Optional[Path]:
    """`latest` → newest complete checkpoint (None on a fresh run); a path → that checkpoint, checked."""
    if not resume_from:
        return None
    if resume_from == "latest":
        return latest_checkpoint(root)
    path = Path(resume_from)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"train.resume_from={resume_from!r} is not a complete checkpoint (no {STATE_FILE})")
    return path


def load_checkpoint(accelerator, path: str | Path) -> LoopState:
    path = Path(path)
    accelerator.load_state(str(path))
    return LoopState(**json.loads((path / STATE_FILE).read_text()))


def export_model(accelerator, model, tokenizer, out_dir: str | Path, card: str, max_shard_size: str = "2GB",
                 extra_files: Optional[dict[str, bytes]] = None) -> Path:
    """Hub-ready folder: safetensors (gathered from ZeRO-3/FSDP shards), config, generation config, tokenizer, card.

    `extra_files` (name → content, e.g. the card's loss-curve PNG) are written before the folder is swapped in.
    """
    from transformers import GenerationConfig

    out = Path(out_dir)
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3/FSDP: every process calls it
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        unwrapped.save_pretrained(str(tmp), state_dict=state_dict, max_shard_size=max_shard_size)
        gen = GenerationConfig(
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            max_new_tokens=128,
            do_sample=True,
            temperature=0.8,
            top_p=0.95,
        )
        gen.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(card)
        for name, content in (extra_files or {}).items():
            (tmp / name).write_bytes(content)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    accelerator.wait_for_everyone()
    return out
