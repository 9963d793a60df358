"""Shared entry-point plumbing for the thin scripts: parse, run, map user errors to exit status 2."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable, Optional

from .config import HfLlmError, RunConfig, parse_cli

REPO_ROOT = Path(__file__).resolve().parents[1]


def default_recipe(name: str) -> str:
    return str(REPO_ROOT / "configs" / "recipes" / name)


def run_cli(job: Callable, recipe: Optional[str], argv: Optional[list[str]] = None, schema: type = RunConfig) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked datasets workers and tokenizers threads clash
    try:
        cfg = parse_cli(sys.argv[1:] if argv is None else argv, recipe, schema)
        job(cfg)
    except HfLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
