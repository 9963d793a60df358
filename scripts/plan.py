"""Plan a run: `python scripts/plan.py model.preset=7b seq_len=4096 gpu=H100 gpus=16 nodes=2 hours=72`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from hf_llm.cli import run_cli  # noqa: E402
from hf_llm.plan import PlanConfig, run_plan  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(run_plan, None, schema=PlanConfig))
