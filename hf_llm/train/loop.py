"""The one training loop, shared by pretraining and fine-tuning.

It owns gradient accumulation (loss normalised by the number of target tokens in the whole optimizer step,
across micro-batches and processes), mixed precision and distribution (through accelerate), clipping, the
schedule, periodic validation, logging, checkpointing and exact resume. What differs between pretraining and
fine-tuning (data, label masking, adapters) is decided by the builders that call it.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from torch.utils.data import DataLoader

from ..config import EvalConfig, TrainConfig
from ..errors import ConfigError
from ..estimate import model_flops_utilization
from ..downstream import WARNING_KEY
from ..evaluation import row_token_nll
from .checkpoint import LoopState, save_checkpoint
from .collate import count_targets
from .loss import OutputLoss, output_loss_for
from .objective import Objective
from .metrics import peak_memory_bytes
from .samplers import EpochSampler


def loader_generator(seed: int) -> torch.Generator:
    """A DataLoader's own generator. Creating a loader's iterator draws a seed from it; without one that draw comes
    from the global RNG, which after a resume shifts every later dropout mask (resume would not be exact)."""
    return torch.Generator().manual_seed(seed)


def build_train_loader(dataset, batch_size: int, collate: Callable, seed: int,
                       sampler: Optional[EpochSampler] = None) -> DataLoader:
    # drop_last keeps every process's micro-batches full and equal in number.
    sampler = sampler if sampler is not None else EpochSampler(len(dataset), seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, drop_last=True,
                      generator=loader_generator(seed))


def build_eval_loader(dataset, batch_size: int, collate: Callable) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                      generator=loader_generator(0))


@dataclass
class DataStage:
    """One stage of a staged data mixture, as `fit` takes it: its training blocks (a `datasets.Dataset`, or a
    stream's `open(epoch, skip_batches)`) and its boundary (none for the last stage, which runs to the end)."""

    train: Any
    name: str
    until_step: Optional[int] = None
    until_tokens: Optional[int] = None
    fingerprint: Optional[str] = None  # identifies the stage's data (see LoopState.data_fingerprints)


def stage_ends(stages: list[DataStage], tokens_per_step: int, total_steps: int) -> list[int]:
    """The optimizer step after which each stage ends (the last: `total_steps`).

    A token boundary is rounded up to whole optimizer steps, as `train.max_tokens` is: every step draws all its
    micro-batches from one stage. Every stage must get at least one step of the run.
    """
    ends = []
    for i, stage in enumerate(stages[:-1]):
        end = stage.until_step if stage.until_step is not None else math.ceil(stage.until_tokens / tokens_per_step)
        what = (f"until_step={stage.until_step}" if stage.until_step is not None else
                f"until_tokens={stage.until_tokens:,} (step {end} at {tokens_per_step:,} tokens per step)")
        if ends and end <= ends[-1]:
            raise ConfigError(f"data.stages[{i}] ({stage.name}) ends at {what}, not after the previous stage's end at "
                              f"step {ends[-1]}; make the boundaries increase")
        if end >= total_steps:
            raise ConfigError(f"data.stages[{i}] ({stage.name}) ends at {what}, but the run has {total_steps} steps, "
                              f"so the stages after it would never run; move the boundary or raise train.max_steps")
        ends.append(end)
    return [*ends, total_steps]


class BatchStream:
    """Endless micro-batches over epochs; `state.epoch`/`state.batches_in_epoch` say where it is.

    `loader` is a DataLoader, or for a stream already split by node (`data.stream_train`) a callable
    `open(epoch, skip_batches)` → that epoch's micro-batches of this process after the first `skip_batches`.
    Streams end at different times on different processes, so each one resumes at its own position
    (`state.stream_positions`, gathered at every checkpoint).

    With data stages, `loader` is the first stage's and `later` holds (first step, loader) of each later stage;
    `at_step` switches to a stage's loader when its first step comes, at the same step on every process, and the
    position (epoch, batches, stream positions) restarts within it. `state.stage` says which stage the position
    belongs to, so a checkpoint taken at any step resumes in the right stage.
    """

    def __init__(self, accelerator, loader, state: LoopState, later: tuple = ()):
        self.accelerator, self.state = accelerator, state
        self.loaders = [loader, *(stage_loader for _, stage_loader in later)]
        self.starts = [0, *(start for start, _ in later)]
        # The stage of the last step taken must be the checkpoint's: its position is a position in that stage.
        if state.step > 0 and self.stage_of(state.step - 1) != state.stage:
            raise ConfigError(f"the checkpoint at step {state.step} was written in data stage {state.stage}, but this "
                              f"recipe's data.stages put step {state.step} in stage {self.stage_of(state.step - 1)}; "
                              f"resume with the stages (and boundaries up to step {state.step}) that wrote it")
        self.loader = self.loaders[state.stage]
        self.opens = not isinstance(self.loader, DataLoader) and callable(self.loader)
        if self.opens and state.stream_positions:
            if len(state.stream_positions) != accelerator.num_processes:
                raise ValueError(f"the checkpoint's stream was split over {len(state.stream_positions)} processes; "
                                 f"resume a streamed run with the same number ({accelerator.num_processes} now)")
            state.epoch, state.batches_in_epoch = state.stream_positions[accelerator.process_index]
        elif not self.opens and len(self.loader) == 0:
            raise ValueError("the training set has fewer blocks than one micro-batch per process; lower micro_batch_size")
        self._it: Optional[Iterator] = None

    def stage_of(self, step: int) -> int:
        """The stage that optimizer step `step` (0-based) draws from."""
        return max(i for i, start in enumerate(self.starts) if start <= step)

    def at_step(self, step: int) -> None:
        """Enter the stage that optimizer step `step` (0-based) draws from, if it is a later one."""
        stage = self.stage_of(step)
        if stage == self.state.stage:
            return
        self.state.stage, self.state.epoch, self.state.batches_in_epoch = stage, 0, 0
        self.loader, self._it = self.loaders[stage], None
        if not self.opens and len(self.loader) == 0:
            raise ValueError(f"data stage {stage} has fewer blocks than one micro-batch per process; lower "
                             f"micro_batch_size")

    def positions(self) -> list[list[int]]:
        """[epoch, batches_in_epoch] of every process (a collective: every process calls it)."""
        here = torch.tensor([[self.state.epoch, self.state.batches_in_epoch]], device=self.accelerator.device)
        return self.accelerator.gather(here).tolist()

    def _start_epoch(self) -> None:
        if self.opens:
            self._it = self.loader(self.state.epoch, self.state.batches_in_epoch)
            return
        self.loader.set_epoch(self.state.epoch) if hasattr(self.loader, "set_epoch") else None
        sampler = getattr(self.loader, "sampler", None)
        for s in (sampler, getattr(getattr(self.loader, "batch_sampler", None), "sampler", None)):
            if isinstance(s, EpochSampler):
                s.set_epoch(self.state.epoch)
        loader = self.loader
        if self.state.batches_in_epoch:
            loader = self.accelerator.skip_first_batches(self.loader, self.state.batches_in_epoch)
        self._it = iter(loader)

    def __next__(self) -> dict[str, torch.Tensor]:
        if self._it is None:
            self._start_epoch()
        try:
            batch = next(self._it)
        except StopIteration:
            self.state.epoch += 1
            self.state.batches_in_epoch = 0
            self._start_epoch()
            batch = next(self._it, None)
            if batch is None:
                raise ValueError("this process's training data holds less than one micro-batch; lower "
                                 "micro_batch_size or use fewer processes")
        self.state.batches_in_epoch += 1
        return batch


def forward_loss(model, batch: dict[str, torch.Tensor], normaliser: float,
                 output_loss: Optional[OutputLoss] = None) -> torch.Tensor:
    """Summed token cross-entropy of `batch` divided by `normaliser` (labels are shifted inside, as the model does).

    With `output_loss` the forward (through the DDP/DeepSpeed wrapper, which must see it) stops at the final hidden
    state (`logits_to_keep=1` leaves one position's logits) and the chunked loss takes it from there.
    """
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if output_loss is not None:
        out = model(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        return output_loss(out.hidden_states[-1], batch["labels"], normaliser)
    out = model(**inputs, labels=batch["labels"], use_cache=False, num_items_in_batch=torch.tensor(normaliser))
    return out.loss


def train_step(accelerator, model, micro_batches: list[dict[str, torch.Tensor]],
               output_loss: Optional[OutputLoss] = None) -> tuple[float, int]:
    """Forward and backward over one optimizer step's micro-batches; returns (mean loss per target, targets).

    The loss of every micro-batch is its summed cross-entropy over the targets of the whole step on all
    processes, so k micro-batches of b give the gradient of one batch of k·b, whatever their target counts.
    accelerate (and DeepSpeed) divide by the accumulation steps and DDP averages over processes; the factor
    `world * k` in the normaliser undoes both.
    """
    world, k = accelerator.num_processes, len(micro_batches)
    local = torch.tensor(float(sum(count_targets(b["labels"]) for b in micro_batches)), device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum").item() if world > 1 else local.item()
    if total == 0:
        raise ValueError("an optimizer step has no target tokens (all labels are -100); check the label masking")
    normaliser = total / (world * k)
    summed = torch.zeros((), device=accelerator.device)
    for batch in micro_batches:
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss = forward_loss(model, batch, normaliser, output_loss)
            accelerator.backward(loss)
        summed += loss.detach().float() * normaliser
    summed = accelerator.reduce(summed, reduction="sum") if world > 1 else summed
    return summed.item() / total, int(total)


def objective_step(accelerator, model, micro_batches: list[dict[str, torch.Tensor]],
                   objective: Objective) -> tuple[dict[str, float], int]:
    """`train_step` for an `Objective`: forward and backward over one optimizer step's micro-batches; returns
    (each metric's sum over the step divided by the step's units, units), over all processes.

    As in `train_step`, the normaliser is the step's units over all processes divided by `world * k`, which undoes
    accelerate's division by the accumulation steps and DDP's mean over processes.
    """
    world, k = accelerator.num_processes, len(micro_batches)
    local = torch.tensor(float(sum(objective.units(b) for b in micro_batches)), device=accelerator.device)
    total = accelerator.reduce(local, reduction="sum").item() if world > 1 else local.item()
    if total == 0:
        raise ValueError("an optimizer step has no units to average its loss over (no targets, no pairs)")
    normaliser = total / (world * k)
    sums: dict[str, torch.Tensor] = {}
    for batch in micro_batches:
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        with accelerator.accumulate(model):
            with accelerator.autocast():
                loss, metrics = objective.loss(model, batch, normaliser)
            accelerator.backward(loss)
        for name, value in metrics.items():
            sums[name] = sums.get(name, 0.0) + value.detach().double()
    names = sorted(sums)
    stacked = torch.stack([sums[n] for n in names])
    stacked = accelerator.reduce(stacked, reduction="sum") if world > 1 else stacked
    return {n: v / total for n, v in zip(names, stacked.tolist())}, int(total)


@torch.no_grad()
def evaluate_objective(accelerator, model, loader, objective, max_batches: Optional[int] = None) -> dict[str, float]:
    """Each metric's mean per unit over `loader` (every process, each validation row once): the objective's
    `per_unit(model, batch)` values go through `gather_for_metrics`, which drops the rows that pad uneven shards."""
    was_training = model.training
    model.eval()
    sums: dict[str, torch.Tensor] = {}
    count = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        with accelerator.autocast():
            values = objective.per_unit(model, batch)
        if accelerator.num_processes > 1:
            values = accelerator.gather_for_metrics(values)
        for name, v in values.items():
            sums[name] = sums.get(name, 0.0) + v.double().sum()
        count += len(next(iter(values.values())))
    model.train(was_training)
    return {n: (v / count).item() for n, v in sums.items()} if count else {}


def optimizer_step(accelerator, optimizer, scheduler) -> bool:
    """Apply the update, then advance the schedule only if the update was applied: under fp16 the grad scaler
    skips a step whose gradients overflowed, and the schedule must not run ahead of the steps really taken."""
    optimizer.step()
    taken = not accelerator.optimizer_step_was_skipped
    if taken:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return taken


@torch.no_grad()
def evaluate_loss(accelerator, model, loader, max_batches: Optional[int] = None) -> tuple[float, int]:
    """Mean cross-entropy per target token over `loader`, over all processes, each validation row counted once.

    A prepared loader pads the last batches of uneven shards with rows from the start (so every process runs the
    same number of forwards, which ZeRO-3 needs); per-row sums go through `gather_for_metrics`, which drops that
    padding, so the result does not depend on the number of processes. `use_cache=False` matters: with a cache
    transformers skips building the block-causal mask from the restarting position ids, and packed documents
    would attend to each other.
    """
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    count = torch.zeros((), device=accelerator.device, dtype=torch.float64)
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        batch = {key: v.to(accelerator.device) for key, v in batch.items()}
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with accelerator.autocast():
            logits = model(**inputs, use_cache=False).logits
        nll, targets = row_token_nll(logits, batch["labels"])  # the computation scripts/evaluate.py sums
        if accelerator.num_processes > 1:
            nll, targets = accelerator.gather_for_metrics((nll, targets))
        loss_sum += nll.sum()
        count += targets.sum()
    model.train(was_training)
    return (loss_sum / count).item() if count > 0 else math.nan, int(count.item())


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


def downstream_metrics(accelerator, model, tokenizer, evaluation: EvalConfig, prepared: list) -> dict[str, float]:
    """Every downstream metric of this step as {"eval/<task>/<metric>": value}. `prepared` keeps the tokenised
    local tasks from the first pass on; it is filled only once they are all built."""
    from ..downstream import DEFAULT_MAX_LENGTH, build_requests, read_task, run_harness
    from ..model import max_positions

    unwrapped = accelerator.unwrap_model(model)
    metrics: dict[str, float] = {}
    if evaluation.tasks:
        if not prepared:
            max_length = max_positions(unwrapped.config) or DEFAULT_MAX_LENGTH
            built = [read_task(cfg) for cfg in evaluation.tasks]
            prepared[:] = [(task, build_requests(task, tokenizer, max_length)) for task in built]
        metrics.update(evaluate_tasks(accelerator, model, prepared, evaluation.task_batch_size))
    if evaluation.harness_tasks:
        metrics.update(run_harness(unwrapped, tokenizer, evaluation.harness_tasks, evaluation.harness_limit,
                                   evaluation.task_batch_size))
    return {f"eval/{k}": v for k, v in metrics.items()}


@dataclass
class LoopSetup:
    """What the builders hand the loop."""

    accelerator: Any
    model: Any
    optimizer: Any
    scheduler: Any
    train_loader: Any
    eval_loader: Any
    total_steps: int
    tokens_per_step: int  # global tokens (all positions) per optimizer step
    flops_per_token: float
    peak_flops: Optional[float]
    checkpoint_dir: Path
    tokenizer: Any = None  # tokenises eval.tasks and serves eval.harness_tasks; needed only when they are set
    # Data stages after the first (whose loader is train_loader): (first step, loader, name) each, in order.
    later_stages: list[tuple[int, Any, str]] = field(default_factory=list)
    objective: Any = None  # an Objective other than causal LM (preference pairs); None = token cross-entropy


def run_loop(setup: LoopSetup, state: LoopState, train: TrainConfig, evaluation: EvalConfig,
             on_log: Optional[Callable[[dict[str, float]], None]] = None,
             on_checkpoint: Optional[Callable[[LoopState, Any], None]] = None) -> LoopState:
    """Train from `state.step` to `setup.total_steps`, evaluating, logging and checkpointing on the way.

    `on_checkpoint(state, model)` runs on every process after each checkpoint (e.g. an export pushed to the Hub).
    """
    from tqdm.auto import tqdm

    acc, model = setup.accelerator, setup.model
    downstream = bool(evaluation.tasks or evaluation.harness_tasks)
    if downstream and setup.tokenizer is None:
        raise ValueError("eval.tasks and eval.harness_tasks need a tokenizer: the builder must set LoopSetup.tokenizer")
    prepared_tasks: list = []  # tokenised at the first evaluation, then reused
    output_loss = output_loss_for(train.fused_loss, acc, model)
    model.train()
    stream = BatchStream(acc, setup.train_loader, state, [(start, loader) for start, loader, _ in setup.later_stages])
    stage_names = ["", *(name for _, _, name in setup.later_stages)]
    bar = tqdm(total=setup.total_steps, initial=state.step, desc="train", disable=not acc.is_local_main_process,
               dynamic_ncols=True)
    window_tokens, window_start = 0, time.perf_counter()
    run_start = time.perf_counter() - state.elapsed_seconds
    grad_norm: Optional[float] = None
    end = setup.total_steps if train.stop_after_steps is None else min(setup.total_steps, train.stop_after_steps)
    while state.step < end:
        before = state.stage
        stream.at_step(state.step)  # before the step's first micro-batch: a step never mixes two stages
        if state.stage != before and acc.is_main_process:
            bar.write(f"step {state.step}: data stage {state.stage} ({stage_names[state.stage]}) begins")
        micro = [next(stream) for _ in range(train.grad_accum_steps)]
        extra: dict[str, float] = {}
        if setup.objective is not None:
            extra, _units = objective_step(acc, model, micro, setup.objective)
            loss = extra.pop("loss")
        else:
            loss, _targets = train_step(acc, model, micro, output_loss)
        if train.max_grad_norm is not None and acc.sync_gradients:
            norm = acc.clip_grad_norm_(model.parameters(), train.max_grad_norm)
            grad_norm = float(norm) if norm is not None else None
        optimizer_step(acc, setup.optimizer, setup.scheduler)
        state.step += 1
        state.tokens_seen += setup.tokens_per_step
        for counts, add in ((state.stage_steps, 1), (state.stage_tokens, setup.tokens_per_step)):
            counts += [0] * (state.stage + 1 - len(counts))
            counts[state.stage] += add
        state.train_loss = loss
        window_tokens += setup.tokens_per_step
        bar.update(1)
        last = state.step == end
        if state.step % train.log_every == 0 or last:
            now = time.perf_counter()
            tps = window_tokens / max(now - window_start, 1e-9)
            util = model_flops_utilization(tps, setup.flops_per_token, acc.num_processes, setup.peak_flops)
            point = {"loss": loss, "lr": setup.scheduler.get_last_lr()[0], "tokens_per_second": tps,
                     "tokens_seen": state.tokens_seen}
            if util is not None:
                point["mfu"] = util
            point["peak_memory_bytes"] = float(peak_memory_bytes(acc.device))
            if grad_norm is not None:
                point["grad_norm"] = grad_norm
            if setup.later_stages:  # the boundary shows on every tracker's curves
                point["data_stage"] = state.stage
            point.update(extra)
            postfix = {"loss": f"{loss:.3f}", "tok_s": f"{tps:,.0f}", "mfu": f"{util:.1%}" if util is not None else "n/a"}
            if "rewards/accuracy" in extra:
                postfix.update(acc=f"{extra['rewards/accuracy']:.2f}", margin=f"{extra['rewards/margin']:.3f}")
            bar.set_postfix(**postfix)
            _record(acc, state, point, on_log)
            window_tokens, window_start = 0, time.perf_counter()
        if (setup.eval_loader is not None or downstream) and (state.step % evaluation.every == 0 or last):
            if setup.eval_loader is not None and setup.objective is not None:
                values = evaluate_objective(acc, model, setup.eval_loader, setup.objective, evaluation.max_batches)
                state.val_loss = values.get("loss", math.nan)
                _record(acc, state, {f"val_{k}": v for k, v in values.items()}, on_log)
                if acc.is_main_process:
                    bar.write(f"step {state.step}: validation " + ", ".join(f"{k} {v:.4f}" for k, v in values.items()))
            elif setup.eval_loader is not None:
                val, _ = evaluate_loss(acc, model, setup.eval_loader, evaluation.max_batches)
                state.val_loss = val
                _record(acc, state, {"val_loss": val, "val_perplexity": math.exp(min(val, 50))}, on_log)
                if acc.is_main_process:
                    bar.write(f"step {state.step}: validation loss {val:.4f} (perplexity {math.exp(min(val, 50)):.2f})")
            if downstream:
                _downstream_pass(acc, model, setup.tokenizer, evaluation, prepared_tasks, state, on_log, bar)
            window_start = time.perf_counter()  # validation time is not training throughput
        state.elapsed_seconds = time.perf_counter() - run_start
        if (train.save_every and state.step % train.save_every == 0) or last:
            state.stream_positions = stream.positions() if stream.opens else []
            save_checkpoint(acc, setup.checkpoint_dir, state, train.keep_last)
            if on_checkpoint is not None:
                on_checkpoint(state, model)
            window_start = time.perf_counter()
    bar.close()
    return state


def _downstream_pass(acc, model, tokenizer, evaluation: EvalConfig, prepared: list, state: LoopState, on_log,
                     bar) -> None:
    """Record this step's downstream metrics. Any failure (a task file gone bad, an exception while scoring, lm-eval)
    becomes a warning in the logs and the history, and training goes on: the next checkpoint is still written."""
    was_training = model.training
    try:
        metrics = downstream_metrics(acc, model, tokenizer, evaluation, prepared)
    except Exception as e:  # an evaluation must never cost the run
        message = f"downstream evaluation failed at step {state.step} ({type(e).__name__}: {e}); training goes on"
        if acc.is_main_process:
            warnings.warn(message, RuntimeWarning, stacklevel=2)
        _record(acc, state, {WARNING_KEY: message}, on_log)
        return
    finally:
        model.train(was_training)  # lm-eval's wrapper leaves the model in eval mode
    _record(acc, state, metrics, on_log)
    if acc.is_main_process:
        bar.write(f"step {state.step}: " + ", ".join(f"{k[len('eval/'):]} {v:.4g}" for k, v in metrics.items()))


def _record(acc, state: LoopState, point: dict[str, float], on_log) -> None:
    acc.log(point, step=state.step)
    state.history.append({"step": state.step, **point})
    if on_log is not None:
        on_log(point)
