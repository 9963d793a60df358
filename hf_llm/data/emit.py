"""The pack pass's emission, per task: rejects/ (and documents/) rows written, training and validation documents
packed into blocks, and the statistics (`Emitted`) the data card adds up over the tasks (`merge_emitted`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..config import DataConfig
from .batches import iter_batches, take_documents, token_ids
from .pack import BlockWriter, make_packer, packer_dtypes
from .selection import KEPT_CODE, Keys


REJECT_EXAMPLES = 3  # rejected rows per reason shown in the data card
DECONTAM_EXAMPLES = 5  # origins per eval set shown in the data card
EXCERPT_CHARS = 160  # of each, whitespace collapsed


@dataclass
class Emitted:
    """What the emission pass measured, for the data card."""

    vocab: int
    train_stats: dict = field(default_factory=dict)
    validation_stats: dict = field(default_factory=dict)
    tokens_by_code: list = field(default_factory=list)  # per source: tokens of the cleaned text, per reason code
    tokens_by_language: dict = field(default_factory=dict)  # language → tokens of its kept documents
    drawn_tokens: list = field(default_factory=list)  # per source, over all passes: tokens sent to training
    drawn_documents: list = field(default_factory=list)
    drawn_characters: list = field(default_factory=list)
    validation_characters: int = 0
    kept_lengths: list = field(default_factory=list)  # token count of every kept document (train and validation)
    representative_origins: dict = field(default_factory=dict)  # global index of a kept copy → its origin
    decontam_examples: dict = field(default_factory=dict)  # eval set → first origins removed for it
    reject_examples: dict = field(default_factory=dict)  # reason → first rejected rows' origin and opening words
    train_unigram: np.ndarray = None
    validation_unigram: np.ndarray = None
    rejects: int = 0
    documents_saved: int = 0

    def __post_init__(self) -> None:
        self.train_unigram = np.zeros(self.vocab, np.int64)
        self.validation_unigram = np.zeros(self.vocab, np.int64)


@dataclass
class Sinks:
    """Where emitted rows and tokens go: a packer and a block writer per split, the rejects and documents writers."""

    packers: dict
    blocks: dict
    rejects: "RowWriter"
    documents: Optional["RowWriter"]

    def pack(self, split: str, flat: np.ndarray, lengths: np.ndarray, e: Emitted) -> None:
        self.blocks[split].write(self.packers[split].add(flat, lengths))
        counts = e.train_unigram if split == "train" else e.validation_unigram
        counts += np.bincount(flat, minlength=e.vocab)[: e.vocab]


def open_sinks(folder: Path, specs: list, data: DataConfig, vocab: int, pad_token_id: Optional[int]) -> Sinks:
    """A packer and an Arrow block file per split, and the rejects/ (documents/) row files, all under `folder`."""
    packers = {s: make_packer(data.packing, data.seq_len, vocab, pad_token_id, data.best_fit_window)
               for s in ("train", "validation")}
    return Sinks(
        packers=packers,
        blocks={s: BlockWriter(folder / f"{s}.arrow", data.seq_len, packer_dtypes(p)) for s, p in packers.items()},
        rejects=RowWriter(folder / "rejects.arrow", union_features(specs, rejects=True)),
        documents=RowWriter(folder / "documents.arrow", union_features(specs, rejects=False))
        if data.save_documents else None,
    )


def emit_source(i: int, ds, spec, selection, passes: list, keys: Keys, sinks: Sinks, e: Emitted) -> None:
    """One source's documents of this task: every row once (rejects, statistics, validation, the first training
    pass), then the kept training rows once more per extra pass its mixture weight asks for (`passes`: row indices
    per pass). `ds` holds the cleaned rows with `input_ids` and `n_tokens`; None when the task holds no file of it."""
    drawn = np.zeros(3, dtype=np.int64)  # tokens, documents, characters sent to training
    e.tokens_by_code.append(np.zeros(len(keys.reasons), dtype=np.int64))
    if ds is not None:
        _first_pass(i, ds, spec, selection, passes, keys, sinks, e, drawn)
        for p, rows in enumerate(passes[1:], start=2):  # repeated (upsampled) passes over this source
            for idx, b in iter_batches(ds, ["input_ids"], rows, desc=f"pack {spec.label} pass {p}"):
                flat, lengths = token_ids(b["input_ids"], e.vocab)
                sinks.pack("train", flat, lengths, e)
                drawn += (len(flat), len(idx), int(keys.chars_out[i][idx].sum()))
    e.drawn_tokens.append(int(drawn[0]))
    e.drawn_documents.append(int(drawn[1]))
    e.drawn_characters.append(int(drawn[2]))


def close_sinks(sinks: Sinks, e: Emitted) -> None:
    """The packers' last blocks written and every file completed; the statistics taken into `e`."""
    for split, packer in sinks.packers.items():
        sinks.blocks[split].write(packer.finish())
        sinks.blocks[split].close()
    e.train_stats, e.validation_stats = dict(sinks.packers["train"].stats), dict(sinks.packers["validation"].stats)
    e.kept_lengths = np.concatenate(e.kept_lengths) if e.kept_lengths else np.zeros(0, np.int64)
    e.rejects = sinks.rejects.rows
    sinks.rejects.close()
    if sinks.documents is not None:
        e.documents_saved = sinks.documents.rows
        sinks.documents.close()


