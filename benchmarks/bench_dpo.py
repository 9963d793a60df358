"""hf_llm's preference tuning (DPO, LoRA) against TRL's DPOTrainer, side by side.

Both sides get the same base model (a local folder), the same pairs (a learnable preference: helpful answers over
dismissive ones, on topics; held-out topics for evaluation), the same LoRA settings (r, alpha, dropout, all linear
layers), beta, micro-batch of pairs, steps, LR, warmup and cosine schedule, and precision. Each side trains in its
own process (its own peak memory). ONE function then scores both exported adapters on the held-out pairs: the
implicit reward β·(log π − log π_ref) of chosen and rejected from plain forwards of the merged policy and the base.

Reported per side: training seconds and tokens/s over them (hf_llm: the loop's time; TRL: its whole `train()` call,
setup included), steady tokens/s (the median optimizer step after the first two, timed on both sides: the
comparison to read), with the same token count for both (every pair's prompt + chosen and prompt + rejected
tokens, times the pairs trained), peak memory (CUDA: max allocated; CPU: peak RSS of the
process), held-out reward accuracy; and the ratios. Not a test: timings on a shared machine are noisy.

    python benchmarks/bench_dpo.py --quick                   # a smoke run on a random tiny model (CPU, minutes)
    python benchmarks/bench_dpo.py --base PATH --steps 200   # a real comparison on a pretrained model folder
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TOPICS = ["apples", "rivers", "clocks", "horses", "winter", "music", "bread", "ships", "gardens", "stars", "paper",
          "bridges", "coffee", "mountains", "birds", "candles", "forests", "trains", "honey", "islands", "lamps",
          "oceans", "pianos", "roses", "salt", "tigers", "violins", "wheat", "glass", "maps", "deserts", "kites",
          "lemons", "owls", "pearls", "quilts", "rain", "snow", "tea", "wolves", "cheese", "drums", "eagles",
          "feathers", "grapes", "hills", "ink", "jars", "keys", "lakes"]
REJECTED = ["Go away.", "Not now.", "Ask someone else.", "I will not answer that."]


def pairs(topics: list[str]) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"Tell me about {t}."}],
             "chosen": [{"role": "assistant", "content": f"Sure! {t.capitalize()} are a fine subject to learn about."}],
             "rejected": [{"role": "assistant", "content": REJECTED[i % len(REJECTED)]}]}
            for i, t in enumerate(topics)]


def peak_memory() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def tiny_base(out: Path) -> Path:
    """A random tiny Llama and a BPE tokenizer learned from the pairs (the --quick smoke run's base)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from hf_llm.config import TokenizerConfig
    from hf_llm.data.tokenizer import train_bpe_tokenizer
    from hf_llm.sft import DEFAULT_CHAT_TEMPLATE, complete_tokenizer

    texts = [m["content"] for r in pairs(TOPICS) for k in ("prompt", "chosen", "rejected") for m in r[k]]
    tok = train_bpe_tokenizer(texts * 3, TokenizerConfig(vocab_size=400, min_frequency=2))
    complete_tokenizer(tok, DEFAULT_CHAT_TEMPLATE)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def run_hf_llm(a, base: Path, train_file: Path, out: Path) -> dict:
    cmd = [sys.executable, "scripts/finetune.py", "configs/recipes/dpo_lora_tiny.yaml", f"output_dir={out}",
           f"model.name_or_path={base}", f"data.sources=[{{path: '{train_file}'}}]", "data.validation_fraction=0.05",
           f"train.max_steps={a.steps}", f"train.micro_batch_size={a.batch}", f"train.lr={a.lr}",
           f"train.warmup_steps={a.warmup}", "train.schedule=cosine", "train.min_lr_ratio=0.0",
           f"train.precision={a.precision}", "train.save_every=null", f"eval.every={a.steps}",
           "train.report_to=[none]", f"preference.beta={a.beta}", f"adapter.r={a.r}", f"adapter.alpha={2 * a.r}",
           "adapter.dropout=0.0", "train.max_grad_norm=1.0", "train.weight_decay=0.0", "train.log_every=1"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    s = json.loads((out / "summary.json").read_text())
    tokens_per_step = a.batch * s["data"]["train"]["mean_length"]  # what the loop's tokens/s counts per step
    step_seconds = [tokens_per_step / p["tokens_per_second"] for p in s["history"] if "tokens_per_second" in p]
    return {"train_seconds": s["train_seconds"], "step_seconds": step_seconds,
            "peak_memory_bytes": s.get("peak_memory_bytes"), "adapter": str(out / "adapter")}


def run_trl(a, base: Path, train_file: Path, out: Path) -> None:
    """Inside its own process: TRL's DPOTrainer with the same settings; writes OUT/result.json."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    tok = base_tokenizer(base)
    bf16 = a.precision == "bf16"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if bf16 else torch.float32)
    args = DPOConfig(output_dir=str(out), per_device_train_batch_size=a.batch, max_steps=a.steps,
                     learning_rate=a.lr, warmup_steps=a.warmup, lr_scheduler_type="cosine", beta=a.beta,
                     bf16=bf16, use_cpu=not torch.cuda.is_available(), report_to="none", save_strategy="no",
                     logging_steps=max(1, a.steps // 10), max_length=512, weight_decay=0.0, max_grad_norm=1.0,
                     adam_beta2=0.95, seed=1234)
    lora = LoraConfig(r=a.r, lora_alpha=2 * a.r, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    import time

    from transformers import TrainerCallback

    step_seconds: list[float] = []

    class StepTimer(TrainerCallback):  # the optimizer steps alone, as hf_llm's loop times them
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            step_seconds.append(time.perf_counter() - self.start)

    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora, callbacks=[StepTimer()])
    result = trainer.train()
    trainer.model.save_pretrained(str(out / "adapter"))
    (out / "result.json").write_text(json.dumps({"train_seconds": result.metrics["train_runtime"],
                                                 "step_seconds": step_seconds,
                                                 "peak_memory_bytes": peak_memory(), "adapter": str(out / "adapter")}))


def held_out_accuracy(base: Path, adapter: str, rows: list[dict], beta: float) -> float:
    """Share of held-out pairs whose implicit reward ranks chosen over rejected (merged policy vs base)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    tok = base_tokenizer(base)
    reference = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    policy = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32),
                                       adapter).merge_and_unload().eval()

    def logp(model, prompt, response) -> float:
        p = tok(tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True),
                add_special_tokens=False)["input_ids"]
        ids = tok(tok.apply_chat_template(prompt + response, tokenize=False), add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        return float(lp[len(p) - 1:].sum())

    wins = 0
    for r in rows:
        rewards = [beta * (logp(policy, r["prompt"], r[k]) - logp(reference, r["prompt"], r[k]))
                   for k in ("chosen", "rejected")]
        wins += rewards[0] > rewards[1]
    return wins / len(rows)


def base_tokenizer(base: Path):
    """The base's tokenizer completed as the fine-tuning job completes it (a pretrained export has no chat template:
    both sides, and the scorer, render pairs with hf_llm's default one)."""
    from transformers import AutoTokenizer

    from hf_llm.sft import DEFAULT_CHAT_TEMPLATE, complete_tokenizer

    tok = AutoTokenizer.from_pretrained(base)
    complete_tokenizer(tok, DEFAULT_CHAT_TEMPLATE)
    return tok


def pair_tokens(base: Path, rows: list[dict]) -> float:
    """Mean tokens per pair (prompt + chosen and prompt + rejected), hf_llm's encoding (TRL's, token for token)."""
    from hf_llm.preference_data import encode_pair

    tok = base_tokenizer(base)
    sizes = [2 * len(p) + len(c) + len(r) for p, c, r in
             (encode_pair(tok, x["prompt"], x["chosen"], x["rejected"], None) for x in rows)]
    return sum(sizes) / len(sizes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", help="a model folder (default: a random tiny model built here)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--warmup", type=int, default=4)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 6 steps")
    ap.add_argument("--trl-side", nargs=3, help=argparse.SUPPRESS)  # base, train file, out: the TRL process
    a = ap.parse_args(argv)
    if a.trl_side:
        run_trl(a, *(Path(p) for p in a.trl_side))
        return 0
    if a.quick:
        a.steps, a.warmup = 6, 1
    work = Path(tempfile.mkdtemp(prefix="bench_dpo-"))
    base = Path(a.base) if a.base else tiny_base(work / "base")
    train_rows, held_out = pairs(TOPICS[:40]), pairs(TOPICS[40:])
    train_file = work / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    ours = run_hf_llm(a, base, train_file, work / "hf_llm")
    trl_out = work / "trl"
    done = subprocess.run([sys.executable, __file__, "--trl-side", str(base), str(train_file), str(trl_out),
                           *(argv if argv is not None else sys.argv[1:])], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    theirs = json.loads((trl_out / "result.json").read_text())
    tokens = a.steps * a.batch * pair_tokens(base, train_rows)
    result = {"settings": vars(a) | {"base": str(base), "trl_side": None}, "trained_tokens": tokens}
    import statistics

    for name, side in (("hf_llm", ours), ("trl", theirs)):
        steady = statistics.median(side["step_seconds"][2:] or side["step_seconds"])  # after the first steps
        result[name] = {"train_seconds": side["train_seconds"], "tokens_per_second": tokens / side["train_seconds"],
                        "steady_tokens_per_second": tokens / a.steps / steady,
                        "peak_memory_bytes": side["peak_memory_bytes"],
                        "held_out_reward_accuracy": held_out_accuracy(base, side["adapter"], held_out, a.beta)}
    result["tokens_per_second_ratio"] = result["hf_llm"]["tokens_per_second"] / result["trl"]["tokens_per_second"]
    result["steady_tokens_per_second_ratio"] = (result["hf_llm"]["steady_tokens_per_second"]
                                                / result["trl"]["steady_tokens_per_second"])
    result["peak_memory_ratio"] = result["hf_llm"]["peak_memory_bytes"] / result["trl"]["peak_memory_bytes"]
    out = REPO / "benchmarks" / "results" / ("bench_dpo_quick.json" if a.quick else "bench_dpo.json")
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
