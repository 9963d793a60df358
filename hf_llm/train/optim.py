"""AdamW with parameter groups, and learning-rate schedules (cosine, WSD, linear, constant)."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..config import TrainConfig


def no_decay(name: str, param: torch.nn.Parameter) -> bool:
    """Norm gains, biases and embeddings: one-dimensional or embedding tables, where decay only hurts."""
    lowered = name.lower()
    return param.ndim < 2 or "norm" in lowered or "embed" in lowered or "wte" in lowered or "wpe" in lowered


def param_groups(model: torch.nn.Module, cfg: TrainConfig) -> list[dict]:
    decay, skip = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (skip if not cfg.decay_norms_biases_embeddings and no_decay(name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if skip:
        groups.append({"params": skip, "weight_decay": 0.0})
    return groups


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, cpu_offload: bool = False) -> torch.optim.Optimizer:
    """AdamW; DeepSpeed's CPU Adam when ZeRO offloads optimizer states (torch's would run the update on the GPU side).

    Built here rather than swapped in by accelerate so the LR schedule stays bound to the optimizer that steps.
    """
    groups = param_groups(model, cfg)
    if cpu_offload:
        from deepspeed.ops.adam import DeepSpeedCPUAdam

        return DeepSpeedCPUAdam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, adamw_mode=True)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


def lr_multiplier(step: int, total: int, cfg: TrainConfig) -> float:
    """Factor applied to the peak LR at optimizer step `step` (0-based) of `total`."""
    warmup = min(cfg.warmup_steps, max(total - 1, 0))
    if step < warmup:
        return (step + 1) / (warmup + 1)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "wsd":
        # Warmup-stable-decay (Hägele et al. 2024): flat, then a linear cool-down over the last steps.
        decay_steps = max(1, int(round(cfg.decay_fraction * total)))
        start = total - decay_steps
        if step < start:
            return 1.0
        return 1.0 - (1.0 - floor) * min(1.0, (step - start + 1) / decay_steps)
    progress = min(1.0, (step - warmup) / max(1, total - warmup - 1))
    if cfg.schedule == "linear":
        return 1.0 - (1.0 - floor) * progress
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: TrainConfig):
    fn: Callable[[int], float] = lambda step: lr_multiplier(step, total_steps, cfg)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def restart_schedule(optimizer: torch.optim.Optimizer, scheduler, total_steps: int, cfg: TrainConfig) -> None:
    """After loading another run's optimizer state (`train.init_from`): keep its moments and step counts, take this
    run's hyperparameters (loading a state dict brings the old ones back) and start the schedule at its step 0."""
    for i, group in enumerate(optimizer.param_groups):
        # The groups are param_groups' order: decayed weights first, then (if any) the undecayed ones.
        group.update(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                     weight_decay=cfg.weight_decay if i == 0 else 0.0)
        group.pop("initial_lr", None)
    fresh = build_scheduler(optimizer, total_steps, cfg)  # sets every group's LR to its step-0 value
    scheduler.load_state_dict(fresh.state_dict())
