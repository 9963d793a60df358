"""What the loop trains on: a list of curriculum stages (`data.stages`; a run without them is one stage).

Each stage says where it ends (`until_step` / `until_tokens`, none for the last) and builds its micro-batches. Two
kinds, one protocol (`TrainStage`):

- `BlockStage`: an in-memory (memory-mapped) dataset of packed blocks or SFT examples. Its DataLoader goes through
  `accelerate.prepare`, which shards it over the processes; every process is at the same position.
- `StreamedStage`: `data.stream_train`, blocks read from the sources and packed on the fly, already split by node
  (hf_llm.data.stream). It never goes through `accelerate.prepare` (which would shard it again); streams end at
  different times on different processes, so each process resumes at its own position
  (`LoopState.stream_positions`, gathered at every checkpoint).

`StepBatches` hands the loop its micro-batches, endlessly over epochs, and switches from one stage to the next at
the same optimizer step on every process; `LoopState` (epoch, batches_in_epoch, stage) says where it is, so a
checkpoint taken at any step resumes in the right stage at the right batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Protocol

import torch
from torch.utils.data import DataLoader

from ..config import TrainConfig
from ..errors import ConfigError
from .checkpoint import LoopState
from .samplers import EpochSampler

Batch = dict[str, torch.Tensor]


class EpochBatches(Protocol):
    """One stage's micro-batches of this process, epoch by epoch."""

    # Whether processes may be at different positions (a stream split by node): then each one's is checkpointed.
    per_process_position: bool

    def open(self, epoch: int, skip_batches: int) -> Iterator[Batch]:
        """This process's micro-batches of `epoch` after the first `skip_batches`."""
        ...


class TrainStage(Protocol):
    """One curriculum stage as the loop takes it."""

    name: str
    until_step: Optional[int]  # the stage ends after this optimizer step of the run (or:)
    until_tokens: Optional[int]  # after this many tokens, rounded up to whole steps; neither: the last stage
    fingerprint: Optional[str]  # identifies the stage's data (see LoopState.data_fingerprints)

    def rows(self) -> Optional[int]:
        """Training rows (blocks or examples), for the run's description; None when streamed (unknown)."""
        ...

    def loader(self, train: TrainConfig) -> Optional[DataLoader]:
        """The DataLoader that `accelerate.prepare` must shard over the processes; None when the stage's data is
        already split by process."""
        ...

    def epochs(self, accelerator: Any, loader: Optional[DataLoader]) -> EpochBatches:
        """The stage's micro-batches, from the loader `accelerate.prepare` returned for `loader()`'s."""
        ...


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator. Creating a loader's iterator draws a seed from it; without one that draw comes
    from the global RNG, which after a resume shifts every later dropout mask (resume would not be exact)."""
    return torch.Generator().manual_seed(seed)


def build_train_loader(dataset, batch_size: int, collate: Callable, seed: int,
                       sampler: Optional[EpochSampler] = None) -> DataLoader:
    # drop_last keeps every process's micro-batches full and equal in number.
    sampler = sampler if sampler is not None else EpochSampler(len(dataset), seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                      generator=loader_generator(seed))


def build_eval_loader(dataset, batch_size: int, collate: Callable) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                      generator=loader_generator(0))


@dataclass
class LoaderEpochs:
    """A sharded DataLoader's epochs: the sampler's order is a function of (seed, epoch), and a resumed epoch skips
    the batches already taken."""

    accelerator: Any
    loader: DataLoader
    name: str
    per_process_position: bool = False

    def __post_init__(self) -> None:
        if len(self.loader) == 0:
            raise ValueError(f"{self.name} has fewer blocks than one micro-batch per process; lower micro_batch_size")

    def open(self, epoch: int, skip_batches: int) -> Iterator[Batch]:
        self.loader.set_epoch(epoch) if hasattr(self.loader, "set_epoch") else None
        sampler = getattr(self.loader, "sampler", None)
        for s in (sampler, getattr(getattr(self.loader, "batch_sampler", None), "sampler", None)):
            if isinstance(s, EpochSampler):
                s.set_epoch(epoch)
        loader = self.accelerator.skip_first_batches(self.loader, skip_batches) if skip_batches else self.loader
        return iter(loader)


@dataclass
class StreamEpochs:
    """A stream's epochs (`open(epoch, skip_batches)` from hf_llm.data.stream), already split by node."""

    open: Callable[[int, int], Iterator[Batch]]
    per_process_position: bool = True


@dataclass
class BlockStage:
    """A stage of in-memory training rows: a `datasets.Dataset` of packed blocks or SFT examples."""

    dataset: Any
    collate: Callable
    name: str = ""
    until_step: Optional[int] = None
    until_tokens: Optional[int] = None
    fingerprint: Optional[str] = None
    sampler: Optional[EpochSampler] = None  # the order of rows (None: a seeded permutation per epoch)

    def rows(self) -> Optional[int]:
        return len(self.dataset)

    def loader(self, train: TrainConfig) -> Optional[DataLoader]:
        return build_train_loader(self.dataset, train.micro_batch_size, self.collate, train.seed, self.sampler)

    def epochs(self, accelerator: Any, loader: Optional[DataLoader]) -> EpochBatches:
        return LoaderEpochs(accelerator, loader, "the training set" if not self.name else f"data stage {self.name}")


