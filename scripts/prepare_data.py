"""Prepare pretraining data: `python scripts/prepare_data.py [RECIPE.yaml] [section.key=value ...]`.

Reads the sources of a data recipe (default configs/data/sample.yaml), cleans, deduplicates, decontaminates,
trains or loads a tokenizer, packs, and writes OUTPUT_DIR with train/ validation/ rejects/ tokenizer/ and the
data card. Pretrain on it with `scripts/pretrain.py data.prepared=OUTPUT_DIR`.
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_llm.cli import REPO_ROOT, run_cli  # noqa: E402
from hf_llm.config import PrepareDataConfig  # noqa: E402
from hf_llm.data.pipeline import run_prepare_data  # noqa: E402

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.exit(run_cli(run_prepare_data, str(REPO_ROOT / "configs" / "data" / "sample.yaml"), schema=PrepareDataConfig))