def _first_pass(i: int, ds, spec, selection, chosen: list, keys: Keys, sinks: Sinks, e: Emitted,
                drawn: np.ndarray) -> None:
    status, val, rep = selection.status[i], selection.validation[i], selection.representative[i]
    first = np.zeros(len(status), dtype=bool)
    if chosen and len(chosen[0]):
        first[chosen[0]] = True
    extras = [spec.renamed.get(k, k) for k in spec.extras]
    columns = ["source", "origin", "reason", "detail", "contaminated_by", "n_tokens", "input_ids", "language",
               "language_score", *extras]
    texts = ["original_text"] + (["text"] if sinks.documents is not None else [])
    for idx, b in iter_batches(ds, columns, desc=f"pack {spec.label}", total=len(status)):
        b = _LazyTexts(b, ds, idx, texts)  # only the rows written out are read: the other pages stay on disk
        flat, lengths = token_ids(b["input_ids"], e.vocab)
        codes = status[idx]
        n_tokens = np.asarray(b["n_tokens"], dtype=np.int64)
        np.add.at(e.tokens_by_code[i], codes, n_tokens)
        e.kept_lengths.append(n_tokens[codes == KEPT_CODE])
        for k in np.flatnonzero(codes == KEPT_CODE):
            e.tokens_by_language[b["language"][k]] = e.tokens_by_language.get(b["language"][k], 0) + int(n_tokens[k])
        bad = np.flatnonzero(codes != KEPT_CODE)
        if len(bad):
            sinks.rejects.write(_reject_rows(b, bad, codes, rep[idx], keys, e, extras))
        if sinks.documents is not None:
            good = np.flatnonzero(codes == KEPT_CODE)
            rows = {c: b.take(c, good) for c in ["text", "source", "origin", "language", "language_score", *extras]}
            rows["split"] = ["validation" if v else "train" for v in val[idx[good]]]
            sinks.documents.write(rows)
        for split, mask in (("validation", val[idx]), ("train", first[idx])):
            if not mask.any():
                continue
            f, n = take_documents(flat, lengths, mask)
            sinks.pack(split, f, n, e)
            chars = int(keys.chars_out[i][idx[mask]].sum())
            if split == "train":
                drawn += (len(f), int(mask.sum()), chars)
            else:
                e.validation_characters += chars


class _LazyTexts(dict):
    """A batch whose text columns are read from the dataset only for the rows asked for (`take`)."""

    def __init__(self, batch: dict, ds, idx: np.ndarray, texts: list[str]):
        super().__init__(batch)
        self.ds, self.idx, self.texts = ds, idx, texts

    def take(self, column: str, rows: np.ndarray) -> list:
        if column not in self.texts:
            return [self[column][k] for k in rows]
        return self.ds.select(self.idx[rows]).select_columns([column])[:][column] if len(rows) else []


