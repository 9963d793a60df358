"""What the one loop optimises: an objective counts the units a step's loss is averaged over and computes a
micro-batch's share of that average (with metric sums over its units).

Causal LM and SFT average over target tokens; preference tuning (hf_llm.train.preference) over pairs. The loop
counts units over every micro-batch of the step and every process, calls `loss` per micro-batch with the step's
normaliser, and reports each metric's sum divided by the step's units.
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch

from .collate import count_targets
from .loss import OutputLoss


class Objective(Protocol):
    def units(self, batch: dict[str, torch.Tensor]) -> int:
        """What one optimizer step's loss is averaged over: target tokens (causal LM, SFT) or pairs (preference)."""
        ...

    def loss(self, model, batch: dict[str, torch.Tensor],
             normaliser: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's summed loss divided by `normaliser`, and metric SUMS over the batch's units (detached)."""
        ...


class CausalLMObjective:
    """Summed token cross-entropy over the labels that are not -100 (pretraining, SFT)."""

    def __init__(self, output_loss: Optional[OutputLoss] = None):
        self.output_loss = output_loss

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return count_targets(batch["labels"])

    def loss(self, model, batch: dict[str, torch.Tensor],
             normaliser: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if self.output_loss is not None:
            out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
            loss = self.output_loss(out.hidden_states[-1], batch["labels"], normaliser)
        else:
            out = model(**inputs, labels=batch["labels"], use_cache=False,
                        num_items_in_batch=torch.tensor(normaliser))
            loss = out.loss
        return loss, {"loss": loss.detach().float() * normaliser}
