"""Validation loss of fixed weights on a validation set that does not divide by the world size (launched with 1 and
2 processes by test_eval_processes.py). Prints one JSON line from the main process."""

import json
import sys
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from hf_llm.config import TrainConfig
from hf_llm.train.collate import PackedCollator
from hf_llm.train.loop import evaluate_loss
from hf_llm.train.stages import build_eval_loader
from hf_llm.train.run import make_accelerator

EOS, VOCAB, SEQ, ROWS, MICRO = 1, 96, 24, 7, 2  # 7 rows: 4 batches over 1 process, 2 + 2 (one padded) over 2

accelerator = make_accelerator(TrainConfig(micro_batch_size=MICRO), "fp32", Path(sys.argv[1]))
torch.manual_seed(0)
model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, eos_token_id=EOS))
g = torch.Generator().manual_seed(1)
rows = [{"input_ids": torch.randint(2, VOCAB, (SEQ,), generator=g).tolist()} for _ in range(ROWS)]
for r in rows:
    r["input_ids"][SEQ // 2] = EOS  # two documents per row
model = accelerator.prepare(model)
loader = accelerator.prepare(build_eval_loader(rows, MICRO, PackedCollator(EOS)))
loss, targets, _ = evaluate_loss(accelerator, model, loader)
if accelerator.is_main_process:
    print(json.dumps({"loss": loss, "targets": targets, "processes": accelerator.num_processes}))
# Tear the process group down before exit: a gloo group left to the interpreter's shutdown can abort a rank
# ("terminate called without an active exception") after its work is done.
accelerator.wait_for_everyone()
accelerator.end_training()  # destroys the process group
