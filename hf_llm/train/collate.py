"""Batches of packed blocks → model inputs with per-document position ids and labels."""

from __future__ import annotations

from typing import Any, Optional

import torch

IGNORE_INDEX = -100


def document_position_ids(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Positions that restart at 0 after every EOS (and at the start of each row).

    transformers turns position ids that restart into a block-causal mask (SDPA, eager, flash), so a token
    attends only to earlier tokens of its own document.
    """
    batch, length = input_ids.shape
    starts = torch.zeros_like(input_ids, dtype=torch.bool)
    starts[:, 0] = True
    starts[:, 1:] = input_ids[:, :-1] == eos_token_id
    index = torch.arange(length, device=input_ids.device).expand(batch, length)
    last_start = torch.where(starts, index, torch.zeros_like(index)).cummax(dim=1).values
    return index - last_start


def causal_lm_labels(input_ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
    """Labels equal inputs (the model shifts them), except each document's first token.

    The first token of a document would be predicted from the previous document's EOS, a prediction across
    a document boundary; it is not a target.
    """
    labels = input_ids.clone()
    labels[position_ids == 0] = IGNORE_INDEX
    return labels


class PackedCollator:
    """Stacks fixed-length blocks; adds `position_ids` and `labels` (explicit columns win when present)."""

    def __init__(self, eos_token_id: int, pad_token_id: Optional[int] = None):
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        input_ids = torch.stack([torch.as_tensor(r["input_ids"], dtype=torch.long) for r in rows])
        if "position_ids" in rows[0]:
            position_ids = torch.stack([torch.as_tensor(r["position_ids"], dtype=torch.long) for r in rows])
        else:
            position_ids = document_position_ids(input_ids, self.eos_token_id)
        if "labels" in rows[0]:
            labels = torch.stack([torch.as_tensor(r["labels"], dtype=torch.long) for r in rows])
        else:
            labels = causal_lm_labels(input_ids, position_ids)
        return {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}


def count_targets(labels: torch.Tensor) -> int:
    """Tokens that contribute to the loss (the model drops the first label when it shifts)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
