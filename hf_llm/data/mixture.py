"""Mixture and hold-out arithmetic: how many documents each source gives, and which ones, pass by pass.

Pure functions of sizes, weights and seeds, shared by the data pipeline (selection.py, stream.py, stages.py) and
SFT (sft.py), so a weight or a validation fraction means the same everywhere.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ..errors import DataError


def mixture_shares(weights: list[float]) -> np.ndarray:
    """Each source's share of the mixture, weights[i] / sum(weights); bad weights are an error."""
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"source weights must be non-negative with a positive sum, got {list(weights)}")
    return np.asarray(weights, dtype=np.float64) / sum(weights)


def mixture_counts(sizes: list[int], weights: list[float], lengths: Optional[list[float]] = None) -> list[int]:
    """Documents to draw from each source so that source i gets weights[i]/sum(weights) of the mixture.

    The mixture keeps the total size of the inputs: documents, or tokens when `lengths` gives each source's mean
    document length in tokens (the pipeline's mix_by=tokens); a source whose share exceeds what it holds is
    repeated, one with more than its share is subsampled.
    """
    shares = mixture_shares(weights)
    per_doc = np.asarray(lengths if lengths is not None else [1.0] * len(sizes), dtype=np.float64)
    total = float((np.asarray(sizes) * per_doc).sum())
    return [int(round(s * total / max(d, 1e-9))) for s, d in zip(shares, per_doc)]


def sample_indices(size: int, count: int, seed: int) -> np.ndarray:
    """`count` row indices from `size` rows: whole passes plus a seeded random remainder, shuffled."""
    rng = np.random.default_rng(seed)
    whole, rest = divmod(count, size)
    idx = np.concatenate([np.tile(np.arange(size), whole), rng.choice(size, rest, replace=False)])
    return rng.permutation(idx)


def mixture_passes(available: int, count: int, seed: int) -> list[np.ndarray]:
    """Which of `available` documents to draw, pass by pass, to draw `count` in all.

    Whole passes take every document; the last, partial pass a seeded random subset. Each pass is in the source's
    order, so the pack pass reads a source once per pass (blocks are shuffled at training time, not here).
    """
    if available == 0 or count == 0:
        return []
    whole, rest = divmod(count, available)
    passes = [np.arange(available) for _ in range(whole)]
    if rest:
        passes.append(np.sort(np.random.default_rng(seed).choice(available, rest, replace=False)))
    return passes


def validation_share(n: int, fraction: float, max_docs: Optional[int] = None) -> int:
    """Documents (or SFT examples) a validation set of `fraction` of `n` holds: rounded, at least 1, at most
    `max_docs`."""
    return min(max(1, round(fraction * n)), n if max_docs is None else max_docs)


def validation_size(n: int, fraction: float, max_docs: Optional[int] = None) -> int:
    """`validation_share` of `n` documents held out, but never all of them: at least one stays for training."""
    return min(validation_share(n, fraction, max_docs), n - 1)
