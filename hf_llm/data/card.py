"""The data card: what went in, what came out at every step, and why anything was dropped.

`build_card` turns the pipeline's measurements into `data_card.json` (the keys pretraining's summary and model card
read — "train"/"validation" with "tokens", "unigram_validation_loss", "sources", "fingerprint" — plus everything
else); `write_card_pages` writes the same as DATA_CARD.md (hf_llm.cards.render_data_card, from a template) and
the pictures it shows (hf_llm.plots: token lengths, rejections by reason).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .selection import KEPT_CODE, STEPS, step_of


@dataclass
class CardInputs:
    data: Any  # DataConfig
    tok_cfg: Any  # TokenizerConfig
    specs: list  # SourceSpec per source
    keys: Any  # selection.Keys
    selection: Any  # selection.Selection
    passes: list  # per source, per pass: indices drawn for training
    tokenizer: Any
    adds_bos: bool
    emitted: Any  # pipeline.Emitted
    timings: dict[str, float]
    eval_names: list[str]
    fingerprint: str


def build_card(x: CardInputs) -> dict[str, Any]:
    keys, selection, e = x.keys, x.selection, x.emitted
    labels = [s.label for s in x.specs]
    # the step that rejects each reason code; kept documents pass every step
    step_index = {code: len(STEPS) if code == KEPT_CODE else STEPS.index(step_of(r))
                  for code, r in enumerate(keys.reasons)}
    steps = _steps(x, labels, step_index)
    rejections: dict[str, int] = {}
    for status in selection.status:
        codes, counts = np.unique(status, return_counts=True)
        for c, n in zip(codes, counts):
            if c != KEPT_CODE:
                rejections[keys.reasons[c]] = rejections.get(keys.reasons[c], 0) + int(n)
    n_train = sum(int(selection.train(i).sum()) for i in range(len(labels)))
    n_val = sum(int(selection.validation[i].sum()) for i in range(len(labels)))
    total_drawn = max(1, sum(e.drawn_tokens))
    sources = {}
    for i, (spec, src) in enumerate(zip(x.specs, x.data.sources)):
        status = selection.status[i]
        kept = status == KEPT_CODE
        sources[spec.label] = {
            "path": spec.path, "format": spec.fmt, "files": len(spec.files), "weight": src.weight,
            "documents_in": int(len(status)), "documents_out": int(kept.sum()),
            "characters_in": int(keys.chars_in[i].sum()), "characters_out": int(keys.chars_out[i][kept].sum()),
            "tokens_out": int(e.tokens_by_code[i][KEPT_CODE]),
            "train_documents": int(selection.train(i).sum()),
            "validation_documents": int(selection.validation[i].sum()),
            "mixture_documents": e.drawn_documents[i], "mixture_passes": len(x.passes[i]),
            "mixture_tokens": e.drawn_tokens[i], "mixture_token_share": round(e.drawn_tokens[i] / total_drawn, 4),
            "pii_replaced": sum(keys.pii[i].values()),
        }
    val_tokens = e.validation_unigram.sum()
    from .pack import unigram_cross_entropy_from_counts

    card = {
        "format_version": 2,
        "fingerprint": x.fingerprint,
        "sources": sources,
        "steps": steps,
        "rejections": dict(sorted(rejections.items(), key=lambda kv: -kv[1])),
        "rejected_documents": int(sum(rejections.values())),
        "filters": _filters(x, rejections),
        "read_problems": {"count": keys.read_problem_count, "first": keys.read_problems},
        "pii_replaced": {k: sum(p[k] for p in keys.pii) for k in ("email", "ip", "phone")},
        "duplicate_clusters": _clusters(selection.clusters, e.representative_origins),
        "decontamination": _decontam(x, labels),
        "languages": _languages(x),
        "split": {"train_documents": n_train, "validation_documents": n_val},
        "mixture": {"mix_by": x.data.mix_by, "seed": x.data.seed,
                    "sources": {l: {k: sources[l][k] for k in ("weight", "train_documents", "mixture_documents",
                                                               "mixture_passes", "mixture_tokens",
                                                               "mixture_token_share")} for l in labels}},
        "train": _split_stats(e.train_stats, x.data.packing),
        "validation": _split_stats(e.validation_stats, x.data.packing),
        "characters": {"train": sum(e.drawn_characters), "validation": e.validation_characters},
        "token_length_histogram": token_length_histogram(e.kept_lengths),
        "vocab_size": len(x.tokenizer),
        "adds_bos": x.adds_bos,
        "tokenizer": {"trained": not x.tok_cfg.name_or_path, "name_or_path": x.tok_cfg.name_or_path,
                      "vocab_size": len(x.tokenizer)},
        "unigram_validation_loss": unigram_cross_entropy_from_counts(e.train_unigram, e.validation_unigram)
        if val_tokens else None,
        "rejects_rows": e.rejects,
        "language_filter": {"keep": list(x.data.languages) or "all", "min_score": x.data.language_min_score},
        "config": _plain(asdict(x.data)),
        "timings_seconds": x.timings,
    }
    return card


def _steps(x: CardInputs, labels: list[str], step_index: dict[int, int]) -> list[dict]:
    """Documents, characters and tokens into and out of each step, overall and per source.

    Characters are counted on the text as read up to the clean step's input, on the cleaned text after it; tokens
    on the cleaned text (the tokenizer does not exist before cleaning), so the read step has none.
    """
    keys, selection, e = x.keys, x.selection, x.emitted
    steps = []
    for k, name in enumerate(STEPS):
        entry = {"step": name, "documents_in": 0, "documents_out": 0, "characters_in": 0, "characters_out": 0,
                 "tokens_in": None if name == "read" else 0, "tokens_out": None if name == "read" else 0,
                 "rejected": {}, "by_source": {}}
        for i, label in enumerate(labels):
            st = np.array([step_index[c] for c in range(len(keys.reasons))])[selection.status[i]]
            into, out = st >= k, st > k
            chars_before = keys.chars_in[i] if k <= STEPS.index("clean") else keys.chars_out[i]
            chars_after = keys.chars_in[i] if k < STEPS.index("clean") else keys.chars_out[i]
            tok = e.tokens_by_code[i]
            step_tokens = lambda pred: int(sum(tok[c] for c in range(len(tok)) if pred(step_index[c])))  # noqa: E731
            row = {"documents_in": int(into.sum()), "documents_out": int(out.sum()),
                   "characters_in": int(chars_before[into].sum()), "characters_out": int(chars_after[out].sum())}
            if name != "read":
                row["tokens_in"] = step_tokens(lambda s: s >= k)
                row["tokens_out"] = step_tokens(lambda s: s > k)
            for key, v in row.items():
                entry[key] += v
            entry["by_source"][label] = row
            codes, counts = np.unique(selection.status[i][st == k], return_counts=True)
            for c, n in zip(codes, counts):
                entry["rejected"][keys.reasons[c]] = entry["rejected"].get(keys.reasons[c], 0) + int(n)
        steps.append(entry)
    return steps


def _clusters(clusters: dict, origins: dict[int, str]) -> dict:
    out = {}
    for kind, c in clusters.items():
        out[kind] = {**c, "largest": [{"kept": origins.get(x["representative"], f"#{x['representative']}"),
                                        "size": x["size"]} for x in c["largest"]]}
    return out


def _filters(x: CardInputs, rejections: dict[str, int]) -> dict:
    """What each cleaning rule rejected: documents, their share of the usable documents read, their characters,
    and the first few rows (origin and opening words), so a user sees what the preset cost."""
    keys, selection = x.keys, x.selection
    usable = sum(int(np.isin(st, [c for c, r in enumerate(keys.reasons) if step_of(r) != "read"]).sum())
                 for st in selection.status)  # documents that reached the clean step
    rules = {}
    for reason, n in rejections.items():
        if step_of(reason) != "clean":
            continue
        code = keys.reasons.index(reason)
        chars = sum(int(ci[st == code].sum()) for ci, st in zip(keys.chars_in, selection.status))
        rules[reason] = {"documents": n, "share": round(n / max(1, usable), 4), "characters": chars,
                         "examples": x.emitted.reject_examples.get(reason, [])}
    cfg = x.data.clean
    return {"preset": cfg.preset, "documents_checked": usable, "rejected": sum(r["documents"] for r in rules.values()),
            "enabled": {name: getattr(cfg, name).enabled for name in ("gopher_repetition", "gopher_quality", "c4",
                                                                      "fineweb")},
            "rules": rules}


def _languages(x: CardInputs) -> dict:
    """Per identified language: documents read and kept, characters, words and tokens of the kept ones, and the
    tokenizer's fertility (tokens per character and per word), largest first; what `data.languages` and the score
    threshold rejected. Words are counted as the filters count them (characters in ja, zh, th: clean.py)."""
    keys, selection = x.keys, x.selection
    if not keys.language:
        return {}
    rejected = keys.reasons.index("language") if "language" in keys.reasons else -1
    usable = np.array([step_of(r) != "read" if r is not None else True for r in keys.reasons])
    out: dict[str, dict] = {}
    for lang_code, lang in enumerate(keys.languages):
        row = {"documents_in": 0, "documents_out": 0, "characters_out": 0, "words_out": 0, "rejected_language": 0}
        for i in range(len(selection.status)):
            status, mine = selection.status[i], keys.language[i] == lang_code
            kept = mine & (status == KEPT_CODE)
            row["documents_in"] += int((mine & usable[status]).sum())
            row["documents_out"] += int(kept.sum())
            row["characters_out"] += int(keys.chars_out[i][kept].sum())
            row["words_out"] += int(keys.words_out[i][kept].sum())
            row["rejected_language"] += int((mine & (status == rejected)).sum())
        tokens = int(x.emitted.tokens_by_language.get(lang, 0))
        row["tokens_out"] = tokens
        row["tokens_per_character"] = round(tokens / row["characters_out"], 4) if row["characters_out"] else None
        row["tokens_per_word"] = round(tokens / row["words_out"], 4) if row["words_out"] else None
        out[lang or "unknown"] = row
    return dict(sorted(out.items(), key=lambda kv: (-kv[1]["documents_out"], -kv[1]["documents_in"], kv[0])))


def _decontam(x: CardInputs, labels: list[str]) -> dict:
    cfg = x.data.decontam
    if not cfg.enabled:
        return {"enabled": False}
    code = x.keys.reasons.index("decontaminated") if "decontaminated" in x.keys.reasons else None
    removed = {name: 0 for name in x.eval_names}
    for status, cont in zip(x.selection.status, x.keys.contaminated):
        if code is None:
            break
        for k, name in enumerate(x.eval_names, start=1):
            removed[name] += int(((status == code) & (cont == k)).sum())
    return {"enabled": True, "ngram": cfg.ngram, "removed": removed, "examples": x.emitted.decontam_examples}


def _split_stats(stats: dict, packing: str) -> dict:
    capacity = stats.get("blocks", 0) * stats.get("seq_len", 0)
    used = stats.get("tokens", 0) - stats.get("tokens_dropped_at_end", 0)
    return {**stats, "packing": packing, "fill": round(used / capacity, 4) if capacity else None}


def token_length_histogram(lengths: np.ndarray) -> dict:
    """Documents per power-of-two token-length bin ([64, 128), [128, 256), ...) from the shortest to the longest."""
    if len(lengths) == 0:
        return {"edges": [], "counts": [], "documents": 0}
    low = int(np.floor(np.log2(max(1, int(lengths.min())))))
    top = max(low + 1, int(np.ceil(np.log2(int(lengths.max()) + 1))))
    edges = [2**k for k in range(low, top + 1)]
    counts, _ = np.histogram(lengths, bins=edges)
    q = np.percentile(lengths, [50, 90, 99])
    return {"edges": edges, "counts": counts.tolist(), "documents": int(len(lengths)),
            "mean": round(float(lengths.mean()), 1), "p50": float(q[0]), "p90": float(q[1]), "p99": float(q[2]),
            "max": int(lengths.max())}


def _plain(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


# ------------------------------------------------------------------------------------------------- card pages


def write_card_pages(card: dict, folder: Path) -> None:
    """DATA_CARD.md and the pictures it shows, into the prepared folder (data_card.json is the pipeline's)."""
    from ..cards import data_card_pictures, render_data_card

    pictures = data_card_pictures(card)
    for name, png in pictures.items():
        (folder / name).write_bytes(png)
    (folder / "DATA_CARD.md").write_text(render_data_card(card, pictures))


def data_fingerprint(data, tok) -> str:
    """Identifies what a prepared folder was built from (`DataConfig`, `TokenizerConfig`), so a rerun or resume can
    reuse it; the data card records it."""
    blob = json.dumps({"data": asdict(data), "tokenizer": asdict(tok), "version": 2}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
