#!/usr/bin/env bash
# Create .venv with torch pinned first (a CPU build here; bring your own CUDA build on a GPU machine),
# then hf_llm and its dependencies. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if ! python -c "import torch" 2>/dev/null; then
  # Pinned so pip never resolves a multi-GB CUDA build on a CPU machine.
  python -m pip install -q "${HF_LLM_TORCH:-torch==2.13.0}"
fi
python -m pip install -q -r requirements.txt -e ".[test]"
