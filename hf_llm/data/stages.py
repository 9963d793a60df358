"""Staged data mixtures (`data.stages`): a list of mixtures, each active until a step or token boundary.

A typical run is a main phase on the bulk of the data, then an annealing phase on higher-quality sources while the
WSD schedule decays. Each stage is one prepared folder (or, with `data.stream_train`, one stream):

- Built on the fly, stage i is prepared into OUTPUT_DIR/data/stage-i with the run's data settings and the stage's
  sources. The tokenizer is learned once, on the first stage (unless tokenizer.name_or_path names one), and every
  later stage is tokenised with it: one run never mixes two vocabularies. A stage whose data config and tokenizer
  are unchanged is reused, as a single prepared folder is.
- `data.stages[i].prepared` names a folder from scripts/prepare_data.py instead; its tokenizer must equal the run's.
- Validation is the first stage's held-out set for the whole run, so the loss curve stays one yardstick across the
  boundary (the later stages hold out documents as any prepared folder does; they are not evaluated on). A later
  stage that reads a source of the first one may train on documents the first held out: the validation loss after
  the boundary is then optimistic. That overlap is reported (see `shared_source_notes`). Streamed stages
  (`data.stream_train`) hold out by a hash of each document's text, the same documents in every stage.

The loop switches from one stage's blocks to the next at the same optimizer step on every process (hf_llm.train.stages
`StepBatches.at_step`); a checkpoint records the stage and the position within it, so resume is exact across a
boundary.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

from ..config import DataConfig, StageConfig, TokenizerConfig
from ..errors import ConfigError


def stage_names(data: DataConfig) -> list[str]:
    return [stage.name or f"stage-{i}" for i, stage in enumerate(data.stages)]


def stage_data_config(data: DataConfig, stage: StageConfig) -> DataConfig:
    """The data config one stage is prepared or streamed with: the run's settings, the stage's sources."""
    return dataclasses.replace(data, sources=list(stage.sources), stages=[], prepared=stage.prepared)


def check_stage_sources(data: DataConfig) -> None:
    """Fail fast on what is checkable before reading: folders exist, files match, weights are valid."""
    from .mixture import mixture_shares
    from .sources import resolve_files

    for i, stage in enumerate(data.stages):
        if stage.prepared is not None:
            if not Path(stage.prepared).is_dir():
                raise ConfigError(f"data.stages[{i}].prepared={stage.prepared!r} is not a folder; run "
                                  f"scripts/prepare_data.py for that stage's sources first")
            continue
        mixture_shares([src.weight for src in stage.sources])
        for src in stage.sources:
            if src.format != "hub":
                resolve_files(src.path)


def shared_source_notes(data: DataConfig) -> list[str]:
    """One line per later stage that reads a source of the first stage (same path, Hub config and split). Streamed
    stages need none: their hold-out is decided by each document's text, so it is the same in every stage."""
    if data.stream_train:
        return []
    key = lambda src: (src.path, src.name, src.split, src.revision)  # noqa: E731
    first = {key(src) for src in data.stages[0].sources}
    names = stage_names(data)
    notes = []
    for i, stage in enumerate(data.stages[1:], start=1):
        shared = [src.path for src in stage.sources if key(src) in first]
        if shared:
            notes.append(f"data stage {names[i]} reads {', '.join(shared)}, which {names[0]} reads too: documents "
                         f"held out for validation from {names[0]} may be trained on in {names[i]}, so the "
                         f"validation loss after the boundary is optimistic. Give that stage a copy of the source "
                         f"without them (or a different sample) for an unbiased curve")
    return notes


def same_tokenizer(a, b) -> bool:
    """Whether two tokenizers give the same ids: the same vocabulary and the same special tokens."""
    ids = lambda t: (t.eos_token_id, t.pad_token_id, t.bos_token_id)  # noqa: E731
    return ids(a) == ids(b) and a.get_vocab() == b.get_vocab()


def build_stage_folders(data: DataConfig, tok: TokenizerConfig, root: Path) -> None:
    """Build (or keep, when reusable) the folder of every stage given by sources, into root/stage-i. The first
    stage's tokenizer tokenises the later stages unless `tok.name_or_path` names one for all. Main process only."""
    from .pipeline import build_prepared_data, load_prepared, reusable

    tokenizer_path = tok.name_or_path
    run_tokenizer = None
    for i, stage in enumerate(data.stages):
        if stage.prepared is not None:
            folder = Path(stage.prepared)
        else:
            folder = root / f"stage-{i}"
            stage_tok = dataclasses.replace(tok, name_or_path=tokenizer_path)
            stage_data = stage_data_config(data, stage)
            # Reusable only if tokenised with this run's tokenizer: the first stage may have been rebuilt since.
            if not (reusable(folder, stage_data, stage_tok) and
                    (run_tokenizer is None or same_tokenizer(load_prepared(folder).tokenizer, run_tokenizer))):
                build_prepared_data(stage_data, stage_tok, folder)
        if tokenizer_path is None:
            tokenizer_path = str(folder / "tokenizer")
        if run_tokenizer is None:
            from .tokenizer import load_tokenizer

            run_tokenizer = load_tokenizer(tokenizer_path)