def _reject_rows(b: _LazyTexts, bad: np.ndarray, codes: np.ndarray, rep: np.ndarray, keys: Keys, e: Emitted,
                 extras: list[str]) -> dict[str, list]:
    reasons, details = [], []
    for k in bad:
        reason = keys.reasons[codes[k]]
        detail = b["detail"][k]
        if reason in ("exact_dup", "near_dup"):
            detail = f"duplicate of {e.representative_origins.get(int(rep[k]), '#' + str(int(rep[k])))}"
        elif reason == "decontaminated":
            name = b["contaminated_by"][k]
            detail = f"shares an n-gram with eval set {name}"
            examples = e.decontam_examples.setdefault(name, [])
            if len(examples) < DECONTAM_EXAMPLES:
                examples.append(b["origin"][k])
        reasons.append(reason)
        details.append(detail)
    rows = {"text": b.take("original_text", bad), "source": b.take("source", bad),
            "origin": b.take("origin", bad), "reason": reasons, "detail": details}
    for reason, origin, text in zip(reasons, rows["origin"], rows["text"]):
        examples = e.reject_examples.setdefault(reason, [])
        if len(examples) < REJECT_EXAMPLES:  # for the data card: what a filter cost, shown on real rows
            examples.append({"origin": origin, "text": " ".join(str(text or "").split())[:EXCERPT_CHARS]})
    rows.update({c: b.take(c, bad) for c in ["language", "language_score", *extras]})
    return rows


def union_features(specs: list, rejects: bool):
    """One schema for every source's rows: the base columns and each source's extras (strings where they disagree:
    `RowWriter` stores a non-string value as its JSON text)."""
    from datasets import Features, Value

    columns = {c: Value("string") for c in ("text", "source", "origin", "language")}
    columns["language_score"] = Value("float32")
    if rejects:
        columns.update(reason=Value("string"), detail=Value("string"))
    else:
        columns["split"] = Value("string")
    for spec in specs:
        for key, feature in spec.extras.items():
            name = spec.renamed.get(key, key)
            if name in columns and columns[name] != feature:
                columns[name] = Value("string")
            else:
                columns.setdefault(name, feature)
    return Features(columns)


class RowWriter:
    """Rows (dicts of lists, any subset of the columns) appended to an Arrow file with a fixed schema."""

    def __init__(self, path: Path, features):
        from datasets.arrow_writer import ArrowWriter

        self.path, self.features, self.rows = str(path), features, 0
        self.writer = ArrowWriter(features=features, path=self.path)

    def write(self, rows: dict[str, list]) -> None:
        n = len(next(iter(rows.values()))) if rows else 0
        if n == 0:
            return
        full = {c: rows.get(c, [None] * n) for c in self.features}
        for c, feature in self.features.items():
            if getattr(feature, "dtype", None) == "string":
                full[c] = [v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)
                           for v in full[c]]
        self.writer.write_batch(full)
        self.rows += n

    def close(self) -> None:
        self.writer.finalize()


def merge_emitted(parts: list[Emitted], n_sources: int) -> Emitted:
    """The tasks' `Emitted` as one: counts added, lengths joined, the first examples of each reason kept."""
    e = Emitted(parts[0].vocab)
    width = max(len(t) for p in parts for t in p.tokens_by_code)
    e.tokens_by_code = [sum(np.pad(p.tokens_by_code[i], (0, width - len(p.tokens_by_code[i]))) for p in parts)
                        for i in range(n_sources)]
    for name in ("drawn_tokens", "drawn_documents", "drawn_characters"):
        setattr(e, name, [int(sum(getattr(p, name)[i] for p in parts)) for i in range(n_sources)])
    e.validation_characters = sum(p.validation_characters for p in parts)
    for p in parts:
        for lang, n in p.tokens_by_language.items():
            e.tokens_by_language[lang] = e.tokens_by_language.get(lang, 0) + n
    e.kept_lengths = np.concatenate([p.kept_lengths for p in parts])
    e.train_unigram = sum(p.train_unigram for p in parts)
    e.validation_unigram = sum(p.validation_unigram for p in parts)
    e.rejects = sum(p.rejects for p in parts)
    e.documents_saved = sum(p.documents_saved for p in parts)
    for split in ("train_stats", "validation_stats"):
        merged: dict = {}
        for p in parts:
            for k, v in getattr(p, split).items():
                merged[k] = v if k == "seq_len" else merged.get(k, 0) + v
        setattr(e, split, merged)
    for p in parts:
        for reason, rows in p.reject_examples.items():
            have = e.reject_examples.setdefault(reason, [])
            have.extend(rows[: REJECT_EXAMPLES - len(have)])
        for name, rows in p.decontam_examples.items():
            have = e.decontam_examples.setdefault(name, [])
            have.extend(rows[: DECONTAM_EXAMPLES - len(have)])
    return e
