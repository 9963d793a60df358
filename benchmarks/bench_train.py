"""hf_llm's training loop against the run_clm recipe (tokenize → group_texts → transformers Trainer), side by side.

Same tiny Llama (same initial weights), same corpus and tokenizer, same block size, batch, steps, LR schedule and
precision. Prints tokens/s of each, their ratio, validation loss at equal tokens, and MFU against a bf16 matmul
peak measured here. Not a test: timings on a shared machine are noisy; compare the ratio.

    python benchmarks/bench_train.py [--steps 60] [--batch 16] [--seq-len 256] [--precision bf16]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from hf_llm.config import load_config  # noqa: E402
from hf_llm.data.pipeline import build_prepared_data  # noqa: E402
from hf_llm.model import build_model, build_model_config  # noqa: E402
from hf_llm.train.metrics import measure_matmul_flops, model_flops_per_token  # noqa: E402


def run_clm_trainer(cfg, tokenizer, train_texts, val_blocks, steps, batch, seq_len, precision, lr, warmup):
    """The recipe of transformers' examples/pytorch/language-modeling/run_clm.py, kept to its essentials."""
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments, default_data_collator

    raw = Dataset.from_dict({"text": train_texts})
    tokenized = raw.map(lambda ex: tokenizer([t + tokenizer.eos_token for t in ex["text"]]), batched=True,
                        remove_columns=["text"])

    def group_texts(examples):  # verbatim logic of run_clm.py
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // seq_len) * seq_len
        result = {k: [t[i: i + seq_len] for i in range(0, total_length, seq_len)] for k, t in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    lm = tokenized.map(group_texts, batched=True)
    torch.manual_seed(cfg.train.seed)
    model = build_model(cfg_model(cfg, tokenizer))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=steps, learning_rate=lr,
            lr_scheduler_type="cosine", warmup_steps=warmup, weight_decay=0.1, adam_beta2=0.95, max_grad_norm=1.0,
            bf16=precision == "bf16", use_cpu=not torch.cuda.is_available(), logging_steps=10, save_strategy="no",
            report_to=[], dataloader_num_workers=0, seed=cfg.train.seed, disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=lm, data_collator=default_data_collator)
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    return model, steps * batch * seq_len / seconds


def cfg_model(cfg, tokenizer):
    from hf_llm.data.tokenizer import special_token_ids

    return build_model_config(cfg.model, len(tokenizer), special_token_ids(tokenizer))


def hf_llm_loop(cfg, prep, precision):
    from hf_llm.train.collate import PackedCollator
    from hf_llm.train.run import fit, make_accelerator

    out = Path(tempfile.mkdtemp())
    accelerator = make_accelerator(cfg.train, precision, out)
    torch.manual_seed(cfg.train.seed)
    config = cfg_model(cfg, prep.tokenizer)
    model = build_model(config)
    collate = PackedCollator(prep.tokenizer.eos_token_id)
    start = time.perf_counter()
    state, model = fit(cfg, accelerator, model, config, prep.train, None, collate, cfg.data.seq_len, precision, out,
                       description="hf_llm")
    seconds = time.perf_counter() - start
    tokens = state.tokens_seen
    return accelerator.unwrap_model(model), tokens / seconds


@torch.no_grad()
def val_loss(model, blocks, eos, isolate: bool, batch: int = 16) -> float:
    from hf_llm.train.collate import PackedCollator

    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch):
        b = PackedCollator(eos)([{"input_ids": x} for x in blocks[i:i + batch]])
        pos = b["position_ids"] if isolate else None
        logits = model(input_ids=b["input_ids"], position_ids=pos, use_cache=False).logits.float()
        labels = (b["labels"] if isolate else b["input_ids"])[:, 1:]
        total += torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                   ignore_index=-100, reduction="sum").item()
        count += int((labels != -100).sum())
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--compile", action="store_true", help="torch.compile in hf_llm's loop")
    ap.add_argument("--out", default="benchmarks/results/bench_train.json")
    a = ap.parse_args()
    cfg = load_config(None, [
        f"data.seq_len={a.seq_len}", f"train.micro_batch_size={a.batch}", f"train.max_steps={a.steps}",
        f"train.precision={a.precision}", f"train.compile={str(a.compile).lower()}", "train.tensorboard=false",
        "train.save_every=null", f"train.log_every={a.steps}", "train.warmup_steps=10", "train.lr=3e-3",
    ])
    cfg.train.save_every = None
    prep = build_prepared_data(cfg.data, cfg.tokenizer, Path(tempfile.mkdtemp()) / "data")
    import gzip

    # run_clm reads the raw text: the corpus as shipped, one document per JSON line.
    with gzip.open(cfg.data.sources[0].path, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    val_blocks = [list(x) for x in prep.validation["input_ids"]]
    eos = prep.tokenizer.eos_token_id

    # Same run twice in one process would share accelerate state; the Trainer builds its own, so run it first.
    trainer_model, trainer_tps = run_clm_trainer(cfg, prep.tokenizer, texts, val_blocks, a.steps, a.batch, a.seq_len,
                                                 a.precision, cfg.train.lr, cfg.train.warmup_steps)
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    ours_model, ours_tps = hf_llm_loop(cfg, prep, a.precision)
    peak = measure_matmul_flops(torch.bfloat16 if a.precision == "bf16" else torch.float32)
    fpt = model_flops_per_token(ours_model.config, a.seq_len)
    result = {
        "machine": f"{os.cpu_count()} CPUs ({torch.get_num_threads()} threads), torch {torch.__version__}",
        "precision": a.precision, "steps": a.steps, "batch": a.batch, "seq_len": a.seq_len, "compile": a.compile,
        "trainer_tokens_per_second": round(trainer_tps, 1),
        "hf_llm_tokens_per_second": round(ours_tps, 1),
        "speedup": round(ours_tps / trainer_tps, 3),
        "trainer_val_loss_plain": round(val_loss(trainer_model, val_blocks, eos, isolate=False), 4),
        "hf_llm_val_loss_plain": round(val_loss(ours_model, val_blocks, eos, isolate=False), 4),
        "trainer_val_loss_isolated": round(val_loss(trainer_model, val_blocks, eos, isolate=True), 4),
        "hf_llm_val_loss_isolated": round(val_loss(ours_model, val_blocks, eos, isolate=True), 4),
        "peak_matmul_flops": peak,
        "trainer_mfu": trainer_tps * fpt / peak,
        "hf_llm_mfu": ours_tps * fpt / peak,
    }
    print(json.dumps(result, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    assert math.isfinite(result["hf_llm_val_loss_plain"])


if __name__ == "__main__":
    main()
