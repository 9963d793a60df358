"""Fine-tune a causal LM (full, LoRA, QLoRA): `accelerate launch scripts/finetune.py [RECIPE.yaml] [section.key=value ...]`.

The same job as `hf-llm finetune`; a script because `accelerate launch` starts one per process. `--help` lists every key.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("finetune", prog="scripts/finetune.py"))
