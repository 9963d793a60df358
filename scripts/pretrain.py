"""Pretrain a causal LM: `accelerate launch scripts/pretrain.py [RECIPE.yaml] [section.key=value ...]`.

The same job as `hf-llm pretrain`; a script because `accelerate launch` starts one per process. `--help` lists every key.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("pretrain", prog="scripts/pretrain.py"))
