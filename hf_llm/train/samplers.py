"""Training samplers: the order of examples is a function of (seed, epoch) only, which makes resume exact."""

from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """A seeded permutation per epoch: the order depends only on (seed, epoch), which makes resume exact."""

    def __init__(self, size: int, seed: int, shuffle: bool = True):
        self.size, self.seed, self.shuffle, self.epoch = size, seed, shuffle, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            return iter(range(self.size))
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.size, generator=g).tolist())

    def __len__(self) -> int:
        return self.size


class LengthGroupedSampler(EpochSampler):
    """Shuffled batches of similar length (less padding); the order depends only on (seed, epoch), so resume is exact.

    Each epoch's permutation is cut into groups of `group_batches` batches, each group sorted by length and cut
    into batches, and the full batches shuffled; a partial batch goes last so the loader's batches stay aligned.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group_batches: int = 64):
        super().__init__(len(lengths), seed)
        self.lengths, self.batch_size, self.group_batches = list(lengths), batch_size, group_batches

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        perm = torch.randperm(self.size, generator=g).tolist()
        group = self.batch_size * self.group_batches
        ordered = [j for s in range(0, self.size, group)
                   for j in sorted(perm[s:s + group], key=lambda j: -self.lengths[j])]
        batches = [ordered[s:s + self.batch_size] for s in range(0, self.size, self.batch_size)]
        full = [b for b in batches if len(b) == self.batch_size]
        partial = [b for b in batches if len(b) < self.batch_size]
        shuffled = [full[k] for k in torch.randperm(len(full), generator=g).tolist()]
        return iter([j for b in shuffled + partial for j in b])
