"""Perplexity, bits per byte and generation samples of a causal LM on held-out text.

Perplexity is per token, so it depends on the tokenizer; bits per byte (total NLL in bits over the UTF-8 bytes of
the text) does not, which makes models with different tokenizers comparable. Documents longer than the context are
scored with sliding windows: every token is scored exactly once, with at least `seq_len - stride` tokens of context
(or all of its document before it). The training loop's validation uses the same `row_token_nll`.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from .config import EvaluateConfig, ModelConfig, SourceConfig
from .errors import ConfigError
from .train.collate import IGNORE_INDEX

MAX_DEFAULT_SEQ_LEN = 4096  # a 128k-context model would otherwise get 128k-token windows by default


def row_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: (summed negative log-likelihood in nats, as float64; number of targets).

    `labels[:, t]` is predicted by `logits[:, t - 1]` (the causal shift); IGNORE_INDEX labels are not targets.
    Per-row sums let a distributed evaluation drop the rows that only pad a shard.
    """
    targets = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="none",
    ).view(targets.shape).double().sum(dim=1)
    return nll, (targets != IGNORE_INDEX).sum(dim=1)


def summed_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(Summed negative log-likelihood in nats, as float64; number of targets) of a batch."""
    nll, targets = row_token_nll(logits, labels)
    return nll.sum(), targets.sum()


def sliding_windows(ids: list[int], seq_len: int, stride: int) -> list[tuple[list[int], int]]:
    """Cover `ids[1:]` with windows of at most `seq_len` tokens: a list of (window, targets at its end).

    `ids[0]` is the context-only prefix (BOS/EOS). The first window scores everything it holds; each later one
    scores the next `stride` tokens after `seq_len - stride` tokens of context, so no token is scored twice or
    skipped (a window's own first token can never be a target, which is why stride must stay below seq_len).
    """
    if not 1 <= stride < seq_len:
        raise ConfigError(f"stride must be in [1, seq_len), got stride={stride}, seq_len={seq_len}")
    windows = []
    end = min(seq_len, len(ids))
    if end > 1:
        windows.append((ids[:end], end - 1))
    while end < len(ids):
        new_end = min(end + stride, len(ids))
        windows.append((ids[max(0, new_end - seq_len):new_end], new_end - end))
        end = new_end
    return windows


def _batches(windows: list[tuple[list[int], int]], batch_size: int, pad_id: int) -> Iterable[dict[str, torch.Tensor]]:
    """Right-padded batches: padding is masked from attention and from the targets."""
    for i in range(0, len(windows), batch_size):
        chunk = windows[i:i + batch_size]
        width = max(len(w) for w, _ in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        mask = torch.zeros_like(input_ids)
        for row, (w, n_targets) in enumerate(chunk):
            input_ids[row, :len(w)] = torch.tensor(w)
            labels[row, len(w) - n_targets:len(w)] = torch.tensor(w[len(w) - n_targets:])
            mask[row, :len(w)] = 1
        yield {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def prefix_token_id(tokenizer) -> int:
    """The token that starts every document (BOS, else the EOS separator): lm-evaluation-harness's convention."""
    token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if token is None:
        raise ConfigError("the tokenizer has neither a BOS nor an EOS token to start documents with")
    return token


@torch.no_grad()
def score_texts(model, tokenizer, texts: Iterable[str], seq_len: int, stride: int,
                batch_size: int = 8) -> dict[str, Any]:
    """NLL of every token of every text (each preceded by the prefix token); perplexity and bits per byte."""
    prefix = prefix_token_id(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else prefix
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    windows: list[tuple[list[int], int]] = []
    n_docs = n_bytes = 0
    for text in texts:
        if not text:
            continue
        ids = tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        windows += sliding_windows([prefix] + ids, seq_len, stride)
        n_docs += 1
        n_bytes += len(text.encode("utf-8"))
    nll = torch.zeros((), dtype=torch.float64)
    count = torch.zeros((), dtype=torch.long)
    for batch in _batches(windows, batch_size, pad):
        batch = {k: v.to(device) for k, v in batch.items()}
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        s, c = summed_token_nll(logits, batch["labels"])
        nll += s.cpu()
        count += c.cpu()
    model.train(was_training)
    return metrics_from_nll(nll.item(), int(count.item()), n_bytes, n_docs)


def metrics_from_nll(nll_nats: float, tokens: int, n_bytes: int, documents: int) -> dict[str, Any]:
    loss = nll_nats / tokens if tokens else math.nan
    return {
        "documents": documents,
        "tokens": tokens,
        "bytes": n_bytes,
        "nll_nats": nll_nats,
        "loss": loss,  # nats per token
        "perplexity": math.exp(min(loss, 50.0)) if tokens else math.nan,
        "bits_per_byte": nll_nats / math.log(2) / n_bytes if n_bytes else math.nan,
    }


def generate_samples(model, tokenizer, prompts: list[str], max_new_tokens: int, temperature: float, top_p: float,
                     seed: int) -> list[dict[str, str]]:
    """Greedy and seeded sampled continuations of each prompt (the continuation only, prompt excluded)."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    common = dict(max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
    # Explicit configs, so a model's own generation defaults (e.g. do_sample=True) cannot change what "greedy" means.
    greedy = GenerationConfig(do_sample=False, **common)
    sampled = GenerationConfig(do_sample=True, temperature=temperature, top_p=top_p, **common)
    out = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").to(device)
        row: dict[str, str] = {"prompt": prompt}
        for name, gen in (("greedy", greedy), ("sampled", sampled)):
            torch.manual_seed(seed)
            with torch.no_grad():
                tokens = model.generate(**ids, generation_config=gen)
            row[name] = tokenizer.decode(tokens[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        out.append(row)
    return out


def load_model_and_tokenizer(cfg: EvaluateConfig):
    """The model (safetensors only, remote code only when asked) on the GPU if there is one, and its tokenizer."""
    from .data.tokenizer import load_tokenizer
    from .model import load_pretrained

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
    model = load_pretrained(ModelConfig(name_or_path=cfg.model, revision=cfg.revision,
                                        trust_remote_code=cfg.trust_remote_code), dtype=dtype)
    tokenizer = load_tokenizer(cfg.model, cfg.revision, cfg.trust_remote_code)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return model.to(device).eval(), tokenizer


def window_sizes(cfg: EvaluateConfig, model_config) -> tuple[int, int]:
    """(seq_len, stride) from the config, defaulting to the model's context and half of it."""
    from .model import max_positions

    limit = max_positions(model_config)
    seq_len = cfg.seq_len or min(limit or 1024, MAX_DEFAULT_SEQ_LEN)
    if limit is not None and seq_len > limit:
        raise ConfigError(f"seq_len={seq_len} exceeds the model's context of {limit} tokens")
    stride = cfg.stride if cfg.stride is not None else max(1, seq_len // 2)
    if stride >= seq_len:
        raise ConfigError(f"stride must be below seq_len, got stride={stride}, seq_len={seq_len}")
    return seq_len, stride


def source_texts(src: SourceConfig, max_documents: Optional[int]) -> tuple[str, list[str]]:
    """(label, texts) of one held-out source; the first `max_documents` non-empty documents."""
    from .data.sources import load_source, source_label

    texts = []
    for row in load_source(src):  # row by row, so a capped evaluation never materialises a whole column
        if isinstance(row["text"], str) and row["text"].strip():
            texts.append(row["text"])
        if max_documents is not None and len(texts) >= max_documents:
            break
    return source_label(src), texts


def default_output(cfg: EvaluateConfig) -> Path:
    model_dir = Path(cfg.model)
    return model_dir / "eval_results.json" if model_dir.is_dir() else Path("eval_results.json")


def run_evaluation(cfg: EvaluateConfig) -> dict[str, Any]:
    """Score every source, generate samples, write the results JSON (and the model card when asked)."""
    started = time.perf_counter()
    if cfg.update_model_card and not Path(cfg.model).is_dir():
        raise ConfigError("update_model_card=true needs model to be a local folder (its README.md is updated)")
    model, tokenizer = load_model_and_tokenizer(cfg)
    seq_len, stride = window_sizes(cfg, model.config)
    results: dict[str, Any] = {"model": cfg.model, "revision": cfg.revision, "seq_len": seq_len, "stride": stride,
                               "datasets": {}}
    total = {"nll_nats": 0.0, "tokens": 0, "bytes": 0, "documents": 0}
    for src in cfg.data:
        label, texts = source_texts(src, cfg.max_documents)
        scores = score_texts(model, tokenizer, texts, seq_len, stride, cfg.batch_size)
        results["datasets"][label] = {"path": src.path, "split": src.split if src.format == "hub" else None, **scores}
        for key in total:
            total[key] += scores[key]
    if len(cfg.data) > 1:
        results["all"] = metrics_from_nll(total["nll_nats"], total["tokens"], total["bytes"], total["documents"])
    results["samples"] = generate_samples(model, tokenizer, cfg.prompts, cfg.max_new_tokens, cfg.temperature,
                                          cfg.top_p, cfg.seed)
    results["seconds"] = round(time.perf_counter() - started, 1)
    output = Path(cfg.output) if cfg.output else default_output(cfg)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2))
    if cfg.update_model_card:
        from .cards import update_card_results

        update_card_results(Path(cfg.model) / "README.md", results)
    print(format_results(results, output))
    return results


def format_results(results: dict[str, Any], output: Path) -> str:
    lines = ["=" * 72, f"hf_llm evaluation of {results['model']} (windows of {results['seq_len']}, "
             f"stride {results['stride']})", "-" * 72]
    rows = dict(results["datasets"], **({"all": results["all"]} if "all" in results else {}))
    for label, r in rows.items():
        lines.append(f"{label:<24} perplexity {r['perplexity']:.3f}  bits/byte {r['bits_per_byte']:.4f}  "
                     f"({r['documents']:,} documents, {r['tokens']:,} tokens, {r['bytes']:,} bytes)")
    for s in results["samples"]:
        lines += ["-" * 72, f"prompt:  {s['prompt']}", "greedy:  " + " ".join(s["greedy"].split())[:300],
                  "sampled: " + " ".join(s["sampled"].split())[:300]]
    lines += ["-" * 72, f"results  {output}", "=" * 72]
    return "\n".join(lines)
