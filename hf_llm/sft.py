"""Supervised fine-tuning data: rows → conversations → chat-template text → token ids with completion-only labels.

Every format (messages, prompt/completion, alpaca) becomes a list of chat messages rendered by the tokenizer's chat
template; `text` rows are trained whole. Which tokens are targets comes from where the template put each assistant
message in the rendered text (character offsets of the tokens), never from searching for marker token ids: a marker
such as "Assistant:" tokenises differently after a space or a newline, so its ids alone cannot be trusted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
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

ROLES = ("system", "user", "assistant", "tool")
SFT_FORMATS = ("auto", "messages", "sharegpt", "prompt_completion", "alpaca", "text")
OVERFLOW = ("truncate", "drop")
KEPT_STATUSES = ("ok", "truncated")  # example statuses that stay in the data set

# Zephyr-style turns closed by EOS, so the model learns to stop even when pad == eos. Used only for tokenizers
# that have no template of their own; saved with the tokenizer so inference renders prompts the same way.
DEFAULT_CHAT_TEMPLATE = (
    "{% if tools %}{{ '<|tools|>\n' + (tools | tojson) + eos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + (message['content'] or '') }}"
    "{% for call in message['tool_calls'] or [] %}"
    "{{ '<tool_call>' + ((call['function'] if call['function'] is defined else call) | tojson) + '</tool_call>' }}"
    "{% endfor %}"
    "{{ eos_token }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_GENERATION_TAG = re.compile(r"\{%-?\s*generation\s*-?%\}")


@dataclass
class SFTConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "format": OneOf(SFT_FORMATS), "messages_field": TEXT, "conversations_field": TEXT, "tools_field": TEXT,
        "prompt_field": TEXT, "completion_field": TEXT, "instruction_field": TEXT, "input_field": TEXT,
        "output_field": TEXT, "max_length": Range(2), "overflow": OneOf(OVERFLOW), "chat_template": TEXT,
    }

    # auto | messages | sharegpt | prompt_completion | alpaca | text; auto picks by the columns present
    format: str = "auto"
    messages_field: str = "messages"  # messages: a list of {role, content} per row (OpenAI style: tool_calls, parts)
    conversations_field: str = "conversations"  # sharegpt: a list of {from, value} per row
    tools_field: str = "tools"  # a per-row list of tools (or its JSON text) passed to the chat template
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
    strict: bool = False  # a malformed row stops the run instead of being skipped and counted (rejects.jsonl)

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


class MalformedExample(DataError):
    """An example that cannot be trained on; `reason` (a short code) is what the summary and the rejects file count."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


# ShareGPT's speaker names (`from`) → chat roles; `value` holds the text.
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bing": "assistant", "system": "system", "tool": "tool", "function_response": "tool",
                  "observation": "tool", "function_call": "assistant"}


