"""The prepared folder: building one (`build_prepared_data`, through the passes), reading one, and its identity.

prepare_data is six passes (hf_llm/data/executor.py): read + clean + keys ─▶ exact dedup ─▶ near dedup ─▶ select
(decontamination, validation hold-out by document, tokenizer, mixture) ─▶ tokenise + pack ─▶ merge. This module is
what the jobs see of it.

The folder (`build_prepared_data`; `scripts/pretrain.py` builds one on the fly or reads `data.prepared=PATH`):
    train/ validation/   packed blocks: input_ids (+ position_ids, labels with best_fit)
    rejects/             every dropped row with its original columns, `reason` and `detail` (none: 0 rows)
    documents/           (data.save_documents) the kept, cleaned documents with their extra columns
    tokenizer/           a transformers fast tokenizer
    data_card.json, DATA_CARD.md, token_lengths.png, rejections.png (when any), data_config.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import DataConfig, PrepareDataConfig, TokenizerConfig
from ..errors import DataError
from .card import data_fingerprint
from .mixture import validation_size
from .tokenizer import load_tokenizer


@dataclass
class PreparedData:
    train: Any  # datasets.Dataset of packed blocks (input_ids; + position_ids, labels with best_fit packing)
    validation: Any
    tokenizer: Any
    card: dict[str, Any]
    path: Path


def split_documents(docs, fraction: float, max_docs: int, seed: int):
    """Hold out whole documents (or SFT examples) of an in-memory dataset, so none is in both splits."""
    n = len(docs)
    if n < 2:
        raise DataError(f"the data has {n} usable document(s)/example(s); at least 2 are needed to hold out validation")
    n_val = validation_size(n, fraction, max_docs)
    split = docs.train_test_split(test_size=n_val, seed=seed, shuffle=True)
    return split["train"], split["test"]


def build_prepared_data(data: DataConfig, tok_cfg: TokenizerConfig, out_dir: str | Path) -> PreparedData:
    """Run the passes in this process into `out_dir`, published whole (`hf_llm.io`), so a crash or an error leaves
    the previous folder as it was."""
    from .executor import prepare_here  # the passes need datatrove: imported when a folder is built

    prepare_here(PrepareDataConfig(output_dir=str(out_dir), data=data, tokenizer=tok_cfg))
    return load_prepared(out_dir)


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


__all__ = ["PreparedData", "build_prepared_data", "data_fingerprint", "load_prepared", "reusable",
           "split_documents"]
