"""Pretrain a causal LM: `accelerate launch scripts/pretrain.py [RECIPE.yaml] [section.key=value ...]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_llm.cli import default_recipe, run_cli  # noqa: E402
from hf_llm.pretrain import run_pretraining  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(run_pretraining, default_recipe("pretrain_tiny.yaml")))
