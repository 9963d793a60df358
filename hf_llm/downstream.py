"""Zero-shot downstream tasks, scored the way lm-evaluation-harness scores them: multiple choice and cloze.

A task is a JSON Lines file, one item per line (blank lines are skipped):

- multiple_choice: `{"context": "...", "choices": ["...", "..."], "label": 0}`. Each choice is scored as the
  continuation `" " + choice` of the context (lm-eval's default target delimiter). `acc` picks the choice with the
  highest summed log-likelihood; `acc_norm` divides each sum by the choice's length in characters first (lm-eval's
  `completion_len`; the same as bytes for ASCII), which removes the bias towards short choices. lm-eval's field names
  for processed HellaSwag/ARC-style rows work too: `query` or `question` for the context, `endings` or
  `{"text": [...]}` for the choices, `gold` for the label (an int or a digit string).
- cloze: `{"text": "..."}`. The last space-separated word is the target (LAMBADA): `acc` is the share of items whose
  every target token is the model's greedy prediction, `perplexity` is exp(-mean log-likelihood of the target).

Tokenisation follows lm-eval's loglikelihood requests: trailing whitespace of the context moves to the continuation;
the context and context + continuation are encoded, and the continuation's tokens are the tail of the latter beyond
the context's length. One difference: every context starts with the prefix token (BOS, else EOS), where documents
start in our packed training blocks and in `score_texts`; lm-eval adds it only to an empty context.

Ties: an item whose correct choice shares the best score with m - 1 others earns 1/m, the expectation under random
tie-breaking, so a model without preferences scores chance exactly (lm-eval's argmax takes the first tied choice,
which rewards answers listed first). A cloze token counts as predicted only when it is the unique argmax.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import torch

from .config import TaskConfig
from .errors import ConfigError
from .evaluation import prefix_token_id

TARGET_DELIMITER = " "  # lm-eval's default between context and continuation
CONTEXT_FIELDS = ("context", "query", "question")  # ours first, then lm-eval's processed-row names
CHOICE_FIELDS = ("choices", "endings")
LABEL_FIELDS = ("label", "gold")
WARNING_KEY = "eval/warning"  # a failed downstream pass, as the loop records it in the history
DEFAULT_MAX_LENGTH = 2048  # for a model whose config names no context length


@dataclass(frozen=True)
class Item:
    context: str
    choices: tuple[str, ...]  # without the delimiter; a cloze item has one, its last word
    label: int


@dataclass
class Task:
    name: str
    kind: str  # multiple_choice | cloze
    path: str
    items: list[Item]


@dataclass(frozen=True)
class Request:
    """One continuation to score: `tokens` is context + continuation, whose last `n_targets` are the continuation."""

    tokens: tuple[int, ...]
    n_targets: int


def task_name(cfg: TaskConfig) -> str:
    return cfg.name or Path(cfg.path).name.removesuffix(".jsonl")


def _first(row: dict, names: tuple[str, ...]) -> Any:
    for name in names:
        if name in row:
            return row[name]
    alternatives = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
    raise ValueError(f"missing field {names[0]!r}{alternatives}")


def parse_multiple_choice(row: dict) -> Item:
    context, choices, label = _first(row, CONTEXT_FIELDS), _first(row, CHOICE_FIELDS), _first(row, LABEL_FIELDS)
    if isinstance(choices, dict):  # HF-datasets ARC: {"text": [...], "label": ["A", ...]}
        choices = choices.get("text")
    if not isinstance(context, str):
        raise ValueError(f"'context' must be a string, got {type(context).__name__}")
    if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
        raise ValueError("'choices' must be a list of at least two non-empty strings")
    if isinstance(label, str) and label.strip().isdigit():  # HF-datasets HellaSwag stores "0".."3"
        label = int(label)
    if isinstance(label, bool) or not isinstance(label, int):
        raise ValueError(f"'label' must be the index of the correct choice, got {label!r}")
    if not 0 <= label < len(choices):
        raise ValueError(f"label {label} is out of range for {len(choices)} choices")
    return Item(context, tuple(choices), label)


def parse_cloze(row: dict) -> Item:
    text = _first(row, ("text",))
    if not isinstance(text, str):
        raise ValueError(f"'text' must be a string, got {type(text).__name__}")
    context, space, word = text.rstrip().rpartition(" ")
    if not space or not context.strip() or not word:
        raise ValueError("a cloze 'text' needs some context and a last word after a space")
    return Item(context, (word,), 0)


def read_task(cfg: TaskConfig) -> Task:
    """The first `cfg.limit` items of a task file; any malformed row is a ConfigError naming file and line."""
    path = Path(cfg.path)
    if not path.is_file():
        raise ConfigError(f"eval.tasks: {cfg.path} is not a file")
    parse = parse_cloze if cfg.kind == "cloze" else parse_multiple_choice
    items: list[Item] = []
    try:
        with path.open(encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if cfg.limit is not None and len(items) >= cfg.limit:
                    break
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"a row must be a JSON object, got {type(row).__name__}")
                    items.append(parse(row))
                except ValueError as e:  # json.JSONDecodeError is a ValueError
                    raise ConfigError(f"{cfg.path}:{line_no}: bad {cfg.kind} row: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{cfg.path}: not UTF-8 ({e})") from None
    if not items:
        raise ConfigError(f"{cfg.path}: no items (an empty {cfg.kind} task)")
    return Task(task_name(cfg), cfg.kind, cfg.path, items)


def check_tasks(tasks: Sequence[TaskConfig], harness_tasks: Sequence[str]) -> None:
    """Everything about `eval.tasks` and `eval.harness_tasks` that can be known before training."""
    names = [task_name(t) for t in tasks] + list(harness_tasks)
    if not all(isinstance(n, str) and n for n in names):
        raise ConfigError("eval.harness_tasks must be non-empty task names")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"eval task names must be unique (they key the logs); {twice} appear twice: set a name")
    for t in tasks:
        read_task(t)
    if harness_tasks and importlib.util.find_spec("lm_eval") is None:
        raise ConfigError(f"eval.harness_tasks={list(harness_tasks)} needs lm-evaluation-harness: pip install "
                          f"lm-eval, or score local JSONL files with eval.tasks instead")


def _split_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """lm-eval's `_encode_pair`: the context's trailing whitespace goes to the continuation. Tokenizers attach a
    space to the word after it (" honey" is one token), so a context ending in a lone space token would be one the
    model has rarely seen before a word."""
    n = len(context) - len(context.rstrip())
    return (context[:-n], context[-n:] + continuation) if n else (context, continuation)


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    # split_special_tokens: a task's text that spells "<|endoftext|>" is text, not a document boundary.
    return tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]


def build_requests(task: Task, tokenizer, max_length: int) -> list[Request]:
    """Every (item, choice) continuation of `task` in order; the oldest context tokens go when over `max_length`."""
    prefix = prefix_token_id(tokenizer)
    pairs = [_split_whitespace(item.context, TARGET_DELIMITER + choice) for item in task.items
             for choice in item.choices]
    contexts = _encode(tokenizer, [c for c, _ in pairs])
    wholes = _encode(tokenizer, [c + x for c, x in pairs])
    requests = []
    for (_, continuation), ctx, whole in zip(pairs, contexts, wholes):
        # A merge across the boundary can leave the tail empty; the continuation alone is then the best split.
        cont = whole[len(ctx):] or _encode(tokenizer, [continuation])[0]
        tokens = ([prefix] + ctx + cont)[-(max_length + 1):]
        requests.append(Request(tuple(tokens), min(len(cont), len(tokens) - 1)))
    return requests


@torch.no_grad()
def score_requests(model, requests: Sequence[Request], batch_size: int,
                   device: torch.device | str) -> tuple[list[float], list[bool]]:
    """Per request: the continuation's summed log-likelihood (nats) and whether greedy decoding produces it.

    Longest first within the list, as lm-eval batches, so rows of a batch pad little; the number of forwards is
    ceil(len(requests) / batch_size) whatever the lengths, which the loop relies on to keep processes in step.
    Rows are right-padded: causal attention never lets a real position see the padding after it.
    """
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].tokens))
    logprobs, greedy = [0.0] * len(requests), [False] * len(requests)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        width = max(len(requests[i].tokens) - 1 for i in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            inputs = requests[i].tokens[:-1]  # the last token is only ever a target
            ids[row, :len(inputs)] = torch.tensor(inputs)
            mask[row, :len(inputs)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        sums, hits = [], []
        for row, i in enumerate(chunk):
            end, n = len(requests[i].tokens) - 1, requests[i].n_targets
            lp = logits[row, end - n:end].float().log_softmax(-1)  # position t predicts token t + 1
            target = torch.tensor(requests[i].tokens[-n:], device=lp.device)
            token_lp = lp.gather(-1, target[:, None]).squeeze(-1)
            best = lp.max(-1).values
            unique = (lp == best[:, None]).sum(-1) == 1
            sums.append(token_lp.double().sum())
            hits.append(((token_lp == best) & unique).all())
        for i, s, h in zip(chunk, torch.stack(sums).tolist(), torch.stack(hits).tolist()):
            logprobs[i], greedy[i] = s, bool(h)
    return logprobs, greedy


def tie_credit(scores: Sequence[float], label: int) -> float:
    """1/m when the label is one of the m best-scoring choices, else 0 (see the module docstring)."""
    best = max(scores)
    winners = [i for i, s in enumerate(scores) if s == best]
    return 1.0 / len(winners) if label in winners else 0.0


def task_metrics(task: Task, logprobs: Sequence[float], greedy: Sequence[bool]) -> dict[str, float]:
    """`acc` and `acc_norm` (multiple choice) or `acc` and `perplexity` (cloze) from the scores of
    `build_requests(task, ...)`, in its order."""
    n = len(task.items)
    if task.kind == "cloze":
        return {"acc": sum(greedy) / n, "perplexity": math.exp(min(-sum(logprobs) / n, 700.0))}
    acc = acc_norm = 0.0
    start = 0
    for item in task.items:
        lls = logprobs[start:start + len(item.choices)]
        start += len(item.choices)
        acc += tie_credit(lls, item.label)
        acc_norm += tie_credit([ll / len(c) for ll, c in zip(lls, item.choices)], item.label)
    return {"acc": acc / n, "acc_norm": acc_norm / n}


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """lm-eval seeds Python, NumPy and torch; training continues with its own RNG state (dropout, exact resume)."""
    import numpy as np

    py, npy = random.getstate(), np.random.get_state()
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def harness_metrics(output: Optional[dict]) -> dict[str, float]:
    """lm-eval's `results` ({task: {"acc,none": 0.3, "acc_stderr,none": ..., "alias": ...}}) as {"task/acc": 0.3};
    standard errors and non-numbers are left out, a filter other than "none" is kept in the name."""
    metrics = {}
    for task, values in ((output or {}).get("results") or {}).items():
        for key, value in values.items():
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metrics[f"{task}/{metric if filt in ('', 'none') else f'{metric}_{filt}'}"] = float(value)
    return metrics


def run_harness(model, tokenizer, tasks: Sequence[str], limit: Optional[int], batch_size: int) -> dict[str, float]:
    """lm-evaluation-harness's `simple_evaluate` on the live (unwrapped) model through its HFLM wrapper.

    HFLM treats a model object as one process, so every process runs the whole evaluation; that keeps ZeRO-3's
    forwards in step and gives every process the same numbers.
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    with preserved_rng():
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        output = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), limit=limit, log_samples=False)
    return harness_metrics(output)


