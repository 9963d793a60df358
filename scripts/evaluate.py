"""Evaluate a causal LM: `python scripts/evaluate.py [RECIPE.yaml] model=PATH data='[{path: FILE}]' [key=value ...]`.

Perplexity and bits per byte on held-out text (sliding windows), greedy and sampled continuations of prompts;
results go to a JSON file and, with update_model_card=true, into the model card. `--help` lists every key.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_llm.cli import run_cli  # noqa: E402
from hf_llm.config import EvaluateConfig  # noqa: E402
from hf_llm.evaluation import run_evaluation  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(run_evaluation, None, schema=EvaluateConfig))
