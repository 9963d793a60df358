"""The pipeline's last pass: rejects/ (and documents/) written, training and validation documents packed."""

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
from ..errors import DataError


REJECT_EXAMPLES = 3  # rejected rows per reason shown in the data card
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


def emit(tokenized: list, specs: list, selection, passes: list, keys: Keys, tokenizer, data: DataConfig, out: Path,
         work: Path) -> Emitted:
    """The last pass: rejects/ (and documents/) written, training and validation documents packed into blocks.

    Each source is read once (every row: rejects, statistics, validation, first training pass), then once more per
    extra pass its mixture weight asks for; documents reach the packers in the same order in both modes.
    """
    vocab = len(tokenizer)
    packers = {s: make_packer(data.packing, data.seq_len, vocab, tokenizer.pad_token_id, data.best_fit_window)
               for s in ("train", "validation")}
    sinks = Sinks(
        packers=packers,
        blocks={s: BlockWriter(work / f"{s}.arrow", data.seq_len, packer_dtypes(p)) for s, p in packers.items()},
        rejects=RowWriter(work / "rejects.arrow", _union_features(specs, rejects=True)),
        documents=RowWriter(work / "documents.arrow", _union_features(specs, rejects=False))
        if data.save_documents else None,
    )
    e = Emitted(vocab)
    is_rep = np.zeros(int(selection.offsets[-1]), dtype=bool)  # kept copies whose origin a duplicate's detail names
    for r in selection.representative:
        is_rep[r[r >= 0]] = True
    for i, ds in enumerate(tokenized):
        drawn = np.zeros(3, dtype=np.int64)  # tokens, documents, characters sent to training
        e.tokens_by_code.append(np.zeros(len(keys.reasons), dtype=np.int64))
        _first_pass(i, ds, specs[i], selection, passes[i], keys, is_rep, sinks, e, drawn)
        for p, rows in enumerate(passes[i][1:], start=2):  # repeated (upsampled) passes over this source
            for idx, b in iter_batches(ds, ["input_ids"], rows, desc=f"pack {specs[i].label} pass {p}"):
                flat, lengths = token_ids(b["input_ids"], vocab)
                sinks.pack("train", flat, lengths, e)
                drawn += (len(flat), len(idx), int(keys.chars_out[i][idx].sum()))
        e.drawn_tokens.append(int(drawn[0]))
        e.drawn_documents.append(int(drawn[1]))
        e.drawn_characters.append(int(drawn[2]))
    _finish(sinks, e, data, out)
    return e


def _first_pass(i: int, ds, spec, selection, chosen: list, keys: Keys, is_rep: np.ndarray, sinks: Sinks, e: Emitted,
                drawn: np.ndarray) -> None:
    offset = int(selection.offsets[i])
    status, val, rep = selection.status[i], selection.validation[i], selection.representative[i]
    first = np.zeros(len(status), dtype=bool)
    if chosen and len(chosen[0]):
        first[chosen[0]] = True
    from datasets import IterableDataset

    extras = [spec.renamed.get(k, k) for k in spec.extras]
    columns = ["source", "origin", "reason", "detail", "contaminated_by", "n_tokens", "input_ids", "language",
               "language_score", *extras]
    texts = ["original_text"] + (["text"] if sinks.documents is not None else [])
    streaming = isinstance(ds, IterableDataset)
    if streaming:  # a stream has no random access: the texts come with every batch
        columns += texts
    for idx, b in iter_batches(ds, columns, desc=f"pack {spec.label}", total=len(status)):
        if not streaming:  # in memory, only the rows written out are read: the other pages stay on disk
            b = _LazyTexts(b, ds, idx, texts)
        flat, lengths = token_ids(b["input_ids"], e.vocab)
        codes = status[idx]
        n_tokens = np.asarray(b["n_tokens"], dtype=np.int64)
        np.add.at(e.tokens_by_code[i], codes, n_tokens)
        e.kept_lengths.append(n_tokens[codes == KEPT_CODE])
        for k in np.flatnonzero(codes == KEPT_CODE):
            e.tokens_by_language[b["language"][k]] = e.tokens_by_language.get(b["language"][k], 0) + int(n_tokens[k])
        for k in np.flatnonzero(is_rep[offset + idx]):  # before the rejects: a copy may follow in this batch
            e.representative_origins[offset + int(idx[k])] = b["origin"][k]
        bad = np.flatnonzero(codes != KEPT_CODE)
        if len(bad):
            sinks.rejects.write(_reject_rows(b, bad, codes, rep[idx], keys, e, extras))
        if sinks.documents is not None:
            good = np.flatnonzero(codes == KEPT_CODE)
            rows = {c: _take(b, c, good) for c in ["text", "source", "origin", "language", "language_score", *extras]}
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