@dataclass
class StreamedStage:
    """A stage streamed from its sources (`data.stream_train`): `open(epoch, skip_batches)` → this process's
    collated micro-batches (hf_llm.data.stream.batched_train_stream)."""

    open: Callable[[int, int], Iterator[Batch]]
    name: str = ""
    until_step: Optional[int] = None
    until_tokens: Optional[int] = None
    fingerprint: Optional[str] = None

    def rows(self) -> Optional[int]:
        return None

    def loader(self, train: TrainConfig) -> Optional[DataLoader]:
        return None

    def epochs(self, accelerator: Any, loader: Optional[DataLoader]) -> EpochBatches:
        return StreamEpochs(self.open)


def stage_ends(stages: list[TrainStage], tokens_per_step: int, total_steps: int) -> list[int]:
    """The optimizer step after which each stage ends (the last: `total_steps`).

    A token boundary is rounded up to whole optimizer steps, as `train.max_tokens` is: every step draws all its
    micro-batches from one stage. Every stage must get at least one step of the run.
    """
    ends = []
    for i, stage in enumerate(stages[:-1]):
        end = stage.until_step if stage.until_step is not None else math.ceil(stage.until_tokens / tokens_per_step)
        what = (f"until_step={stage.until_step}" if stage.until_step is not None else
                f"until_tokens={stage.until_tokens:,} (step {end} at {tokens_per_step:,} tokens per step)")
        if ends and end <= ends[-1]:
            raise ConfigError(f"data.stages[{i}] ({stage.name}) ends at {what}, not after the previous stage's end at "
                              f"step {ends[-1]}; make the boundaries increase")
        if end >= total_steps:
            raise ConfigError(f"data.stages[{i}] ({stage.name}) ends at {what}, but the run has {total_steps} steps, "
                              f"so the stages after it would never run; move the boundary or raise train.max_steps")
        ends.append(end)
    return [*ends, total_steps]


@dataclass
class StepBatches:
    """Endless micro-batches over epochs and stages; `state` (epoch, batches_in_epoch, stage) says where they are.

    `epochs[i]` are stage i's micro-batches and `starts[i]` its first optimizer step (0 for the first). `at_step`
    enters a stage when its first step comes, at the same step on every process, and the position restarts within
    it. A stream's per-process position is restored from `state.stream_positions` on resume.
    """

    accelerator: Any
    epochs: list[EpochBatches]
    starts: list[int]
    state: LoopState
    _it: Optional[Iterator[Batch]] = field(default=None, init=False, repr=False)  # the current epoch's batches

    def __post_init__(self) -> None:
        state = self.state
        # The stage of the last step taken must be the checkpoint's: its position is a position in that stage.
        if state.step > 0 and self.stage_of(state.step - 1) != state.stage:
            raise ConfigError(f"the checkpoint at step {state.step} was written in data stage {state.stage}, but this "
                              f"recipe's data.stages put step {state.step} in stage {self.stage_of(state.step - 1)}; "
                              f"resume with the stages (and boundaries up to step {state.step}) that wrote it")
        if self.current.per_process_position and state.stream_positions:
            if len(state.stream_positions) != self.accelerator.num_processes:
                raise ValueError(f"the checkpoint's stream was split over {len(state.stream_positions)} processes; "
                                 f"resume a streamed run with the same number ({self.accelerator.num_processes} now)")
            state.epoch, state.batches_in_epoch = state.stream_positions[self.accelerator.process_index]

    @property
    def current(self) -> EpochBatches:
        return self.epochs[self.state.stage]

    def stage_of(self, step: int) -> int:
        """The stage that optimizer step `step` (0-based) draws from."""
        return max(i for i, start in enumerate(self.starts) if start <= step)

    def at_step(self, step: int) -> bool:
        """Enter the stage that optimizer step `step` (0-based) draws from; True if that is a new one."""
        stage = self.stage_of(step)
        if stage == self.state.stage:
            return False
        self.state.stage, self.state.epoch, self.state.batches_in_epoch = stage, 0, 0
        self._it = None
        return True

    def positions(self) -> list[list[int]]:
        """[epoch, batches_in_epoch] of every process where they may differ (a stream), else []. A collective when
        they may differ: every process calls it."""
        if not self.current.per_process_position:
            return []
        here = torch.tensor([[self.state.epoch, self.state.batches_in_epoch]], device=self.accelerator.device)
        return self.accelerator.gather(here).tolist()

    def __next__(self) -> Batch:
        if self._it is None:
            self._it = self.current.open(self.state.epoch, self.state.batches_in_epoch)
        try:
            batch = next(self._it)
        except StopIteration:
            self.state.epoch += 1
            self.state.batches_in_epoch = 0
            self._it = self.current.open(self.state.epoch, 0)
            batch = next(self._it, None)
            if batch is None:
                raise ValueError("this process's training data holds less than one micro-batch; lower "
                                 "micro_batch_size or use fewer processes")
        self.state.batches_in_epoch += 1
        return batch


__all__ = ["BlockStage", "EpochBatches", "LoaderEpochs", "StepBatches", "StreamEpochs", "StreamedStage",
           "TrainStage", "build_eval_loader", "build_train_loader", "loader_generator", "stage_ends"]
