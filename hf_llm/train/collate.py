"""Batches → model inputs: packed blocks with per-document position ids and labels; padded SFT examples."""

from __future__ import annotations

from typing import Any, Optional

import torch

from ..data.pack import IGNORE_INDEX  # one definition: the packers write the same label into best_fit blocks


def document_position_ids(input_ids: torch.Tensor, eos_token_id: int) -> torch.Tensor:
    """Positions that restart at 0 after every EOS (and at the start of each row).

    transformers turns position ids that restart into a block-causal mask (SDPA, eager; flash only in a batch of
    one row, see `needs_varlen_kwargs`), so a token attends only to earlier tokens of its own document.
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


def needs_varlen_kwargs(attn_implementation: Optional[str]) -> bool:
    """Whether packed batches must carry varlen kwargs (`varlen_kwargs`) to keep documents apart: flash kernels
    (flash_attention_2/3/4 and kernels-hub flash names).

    Flash attention takes no mask: transformers keeps packed documents apart only through varlen kwargs or, without
    them, position ids of a batch of ONE row (`_is_packed_sequence`); rows of a larger batch are each attended as
    one sequence. The test is transformers' own, the one that routes a model to its flash code.
    """
    from transformers.utils.generic import is_flash_attention_requested

    return is_flash_attention_requested(requested_attention_implementation=attn_implementation)


def varlen_kwargs(position_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Flash attention's varlen kwargs for packed rows: `cu_seq_lens_q/k` (int32 starts of every sequence over the
    row-major flattened batch, then the total length) and `max_length_q/k`.

    Given these, transformers' flash path flattens the (rows × length) batch itself, attends within each sequence
    and restores the shape, so rows, labels and per-row sums stay as they are (the layout of transformers'
    DataCollatorWithFlattening, without moving the tokens). A sequence starts at every position id 0, and every
    row must start one, so a sequence never runs from one row into the next.
    """
    if (position_ids[:, 0] != 0).any():
        raise ValueError("every packed row must start at position id 0 for flash attention's varlen kwargs")
    flat_starts = (position_ids.reshape(-1) == 0).nonzero().flatten()
    cu_seq_lens = torch.cat([flat_starts, torch.tensor([position_ids.numel()])]).to(torch.int32)
    # 0-dim tensors, not Python ints: the loop moves every batch value with `.to(device)`. transformers hands its
    # own inferred max lengths to the kernels the same way.
    max_length = cu_seq_lens.diff().max()
    return {"cu_seq_lens_q": cu_seq_lens, "cu_seq_lens_k": cu_seq_lens,
            "max_length_q": max_length, "max_length_k": max_length}


class PackedCollator:
    """Stacks fixed-length blocks; adds `position_ids` and `labels` (explicit columns win when present).

    `varlen` (see `needs_varlen_kwargs`) adds flash attention's varlen kwargs (`varlen_kwargs`).
    """

    def __init__(self, eos_token_id: int, pad_token_id: Optional[int] = None, varlen: bool = False):
        self.eos_token_id = eos_token_id
        self.pad_token_id = pad_token_id
        self.varlen = varlen

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
        batch = {"input_ids": input_ids, "position_ids": position_ids, "labels": labels}
        return {**batch, **varlen_kwargs(position_ids)} if self.varlen else batch


def count_targets(labels: torch.Tensor) -> int:
    """Tokens that contribute to the loss (the model drops the first label when it shifts)."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())


class PaddingCollator:
    """Right-pads a batch to its longest example: pad id, attention_mask 0 and labels -100 on the padding."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r["input_ids"])
            input_ids[i, :n] = torch.as_tensor(r["input_ids"], dtype=torch.long)
            labels[i, :n] = torch.as_tensor(r["labels"], dtype=torch.long)
            attention_mask[i, :n] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