def load_stage_folders(data: DataConfig, tok: TokenizerConfig, root: Path) -> list:
    """Every stage's prepared folder (`PreparedData`), all with the run's tokenizer; a stage folder tokenised with
    another is an error (its ids would mean other tokens)."""
    from .pipeline import load_prepared
    from .tokenizer import load_tokenizer

    folders = [Path(s.prepared) if s.prepared is not None else root / f"stage-{i}" for i, s in enumerate(data.stages)]
    tokenizer_path = tok.name_or_path or str(folders[0] / "tokenizer")
    stages = [load_prepared(folder, tokenizer_path) for folder in folders]
    for i, (folder, prep) in enumerate(zip(folders, stages)):
        if not same_tokenizer(load_tokenizer(str(folder / "tokenizer")), prep.tokenizer):
            raise ConfigError(
                f"data.stages[{i}]: {folder} was tokenised with another tokenizer than this run's ({tokenizer_path}); "
                f"one run takes one vocabulary. Prepare it again with tokenizer.name_or_path={tokenizer_path}")
    seq_lens = {len(prep.train[0]["input_ids"]) for prep in stages}
    if len(seq_lens) > 1:
        raise ConfigError(f"the stages' prepared folders have blocks of different lengths {sorted(seq_lens)}; "
                          f"prepare them with the same data.seq_len")
    return stages


def staged_card(names: list[str], cards: list[dict[str, Any]], state: Any = None) -> dict[str, Any]:
    """The data card of a staged run, for its summary and model card: the first stage's validation, vocabulary and
    unigram baseline (validation is the first stage's), every stage's training data, and what each stage trained
    (`state`: the loop's LoopState, when there is one) as rows of the card's data table."""
    keep = ("streamed", "validation", "unigram_validation_loss", "vocab_size", "adds_bos", "tokenizer")
    card = {k: cards[0][k] for k in keep if k in cards[0]}
    train = [c.get("train", {}) for c in cards]
    card["train"] = {"seq_len": train[0].get("seq_len"),
                     **{k: sum(t.get(k) or 0 for t in train) for k in ("documents", "blocks", "tokens")}}
    card["stages"] = []
    card["sources"] = {}
    for i, (name, c) in enumerate(zip(names, cards)):
        steps = state.stage_steps[i] if state is not None and i < len(state.stage_steps) else 0
        tokens = state.stage_tokens[i] if state is not None and i < len(state.stage_tokens) else 0
        data_tokens = c.get("train", {}).get("tokens")
        row = {"stage": i, "steps": steps, "tokens": tokens, "train_tokens": data_tokens,
               "epochs": round(tokens / data_tokens, 3) if data_tokens else None,
               "sources": "+".join(c.get("sources", {})), "fingerprint": c.get("fingerprint")}
        card["stages"].append({"name": name, **row})
        card["sources"][f"stage {name}"] = {k: v for k, v in row.items() if k != "fingerprint" and v is not None}
        for label, stats in c.get("sources", {}).items():
            card["sources"][f"{name}/{label}"] = {k: stats[k] for k in ("weight", "train_documents", "mixture_tokens")
                                                  if k in stats}
    return card


def stream_stage_opens(data: DataConfig, tokenizer, rank: int, world: int, micro_batch_size: int,
                       collate: Callable) -> list[Callable[[int, int], Any]]:
    """`data.stream_train` with stages: each stage's `open(epoch, skip_batches)` (hf_llm.data.stream)."""
    from .stream import batched_train_stream

    return [batched_train_stream(stage_data_config(data, stage), tokenizer, rank, world, micro_batch_size, collate)
            for stage in data.stages]


def streamed_fingerprints(data: DataConfig, tok: TokenizerConfig) -> list[Optional[str]]:
    """What identifies each streamed stage's training data (there is no prepared folder to carry a fingerprint)."""
    from .pipeline import data_fingerprint

    return [data_fingerprint(stage_data_config(data, stage), tok) for stage in data.stages]


__all__ = ["build_stage_folders", "check_stage_sources", "load_stage_folders", "same_tokenizer",
           "shared_source_notes", "stage_data_config", "stage_names", "staged_card", "stream_stage_opens",
           "streamed_fingerprints"]
