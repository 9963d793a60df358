"""Fine-tune a causal LM (full, LoRA, QLoRA).

`accelerate launch scripts/finetune.py [RECIPE.yaml] [section.key=value ...]`
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_llm.cli import default_recipe, run_cli  # noqa: E402
from hf_llm.finetune import FinetuneRunConfig, run_finetuning  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(run_finetuning, default_recipe("finetune_lora_tiny.yaml"), schema=FinetuneRunConfig))
