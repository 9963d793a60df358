"""Checks that need a CUDA machine with flash_attn; CPU runs cannot make them (no flash kernels).

    python benchmarks/gpu_check.py

Nothing CUDA-only is imported at module level, so tests can import this file anywhere and skip.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def flash_packing_parity(device: str = "cuda", varlen: bool = True, micro_batch: int = 4, seq_len: int = 128) -> float:
    """Max |logit difference| between each document of a packed micro-batch under flash_attention_2 and the same
    document alone.

    `varlen=True` is the batch the pretraining and SFT collators build for flash (rows plus varlen kwargs): the
    difference is bf16 noise. `varlen=False` is the batch of several rows flash used to get, where documents of a
    row attend to each other: the difference is the leak, a measure of the check's sensitivity.
    """
    import numpy as np
    import torch
    from transformers import LlamaConfig

    from hf_llm.data.pack import make_packer
    from hf_llm.model import build_model
    from hf_llm.train.collate import PackedCollator

    eos, pad, vocab = 1, 2, 1024  # ids 3.. are text, so EOS and PAD only mark boundaries
    rng = np.random.default_rng(0)
    docs = [np.append(rng.integers(3, vocab, int(n)), eos) for n in rng.integers(4, seq_len // 2, 6 * micro_batch)]
    packer = make_packer("best_fit", seq_len, vocab, pad)  # documents of varied lengths and padding tails
    parts = [packer.add(np.concatenate(docs), np.array([len(d) for d in docs])), packer.finish()]
    rows = [{k: np.concatenate([p[k] for p in parts])[r].tolist() for k in parts[0]} for r in range(micro_batch)]
    batch = PackedCollator(eos, pad, varlen=varlen)(rows)

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, eos_token_id=eos, pad_token_id=pad)
    model = build_model(config, "flash_attention_2", dtype=torch.bfloat16).to(device).eval()
    worst = 0.0
    with torch.no_grad():
        inputs = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**inputs, use_cache=False).logits.float().reshape(micro_batch, seq_len, -1)
        for r, row in enumerate(rows):
            starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [seq_len]
            for a, b in zip(starts, starts[1:]):
                if row["input_ids"][a] == pad:
                    continue  # the padding tail
                alone = model(input_ids=torch.tensor([row["input_ids"][a:b]], device=device), use_cache=False)
                worst = max(worst, (logits[r, a:b] - alone.logits.float()[0]).abs().max().item())
    return worst


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script, from anywhere
    print(json.dumps({"flash_packing_parity": flash_packing_parity(),
                      "flash_packing_leak_without_varlen": flash_packing_parity(varlen=False)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
