"""Resumable checkpoints (accelerate state + loop state) and the Hub-ready export."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError

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
    # data.stages: the stage the position above is in (epoch, batches and stream positions restart in each stage)
    stage: int = 0
    stage_steps: list[int] = field(default_factory=list)  # optimizer steps taken in each stage so far
    stage_tokens: list[int] = field(default_factory=list)  # and tokens (global, every position), for the summary
    # Each stage's training data (its prepared folder's fingerprint), so that a run started from this checkpoint
    # with train.init_from can tell whether it continues the same data (and keeps the position) or other data.
    data_fingerprints: list[Optional[str]] = field(default_factory=list)
    train_loss: Optional[float] = None
    train_metrics: dict[str, float] = field(default_factory=dict)  # the objective's, per unit, at the last step
    val_loss: Optional[float] = None
    history: list[dict[str, Any]] = field(default_factory=list)  # logged points, for the model card's curve


def save_checkpoint(accelerator, root: str | Path, state: LoopState, keep_last: int) -> Path:
    """Write `root/step-N` atomically: everything goes to a hidden temporary folder that is renamed when complete.

    A crash mid-write leaves only the temporary folder, which `latest_checkpoint` never picks.
    """
    from ..io import publish

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
        publish(tmp, final)
        prune_checkpoints(root, keep_last, keep=final)
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


def step_of(checkpoint: str | Path) -> Optional[int]:
    m = STEP_DIR.match(Path(checkpoint).name)
    return int(m.group(1)) if m else None


def prune_checkpoints(root: str | Path, keep_last: int, keep: Optional[Path] = None) -> None:
    """Remove all but the newest `keep_last` checkpoints; `keep` (the one just written) is never removed."""
    for old in list_checkpoints(root)[:-keep_last]:
        if keep is None or old.resolve() != Path(keep).resolve():
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


def check_checkpoint_owner(root: str | Path, resume_from: Optional[str], overwrite: bool) -> None:
    """A run owns its checkpoints folder: a fresh run into one that holds another run's checkpoints would mix two
    runs (pruning could delete the checkpoint just written, and `resume_from=latest` would pick the other run)."""
    if resume_from or overwrite:
        return
    found = list_checkpoints(root)
    if found:
        raise ConfigError(
            f"{root} already holds checkpoints of an earlier run ({', '.join(p.name for p in found)}). Continue it "
            f"with train.resume_from=latest, write this run elsewhere with a new output_dir, or set "
            f"train.overwrite_output_dir=true to delete those checkpoints and start over"
        )


def claim_lineage(accelerator, root: str | Path, resume: Optional[Path], overwrite: bool) -> Optional[Path]:
    """Make `root` hold only this run's lineage, before its first checkpoint is written.

    A fresh run with `overwrite` removes the earlier run's checkpoints. A run resumed from step N continues that
    lineage: checkpoints after N in `root` belong to the abandoned branch and are moved to
    `root/abandoned-after-step-N-<time>/` (kept for the user, invisible to `latest` and to pruning).
    Returns where they went (None if nothing moved). Every process calls it.
    """
    import time

    root = Path(root)
    moved = None
    if accelerator.is_main_process:
        found = list_checkpoints(root)
        if resume is None and overwrite:
            for p in found + sorted(root.glob(".tmp-step-*")):
                shutil.rmtree(p, ignore_errors=True)
        elif resume is not None:
            start = step_of(resume)
            newer = [p for p in found if start is not None and step_of(p) > start and p.resolve() != resume.resolve()]
            if newer:
                moved = root / f"abandoned-after-step-{start}-{time.strftime('%Y%m%d-%H%M%S')}"
                moved.mkdir()
                for p in newer:
                    p.rename(moved / p.name)
                accelerator.print(f"note: resuming from step {start}; the later checkpoints of the abandoned run "
                                  f"({', '.join(p.name for p in newer)}) were moved to {moved}")
    accelerator.wait_for_everyone()
    return moved


def load_checkpoint(accelerator, path: str | Path) -> LoopState:
    path = Path(path)
    accelerator.load_state(str(path))
    return LoopState(**json.loads((path / STATE_FILE).read_text()))


def check_init_from(init_from: Optional[str], root: str | Path) -> Optional[Path]:
    """`train.init_from` names a complete checkpoint outside this run's own checkpoints folder (which this run
    prunes, moves aside or, with overwrite_output_dir, deletes). Returns it as a path (None when unset)."""
    if not init_from:
        return None
    path = Path(init_from)
    if not (path / STATE_FILE).is_file():
        raise ConfigError(f"train.init_from={init_from!r} is not a complete checkpoint (no {STATE_FILE}); name a "
                          f"step-N folder of another run's checkpoints/")
    if path.resolve().is_relative_to(Path(root).resolve()):
        raise ConfigError(f"train.init_from={init_from!r} is inside this run's own checkpoints folder {root}; a run "
                          f"started from a checkpoint writes its own: give it a new output_dir (or continue that run "
                          f"with train.resume_from)")
    return path


def start_from_checkpoint(accelerator, path: Path, fingerprint: Optional[str]) -> tuple[LoopState, bool]:
    """Load another run's checkpoint for `train.init_from`: weights, optimizer state and RNG (through accelerate,
    so ZeRO shards load too). The loop state starts afresh (step 0, no history) except the data position, kept when
    the checkpoint's current data is this run's first data (`fingerprint`), so that a decay on the same data goes on
    with the batches the stable run would have drawn next. Returns (state, whether the position was kept). The caller
    restarts the schedule, which the checkpoint's own state has just overwritten."""
    old = load_checkpoint(accelerator, path)
    state = LoopState()
    current = old.data_fingerprints[old.stage] if old.stage < len(old.data_fingerprints) else None
    same_data = fingerprint is not None and current == fingerprint
    if same_data:
        state.epoch, state.batches_in_epoch = old.epoch, old.batches_in_epoch
        state.stream_positions = list(old.stream_positions)
    return state, same_data