def downstream_results(history: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The latest downstream metrics in a loop history: {task: {metric: value, ..., "step": step}}."""
    results: dict[str, dict[str, float]] = {}
    for point in history:
        for key, value in point.items():
            if key.startswith("eval/") and key != WARNING_KEY and isinstance(value, (int, float)):
                task, _, metric = key[len("eval/"):].rpartition("/")
                results.setdefault(task, {})[metric] = value
                results[task]["step"] = point["step"]
    return results


def downstream_warnings(history: Sequence[dict[str, Any]]) -> list[str]:
    return [point[WARNING_KEY] for point in history if WARNING_KEY in point]


def card_results(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """Rows of the model card's Results table: {"<task> <metric> (step N)": value}."""
    return {f"{task} {metric} (step {values['step']})": value for task, values in results.items()
            for metric, value in values.items() if metric != "step"}


def card_metrics(results: dict[str, dict[str, float]], tasks: Sequence[TaskConfig]) -> list[dict[str, Any]]:
    """Downstream results as model-index entries (see hub.eval_results): local tasks are named by their file,
    harness tasks by their lm-eval name."""
    files = {task_name(t): (Path(t.path).name, t.kind) for t in tasks}
    entries = []
    for task, values in results.items():
        dataset_type, kind = files.get(task, (task, "lm-evaluation-harness"))
        for metric, value in values.items():
            if metric != "step":
                entries.append({"metric": metric, "name": f"{task} {metric} (zero-shot)", "value": round(value, 4),
                                "dataset": task, "dataset_type": dataset_type,
                                "task_name": f"Zero-shot {kind.replace('_', ' ')}"})
    return entries
