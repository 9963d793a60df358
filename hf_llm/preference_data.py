"""Preference pairs: rows → (prompt, chosen, rejected) → token ids of the prompt and of each response.

Two formats, detected like the SFT formats: explicit (`prompt` + `chosen` + `rejected`, each a string or a list of
messages) and implicit (`chosen` and `rejected` are whole conversations, or texts, sharing a prefix, as in
UltraFeedback-binarized and HH-RLHF; the shared prefix is the prompt). Chat prompts are rendered once with the chat
template and its generation prompt; a response's tokens are where prompt + response departs from the prompt (as
TRL does), so the end-of-turn token that closes the response is part of it. Text pairs get EOS after each response.

A row that cannot be used (malformed messages, a missing field, an empty response, chosen equal to rejected, a
prompt over `max_prompt_length`) is skipped with a reason: counted per source, listed in the rejects file;
`preference.strict=true` fails instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

from .config import DataConfig, SourceConfig
from .config.domains import TEXT, OneOf, Range
from .data.sources import source_label
from .errors import ConfigError, DataError
from .sft import MalformedExample, normalize_messages, parse_tools, read_records, records_dataset, split_and_mix

PREFERENCE_FORMATS = ("auto", "explicit", "implicit")
TRUNCATIONS = ("prompt_first", "response_first", "drop")
REFERENCES = ("auto", "precompute", "frozen", "adapters")
KEPT = ("ok", "truncated")


@dataclass
class PreferenceConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "loss_type": OneOf(("sigmoid", "ipo", "simpo")), "beta": Range(0, lo_open=True), "simpo_gamma": Range(0),
        "reference": OneOf(REFERENCES), "format": OneOf(PREFERENCE_FORMATS), "prompt_field": TEXT,
        "chosen_field": TEXT, "rejected_field": TEXT, "tools_field": TEXT, "max_length": Range(2),
        "truncation": OneOf(TRUNCATIONS), "max_prompt_length": Range(1),
    }

    loss_type: str = "sigmoid"  # sigmoid (DPO) | ipo | simpo (reference-free, length-normalised)
    beta: float = 0.1  # DPO/IPO: strength of the pull toward the reference (smaller = further); SimPO: reward scale (~2)
    simpo_gamma: float = 0.5  # SimPO only: the target reward margin
    # auto: the base with adapters disabled for LoRA/DoRA (no copy), log-probabilities computed once before training
    # for full fine-tuning; precompute | frozen (a frozen copy run at every step) | adapters
    reference: str = "auto"
    format: str = "auto"  # auto | explicit (prompt, chosen, rejected) | implicit (chosen, rejected share a prefix)
    prompt_field: str = "prompt"
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    tools_field: str = "tools"  # a per-row list of tools (or its JSON text) passed to the chat template
    max_length: int = 1024  # tokens of prompt + the longer response
    # over max_length: prompt_first cuts the prompt's start (keeping at least one token), then the responses' ends;
    # response_first cuts the responses' ends only; drop skips the pair
    truncation: str = "prompt_first"
    max_prompt_length: Optional[int] = None  # a longer prompt is a bad pair (skipped and counted); None = no limit
    strict: bool = False  # a malformed or bad pair stops the run instead of being skipped and counted

    def __post_init__(self) -> None:
        from .train.preference import LOSS_TYPES

        if self.loss_type not in LOSS_TYPES:
            raise ConfigError(f"preference.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        for name, allowed in (("format", PREFERENCE_FORMATS), ("truncation", TRUNCATIONS),
                              ("reference", REFERENCES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"preference.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.beta <= 0:
            raise ConfigError(f"preference.beta must be positive, got {self.beta}")
        if self.max_length < 2:
            raise ConfigError(f"preference.max_length must be at least 2, got {self.max_length}")


def read_pair_records(src: SourceConfig) -> list[Any]:
    """Every row of a source as Python values (JSON Lines line by line, see `sft.read_records`)."""
    rows = read_records(src)
    if rows is not None:
        return rows
    from datasets import load_dataset

    from .data.sources import BUILDERS, drop_empty_files, infer_format, resolve_files

    if src.format == "hub":
        return load_dataset(src.path, src.name, split=src.split, revision=src.revision).to_list()
    files = drop_empty_files(src.path, resolve_files(src.path))
    fmt = src.format if src.format != "auto" else infer_format(files)
    return load_dataset(BUILDERS[fmt], data_files=files, split="train").to_list()


def detect_format(rows: list[Any], pref: PreferenceConfig, label: str) -> str:
    if pref.format != "auto":
        return pref.format
    keys: set[str] = set()
    for row in rows[:100]:
        if isinstance(row, dict):
            keys |= set(row)
    if pref.chosen_field in keys and pref.rejected_field in keys:
        return "explicit" if pref.prompt_field in keys else "implicit"
    raise DataError(f"cannot tell the preference format of source {label!r}: expected {pref.chosen_field!r} and "
                    f"{pref.rejected_field!r} (and {pref.prompt_field!r} for explicit pairs); its rows have "
                    f"{sorted(keys)}. Set preference.format and the preference.*_field names.")


def split_implicit(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """(prompt, chosen response, rejected response) of two conversations or texts sharing a prefix.

    Conversations: the messages they share, up to the last user (or tool) turn before the first difference. Texts:
    the common characters, ending before a space where the first difference starts a word (as TRL does).
    """
    if isinstance(chosen, str) and isinstance(rejected, str):
        n = 0
        while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
            n += 1
        if 0 < n < len(chosen) and chosen[n - 1] == " ":
            n -= 1
        return chosen[:n], chosen[n:], rejected[n:]
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise MalformedExample("wrong_type", f"implicit pairs need two conversations or two texts, got "
                                             f"{type(chosen).__name__} and {type(rejected).__name__}")
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] == "assistant":  # the prompt ends where the model's turn begins
        n -= 1
    return chosen[:n], chosen[n:], rejected[n:]


def as_prompt_messages(prompt: Any) -> list[dict[str, Any]]:
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return normalize_messages(prompt, need_assistant=False)


def as_response_messages(response: Any) -> list[dict[str, Any]]:
    if isinstance(response, str):
        response = [{"role": "assistant", "content": response}]
    if not isinstance(response, list) or not response:
        raise MalformedExample("empty_response", "a response is empty")
    clean = [normalize_message_checked(i, m) for i, m in enumerate(response)]
    if clean[0]["role"] != "assistant":
        raise MalformedExample("wrong_type", f"a response must start with an assistant message, got {clean[0]['role']}")
    return clean


def normalize_message_checked(i: int, message: Any) -> dict[str, Any]:
    from .sft import normalize_message

    try:
        return normalize_message(i, message)
    except MalformedExample as e:
        if e.reason == "empty_answer":
            raise MalformedExample("empty_response", str(e)) from None
        raise


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def encode_pair(tokenizer, prompt: Any, chosen: Any, rejected: Any, tools: Optional[list],
                bos: bool = False) -> tuple[list[int], list[int], list[int]]:
    """(prompt ids, chosen response ids, rejected response ids). Text pairs (all three strings) are tokenised as
    text with EOS closing each response; anything else is a conversation rendered with the chat template."""
    if all(isinstance(x, str) for x in (prompt, chosen, rejected)) and not tools:
        if not chosen.strip() or not rejected.strip():
            raise MalformedExample("empty_response", "a response is empty")
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(prompt + chosen, add_special_tokens=False)["input_ids"]
        r = tokenizer(prompt + rejected, add_special_tokens=False)["input_ids"]
        c, r = c + [tokenizer.eos_token_id], r + [tokenizer.eos_token_id]
    else:
        if not tokenizer.chat_template:
            raise DataError("chat preference data needs a chat template: the tokenizer has none and "
                            "sft.chat_template is null")
        prompt_msgs = as_prompt_messages(prompt)
        chosen_msgs, rejected_msgs = as_response_messages(chosen), as_response_messages(rejected)

        def ids(messages: list, generation_prompt: bool = False) -> list[int]:
            text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False,
                                                 add_generation_prompt=generation_prompt)
            return tokenizer(text, add_special_tokens=False)["input_ids"]

        p = ids(prompt_msgs, generation_prompt=True)  # the prompt, rendered once as inference will see it
        c, r = ids(prompt_msgs + chosen_msgs), ids(prompt_msgs + rejected_msgs)
    # A response starts where prompt + response departs from the prompt: a template may render the prompt's end
    # differently, or a token may merge across the boundary (TRL does the same).
    n = min(_common_prefix(p, c), _common_prefix(p, r))
    prompt_ids, chosen_ids, rejected_ids = p[:n], c[n:], r[n:]
    if bos and tokenizer.bos_token_id is not None and (not prompt_ids or prompt_ids[0] != tokenizer.bos_token_id):
        prompt_ids = [tokenizer.bos_token_id, *prompt_ids]
    if not prompt_ids:
        raise MalformedExample("empty_prompt", "the prompt is empty: the first response token would have no context")
    if not chosen_ids or not rejected_ids:
        raise MalformedExample("empty_response", "a response has no tokens")
    return prompt_ids, chosen_ids, rejected_ids


def fit_pair(prompt: list[int], chosen: list[int], rejected: list[int],
             pref: PreferenceConfig) -> tuple[list[int], list[int], list[int], str]:
    """Apply `max_prompt_length` and `max_length`; status ok | truncated, or a MalformedExample."""
    if pref.max_prompt_length is not None and len(prompt) > pref.max_prompt_length:
        raise MalformedExample("prompt_too_long", f"the prompt has {len(prompt)} tokens, over "
                                                  f"preference.max_prompt_length={pref.max_prompt_length}")
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest <= pref.max_length:
        status = "ok"
    elif pref.truncation == "drop":
        raise MalformedExample("too_long", f"prompt + response is {len(prompt) + longest} tokens, over "
                                           f"preference.max_length={pref.max_length} (preference.truncation=drop)")
    else:
        if pref.truncation == "prompt_first":
            keep = max(1, pref.max_length - longest)  # the prompt's end: what the response answers
            prompt = prompt[len(prompt) - min(keep, len(prompt)):]
        room = pref.max_length - len(prompt)
        if room < 1:
            raise MalformedExample("prompt_too_long", f"the prompt has {len(prompt)} tokens, leaving no room for a "
                                                      f"response within preference.max_length={pref.max_length}")
        chosen, rejected, status = chosen[:room], rejected[:room], "truncated"
    if chosen == rejected:
        raise MalformedExample("identical", "chosen and rejected responses are the same"
                               + (" (after truncation)" if status == "truncated" else ""))
    return prompt, chosen, rejected, status


def encode_rows(batch: dict[str, list], indices: list[int], tokenizer, fmt: str, pref: PreferenceConfig,
                bos: bool, label: str) -> dict[str, list]:
    """`datasets.map(batched=True, with_indices=True)` body: JSON rows → prompt/chosen/rejected ids, status, reason."""
    out: dict[str, list] = {k: [] for k in ("prompt_ids", "chosen_ids", "rejected_ids", "status", "reason", "row")}
    for record, index in zip(batch["record"], indices):
        try:
            row = json.loads(record)
            if isinstance(row, dict) and "__malformed__" in row:
                raise MalformedExample(row["__malformed__"], row["detail"])
            if not isinstance(row, dict):
                raise MalformedExample("wrong_type", f"a row must be a JSON object, got {type(row).__name__}")
            fields = [pref.chosen_field, pref.rejected_field] + ([pref.prompt_field] if fmt == "explicit" else [])
            missing = [f for f in fields if row.get(f) is None]
            if missing:
                raise MalformedExample("missing_field", f"the row has no {missing[0]!r}")
            if fmt == "explicit":
                prompt, chosen, rejected = row[pref.prompt_field], row[pref.chosen_field], row[pref.rejected_field]
            else:
                prompt, chosen, rejected = split_implicit(row[pref.chosen_field], row[pref.rejected_field])
            if isinstance(prompt, list) and isinstance(chosen, str):  # a chat prompt answered in text
                chosen, rejected = ([{"role": "assistant", "content": x}] if isinstance(x, str) else x
                                    for x in (chosen, rejected))
            p, c, r = encode_pair(tokenizer, prompt, chosen, rejected, parse_tools(row.get(pref.tools_field)), bos)
            p, c, r, status = fit_pair(p, c, r, pref)
            reason = ""
        except MalformedExample as e:
            if pref.strict:
                raise DataError(f"source {label!r}, row {index}: {e} (preference.strict=true)") from None
            p, c, r, status, reason = [], [], [], "rejected", f"{e.reason}: {e}"
        out["prompt_ids"].append(p)
        out["chosen_ids"].append(c)
        out["rejected_ids"].append(r)
        out["status"].append(status)
        out["reason"].append(reason)
        out["row"].append(index)
    return out


@dataclass
class PreferenceData:
    train: Any  # datasets.Dataset of pairs: prompt_ids, chosen_ids, rejected_ids
    validation: Any
    stats: dict[str, Any]
    rejects: list[dict[str, Any]]  # {source, row, reason} of every skipped row


def build_preference_datasets(data: DataConfig, pref: PreferenceConfig, tokenizer,
                              bos: bool = False) -> PreferenceData:
    """Read, encode and check every source; hold out whole pairs per source; mix the training parts by weight."""
    parts, sources, rejects = [], {}, []
    for src in data.sources:
        label = source_label(src)
        rows = read_pair_records(src)
        fmt = detect_format(rows, pref, label)
        ds = records_dataset(rows)
        encoded = ds.map(encode_rows, batched=True, with_indices=True, remove_columns=["record"],
                         fn_kwargs={"tokenizer": tokenizer, "fmt": fmt, "pref": pref, "bos": bos, "label": label},
                         num_proc=data.num_proc if data.num_proc > 1 and len(ds) >= 10_000 else None)
        reasons: dict[str, int] = {}
        for status, reason, row in zip(encoded["status"], encoded["reason"], encoded["row"]):
            if status == "rejected":
                code = reason.split(":", 1)[0]
                reasons[code] = reasons.get(code, 0) + 1
                rejects.append({"source": label, "row": row, "reason": reason})
        kept = encoded.filter(lambda s: s in KEPT, input_columns="status").remove_columns(["status", "reason", "row"])
        sources[label] = {"format": fmt, "rows": len(ds), "pairs": len(kept),
                          "truncated": encoded["status"].count("truncated"), "rejected": reasons}
        if len(kept) == 0:
            raise DataError(f"source {src.path!r} has no usable pair; skipped: {reasons}")
        parts.append(kept)
    train, validation = split_and_mix(parts, [s.weight for s in data.sources], data)
    stats = {"sources": sources, "train": _pair_stats(train), "validation": _pair_stats(validation)}
    return PreferenceData(train, validation, stats, rejects)


def _pair_stats(ds) -> dict[str, Any]:
    prompt = [len(x) for x in ds["prompt_ids"]]
    chosen, rejected = [len(x) for x in ds["chosen_ids"]], [len(x) for x in ds["rejected_ids"]]
    tokens = sum(2 * p + c + r for p, c, r in zip(prompt, chosen, rejected))  # both sequences of every pair
    n = max(1, len(ds))
    return {"pairs": len(ds), "examples": len(ds), "rows": len(ds), "tokens": tokens,
            "response_tokens": sum(chosen) + sum(rejected), "mean_length": round(tokens / n, 1)}
