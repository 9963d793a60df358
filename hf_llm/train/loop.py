"""The one training loop, shared by pretraining, fine-tuning and every objective.

It owns gradient accumulation (the loss normalised by the units of the whole optimizer step, across micro-batches
and processes: target tokens for causal LM and SFT), mixed precision and distribution (through accelerate),
clipping, the schedule, periodic validation, logging, checkpointing and exact resume. What differs between runs is
decided by the builders that call it: what it trains on (train.stages), the objective (train.objective), label
masking and adapters.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from ..config import EvalConfig, TrainConfig
from ..downstream import WARNING_KEY
from ..estimate import model_flops_utilization
from .checkpoint import LoopState, save_checkpoint
from .downstream import downstream_pass
from .metrics import peak_memory_bytes
from .objective import Batch, CausalLMObjective, Objective
from .stages import StepBatches


def train_step(accelerator, model, micro_batches: list[Batch],
               objective: Objective) -> tuple[float, int, dict[str, float]]:
    """Forward and backward over one optimizer step's micro-batches; returns (mean loss per unit, units, metrics):
    units as `objective.units` counts them (target tokens, pairs) over the step on all processes, and each metric's
    sum over micro-batches and processes divided by them.

    The loss of every micro-batch is its summed loss over the units of the whole step on all processes, so k
    micro-batches of b give the gradient of one batch of k·b, whatever their unit counts. accelerate (and
    DeepSpeed) divide by the accumulation steps and DDP averages over processes; the factor `world * k` in the
    normaliser undoes both.
    """
    world, k = accelerator.num_processes, len(micro_batches)
    local = torch.tensor(float(sum(objective.units(b) for b in micro_batches)), device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum").item() if world > 1 else local.item()
    if total == 0:
        raise ValueError("an optimizer step has nothing to learn from (no target tokens: all labels are -100, or no "
                         "pairs); check the label masking")
    normaliser = total / (world * k)
    summed = torch.zeros((), device=accelerator.device)
    metric_sums: dict[str, torch.Tensor] = {}
    for batch in micro_batches:
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss, metrics = objective.loss(model, batch, normaliser)
            accelerator.backward(loss)
        summed += loss.detach().float() * normaliser
        for name, value in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value.detach().float()
    # One collective for the loss and every metric (the same names on every process: one objective).
    names = sorted(metric_sums)
    sums = torch.stack([summed, *(metric_sums[n].reshape(()) for n in names)])
    sums = accelerator.reduce(sums, reduction="sum") if world > 1 else sums
    values = sums.tolist()
    return values[0] / total, int(total), {n: v / total for n, v in zip(names, values[1:])}


def optimizer_step(accelerator, optimizer, scheduler) -> bool:
    """Apply the update, then advance the schedule only if the update was applied: under fp16 the grad scaler
    skips a step whose gradients overflowed, and the schedule must not run ahead of the steps really taken."""
    optimizer.step()
    taken = not accelerator.optimizer_step_was_skipped
    if taken:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return taken


def uncompiled():
    """A context in which compiled layers run eagerly. Validation and downstream passes use it: compiling the layers
    again for no-grad, eval mode and their batch shapes (the last, smaller batch makes the compiler recompile with
    dynamic shapes) would cost more compile time than their few forwards could save."""
    return torch.compiler.set_stance("force_eager")


@torch.no_grad()
def evaluate_loss(accelerator, model, loader, objective: Optional[Objective] = None,
                  max_batches: Optional[int] = None) -> tuple[float, int, dict[str, float]]:
    """Mean loss per unit (the causal LM objective: cross-entropy per target token) over `loader`, over all
    processes, each validation item counted once; returns (loss, units, each metric per unit).

    A loader that went through `accelerate.prepare` pads the last batches of uneven shards with items from the
    start (so every process runs the same number of forwards, which ZeRO-3 needs); per-item sums
    (`objective.eval_items`) go through `gather_for_metrics`, which drops that padding, so the result does not
    depend on the number of processes.
    """
    objective = objective if objective is not None else CausalLMObjective()
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        with accelerator.autocast(), uncompiled():
            items = objective.eval_items(model, batch)
        if accelerator.num_processes > 1:
            items = accelerator.gather_for_metrics(items)
        for name, values in items.items():
            sums[name] = sums.get(name, 0.0) + values.double().sum()
    model.train(was_training)
    count = float(sums["units"]) if sums else 0.0
    if count == 0:
        return math.nan, 0, {}
    means = {name: float(total) / count for name, total in sums.items() if name != "units"}
    return means.pop("loss"), int(count), means


@dataclass
class LoopSetup:
    """What `fit` hands the loop: the pieces accelerate wrapped, the step's batches and what to train them on."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    batches: StepBatches  # every micro-batch, stage after stage (see train.stages)
    objective: Objective
    eval_loader: Any
    total_steps: int
    tokens_per_step: int  # global tokens (all positions) per optimizer step
    flops_per_token: float
    peak_flops: Optional[float]
    checkpoint_dir: Path
    tokenizer: Any = None  # tokenises eval.tasks and serves eval.harness_tasks; needed only when they are set
    stage_names: list[str] = field(default_factory=list)  # data.stages' names; one stage (no names): []