def message_text(content: Any, where: str) -> Optional[str]:
    """Message content as text: a string, None, or OpenAI content parts (`[{"type": "text", "text": ...}]`, joined
    by newlines). Any other part (an image) cannot be trained on by a text model."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type", "text") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise MalformedExample("non_text_content", f"{where} has a content part of type {kind!r}; only text "
                                                           f"parts can be trained on")
        return "\n".join(texts)
    raise MalformedExample("wrong_type", f"{where} has content of type {type(content).__name__}; text is expected")


def normalize_message(i: int, message: Any) -> dict[str, Any]:
    """One message as {role, content[, tool_calls, name, tool_call_id]}: ShareGPT's from/value become role/content,
    content parts become text, None-valued keys (which columnar storage adds) are dropped."""
    if not isinstance(message, dict):
        raise MalformedExample("wrong_type", f"message {i} must be a mapping with 'role' and 'content', "
                                             f"got {message!r:.80}")
    message = {k: v for k, v in message.items() if v is not None}
    if "role" not in message and "from" in message:  # ShareGPT
        speaker = message.pop("from")
        message["role"] = SHAREGPT_ROLES.get(str(speaker).lower(), speaker)
        if "value" in message:
            message["content"] = message.pop("value")
    role = message.get("role")
    if role is None:
        raise MalformedExample("wrong_type", f"message {i} has no 'role' (or ShareGPT 'from'): {message!r:.80}")
    if role not in ROLES:
        raise MalformedExample("unknown_role", f"message {i} has unknown role {role!r}; expected one of {ROLES}")
    content = message_text(message.get("content"), f"message {i} ({role})")
    calls = message.get("tool_calls")
    if calls is not None and (role != "assistant" or not isinstance(calls, (list, tuple))):
        raise MalformedExample("wrong_type", f"message {i} ({role}) has tool_calls of type {type(calls).__name__}; "
                                             f"a list on an assistant message is expected")
    if role == "assistant" and not (content or "").strip() and not calls:
        raise MalformedExample("empty_answer", f"message {i} is an empty assistant message; there is nothing to "
                                               f"learn from it")
    if content is None and role != "assistant":
        raise MalformedExample("wrong_type", f"message {i} ({role}) has no content")
    message["content"] = content if content is not None else ""  # a tool call's null content renders as nothing
    return message


def normalize_messages(messages: Any, need_assistant: bool = True) -> list[dict[str, Any]]:
    """Validated, normalised copies of chat messages (see `normalize_message`); a `MalformedExample` says why not."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise MalformedExample("wrong_type", f"a conversation must be a non-empty list of messages, got "
                                             f"{type(messages).__name__}")
    clean = [normalize_message(i, m) for i, m in enumerate(messages)]
    if all(m["role"] == "system" for m in clean):
        raise MalformedExample("system_only", "the conversation has only system messages")
    if need_assistant and not any(m["role"] == "assistant" for m in clean):
        raise MalformedExample("no_assistant_turn", "the conversation has no assistant message to learn from")
    if clean[0]["role"] in ("assistant", "tool"):
        raise MalformedExample("starts_with_assistant", f"the conversation starts with an {clean[0]['role']} message; "
                                                        f"it needs a user or system message first")
    return clean


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """Validated copies of chat messages (SFT: at least one assistant turn)."""
    return normalize_messages(messages, need_assistant=True)


def parse_tools(tools: Any) -> Optional[list]:
    """A row's `tools` (a list, or its JSON text as some datasets store it) for the chat template; None if absent."""
    if tools is None:
        return None
    if isinstance(tools, str):
        import json

        try:
            tools = json.loads(tools)
        except ValueError:
            raise MalformedExample("wrong_type", "the row's tools field is text but not JSON") from None
    if not isinstance(tools, (list, tuple)):
        raise MalformedExample("wrong_type", f"the row's tools must be a list, got {type(tools).__name__}")
    return list(tools) or None


def prompt_completion_messages(prompt: str, completion: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def alpaca_messages(instruction: str, context: Optional[str], output: str) -> list[dict[str, str]]:
    """Alpaca rows as one user turn (instruction, then the optional input after a blank line) and the answer."""
    user = instruction if not context or not context.strip() else f"{instruction}\n\n{context}"
    return prompt_completion_messages(user, output)


def _render(tokenizer, messages: list[dict], generation_prompt: bool = False, tools: Optional[list] = None) -> str:
    return tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=generation_prompt)


