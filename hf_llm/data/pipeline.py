"""From configured sources to a prepared folder: train/ and validation/ packed blocks, tokenizer/, data_card.json.

`scripts/pretrain.py` builds this on the fly (into OUTPUT_DIR/data) or reads one written by
`scripts/prepare_data.py` (`data.prepared=PATH`); both have the same layout.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import DataConfig, TokenizerConfig
from .pack import tokenize_and_pack, unigram_cross_entropy
from .sources import DataError, load_sources
from .tokenizer import adds_bos, load_tokenizer, train_bpe_tokenizer


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset of packed blocks (input_ids)
    validation: Any
    tokenizer: Any
    card: dict[str, Any]
    path: Path


def data_fingerprint(data: DataConfig, tok: TokenizerConfig) -> str:
    """Identifies what a prepared folder was built from, so a rerun or resume can reuse it."""
    blob = json.dumps({"data": asdict(data), "tokenizer": asdict(tok), "version": 1}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def split_documents(docs, fraction: float, max_docs: int, seed: int):
    """Hold out whole documents for validation, so no document is in both splits."""
    n = len(docs)
    if n < 2:
        raise DataError(f"the corpus has {n} usable document(s); at least 2 are needed to hold out validation")
    n_val = min(max(1, round(fraction * n)), max_docs, n - 1)
    split = docs.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return split["train"], split["test"]


def build_prepared_data(data: DataConfig, tok_cfg: TokenizerConfig, out_dir: str | Path) -> PreparedData:
    """Load, split, (train the tokenizer,) tokenise and pack; save everything under `out_dir`."""
    out = Path(out_dir)
    docs, source_stats = load_sources(data)
    train_docs, val_docs = split_documents(docs, data.validation_fraction, data.max_validation_documents, data.seed)
    if tok_cfg.name_or_path:
        tokenizer = load_tokenizer(tok_cfg.name_or_path)
    else:
        tokenizer = train_bpe_tokenizer(iter(train_docs["text"]), tok_cfg)
    bos = adds_bos(tokenizer)
    num_proc = data.num_proc if data.num_proc > 1 else None
    train, train_stats, train_flat = tokenize_and_pack(train_docs, tokenizer, data.seq_len, bos, num_proc)
    val, val_stats, val_flat = tokenize_and_pack(val_docs, tokenizer, data.seq_len, bos, num_proc)
    if len(train) == 0 or len(val) == 0:
        raise DataError(
            f"too little text for data.seq_len={data.seq_len}: {len(train)} training and {len(val)} validation "
            f"blocks; add documents or lower data.seq_len"
        )
    card = {
        "fingerprint": data_fingerprint(data, tok_cfg),
        "sources": source_stats,
        "train": train_stats,
        "validation": val_stats,
        "vocab_size": len(tokenizer),
        "adds_bos": bos,
        "unigram_validation_loss": unigram_cross_entropy(train_flat, val_flat, len(tokenizer)),
        "characters": {"train": sum(len(t) for t in train_docs["text"]), "validation": sum(len(t) for t in val_docs["text"])},
    }
    save_prepared(PreparedData(train, val, tokenizer, card, out))
    return load_prepared(out)


def save_prepared(prep: PreparedData) -> None:
    """Write to a temporary sibling and swap it in, so a crash never leaves a half-written data folder."""
    tmp = prep.path.with_name(prep.path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    prep.train.save_to_disk(str(tmp / "train"))
    prep.validation.save_to_disk(str(tmp / "validation"))
    prep.tokenizer.save_pretrained(str(tmp / "tokenizer"))
    (tmp / "data_card.json").write_text(json.dumps(prep.card, indent=2))
    shutil.rmtree(prep.path, ignore_errors=True)
    tmp.rename(prep.path)


def load_prepared(path: str | Path, tokenizer_path: Optional[str] = None) -> PreparedData:
    from datasets import load_from_disk

    path = Path(path)
    missing = [p for p in ("train", "validation", "data_card.json") if not (path / p).exists()]
    if missing:
        raise DataError(f"{path} is not a prepared data folder (missing {missing}); run scripts/prepare_data.py")
    tokenizer = load_tokenizer(tokenizer_path or str(path / "tokenizer"))
    card = json.loads((path / "data_card.json").read_text())
    return PreparedData(load_from_disk(str(path / "train")), load_from_disk(str(path / "validation")), tokenizer, card, path)


def reusable(path: str | Path, data: DataConfig, tok: TokenizerConfig) -> bool:
    card = Path(path) / "data_card.json"
    try:
        return json.loads(card.read_text()).get("fingerprint") == data_fingerprint(data, tok)
    except (OSError, ValueError):
        return False
