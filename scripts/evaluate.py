"""Evaluate a causal LM: `python scripts/evaluate.py [RECIPE.yaml] model=PATH data='[{path: FILE}]' [key=value ...]`.

Perplexity and bits per byte on held-out text (sliding windows), greedy and sampled continuations of prompts;
results go to a JSON file and, with update_model_card=true, into the model card. The same as `hf-llm evaluate`.
`--help` lists every key.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("evaluate", prog="scripts/evaluate.py"))