def run_loop(setup: LoopSetup, state: LoopState, train: TrainConfig, evaluation: EvalConfig,
             on_log: Optional[Callable[[dict[str, float]], None]] = None,
             on_checkpoint: Optional[Callable[[LoopState, Any], None]] = None) -> LoopState:
    """Train from `state.step` to `setup.total_steps`, evaluating, logging and checkpointing on the way.

    Each step: enter its data stage, draw `grad_accum_steps` micro-batches, forward and backward them through the
    objective, clip, step the optimizer and schedule, then log, validate and checkpoint when due.
    `on_checkpoint(state, model)` runs on every process after each checkpoint (e.g. an export pushed to the Hub).
    """
    from tqdm.auto import tqdm

    acc, model, batches = setup.accelerator, setup.model, setup.batches
    downstream = bool(evaluation.tasks or evaluation.harness_tasks)
    if downstream and setup.tokenizer is None:
        raise ValueError("eval.tasks and eval.harness_tasks need a tokenizer: the builder must set LoopSetup.tokenizer")
    encoded_tasks: list = []  # tokenised at the first evaluation, then reused
    model.train()
    bar = tqdm(total=setup.total_steps, initial=state.step, desc="train", disable=not acc.is_local_main_process,
               dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    run_start = time.perf_counter() - state.elapsed_seconds
    grad_norm: Optional[float] = None
    end = setup.total_steps if train.stop_after_steps is None else min(setup.total_steps, train.stop_after_steps)
    while state.step < end:
        # Before the step's first micro-batch: a step never mixes two stages.
        if batches.at_step(state.step) and acc.is_main_process:
            bar.write(f"step {state.step}: data stage {state.stage} ({setup.stage_names[state.stage]}) begins")
        micro = [next(batches) for _ in range(train.grad_accum_steps)]
        loss, _units, metrics = train_step(acc, model, micro, setup.objective)
        if train.max_grad_norm is not None and acc.sync_gradients:
            norm = acc.clip_grad_norm_(model.parameters(), train.max_grad_norm)
            grad_norm = float(norm) if norm is not None else None
        optimizer_step(acc, setup.optimizer, setup.scheduler)
        state.step += 1
        state.tokens_seen += setup.tokens_per_step
        for counts, add in ((state.stage_steps, 1), (state.stage_tokens, setup.tokens_per_step)):
            counts += [0] * (state.stage + 1 - len(counts))
            counts[state.stage] += add
        state.train_loss, state.train_metrics = loss, metrics
        window_tokens += setup.tokens_per_step
        bar.update(1)
        last = state.step == end
        if state.step % train.log_every == 0 or last:
            now = time.perf_counter()
            tps = window_tokens / max(now - window_start, 1e-9)
            util = model_flops_utilization(tps, setup.flops_per_token, acc.num_processes, setup.peak_flops)
            point = {"loss": loss, **metrics, "lr": setup.scheduler.get_last_lr()[0], "tokens_per_second": tps,
                     "tokens_seen": state.tokens_seen}
            if util is not None:
                point["mfu"] = util
            point["peak_memory_bytes"] = float(peak_memory_bytes(acc.device))
            if grad_norm is not None:
                point["grad_norm"] = grad_norm
            if len(setup.stage_names) > 1:  # the boundary shows on every tracker's curves
                point["data_stage"] = state.stage
            bar.set_postfix(loss=f"{loss:.3f}", **{k: f"{v:.3g}" for k, v in metrics.items()}, tok_s=f"{tps:,.0f}",
                            mfu=f"{util:.1%}" if util is not None else "n/a")
            _record(acc, state, point, on_log)
            window_tokens, window_start = 0, time.perf_counter()
        if (setup.eval_loader is not None or downstream) and (state.step % evaluation.every == 0 or last):
            if setup.eval_loader is not None:
                val, _, val_metrics = evaluate_loss(acc, model, setup.eval_loader, setup.objective,
                                                    evaluation.max_batches)
                state.val_loss = val
                _record(acc, state, {"val_loss": val, "val_perplexity": math.exp(min(val, 50)),
                                     **{f"val_{name}": v for name, v in val_metrics.items()}}, on_log)
                if acc.is_main_process:
                    bar.write(f"step {state.step}: validation loss {val:.4f} (perplexity {math.exp(min(val, 50)):.2f})")
            if downstream:
                with uncompiled():
                    point = downstream_pass(acc, model, setup.tokenizer, evaluation, encoded_tasks, state.step)
                _record(acc, state, point, on_log)
                if acc.is_main_process and WARNING_KEY not in point:
                    scores = ", ".join(f"{k[len('eval/'):]} {v:.4g}" for k, v in point.items())
                    bar.write(f"step {state.step}: {scores}")
            window_start = time.perf_counter()  # validation time is not training throughput
        state.elapsed_seconds = time.perf_counter() - run_start
        if (train.save_every and state.step % train.save_every == 0) or last:
            state.stream_positions = batches.positions()
            save_checkpoint(acc, setup.checkpoint_dir, state, train.keep_last)
            if on_checkpoint is not None:
                on_checkpoint(state, model)
            window_start = time.perf_counter()
    bar.close()
    return state


def _record(acc, state: LoopState, point: dict[str, float], on_log) -> None:
    acc.log(point, step=state.step)
    state.history.append({"step": state.step, **point})
    if on_log is not None:
        on_log(point)