def export_model(accelerator, model, tokenizer, out_dir: str | Path, card: str, max_shard_size: str = "2GB",
                 extra_files: Optional[dict[str, bytes]] = None) -> Path:
    """Hub-ready folder: safetensors (gathered from ZeRO-3/FSDP shards), config, generation config, tokenizer, card.

    `extra_files` (name → content, e.g. the card's loss-curve PNG) are written before the folder is swapped in.
    """
    from transformers import GenerationConfig

    from ..io import publishing

    out = Path(out_dir)
    state_dict = accelerator.get_state_dict(model)  # collective under ZeRO-3/FSDP: every process calls it
    unwrapped = unwrap_for_export(accelerator, model)
    if accelerator.is_main_process:
        with publishing(out) as tmp:
            state_dict = drop_tied_copies(strip_compile_prefix(state_dict), unwrapped)
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
    accelerator.wait_for_everyone()
    return out


COMPILE_PREFIX = "_orig_mod."


def unwrap_for_export(accelerator, model):
    """The plain model under the DDP/DeepSpeed wrapper and any torch.compile wrapper: saving a compiled wrapper
    writes keys prefixed `_orig_mod.`, which `from_pretrained` ignores and initialises every weight at random."""
    return accelerator.unwrap_model(model, keep_torch_compile=False)


def drop_tied_copies(state_dict: Optional[dict], model) -> Optional[dict]:
    """Without the tied copies (`lm_head.weight` when the head shares the embedding) that the model ties again on load.
    A state dict gathered from FSDP shards holds them as separate tensors, and transformers drops a tied weight only
    when it shares storage with its source, so the export would store the embedding twice."""
    import torch

    tied = getattr(model, "_tied_weights_keys", None)
    if state_dict is None or not getattr(model.config, "tie_word_embeddings", False) or not isinstance(tied, dict):
        return state_dict
    copies = {target for target, source in tied.items()
              if target in state_dict and source in state_dict and torch.equal(state_dict[target], state_dict[source])}
    return {k: v for k, v in state_dict.items() if k not in copies}


def strip_compile_prefix(state_dict: Optional[dict]) -> Optional[dict]:
    """A state dict taken through a compiled wrapper names its keys `_orig_mod.X`; the model's own keys are `X`."""
    if state_dict is None:
        return None
    return {k.replace(COMPILE_PREFIX, ""): v for k, v in state_dict.items()}
