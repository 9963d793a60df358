"""The files the toolkit ships beside its code: recipes, model presets, accelerate/DeepSpeed configs, scripts and the
bundled sample corpus.

In a checkout they are the repository's own `configs/`, `scripts/`, `data/sample/` (and the chat sample in
`tests/data/`); a wheel carries copies of the same trees under `hf_llm/_shipped/` (setup.py's build step), laid
out the same way. `shipped_root()` is whichever of the two this `hf_llm` came with, so a checkout and an install
resolve the same relative names to the same files.

A relative path a user gives resolves from their working directory first: `shipped_path` falls back to the shipped
copy only when nothing exists there under that name. That is what lets `hf-llm pretrain` run from any folder: the
default recipe names `data/sample/corpus.jsonl.gz` relative to the checkout.
"""

from __future__ import annotations

import glob
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
# Top-level names a wheel carries (keep in step with SHIPPED in setup.py).
SHIPPED_NAMES = ("configs", "scripts", "data/sample", "tests/data/chat_sample.jsonl",
                 "tests/data/preference_sample.jsonl")


def shipped_root() -> Path:
    """The folder holding `configs/`, `scripts/` and `data/sample/`: the checkout, or the wheel's `_shipped/`."""
    installed = PACKAGE_DIR / "_shipped"
    if (installed / "configs").is_dir():
        return installed
    return PACKAGE_DIR.parent  # a checkout (also an editable install, which runs the checkout's code)


def shipped_file(relative: str | os.PathLike) -> Path:
    """A shipped file or folder by its name relative to the checkout, e.g. `configs/accelerate/zero3.yaml`."""
    return shipped_root() / relative


def shipped_path(path: str | os.PathLike) -> str:
    """`path` as given when it names something from the working directory (a file, folder or glob match) or is
    absolute; else the shipped file of that relative name if there is one; else `path` unchanged (the caller's
    own error then names what the user gave)."""
    text = os.fspath(path)
    if os.path.isabs(text) or os.path.exists(text) or (glob.has_magic(text) and glob.glob(text, recursive=True)):
        return text
    candidate = shipped_root() / text
    if glob.has_magic(text):
        return str(candidate) if glob.glob(str(candidate), recursive=True) else text
    return str(candidate) if candidate.exists() else text