def _finish(sinks: Sinks, e: Emitted, data: DataConfig, out: Path) -> None:
    datasets = {}
    for split, packer in sinks.packers.items():
        sinks.blocks[split].write(packer.finish())
        datasets[split] = sinks.blocks[split].finish()
    e.train_stats, e.validation_stats = dict(sinks.packers["train"].stats), dict(sinks.packers["validation"].stats)
    e.kept_lengths = np.concatenate(e.kept_lengths) if e.kept_lengths else np.zeros(0, np.int64)
    if len(datasets["train"]) == 0 or len(datasets["validation"]) == 0:
        raise DataError(
            f"too little text for data.seq_len={data.seq_len}: {len(datasets['train'])} training and "
            f"{len(datasets['validation'])} validation blocks; add documents or lower data.seq_len"
        )
    for split, ds in datasets.items():
        save_dataset(ds, out / split)
    e.rejects = sinks.rejects.rows
    save_dataset(sinks.rejects.finish(), out / "rejects")
    if sinks.documents is not None:
        e.documents_saved = sinks.documents.rows
        save_dataset(sinks.documents.finish(), out / "documents")


def save_dataset(ds, path: Path) -> None:
    """`ds.save_to_disk(path)`, which `load_from_disk` opens also when `ds` has no rows (no rejects, say)."""
    # datasets sizes the shards as min(rows, ...): 0 for no rows, so it writes no data file and load_from_disk fails
    # with an IndexError (huggingface/datasets#8385); one shard holds the schema of an empty folder
    ds.save_to_disk(str(path), num_shards=None if len(ds) else 1)


class _LazyTexts(dict):
    """A batch whose text columns are read from the dataset only for the rows asked for (`take`)."""

    def __init__(self, batch: dict, ds, idx: np.ndarray, texts: list[str]):
        super().__init__(batch)
        self.ds, self.idx, self.texts = ds, idx, texts

    def take(self, column: str, rows: np.ndarray) -> list:
        if column not in self.texts:
            return [self[column][k] for k in rows]
        return self.ds.select(self.idx[rows]).select_columns([column])[:][column] if len(rows) else []


def _take(b: dict, column: str, rows: np.ndarray) -> list:
    return b.take(column, rows) if isinstance(b, _LazyTexts) else [b[column][k] for k in rows]


def _reject_rows(b: dict, bad: np.ndarray, codes: np.ndarray, rep: np.ndarray, keys: Keys, e: Emitted,
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
            if len(examples) < 5:
                examples.append(b["origin"][k])
        reasons.append(reason)
        details.append(detail)
    rows = {"text": _take(b, "original_text", bad), "source": _take(b, "source", bad),
            "origin": _take(b, "origin", bad), "reason": reasons, "detail": details}
    for reason, origin, text in zip(reasons, rows["origin"], rows["text"]):
        examples = e.reject_examples.setdefault(reason, [])
        if len(examples) < REJECT_EXAMPLES:  # for the data card: what a filter cost, shown on real rows
            examples.append({"origin": origin, "text": " ".join(str(text or "").split())[:EXCERPT_CHARS]})
    rows.update({c: _take(b, c, bad) for c in ["language", "language_score", *extras]})
    return rows


def _union_features(specs: list, rejects: bool):
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

    def finish(self):
        from datasets import Dataset

        self.writer.finalize()
        return Dataset.from_file(self.path)
