"""What the one loop optimises: an objective turns a batch into a loss and tells what that loss is averaged over.

Causal language modelling (pretraining, and SFT with its prompt labels masked) is `CausalLMObjective`; preference
tuning plugs in another `Objective` without another loop. The loop (`train_step`) owns accumulation: it counts the
step's units over every micro-batch and process, hands each micro-batch the same normaliser, and sums the metrics.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol

import torch

from ..evaluation import row_token_nll
from .collate import count_targets
from .loss import OutputLoss

Batch = dict[str, torch.Tensor]


class Objective(Protocol):
    """The loss the loop trains on (see `train.loop.train_step`)."""

    def units(self, batch: Batch) -> int:
        """What one optimizer step's loss is averaged over, in this micro-batch: target tokens (causal LM, SFT) or
        pairs (preference)."""
        ...

    def loss(self, model: Any, batch: Batch, normaliser: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The batch's summed loss divided by `normaliser` (what backward runs on), and metric SUMS over the batch's
        units (detached, float; the loop divides them by the step's units)."""
        ...

    def eval_items(self, model: Any, batch: Batch) -> dict[str, torch.Tensor]:
        """Validation of `batch`, per item (what the loader's dataset holds: a block, an example, a pair) as 1-D
        tensors over the items: "loss" (its summed loss), "units" (its units) and each metric's sum. Per item, so
        that a distributed evaluation can drop the items that only pad a shard (`gather_for_metrics`). Runs in eval
        mode under `torch.no_grad`."""
        ...


class CausalLMObjective:
    """Next-token cross-entropy over the labels that are not IGNORE_INDEX (labels are shifted inside, as the model
    does). Metrics: none beyond the loss.

    With `output_loss` (`train.fused_loss`, see train.loss.output_loss_for) the training forward (through the
    DDP/DeepSpeed wrapper, which must see it) stops at the final hidden state (`logits_to_keep=1` leaves one
    position's logits) and the chunked loss takes it from there. Validation keeps the model's own forward.
    """

    def __init__(self, output_loss: Optional[OutputLoss] = None):
        self.output_loss = output_loss

    def units(self, batch: Batch) -> int:
        return count_targets(batch["labels"])

    def loss(self, model: Any, batch: Batch, normaliser: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        if self.output_loss is not None:
            hidden = self.output_loss.final_hidden(model, inputs)
            return self.output_loss(hidden, batch["labels"], normaliser), {}
        out = model(**inputs, labels=batch["labels"], use_cache=False, num_items_in_batch=torch.tensor(normaliser))
        return out.loss, {}

    def eval_items(self, model: Any, batch: Batch) -> dict[str, torch.Tensor]:
        # use_cache=False matters: with a cache transformers skips building the block-causal mask from the
        # restarting position ids, and packed documents would attend to each other.
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits
        nll, targets = row_token_nll(logits, batch["labels"])  # the computation scripts/evaluate.py sums
        return {"loss": nll, "units": targets}


__all__ = ["Batch", "CausalLMObjective", "Objective"]
