"""The run summary both training jobs return, print, and write to OUTPUT_DIR/summary.json.

`run_summary` gathers what every run measures (steps, time, losses, throughput, downstream results, the history);
each job adds its own facts (parameters and tokens for pretraining; base model, method and data for fine-tuning).
`format_summary` prints them in one frame: the job's lines, the shared ones, where the outputs are, the pushes and
the samples. A new measurement of every run goes into `run_summary` and `run_lines`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Optional, Sequence

from ..config import RunConfig
from .checkpoint import LoopState

RULE, FRAME = "-" * 72, "=" * 72


def median(values: Sequence[float]) -> Optional[float]:
    """The upper median (an observed value), or None for no values."""
    return sorted(values)[len(values) // 2] if values else None


def run_summary(cfg: RunConfig, state: LoopState, precision: str, world: int, seconds: float,
                job: dict[str, Any], strategy: str) -> dict[str, Any]:
    """The summary of a finished (or, for a checkpoint's card, running) job; `job` holds the job's own facts.
    `strategy` is the one the run really ran (hf_llm.train.run.strategy_name), not the one the launch asked for."""
    from ..downstream import downstream_results, downstream_warnings

    return {
        "output_dir": str(Path(cfg.output_dir).resolve()),
        **job,
        "steps": state.step,
        "wall_seconds": round(seconds, 1),
        "train_seconds": round(state.elapsed_seconds, 1),
        "processes": world,
        "strategy": strategy,
        "precision": precision,
        "final_train_loss": state.train_loss,
        "final_train_metrics": state.train_metrics,  # the objective's own (e.g. preference accuracy); {} for causal LM
        "final_val_loss": state.val_loss,
        "final_val_perplexity": math.exp(min(state.val_loss, 50)) if state.val_loss is not None else None,
        "median_tokens_per_second": median([p["tokens_per_second"] for p in state.history if "tokens_per_second" in p]),
        "median_mfu": median([p["mfu"] for p in state.history if "mfu" in p]),
        "peak_memory_bytes": max((p["peak_memory_bytes"] for p in state.history if "peak_memory_bytes" in p),
                                 default=None),  # this process's peak over the logged steps
        "downstream": downstream_results(state.history),  # latest eval.tasks / eval.harness_tasks metrics
        "downstream_warnings": downstream_warnings(state.history),  # failed passes (training went on)
        "history": state.history,
    }


def na(x: Optional[float], spec: str = ".4f") -> str:
    return "n/a" if x is None else format(x, spec)


def run_lines(s: dict[str, Any]) -> list[str]:
    """The lines every job prints: the final losses (and, for pretraining, the unigram baseline)."""
    validation = f"validation loss   {na(s['final_val_loss'])} (perplexity {na(s['final_val_perplexity'], '.2f')})"
    if "unigram_val_loss" in s:
        validation += f"; unigram baseline {na(s['unigram_val_loss'])}"
    memory = []
    if s.get("peak_memory_bytes"):
        memory = [f"memory            peak {s['peak_memory_bytes'] / 2**30:.2f} GiB"
                  + (f"; largest micro-batch for {s['memory_budget_bytes'] / 2**30:.0f} GiB: "
                     f"{s['largest_micro_batch']} (estimated)" if s.get("memory_budget_bytes") else "")]
    return [*memory, f"train loss        {na(s['final_train_loss'])}", validation]


def format_summary(title: str, s: dict[str, Any], facts: list[str], outputs: list[str]) -> str:
    """The printed summary: `facts` about the run, then `outputs` (where things were written), pushes, samples."""
    from ..hub import format_push_report

    lines = [FRAME, f"hf_llm {title} summary", RULE, *facts, RULE, *outputs, *format_push_report(s.get("hub"))]
    for sample in s.get("samples", []):
        lines += [RULE, f"prompt:  {sample['prompt']}"]
        for kind in ("greedy", "sampled"):
            lines.append(f"{kind + ':':8} " + " ".join(sample[kind].split())[:300])
    lines.append(FRAME)
    return "\n".join(lines)