def assistant_char_spans(tokenizer, messages: list[dict[str, Any]],
                         tools: Optional[list] = None) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and, for each assistant message, the characters it occupies (answer + closing).

    Each answer starts where the template's generation prompt for the preceding messages ends, and ends where
    the conversation rendered up to and including the answer ends (so the end-of-turn token is inside).
    """
    full = _render(tokenizer, messages, tools=tools)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        upto = _render(tokenizer, messages[: i + 1], tools=tools)
        before = _render(tokenizer, messages[:i], generation_prompt=True, tools=tools)
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
                        bos: bool = False, tools: Optional[list] = None) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 off the assistant turns when `completion_only`) of one validated conversation."""
    if not tokenizer.chat_template:
        raise DataError("chat data needs a chat template: the tokenizer has none and sft.chat_template is null")
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if _GENERATION_TAG.search(template):
        # The template marks the answers itself; transformers turns the marks into a token mask.
        enc = tokenizer.apply_chat_template(messages, tools=tools, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(enc["input_ids"]), [bool(m) for m in enc["assistant_masks"]]
    else:
        if not tokenizer.is_fast:
            raise ConfigError("completion-only labels need a fast tokenizer (character offsets of every token)")
        text, spans = assistant_char_spans(tokenizer, messages, tools)
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


def row_messages(row: dict[str, Any], fmt: str, sft: "SFTConfig") -> list[dict[str, Any]]:
    """The chat messages of one row of format `fmt` (not text), validated and normalised."""
    def field(name: str) -> Any:
        value = row.get(name)
        if value is None:
            raise MalformedExample("missing_field", f"the row has no {name!r}")
        return value

    if fmt == "messages":
        messages = field(sft.messages_field)
    elif fmt == "sharegpt":
        messages = field(sft.conversations_field)
    elif fmt == "prompt_completion":
        prompt, completion = field(sft.prompt_field), field(sft.completion_field)
        if not isinstance(prompt, str) or not isinstance(completion, str):
            raise MalformedExample("wrong_type", "prompt and completion must be text")
        messages = prompt_completion_messages(prompt, completion)
    else:
        instruction, output = field(sft.instruction_field), field(sft.output_field)
        if not isinstance(instruction, str) or not isinstance(output, str):
            raise MalformedExample("wrong_type", "instruction and output must be text")
        messages = alpaca_messages(instruction, row.get(sft.input_field), output)
    return check_messages(messages)


def encode_batch(batch: dict[str, list], indices: list[int], tokenizer, fmt: str, sft: SFTConfig, bos: bool,
                 label: str) -> dict[str, list]:
    """`datasets.map(batched=True, with_indices=True)` body: rows of `fmt` → input_ids, labels, status, reason.

    Rows come as columns or, for JSON Lines, as each row's JSON text (`record`), so fields whose type changes from
    row to row still load. A malformed row gets status `rejected` and its reason; `sft.strict` raises instead.
    """
    import json

    out: dict[str, list] = {"input_ids": [], "labels": [], "status": [], "reason": [], "row": []}
    for j, index in enumerate(indices):
        reason = ""
        try:
            row = json.loads(batch["record"][j]) if "record" in batch else {k: batch[k][j] for k in batch}
            if not isinstance(row, dict):
                raise MalformedExample("wrong_type", f"a row must be a JSON object, got {type(row).__name__}")
            if "__malformed__" in row:
                raise MalformedExample(row["__malformed__"], row["detail"])
            if fmt == "text":
                text = row.get("text")
                if not isinstance(text, str):
                    raise MalformedExample("wrong_type", f"the text field holds {type(text).__name__}, not text")
                ids, labels = encode_text(tokenizer, text, bos)
            else:
                ids, labels = encode_conversation(tokenizer, row_messages(row, fmt, sft), sft.completion_only, bos,
                                                  parse_tools(row.get(sft.tools_field)))
            ids, labels, status = fit_length(ids, labels, sft.max_length, sft.overflow)
        except MalformedExample as e:
            if sft.strict:
                raise DataError(f"source {label!r}, row {index}: {e} (sft.strict=true)") from None
            ids, labels, status, reason = [], [], "rejected", f"{e.reason}: {e}"
        except DataError as e:
            raise DataError(f"source {label!r}, row {index}: {e}") from None
        out["input_ids"].append(ids)
        out["labels"].append(labels)
        out["status"].append(status)
        out["reason"].append(reason)
        out["row"].append(index)
    return out


FORMAT_COLUMNS = {  # the column that identifies each format, and the ones it also needs
    "messages": ("messages_field", ()),
    "sharegpt": ("conversations_field", ()),
    "prompt_completion": ("prompt_field", ("completion_field",)),
    "alpaca": ("instruction_field", ("output_field",)),
    "text": (None, ()),
}


def read_records(src: SourceConfig) -> list[Any]:
    """Every row of a local JSON Lines source as Python values, parsed line by line: rows whose fields change type
    (content null, text or parts) still load, and a line that is not JSON becomes a `MalformedExample` in the list
    (skipped and counted) instead of stopping the run. Other formats: None (read through `datasets`)."""
    import gzip
    import json

    from .data.sources import drop_empty_files, infer_format, resolve_files

    if src.format == "hub":
        return None
    files = drop_empty_files(src.path, resolve_files(src.path))
    if (src.format if src.format != "auto" else infer_format(files)) != "jsonl":
        return None
    rows: list[Any] = []
    for path in files:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    rows.append(MalformedExample("bad_json", f"{path}:{number} is not JSON ({e})"))
    return rows


def records_dataset(rows: list[Any]):
    """One `record` column of JSON text (a malformed line as its reason), which `encode_batch` decodes."""
    import json

    from datasets import Dataset

    return Dataset.from_dict({"record": [json.dumps({"__malformed__": r.reason, "detail": str(r)})
                                         if isinstance(r, MalformedExample) else json.dumps(r) for r in rows]})


def load_sft_source(src: SourceConfig, sft: SFTConfig):
    """One source, keyed on its format's column. Returns (dataset, format)."""
    rows = read_records(src)
    if rows is None:
        return _load_sft_columns(src, sft)
    keys: dict[str, None] = {}  # the columns in the order the rows give them
    for row in rows[:100]:
        if isinstance(row, dict):
            keys.update(dict.fromkeys(row))
    keys = list(keys)
    candidates = list(FORMAT_COLUMNS) if sft.format == "auto" else [sft.format]
    for fmt in candidates:
        key_attr, needs = FORMAT_COLUMNS[fmt]
        wanted = [getattr(sft, key_attr) if key_attr else src.text_field, *(getattr(sft, n) for n in needs)]
        missing = [w for w in wanted if w not in keys]
        if not missing:
            if fmt == "text" and src.text_field != "text":
                rows = [{"text": r.get(src.text_field)} if isinstance(r, dict) else r for r in rows]
            return records_dataset(rows), fmt
        if sft.format != "auto":
            raise DataError(f"sft.format={sft.format}: source {src.path!r} has no column {missing[0]!r}; its columns "
                            f"are {keys}")
    raise DataError(
        f"cannot tell the format of source {src.path!r}: expected a {sft.messages_field!r} column (messages), "
        f"{sft.conversations_field!r} (ShareGPT), {sft.prompt_field!r}+{sft.completion_field!r}, "
        f"{sft.instruction_field!r}+{sft.output_field!r} (alpaca) or {src.text_field!r} (text); its columns are "
        f"{keys}. Set sft.format and the sft.*_field names."
    )


def _load_sft_columns(src: SourceConfig, sft: SFTConfig):
    """A non-JSON-Lines source through `load_source`, keyed on its format's column. Returns (dataset, format)."""
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
        f"{sft.conversations_field!r} (ShareGPT), {sft.prompt_field!r}+{sft.completion_field!r}, "
        f"{sft.instruction_field!r}+{sft.output_field!r} (alpaca) or {src.text_field!r} (text); {last}. Set "
        f"sft.format and the sft.*_field names."
    ) from None


