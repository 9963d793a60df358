"""Preference tuning as an objective of the one loop: DPO (sigmoid), IPO and SimPO on pairs of responses.

A micro-batch holds whole pairs: its rows are every pair's chosen sequence, then every pair's rejected sequence
(prompt + response each), so a pair is never split across micro-batches or processes, and the step's loss is
averaged over pairs. Only response tokens are scored (the completion mask; the end-of-turn token that closes a
response is part of it). The reference model's log-probabilities come from the batch (precomputed before training,
full fine-tuning), from the policy with its adapters disabled (LoRA/DoRA: no second copy), or from a frozen copy.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Optional

import torch
import torch.nn.functional as F

from ..errors import ConfigError

LOSS_TYPES = ("sigmoid", "ipo", "simpo")  # DPO, IPO (length-normalised, as TRL), SimPO (reference-free)
REFERENCE_FREE = ("simpo",)
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracy", "rewards/margin", "logps/chosen",
           "logps/rejected")


class PairCollator:
    """Pairs → one batch of 2·b right-padded rows: chosen sequences first, then rejected ones, with attention and
    completion masks; precomputed reference log-probabilities ride along as (b,) columns."""

    def __init__(self, pad_token_id: int):
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seqs = [(r["prompt_ids"], r[side]) for side in ("chosen_ids", "rejected_ids") for r in rows]
        length = max(len(p) + len(c) for p, c in seqs)
        input_ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(seqs), length), dtype=torch.long)
        completion_mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, (prompt, completion) in enumerate(seqs):
            n, m = len(prompt), len(completion)
            input_ids[i, :n + m] = torch.as_tensor([*prompt, *completion], dtype=torch.long)
            attention_mask[i, :n + m] = 1
            completion_mask[i, n:n + m] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        if "ref_chosen_logps" in rows[0]:
            for key in ("ref_chosen_logps", "ref_rejected_logps"):
                batch[key] = torch.tensor([float(r[key]) for r in rows], dtype=torch.float32)
        return batch


def sequence_logps(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-probability of each row's completion tokens in fp32, completion tokens per row)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    logits = out.logits[:, :-1].float()
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].to(logits.dtype)
    token_logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    return (token_logps * mask).sum(dim=1), mask.sum(dim=1)


def peft_model_of(model):
    """The PEFT model inside accelerate's wrappers (DDP, DeepSpeed engine, compile), or None."""
    while model is not None:
        if hasattr(model, "disable_adapter") and hasattr(model, "peft_config"):
            return model
        model = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
    return None


def pair_losses(loss_type: str, beta: float, policy: tuple[torch.Tensor, torch.Tensor],
                reference: Optional[tuple[torch.Tensor, torch.Tensor]], lengths: tuple[torch.Tensor, torch.Tensor],
                simpo_gamma: float = 0.5) -> dict[str, torch.Tensor]:
    """Per pair: the loss (with its graph) and the detached metrics, from summed log-probabilities.

    sigmoid (DPO): -log σ(β·((πc − rc) − (πr − rr))); rewards β·(π − r).
    ipo: ((πc − rc)/|c| − (πr − rr)/|r| − 1/(2β))², with per-token averages as TRL does; rewards β·(π − r).
    simpo: -log σ(β·(πc/|c| − πr/|r|) − γ), no reference; rewards β·π/|y| (as TRL's CPOTrainer).
    """
    chosen, rejected = policy
    len_c, len_r = (n.clamp(min=1.0) for n in lengths)
    if loss_type in REFERENCE_FREE:
        chosen_rewards, rejected_rewards = beta * chosen / len_c, beta * rejected / len_r
        loss = -F.logsigmoid(chosen_rewards - rejected_rewards - simpo_gamma)
    else:
        ref_c, ref_r = reference
        chosen_ratio, rejected_ratio = chosen - ref_c, rejected - ref_r
        if loss_type == "sigmoid":
            loss = -F.logsigmoid(beta * (chosen_ratio - rejected_ratio))
        elif loss_type == "ipo":
            loss = (chosen_ratio / len_c - rejected_ratio / len_r - 1 / (2 * beta)) ** 2
        else:
            raise ConfigError(f"preference.loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        chosen_rewards, rejected_rewards = beta * chosen_ratio, beta * rejected_ratio
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {"loss": loss, "rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/accuracy": (chosen_rewards > rejected_rewards).float(),
            "rewards/margin": chosen_rewards - rejected_rewards,
            "logps/chosen": chosen.detach(), "logps/rejected": rejected.detach()}


class PreferenceObjective:
    """The `Objective` of preference tuning: units are pairs.

    `reference`: "batch" (the batch carries precomputed `ref_*_logps`), "adapters" (the policy with its adapters
    disabled), "frozen" (`ref_model`, a frozen copy), or "none" (reference-free losses).
    """

    def __init__(self, loss_type: str, beta: float, reference: str, ref_model=None, simpo_gamma: float = 0.5):
        if loss_type not in LOSS_TYPES:
            raise ConfigError(f"preference.loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")
        if reference == "frozen" and ref_model is None:
            raise ValueError("reference='frozen' needs ref_model")
        self.loss_type, self.beta, self.reference = loss_type, beta, reference
        self.ref_model, self.simpo_gamma = ref_model, simpo_gamma

    def units(self, batch: dict[str, torch.Tensor]) -> int:
        return batch["input_ids"].shape[0] // 2

    def reference_logps(self, model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen_logps" in batch:
            return batch["ref_chosen_logps"].float(), batch["ref_rejected_logps"].float()
        if self.reference == "batch":
            raise ValueError("the batch has no precomputed reference log-probabilities (ref_chosen_logps)")
        with torch.no_grad():
            if self.reference == "frozen":
                logps, _ = sequence_logps(self.ref_model, batch)
            else:
                peft = peft_model_of(model)
                if peft is None:
                    raise ValueError("reference='adapters' needs a PEFT model (LoRA/DoRA)")
                with peft.disable_adapter():
                    logps, _ = sequence_logps(model, batch)
        return tuple(logps.chunk(2))

    def pair_values(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logps, lengths = sequence_logps(model, batch)
        reference = None if self.loss_type in REFERENCE_FREE else self.reference_logps(model, batch)
        return pair_losses(self.loss_type, self.beta, tuple(logps.chunk(2)), reference, tuple(lengths.chunk(2)),
                           self.simpo_gamma)

    def loss(self, model, batch: dict[str, torch.Tensor],
             normaliser: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        values = self.pair_values(model, batch)
        loss = values.pop("loss")
        return loss.sum() / normaliser, {k: v.detach().float().sum() for k, v in values.items()}

    def eval_items(self, model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per pair: its loss, one unit, and every metric (validation gathers these over processes)."""
        values = {k: v.detach().float() for k, v in self.pair_values(model, batch).items()}
        return {**values, "units": torch.ones_like(values["loss"])}


@torch.no_grad()
def compute_reference_logps(model, dataset, collate: PairCollator, batch_size: int, device,
                            autocast=contextlib.nullcontext) -> tuple[list[float], list[float]]:
    """Summed reference log-probabilities of every pair's chosen and rejected response, in dataset order, from
    `model` in eval mode (no dropout): what a frozen copy would give at every step."""
    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for start in range(0, len(dataset), batch_size):
        rows = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        with autocast():
            logps, _ = sequence_logps(model, batch)
        c, r = logps.chunk(2)
        chosen += c.tolist()
        rejected += r.tolist()
    model.train(was_training)
    return chosen, rejected

