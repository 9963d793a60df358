"""Plan a run: `python scripts/plan.py model.preset=7b seq_len=4096 gpu=H100 gpus=16 nodes=2 hours=72`.

The same as `hf-llm plan`. `--help` lists every key.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("plan", prog="scripts/plan.py"))
