"""Supervised fine-tuning data: rows → conversations → chat-template text → token ids with completion-only labels.

Every format (messages, prompt/completion, alpaca) becomes a list of chat messages rendered by the tokenizer's chat
template; `text` rows are trained whole. Which tokens are targets comes from where the template put each assistant
message in the rendered text (character offsets of the tokens), never from searching for marker token ids: a marker
such as "Assistant:" tokenises differently after a space or a newline, so its ids alone cannot be trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Optional

import numpy as np

from .config import DataConfig, SourceConfig
from .config.domains import TEXT, OneOf, Range
from .errors import ConfigError
from .data.pipeline import split_documents
from .data.mixture import mixture_counts, sample_indices, validation_share, validation_size
from .data.sources import load_source, source_label
from .errors import DataError
from .data.pack import IGNORE_INDEX

ROLES = ("system", "user", "assistant")
SFT_FORMATS = ("auto", "messages", "prompt_completion", "alpaca", "text")
OVERFLOW = ("truncate", "drop")
KEPT_STATUSES = ("ok", "truncated")  # example statuses that stay in the data set

# Zephyr-style turns closed by EOS, so the model learns to stop even when pad == eos. Used only for tokenizers
# that have no template of their own; saved with the tokenizer so inference renders prompts the same way.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class SFTConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "format": OneOf(SFT_FORMATS), "messages_field": TEXT, "prompt_field": TEXT, "completion_field": TEXT,
        "instruction_field": TEXT, "input_field": TEXT, "output_field": TEXT, "max_length": Range(2),
        "overflow": OneOf(OVERFLOW), "chat_template": TEXT,
    }

    format: str = "auto"  # auto | messages | prompt_completion | alpaca | text; auto picks by the columns present
    messages_field: str = "messages"  # messages: a list of {role, content} per row
    prompt_field: str = "prompt"  # prompt_completion: the user's side
    completion_field: str = "completion"  # prompt_completion: the answer to learn
    instruction_field: str = "instruction"  # alpaca: the task
    input_field: str = "input"  # alpaca: optional context appended to the instruction
    output_field: str = "output"  # alpaca: the answer to learn
    max_length: int = 1024  # tokens per example (and per packed row); bounds memory
    overflow: str = "truncate"  # truncate | drop: what to do with longer examples (counted in the summary)
    packing: bool = False  # pack examples into max_length rows (position ids restart per example) instead of padding
    chat_template: Optional[str] = DEFAULT_CHAT_TEMPLATE  # used only when the tokenizer has none; recorded
    completion_only: bool = True  # loss on assistant turns (and their closing EOS) only, not on prompts

    def __post_init__(self) -> None:
        if self.format not in SFT_FORMATS:
            raise ConfigError(f"sft.format must be one of {SFT_FORMATS}, got {self.format!r}")
        if self.overflow not in OVERFLOW:
            raise ConfigError(f"sft.overflow must be one of {OVERFLOW}, got {self.overflow!r}")
        if self.max_length < 2:
            raise ConfigError(f"sft.max_length must be at least 2, got {self.max_length}")


def complete_tokenizer(tokenizer, chat_template: Optional[str]) -> dict[str, str]:
    """Give the tokenizer a pad token and a chat template if it lacks them; returns notes for summary and card."""
    notes: dict[str, str] = {}
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
        notes["pad_token"] = (
            f"the tokenizer had no pad token: pad = eos ({tokenizer.eos_token!r}); padding is masked by "
            f"attention_mask and labels -100, and the EOS closing each answer stays a target"
        )
    else:
        notes["pad_token"] = f"the tokenizer's own ({tokenizer.pad_token!r})"
    if tokenizer.chat_template:
        notes["chat_template"] = "the tokenizer's own"
    elif chat_template:
        tokenizer.chat_template = chat_template
        notes["chat_template"] = "sft.chat_template (the tokenizer had none)"
    else:
        notes["chat_template"] = "none (the tokenizer has none and sft.chat_template is null)"
    return notes


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """Validated copies of chat messages (None-valued keys that columnar storage adds are dropped)."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError(f"a conversation must be a non-empty list of messages, got {type(messages).__name__}")
    clean = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message:
            raise DataError(f"message {i} must be a mapping with 'role' and 'content', got {message!r:.80}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise DataError(f"message {i} has unknown role {role!r}; expected one of {ROLES}")
        if not isinstance(content, str):
            raise DataError(f"message {i} ({role}) has content of type {type(content).__name__}; text is expected")
        if role == "assistant" and not content.strip():
            raise DataError(f"message {i} is an empty assistant message; there is nothing to learn from it")
        clean.append({k: v for k, v in message.items() if v is not None})
    if not any(m["role"] == "assistant" for m in clean):
        raise DataError("the conversation has no assistant message to learn from")
    if clean[0]["role"] == "assistant":
        raise DataError("the conversation starts with an assistant message; it needs a user or system message first")
    return clean


def prompt_completion_messages(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def alpaca_messages(instruction: str, context: Optional[str], output: str) -> list[dict[str, str]]:
    """Alpaca rows as one user turn (instruction, then the optional input after a blank line) and the answer."""
    user = instruction if not context or not context.strip() else f"{instruction}\n\n{context}"
    return prompt_completion_messages(user, output)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_char_spans(tokenizer, messages: list[dict[str, Any]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, for each assistant message, the characters it occupies (answer + closing).

    Each answer starts where the template's generation prompt for the preceding messages ends, and ends where
    the conversation rendered up to and including the answer ends (so the end-of-turn token is inside).
    """
    full = _render(tokenizer, messages)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        upto = _render(tokenizer, messages[: i + 1])
        before = _render(tokenizer, messages[:i], generation_prompt=True)
        if not upto.startswith(before) or not full.startswith(upto):
            raise DataError(
                "the chat template does not render conversations prefix by prefix (an earlier turn changes when "
                "later ones are added), so answers cannot be located; use a template with {% generation %} markers"
            )
        spans.append((len(before), len(upto)))
    return full, spans


def _maybe_bos(tokenizer, ids: list[int], mask: list[bool], bos: bool) -> tuple[list[int], list[bool]]:
    if bos and (not ids or ids[0] != tokenizer.bos_token_id):
        return [tokenizer.bos_token_id, *ids], [False, *mask]
    return ids, mask


def encode_conversation(tokenizer, messages: list[dict[str, Any]], completion_only: bool = True,
                        bos: bool = False) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 off the assistant turns when `completion_only`) of one validated conversation."""
    if not tokenizer.chat_template:
        raise DataError("chat data needs a chat template: the tokenizer has none and sft.chat_template is null")
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if _GENERATION_TAG.search(template):
        # The template marks the answers itself; transformers turns the marks into a token mask.
        enc = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), [bool(m) for m in enc["assistant_masks"]]
    else:
        if not tokenizer.is_fast:
            raise ConfigError("completion-only labels need a fast tokenizer (character offsets of every token)")
        text, spans = assistant_char_spans(tokenizer, messages)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc["input_ids"])
        # A token is a target when its characters overlap an answer: a token straddling the prompt's end and the
        # answer's start ("Assistant: Sure" → " Sure") is the first thing the model must produce.
        mask = [any((s < b and e > a) if e > s else a <= s < b for a, b in spans) for s, e in enc["offset_mapping"]]
    ids, mask = _maybe_bos(tokenizer, ids, mask, bos)
    return ids, _labels(ids, mask if completion_only else [True] * len(ids))


def encode_text(tokenizer, text: str, bos: bool = False) -> tuple[list[int], list[int]]:
    """A plain document closed by EOS, every token a target (like pretraining)."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    ids, mask = _maybe_bos(tokenizer, ids, [True] * len(ids), bos)
    return ids, _labels(ids, mask)


def _labels(ids: list[int], mask: list[bool]) -> list[int]:
    # The first token has no context inside its example (packed, it would be predicted from another example).
    return [IGNORE_INDEX if i == 0 or not m else t for i, (t, m) in enumerate(zip(ids, mask))]


def fit_length(ids: list[int], labels: list[int], max_length: int, overflow: str) -> tuple[list[int], list[int], str]:
    """Apply the length limit; the status is ok | truncated | dropped | no_targets."""
    status = "ok"
    if len(ids) > max_length:
        if overflow == "drop":
            return [], [], "dropped"
        ids, labels, status = ids[:max_length], labels[:max_length], "truncated"
    if all(label == IGNORE_INDEX for label in labels):
        return [], [], "no_targets"  # e.g. a prompt longer than max_length: nothing left to learn
    return ids, labels, status


def encode_batch(batch: dict[str, list], indices: list[int], tokenizer, fmt: str, sft: SFTConfig, bos: bool,
                 label: str) -> dict[str, list]:
    """`datasets.map(batched=True, with_indices=True)` body: rows of `fmt` → input_ids, labels, status."""
    out: dict[str, list] = {"input_ids": [], "labels": [], "status": []}
    for j, index in enumerate(indices):
        try:
            if fmt == "text":
                ids, labels = encode_text(tokenizer, batch["text"][j], bos)
            else:
                if fmt == "messages":
                    messages = batch[sft.messages_field][j]
                elif fmt == "prompt_completion":
                    messages = prompt_completion_messages(batch[sft.prompt_field][j], batch[sft.completion_field][j])
                else:
                    context = batch[sft.input_field][j] if sft.input_field in batch else None
                    messages = alpaca_messages(batch[sft.instruction_field][j], context, batch[sft.output_field][j])
                ids, labels = encode_conversation(tokenizer, check_messages(messages), sft.completion_only, bos)
        except DataError as e:
            raise DataError(f"source {label!r}, row {index}: {e}") from None
        ids, labels, status = fit_length(ids, labels, sft.max_length, sft.overflow)
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["status"].append(status)
    return out


FORMAT_COLUMNS = {  # the column that identifies each format, and the ones it also needs
    "messages": ("messages_field", ()),
    "prompt_completion": ("prompt_field", ("completion_field",)),
    "alpaca": ("instruction_field", ("output_field",)),
    "text": (None, ()),
}


def load_sft_source(src: SourceConfig, sft: SFTConfig):
    """One source through `load_source`, keyed on its format's column. Returns (dataset, format)."""
    candidates = list(FORMAT_COLUMNS) if sft.format == "auto" else [sft.format]
    last: Optional[DataError] = None
    for fmt in candidates:
        key_attr, needs = FORMAT_COLUMNS[fmt]
        key = getattr(sft, key_attr) if key_attr else src.text_field
        try:
            ds = load_source(replace(src, text_field=key))
        except DataError as e:
            if "has no column" not in str(e):
                raise
            last = e
            continue
        if fmt != "text" and key != "text":
            ds = ds.rename_column("text", key)  # load_source names its key column "text"; text rows keep that name
        missing = [getattr(sft, n) for n in needs if getattr(sft, n) not in ds.column_names]
        if not missing:
            return ds, fmt
        last = DataError(f"source {src.path!r} has no column {missing[0]!r}; its columns are {ds.column_names}")
    if sft.format != "auto":
        raise DataError(f"sft.format={sft.format}: {last}") from None
    raise DataError(
        f"cannot tell the format of source {src.path!r}: expected a {sft.messages_field!r} column (messages), "
        f"{sft.prompt_field!r}+{sft.completion_field!r}, {sft.instruction_field!r}+{sft.output_field!r} (alpaca) or "
        f"{src.text_field!r} (text); {last}. Set sft.format and the sft.*_field names."
    ) from None


@dataclass
class SFTData:
    train: Any  # datasets.Dataset: input_ids, labels (+ position_ids when packed)
    validation: Any
    stats: dict[str, Any]  # per source and per split, for the summary and the model card


def build_sft_datasets(data: DataConfig, sft: SFTConfig, tokenizer, bos: bool = False) -> SFTData:
    """Load, encode and length-limit every source; hold out whole examples per source; mix the training parts by
    weight; pack if asked."""
    parts, sources = [], {}
    for src in data.sources:
        label = source_label(src)
        ds, fmt = load_sft_source(src, sft)
        encoded = ds.map(encode_batch, batched=True, with_indices=True, remove_columns=ds.column_names,
                         fn_kwargs={"tokenizer": tokenizer, "fmt": fmt, "sft": sft, "bos": bos, "label": label},
                         num_proc=data.num_proc if data.num_proc > 1 and len(ds) >= 10_000 else None)
        statuses = encoded["status"]
        counts = {s: statuses.count(s) for s in ("truncated", "dropped", "no_targets")}
        kept = encoded.filter(lambda s: s in KEPT_STATUSES, input_columns="status").remove_columns("status")
        sources[label] = {"format": fmt, "rows": len(ds), "examples": len(kept), **counts}
        if len(kept) == 0:
            raise DataError(f"source {src.path!r} has no usable example (see sft.max_length, sft.overflow): {counts}")
        parts.append(kept)
    train, validation = split_and_mix(parts, [s.weight for s in data.sources], data)
    stats = {"sources": sources, "train": _split_stats(train, sft.max_length),
             "validation": _split_stats(validation, sft.max_length)}
    if sft.packing:
        train, validation = (pack_dataset(d, sft.max_length, tokenizer.pad_token_id) for d in (train, validation))
        stats["train"]["rows"], stats["validation"]["rows"] = len(train), len(validation)
    return SFTData(train, validation, stats)


def validation_counts(sizes: list[int], weights: list[float], fraction: float, max_docs: int) -> list[int]:
    """Examples to hold out of each source: its mixture share of a validation set of `fraction` of the mixture
    (at most `max_docs` in all), but never more than `fraction` of the source's own distinct examples.

    A source repeated to reach its weight has no more distinct examples to hold out than it had; holding out its
    share of the repeated mixture could leave it almost nothing to train on.
    """
    counts = mixture_counts(sizes, weights)
    total = sum(counts)
    n_val = validation_share(total, fraction, max_docs)
    shares = [n_val * c / max(total, 1) for c in counts]
    alloc = [int(s) for s in shares]
    # Largest remainders take the rounding, so the total is exactly n_val and max_docs holds overall.
    for i in sorted(range(len(shares)), key=lambda i: alloc[i] - shares[i])[: n_val - sum(alloc)]:
        alloc[i] += 1
    return [min(a, validation_size(n, fraction)) for a, n in zip(alloc, sizes)]


def split_and_mix(parts: list, weights: list[float], data: DataConfig):
    """(train, validation) of per-source example datasets: whole examples held out of each source before any
    repetition, then only the training parts mixed by weight. Splitting a mixture instead would put copies of an
    upsampled source's validation examples into training."""
    from datasets import concatenate_datasets

    if len(parts) == 1:
        return split_documents(parts[0], data.validation_fraction, data.max_validation_documents, data.seed)
    held = validation_counts([len(p) for p in parts], weights, data.validation_fraction,
                             data.max_validation_documents)
    if sum(held) == 0:
        raise DataError(f"the sources have {[len(p) for p in parts]} usable examples: too few to hold out validation")
    trains, validations = [], []
    for i, (part, n_val) in enumerate(zip(parts, held)):
        if n_val == 0:
            trains.append(part)
            continue
        split = part.train_test_split(test_size=n_val, seed=data.seed + i, shuffle=True)
        trains.append(split["train"])
        validations.append(split["test"])
    counts = mixture_counts([len(t) for t in trains], weights)
    chosen = [t.select(sample_indices(len(t), c, data.seed + i))
              for i, (t, c) in enumerate(zip(trains, counts)) if c > 0]
    # Shuffled, so a validation capped by eval.max_batches still sees every source.
    return (concatenate_datasets(chosen).shuffle(seed=data.seed),
            concatenate_datasets(validations).shuffle(seed=data.seed))


def _split_stats(ds, max_length: int) -> dict[str, Any]:
    lengths = [len(x) for x in ds["input_ids"]]
    targets = sum(sum(1 for t in labels if t != IGNORE_INDEX) for labels in ds["labels"])
    return {"examples": len(ds), "rows": len(ds), "tokens": sum(lengths), "target_tokens": targets,
            "seq_len": max_length, "mean_length": round(sum(lengths) / max(1, len(lengths)), 1)}


def pack_examples(examples: list[tuple[list[int], list[int]]], max_length: int, pad_token_id: int) -> dict[str, list]:
    """Best-fit-decreasing packing of (ids, labels) into rows of `max_length`, with per-example position ids.

    The same bins and block layout as pretraining's best_fit packing (`data.pack`): position ids restart at 0 for
    every example (and for the padding tail), so an example never attends to another one in the same row.
    """
    from .data.pack import best_fit_bins, render_rows

    bins = best_fit_bins([len(ids) for ids, _ in examples], max_length)
    rows = [[examples[i][0] for i in members] for members in bins]
    labels = [[examples[i][1] for i in members] for members in bins]
    dtypes = dict.fromkeys(("input_ids", "position_ids", "labels"), np.dtype(np.int64))
    out = render_rows(rows, labels, max_length, pad_token_id, dtypes)
    return {k: out[k].tolist() for k in ("input_ids", "labels", "position_ids")}


def pack_dataset(ds, max_length: int, pad_token_id: int):
    from datasets import Dataset

    return Dataset.from_dict(pack_examples(list(zip(ds["input_ids"], ds["labels"])), max_length, pad_token_id))
