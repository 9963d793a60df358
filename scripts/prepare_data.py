"""Prepare pretraining data: `python scripts/prepare_data.py [RECIPE.yaml] [section.key=value ...]`.

Reads the sources of a data recipe (default configs/data/sample.yaml), cleans, deduplicates, decontaminates,
trains or loads a tokenizer, packs, and writes OUTPUT_DIR with train/ validation/ rejects/ tokenizer/ and the
data card. Pretrain on it with `scripts/pretrain.py data.prepared=OUTPUT_DIR`. The same as `hf-llm prepare-data`.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("prepare-data", prog="scripts/prepare_data.py"))
