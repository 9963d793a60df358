"""Write an exported model folder as one GGUF file for llama.cpp: `python scripts/export_gguf.py MODEL_DIR
[--outfile FILE.gguf] [--outtype f32|f16|q8_0]`.

The same command as `hf-llm gguf`; a job writes the same file with `export.gguf=TYPE`. `--help` lists the flags.
"""

import sys

from hf_llm.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("gguf", prog="scripts/export_gguf.py"))
