"""Downstream task metrics of fixed weights (launched with 1 and 2 processes by test_downstream_processes.py), or,
with `fail-on-rank-1`, a scoring failure on the second process only. Every process writes OUT/rank-N.json (its own
file: the processes' stdout lines interleave)."""

import json
import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from transformers import LlamaConfig, LlamaForCausalLM

import hf_llm.downstream as downstream
from hf_llm.config import TaskConfig, TokenizerConfig
from hf_llm.data.tokenizer import train_bpe_tokenizer
from hf_llm.train.downstream import evaluate_tasks
from tests.conftest import sample_documents

TASKS = Path(__file__).resolve().parents[1] / "data" / "tasks"

world = int(os.environ.get("WORLD_SIZE", "1"))
accelerator = Accelerator(kwargs_handlers=[InitProcessGroupKwargs(backend="gloo")] if world > 1 else [])
tokenizer = train_bpe_tokenizer(iter(d["text"] for d in sample_documents(60)),
                                TokenizerConfig(vocab_size=400, min_frequency=2))
torch.manual_seed(0)
model = accelerator.prepare(LlamaForCausalLM(LlamaConfig(
    vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256)))
tasks = []
for path, kind, limit in ((TASKS / "everyday_mc.jsonl", "multiple_choice", None),
                          (TASKS / "last_word_cloze.jsonl", "cloze", 5)):
    task = downstream.read_task(TaskConfig(path=str(path), kind=kind, limit=limit))
    tasks.append((task, downstream.build_requests(task, tokenizer, 256)))
mode, out = sys.argv[1], Path(sys.argv[2])
if mode == "fail-on-rank-1" and accelerator.process_index == 1:
    def broken(*args, **kwargs):
        raise RuntimeError("injected failure on rank 1")

    downstream.score_requests = broken
line = {"processes": accelerator.num_processes, "rank": accelerator.process_index}
try:
    # 32 + 5 = 37 requests: on two processes 19 and 18 + 1 padding, 4 forwards each in batches of 5.
    line["metrics"] = evaluate_tasks(accelerator, model, tasks, 5)
except RuntimeError as e:
    line["error"] = str(e)
(out / f"rank-{accelerator.process_index}.json").write_text(json.dumps(line))
# Tear the process group down before exit: a gloo group left to the interpreter's shutdown can abort a rank
# ("terminate called without an active exception") after its work is done.
accelerator.wait_for_everyone()
accelerator.end_training()
