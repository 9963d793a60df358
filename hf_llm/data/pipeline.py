"""From configured sources to a prepared folder: one `datasets` pipeline for prepare_data and pretraining.

    read ─▶ clean (normalise, PII, filters) + keys ─▶ exact/near dedup + decontamination (global, on keys)
         ─▶ validation hold-out (by document) ─▶ tokenizer ─▶ tokenise ─▶ mix ─▶ pack

Per-document work is `datasets.map(batched=True)` over a `Dataset` (in memory, `num_proc` workers) or an
`IterableDataset` (`data.lazy_read`): the same functions over the same rows. Global decisions are made on small
per-document keys (see selection.py), so a streamed source is read again, pass by pass, and filtered by index;
documents flow to the packers in the same order either way, hence the same blocks.

The folder (`build_prepared_data`; `scripts/pretrain.py` builds one on the fly or reads `data.prepared=PATH`):
    train/ validation/   packed blocks (save_to_disk): input_ids (+ position_ids, labels with best_fit)
    rejects/             every dropped row with its original columns, `reason`, `detail`, `language` and
                         `language_score` (none: 0 rows)
    documents/           (data.save_documents) the kept, cleaned documents with their extra columns
    tokenizer/           a transformers fast tokenizer
    data_card.json, DATA_CARD.md, token_lengths.png, rejections.png (when any), data_config.yaml
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from ..config import DataConfig, PrepareDataConfig, TokenizerConfig, config_to_yaml
from ..io import publishing
from .batches import BATCH, iter_batches
from .card import CardInputs, build_card, write_card_pages
from .decontam import build_index_from_config
from .emit import emit
from .mixture import validation_size
from .selection import Keys, SignatureFile, select_documents, select_mixture
from .sources import document_dataset, no_records_error, open_source, unwrap_generation_errors
from ..errors import DataError
from .steps import READ_REASONS, clean_keys_batch, step_features, tokenize_batch, tokenize_features
from .tokenizer import BatchEncoder, adds_bos, load_tokenizer, train_bpe_tokenizer

logger = logging.getLogger(__name__)
KEY_COLUMNS = ["reason", "detail", "chars_in", "chars_out", "hash_hi", "hash_lo", "contaminated_by",
               "pii_email", "pii_ip", "pii_phone", "language", "words_out"]


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset of packed blocks (input_ids; + position_ids, labels with best_fit packing)
    validation: Any
    tokenizer: Any
    card: dict[str, Any]
    path: Path


def data_fingerprint(data: DataConfig, tok: TokenizerConfig) -> str:
    """Identifies what a prepared folder was built from, so a rerun or resume can reuse it."""
    blob = json.dumps({"data": asdict(data), "tokenizer": asdict(tok), "version": 2}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_documents(docs, fraction: float, max_docs: int, seed: int):
    """Hold out whole documents (or SFT examples) of an in-memory dataset, so none is in both splits."""
    n = len(docs)
    if n < 2:
        raise DataError(f"the data has {n} usable document(s)/example(s); at least 2 are needed to hold out validation")
    n_val = validation_size(n, fraction, max_docs)
    split = docs.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return split["train"], split["test"]


# ------------------------------------------------------------------------------------------------ entry points


def run_prepare_data(cfg: PrepareDataConfig) -> dict[str, Any]:
    """`scripts/prepare_data.py`: build the folder, print where it is and what it holds; returns the data card."""
    prep = build_prepared_data(cfg.data, cfg.tokenizer, cfg.output_dir)
    (prep.path / "data_config.yaml").write_text(config_to_yaml(cfg))
    print(summary_line(prep.card, prep.path))
    return prep.card


def summary_line(card: dict, path: Path) -> str:
    read = card["steps"][0]["documents_in"]
    kept = card["split"]["train_documents"] + card["split"]["validation_documents"]
    t, v = card["train"], card["validation"]
    return (f"prepared {path}: {read:,} documents read, {kept:,} kept ({read - kept:,} in rejects/); "
            f"train {t['blocks']:,} blocks / {t['tokens']:,} tokens, validation {v['blocks']:,} blocks / "
            f"{v['tokens']:,} tokens; see {path / 'DATA_CARD.md'}")


def build_prepared_data(data: DataConfig, tok_cfg: TokenizerConfig, out_dir: str | Path) -> PreparedData:
    """Run the whole pipeline into `out_dir`: built in a hidden sibling, then swapped in whole (`hf_llm.io`), so a
    crash or an error leaves the previous folder as it was."""
    out = Path(out_dir)
    with publishing(out) as tmp:
        work = tmp / ".work"  # caches and scratch files, removed before the folder is published
        work.mkdir()
        with unwrap_generation_errors():
            _run(data, tok_cfg, tmp, work)
        shutil.rmtree(work, ignore_errors=True)
    return load_prepared(out)


def load_prepared(path: str | Path, tokenizer_path: Optional[str] = None) -> PreparedData:
    from datasets import load_from_disk

    path = Path(path)
    missing = [p for p in ("train", "validation", "data_card.json") if not (path / p).exists()]
    if missing:
        raise DataError(f"{path} is not a prepared data folder (missing {missing}); run scripts/prepare_data.py")
    tokenizer = load_tokenizer(tokenizer_path or str(path / "tokenizer"))
    card = json.loads((path / "data_card.json").read_text())
    train, validation = load_from_disk(str(path / "train")), load_from_disk(str(path / "validation"))
    return PreparedData(train, validation, tokenizer, card, path)


def reusable(path: str | Path, data: DataConfig, tok: TokenizerConfig) -> bool:
    card = Path(path) / "data_card.json"
    try:
        return json.loads(card.read_text()).get("fingerprint") == data_fingerprint(data, tok)
    except (OSError, ValueError):
        return False


# ------------------------------------------------------------------------------------------------- the run


def _run(data: DataConfig, tok_cfg: TokenizerConfig, out: Path, work: Path) -> None:
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    specs, index, cleaned, keys = clean_sources(data, work)
    lap("read_clean_keys")

    logger.info("step 2/6 exact + near dedup, decontamination, validation hold-out")
    selection = select_documents(keys, data.dedup, data.validation_fraction, data.max_validation_documents, data.seed)
    lap("dedup_decontam_split")

    logger.info("step 3/6 tokenizer")
    tokenizer = _tokenizer(tok_cfg, cleaned, selection)
    if data.packing == "best_fit" and tokenizer.pad_token_id is None:
        raise DataError("data.packing=best_fit needs a tokenizer with a pad token; set one or use packing=concat")
    lap("tokenizer")

    logger.info("step 4/6 tokenise")
    bos = tokenizer.bos_token_id if adds_bos(tokenizer) else None
    encoder = BatchEncoder(tokenizer)
    tokenized = [tokenize_documents(c, encoder, selection.kept(i), tokenizer, bos, data, spec.label)
                 for i, (spec, c) in enumerate(zip(specs, cleaned))]
    mean_tokens = None
    if data.mix_by == "tokens" and len(specs) > 1:
        mean_tokens = [_mean_tokens(t, selection.train(i)) for i, t in enumerate(tokenized)]
    passes = select_mixture(selection, [s.weight for s in data.sources], data.mix_by, mean_tokens, data.seed,
                          [s.label for s in specs])
    lap("tokenize")

    logger.info("step 5/6 pack (%s, seq_len=%d)", data.packing, data.seq_len)
    emitted = emit(tokenized, specs, selection, passes, keys, tokenizer, data, out, work)
    lap("pack")

    logger.info("step 6/6 data card")
    inputs = CardInputs(data=data, tok_cfg=tok_cfg, specs=specs, keys=keys, selection=selection, passes=passes,
                        tokenizer=tokenizer, adds_bos=bos is not None, emitted=emitted, timings=timings,
                        eval_names=index.names if index else [], fingerprint=data_fingerprint(data, tok_cfg))
    card = build_card(inputs)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    (out / "data_card.json").write_text(json.dumps(card, indent=2))
    write_card_pages(card, out)


def clean_sources(data: DataConfig, work: Path) -> tuple[list, Any, list, Keys]:
    """Step 1: read every source, clean each document and compute its keys (`clean_keys_batch`), then collect the
    keys (pass one). Returns (source specs, eval n-gram index or None, cleaned datasets, keys); `select_documents`
    makes the global decisions from the keys."""
    specs = [open_source(src) for src in data.sources]  # path, format and text column errors come first
    index = build_index_from_config(data.decontam) if data.decontam.enabled else None
    logger.info("step 1/6 read + clean + keys: %d source(s)%s", len(specs), " (lazy read)" if data.lazy_read else "")
    cleaned = [_map(document_dataset(spec, data.strict, data.lazy_read, str(work / "cache"), data.num_proc),
                    clean_keys_batch, data, desc=f"clean {spec.label}",
                    features=step_features(spec.features(), data.dedup),
                    fn_kwargs={"clean": data.clean, "dedup": data.dedup, "index": index, "decontam": data.decontam,
                               "languages": data.languages, "language_min_score": data.language_min_score})
               for spec in specs]
    keys = collect_keys(cleaned, data, work, index.names if index else [])
    for spec, status in zip(specs, keys.status):
        if not len(status):  # streamed (in memory, document_dataset says so already)
            raise no_records_error(spec)
        usable = [c for c, r in enumerate(keys.reasons) if r not in (*READ_REASONS, "empty")]
        if not np.isin(status, usable).any():
            raise DataError(f"source {spec.path!r} has no non-empty text in column {spec.text_field!r} "
                            f"({len(status)} rows read; see rejects/ of a non-strict run for each row's reason)")
    return specs, index, cleaned, keys


def _map(ds, fn, data: DataConfig, desc: str, **kwargs):
    """`ds.map(fn, batched=True)` for a Dataset (cached on disk, `num_proc` workers) or an IterableDataset (lazy)."""
    from datasets import IterableDataset

    if isinstance(ds, IterableDataset):
        return ds.map(fn, batched=True, batch_size=BATCH, **kwargs)
    procs = data.num_proc if data.num_proc > 1 and len(ds) >= 10_000 else None  # forking costs more below that
    return ds.map(fn, batched=True, batch_size=BATCH, num_proc=procs, desc=desc, **kwargs)


def tokenize_documents(cleaned, encoder, keep: np.ndarray, tokenizer, bos: Optional[int], data: DataConfig,
                       label: str):
    """`cleaned` plus `input_ids` (kept documents) and `n_tokens` (every document); keys no longer needed go.

    In memory only the two new columns are written and joined to the cleaned table side by side (no copy of the
    text); streamed, the columns simply travel along.
    """
    from datasets import Features, IterableDataset, concatenate_datasets

    drop = [k for k in ("minhash", "hash_hi", "hash_lo") if k in cleaned.features]
    kwargs = {"encoder": encoder, "keep": keep, "eos": tokenizer.eos_token_id, "bos": bos, "vocab_size": len(tokenizer)}
    new = tokenize_features(Features(), len(tokenizer))
    common = {"with_indices": True, "input_columns": ["text", "reason"], "fn_kwargs": kwargs}
    if isinstance(cleaned, IterableDataset):
        return _map(cleaned, tokenize_batch, data, desc="", remove_columns=drop,
                    features=Features({**_features(cleaned, drop=tuple(drop)), **new}), **common)
    ids = _map(cleaned, tokenize_batch, data, desc=f"tokenize {label}", remove_columns=cleaned.column_names,
               features=new, **common)
    return concatenate_datasets([cleaned.remove_columns(drop), ids], axis=1)


def _features(ds, drop: tuple[str, ...] = ()):
    from datasets import Features

    return Features({k: v for k, v in ds.features.items() if k not in drop})


# ------------------------------------------------------------------------------------------------- pass one


def collect_keys(cleaned: list, data: DataConfig, work: Path, eval_names: list[str]) -> Keys:
    """Read every cleaned source once and keep only its keys (pass one)."""
    keys = Keys()
    near = data.dedup.near
    sigs = SignatureFile(work / "minhash.u32", near.num_perm) if near.enabled else None
    columns = KEY_COLUMNS + (["minhash"] if near.enabled else [])
    for ds in cleaned:
        status, chars_in, chars_out, hashes, contaminated, language, words = [], [], [], [], [], [], []
        pii = {"email": 0, "ip": 0, "phone": 0}
        for _, b in iter_batches(ds, columns, desc="clean + keys"):
            status.append(np.array([keys.code(r) for r in b["reason"]], dtype=np.int16))
            for reason, detail in zip(b["reason"], b["detail"]):
                if reason in READ_REASONS:
                    keys.read_problem_count += 1
                    if len(keys.read_problems) < 100:
                        keys.read_problems.append(detail)
            chars_in.append(np.asarray(b["chars_in"], dtype=np.int64))
            chars_out.append(np.asarray(b["chars_out"], dtype=np.int64))
            language.append(np.array([keys.language_code(x) for x in b["language"]], dtype=np.int16))
            words.append(np.asarray(b["words_out"], dtype=np.int64))
            hashes.append(np.stack([np.asarray(b["hash_hi"], dtype=np.int64),
                                    np.asarray(b["hash_lo"], dtype=np.int64)], axis=1))
            contaminated.append(np.array([0 if n is None else eval_names.index(n) + 1 for n in b["contaminated_by"]],
                                         dtype=np.int16))
            for kind in pii:
                pii[kind] += int(np.asarray(b[f"pii_{kind}"]).sum())
            if sigs is not None:
                sigs.append(np.asarray(b["minhash"], dtype=np.uint32).reshape(-1, near.num_perm))
        cat = lambda parts, dtype, shape=(0,): np.concatenate(parts) if parts else np.zeros(shape, dtype)  # noqa: E731
        keys.status.append(cat(status, np.int16))
        keys.chars_in.append(cat(chars_in, np.int64))
        keys.chars_out.append(cat(chars_out, np.int64))
        keys.hashes.append(cat(hashes, np.int64, (0, 2)))
        keys.contaminated.append(cat(contaminated, np.int16))
        keys.language.append(cat(language, np.int16))
        keys.words_out.append(cat(words, np.int64))
        keys.pii.append(pii)
    if sigs is not None:
        keys.signatures = sigs.close()
    return keys


# ------------------------------------------------------------------------------------------ tokenizer, mixing


def _tokenizer(tok_cfg: TokenizerConfig, cleaned: list, selection):
    """The configured tokenizer, or a byte-level BPE trained on the training documents (not validation)."""
    if tok_cfg.name_or_path:
        return load_tokenizer(tok_cfg.name_or_path)

    def texts() -> Iterator[str]:
        left = tok_cfg.max_train_documents
        for i, ds in enumerate(cleaned):
            rows = np.flatnonzero(selection.train(i))
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            if len(rows):
                for _, b in iter_batches(ds, ["text"], rows, desc="tokenizer"):
                    yield from b["text"]

    return train_bpe_tokenizer(texts(), tok_cfg)


def _mean_tokens(tokenized, train: np.ndarray) -> float:
    rows = np.flatnonzero(train)
    if not len(rows):
        return 0.0
    total = sum(int(np.asarray(b["n_tokens"]).sum()) for _, b in iter_batches(tokenized, ["n_tokens"], rows, "count"))
    return total / len(rows)


__all__ = ["PreparedData", "build_prepared_data", "data_fingerprint", "load_prepared", "reusable",
           "run_prepare_data", "split_documents"]
