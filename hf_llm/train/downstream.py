"""Downstream tasks during training (`eval.tasks`, `eval.harness_tasks`): the requests sharded over the processes,
scored, gathered back in order, and turned into metrics. Scoring itself is hf_llm.downstream's."""

from __future__ import annotations

import math
import warnings
from typing import Optional

import torch

from ..config import EvalConfig
from ..downstream import WARNING_KEY


def shard_indices(n: int, rank: int, world: int) -> list[int]:
    """The requests process `rank` scores: a contiguous share of `range(n)`, padded with -1 to ceil(n / world)
    entries, so every process runs the same number of forwards (ZeRO-3 gathers parameters inside each one)."""
    per = math.ceil(n / world)
    real = list(range(min(rank * per, n), min((rank + 1) * per, n)))
    return real + [-1] * (per - len(real))


def unshard(indices: list[int], values: list, n: int) -> list:
    """`values` of the gathered shards back in request order; the padding (index -1) is dropped."""
    out: list = [None] * n
    for i, v in zip(indices, values):
        if i >= 0:
            out[i] = v
    if any(v is None for v in out):
        raise ValueError("the gathered shards do not cover every request")
    return out


@torch.no_grad()
def evaluate_tasks(accelerator, model, tasks: list, batch_size: int) -> dict[str, float]:
    """{"<task>/<metric>": value} of the local zero-shot tasks (`[(Task, requests)]`, see hf_llm.downstream).

    Each process scores its shard of all the requests and the per-request scores are gathered, so every process
    gets the same metrics. A process whose scoring fails tells the others before the gather, so that they raise
    too instead of waiting for it. Scoring runs on the unwrapped model: DDP's forward broadcasts buffers, a
    collective that a process which failed would leave the others waiting in (ZeRO-3's forwards stay collective:
    there the equal number of forwards per process is what keeps them in step).
    """
    from ..downstream import score_requests, task_metrics

    requests = [r for _, reqs in tasks for r in reqs]
    world, device = accelerator.num_processes, accelerator.device
    indices = shard_indices(len(requests), accelerator.process_index, world)
    error: Optional[Exception] = None
    was_training = model.training
    model.eval()  # no dropout: a score must not depend on the step it was taken at
    try:
        with accelerator.autocast():
            logprobs, greedy = score_requests(accelerator.unwrap_model(model), [requests[max(i, 0)] for i in indices],
                                              batch_size, device)
    except Exception as e:  # re-raised below, once the other processes know
        error = e
    finally:
        model.train(was_training)
    if world > 1:
        failed = accelerator.reduce(torch.tensor(float(error is not None), device=device), reduction="sum").item()
        if failed and error is None:
            raise RuntimeError("downstream scoring failed on another process")
    if error is not None:
        raise error
    if world > 1:
        indices = accelerator.gather(torch.tensor(indices, device=device)).tolist()
        logprobs = accelerator.gather(torch.tensor(logprobs, dtype=torch.float64, device=device)).tolist()
        greedy = [bool(g) for g in accelerator.gather(torch.tensor(greedy, dtype=torch.long, device=device)).tolist()]
    logprobs, greedy = unshard(indices, logprobs, len(requests)), unshard(indices, greedy, len(requests))
    metrics, start = {}, 0
    for task, reqs in tasks:
        scores = task_metrics(task, logprobs[start:start + len(reqs)], greedy[start:start + len(reqs)])
        metrics.update({f"{task.name}/{k}": v for k, v in scores.items()})
        start += len(reqs)
    return metrics


def downstream_metrics(accelerator, model, tokenizer, evaluation: EvalConfig, encoded: list) -> dict[str, float]:
    """Every downstream metric of this step as {"eval/<task>/<metric>": value}. `encoded` keeps the tokenised
    local tasks from the first pass on; it is filled only once they are all built."""
    from ..downstream import DEFAULT_MAX_LENGTH, build_requests, read_task, run_harness
    from ..model import max_positions

    unwrapped = accelerator.unwrap_model(model)
    metrics: dict[str, float] = {}
    if evaluation.tasks:
        if not encoded:
            max_length = max_positions(unwrapped.config) or DEFAULT_MAX_LENGTH
            built = [read_task(cfg) for cfg in evaluation.tasks]
            encoded[:] = [(task, build_requests(task, tokenizer, max_length)) for task in built]
        metrics.update(evaluate_tasks(accelerator, model, encoded, evaluation.task_batch_size))
    if evaluation.harness_tasks:
        metrics.update(run_harness(unwrapped, tokenizer, evaluation.harness_tasks, evaluation.harness_limit,
                                   evaluation.task_batch_size))
    return {f"eval/{k}": v for k, v in metrics.items()}


def downstream_pass(acc, model, tokenizer, evaluation: EvalConfig, encoded: list, step: int) -> dict[str, float]:
    """This step's downstream metrics, or {WARNING_KEY: message} when anything failed (a task file gone bad, an
    exception while scoring, lm-eval): the loop records either, and training goes on (the next checkpoint is still
    written)."""
    was_training = model.training
    try:
        return downstream_metrics(acc, model, tokenizer, evaluation, encoded)
    except Exception as e:  # an evaluation must never cost the run
        message = f"downstream evaluation failed at step {step} ({type(e).__name__}: {e}); training goes on"
        if acc.is_main_process:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        return {WARNING_KEY: message}
    finally:
        model.train(was_training)  # lm-eval's wrapper leaves the model in eval mode


__all__ = ["downstream_metrics", "downstream_pass", "evaluate_tasks", "shard_indices", "unshard"]