@dataclass
class SFTData:
    train: Any  # datasets.Dataset: input_ids, labels (+ position_ids when packed)
    validation: Any
    stats: dict[str, Any]  # per source and per split, for the summary and the model card
    rejects: list[dict[str, Any]] = field(default_factory=list)  # {source, row, reason} of every skipped row


def build_sft_datasets(data: DataConfig, sft: SFTConfig, tokenizer, bos: bool = False) -> SFTData:
    """Load, encode and length-limit every source; hold out whole examples per source; mix the training parts by
    weight; pack if asked."""
    parts, sources, rejects = [], {}, []
    for src in data.sources:
        label = source_label(src)
        ds, fmt = load_sft_source(src, sft)
        encoded = ds.map(encode_batch, batched=True, with_indices=True, remove_columns=ds.column_names,
                         fn_kwargs={"tokenizer": tokenizer, "fmt": fmt, "sft": sft, "bos": bos, "label": label},
                         num_proc=data.num_proc if data.num_proc > 1 and len(ds) >= 10_000 else None)
        statuses = list(encoded["status"])
        counts = {s: statuses.count(s) for s in ("truncated", "dropped", "no_targets")}
        reasons: dict[str, int] = {}
        for status, reason, row in zip(statuses, encoded["reason"], encoded["row"]):
            if status == "rejected":
                code = reason.split(":", 1)[0]
                reasons[code] = reasons.get(code, 0) + 1
                rejects.append({"source": label, "row": row, "reason": reason})
        kept = encoded.filter(lambda s: s in KEPT_STATUSES, input_columns="status")
        kept = kept.remove_columns(["status", "reason", "row"])
        sources[label] = {"format": fmt, "rows": len(ds), "examples": len(kept), **counts, "rejected": reasons}
        if len(kept) == 0:
            raise DataError(f"source {src.path!r} has no usable example (see sft.max_length, sft.overflow): "
                            f"{counts}, skipped: {reasons}")
        parts.append(kept)
    train, validation = split_and_mix(parts, [s.weight for s in data.sources], data)
    stats = {"sources": sources, "train": _split_stats(train, sft.max_length),
             "validation": _split_stats(validation, sft.max_length)}
    if sft.packing:
        train, validation = (pack_dataset(d, sft.max_length, tokenizer.pad_token_id) for d in (train, validation))
        stats["train"]["rows"], stats["validation"]["rows"] = len(train), len(validation)
    return SFTData(train, validation, stats, rejects)


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
