"""Push a folder to the Hugging Face Hub: `python scripts/push_to_hub.py PATH REPO_ID [--private] [--revision R]`.

PATH is an export (OUTPUT_DIR/model), an adapter folder, or a prepared data folder (train/ + validation/ +
data_card.json, pushed as a dataset repository with its data card as README). The token comes from HF_TOKEN or
`hf auth login`. This is also the command a training run prints when one of its pushes failed; `hf-llm push` is
the same.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("push", prog="scripts/push_to_hub.py"))
