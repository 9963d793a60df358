#!/usr/bin/env bash
# A non-editable install runs from any folder (issue 21): build the wheel, install it into a fresh venv and, in an
# empty folder, train the default recipe for two steps and plan a 7B run. Run from the checkout's venv (it has
# setuptools for the build). Cheap on purpose: pip's cache (~/.cache/pip) serves every dependency the suite's venv
# already downloaded or built (deepspeed's wheel included), torch comes from the local wheel, no build isolation.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
python -m pip wheel -q --no-deps --no-build-isolation "$ROOT" -w "$WORK/dist"
python -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "${HF_LLM_TORCH:-torch==2.13.0}"
"$WORK/venv/bin/python" -m pip install -q "$WORK"/dist/hf_llm-*.whl
mkdir "$WORK/empty" && cd "$WORK/empty"
"$WORK/venv/bin/python" -c "import hf_llm, sys; sys.exit(not hf_llm.__file__.startswith('$WORK/venv/'))"
"$WORK/venv/bin/hf-llm" pretrain train.max_steps=2
"$WORK/venv/bin/hf-llm" plan model.preset=7b
test -f runs/tiny/model/config.json
echo "wheel check: OK (installed hf_llm ran the shipped recipe and presets from an empty folder)"
