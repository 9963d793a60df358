"""hf_llm's training loop against the run_clm recipe (tokenize → group_texts → transformers Trainer), side by side.

Cases: 2 corpora × 2 model widths. The corpora: the bundled one (English prose) and technical documentation with
code (the Python standard library's own sources: docstrings and code, read from this interpreter's stdlib, so the
benchmark builds it without a download). The widths: the tiny preset (d256) and the same model at d512.

Per case both sides get the same training documents (whole documents held out first), the same tokenizer (trained
by hf_llm's data pipeline with cleaning and dedup off, so no document is dropped), the same initial weights, block
size, batch, steps, LR schedule and precision. Each side trains in its own process (its own peak memory and
accelerate state) and saves its model; ONE function (`hf_llm.evaluation.score_texts`, what scripts/evaluate.py
uses) then scores both on the whole held-out documents (sliding windows, every token once).

Reported per side: tokens/s over the whole run and in the steady state (median step after the first ones), the
warm-up + compile seconds (time of the first steps above the steady pace), peak memory (CUDA: max allocated; CPU:
peak RSS of the process), held-out loss at equal tokens; and the ratios. Not a test: timings on a shared machine
are noisy; compare the ratios.

    python benchmarks/bench_train.py            # the full matrix (~20 min on 2 CPU cores)
    python benchmarks/bench_train.py --quick    # a smoke run (a few steps of small blocks)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from itertools import chain
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

BUNDLED = REPO / "data" / "sample" / "corpus.jsonl.gz"
WIDTHS = {"tiny": [], "d512": ["model.overrides.hidden_size=512", "model.overrides.intermediate_size=1408"],
          "125m": ["model.preset=125m"]}  # 125m: benchmarks/gpu_check.py
WARMUP_STEPS = 3  # steps whose time above the steady pace counts as warm-up (compile, allocator, caches)
HELD_OUT_EVERY = 20  # every 20th document is held out, up to the byte cap below


def bundled_documents() -> list[str]:
    import gzip

    with gzip.open(BUNDLED, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def stdlib_documents(max_bytes: int = 6_000_000) -> list[str]:
    """Technical documentation with code: the Python standard library's modules (docstrings and code), 2-40 KB
    each, in path order up to `max_bytes`; the same documents wherever Python 3.11 is installed."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs, total = [], 0
    for path in sorted(root.glob("**/*.py")):
        if "test" in path.parts or "site-packages" in path.parts or "idlelib" in path.parts:
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if 2_000 <= len(text) <= 40_000:
            docs.append(text)
            total += len(text)
        if total >= max_bytes:
            break
    return docs


CORPORA = {"bundled": bundled_documents, "stdlib_code": stdlib_documents}


def split_held_out(docs: list[str], max_bytes: int) -> tuple[list[str], list[str]]:
    """(train, held out): every HELD_OUT_EVERY-th whole document is held out until `max_bytes` of them."""
    held, train, size = [], [], 0
    for i, doc in enumerate(docs):
        if i % HELD_OUT_EVERY == HELD_OUT_EVERY // 2 and size < max_bytes:
            held.append(doc)
            size += len(doc)
        else:
            train.append(doc)
    return train, held


def overrides(a, width: str, out: Path, train_file: Path) -> list[str]:
    steps = a.steps if width == "tiny" else a.steps_d512
    return [
        f"output_dir={out}", f"data.sources=[{{path: '{train_file}'}}]", f"data.seq_len={a.seq_len}",
        # Cleaning and dedup off: the Trainer recipe reads the documents as they are, and so must we.
        "data.clean.preset=none", "data.clean.normalize.enabled=false", "data.clean.pii.enabled=false",
        "data.dedup.exact.enabled=false", "data.dedup.near.enabled=false",
        "data.validation_fraction=0.001", "data.max_validation_documents=1",  # held-out scoring is ours
        f"tokenizer.vocab_size={a.vocab}", f"train.micro_batch_size={a.batch}", f"train.max_steps={steps}",
        f"train.precision={a.precision}", f"train.compile={a.compile}", "train.report_to=[none]",
        "train.save_every=null", "train.log_every=1", "train.warmup_steps=10", "train.lr=3e-3",
        "eval.sample_prompts=[]", *WIDTHS[width], *getattr(a, "extra", []),
    ]


def model_config(cfg, tokenizer):
    from hf_llm.data.tokenizer import special_token_ids
    from hf_llm.model import build_model_config

    return build_model_config(cfg.model, len(tokenizer), special_token_ids(tokenizer))


def step_stats(step_seconds: list[float], tokens_per_step: int) -> dict:
    steady = statistics.median(step_seconds[WARMUP_STEPS:] or step_seconds)
    total = sum(step_seconds)
    return {"tokens_per_second": tokens_per_step * len(step_seconds) / total,
            "steady_tokens_per_second": tokens_per_step / steady,
            "warmup_seconds": sum(max(0.0, s - steady) for s in step_seconds[:WARMUP_STEPS]),
            "train_seconds": total}


def peak_memory() -> dict:
    if torch.cuda.is_available():
        return {"peak_memory_bytes": torch.cuda.max_memory_allocated(), "memory_kind": "cuda max allocated"}
    return {"peak_memory_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "memory_kind": "process peak RSS"}


def run_trainer(cfg, prep, train_texts: list[str], model_dir: Path) -> dict:
    """The recipe of transformers' examples/pytorch/language-modeling/run_clm.py, kept to its essentials."""
    from datasets import Dataset
    from transformers import Trainer, TrainerCallback, TrainingArguments, default_data_collator

    from hf_llm.model import build_model

    tokenizer, seq_len, t = prep.tokenizer, cfg.data.seq_len, cfg.train
    raw = Dataset.from_dict({"text": train_texts})
    tokenized = raw.map(lambda ex: tokenizer([x + tokenizer.eos_token for x in ex["text"]]), batched=True,
                        remove_columns=["text"])

    def group_texts(examples):  # verbatim logic of run_clm.py
        concatenated = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated[list(examples.keys())[0]])
        total_length = (total_length // seq_len) * seq_len
        result = {k: [v[i: i + seq_len] for i in range(0, total_length, seq_len)] for k, v in concatenated.items()}
        result["labels"] = result["input_ids"].copy()
        return result

    lm = tokenized.map(group_texts, batched=True)
    torch.manual_seed(t.seed)
    model = build_model(model_config(cfg, tokenizer))
    times: list[float] = []

    class StepTimes(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.start)

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=t.micro_batch_size, max_steps=t.max_steps,
            learning_rate=t.lr, lr_scheduler_type="cosine", warmup_steps=t.warmup_steps, weight_decay=t.weight_decay,
            adam_beta2=t.beta2, max_grad_norm=t.max_grad_norm, bf16=t.precision == "bf16",
            use_cpu=not torch.cuda.is_available(), logging_steps=10, save_strategy="no", report_to=[],
            dataloader_num_workers=0, seed=t.seed, disable_tqdm=True,
        )
        Trainer(model=model, args=args, train_dataset=lm, data_collator=default_data_collator,
                callbacks=[StepTimes()]).train()
    model.save_pretrained(model_dir)
    return {**step_stats(times, t.micro_batch_size * seq_len), "steps": len(times)}


def run_hf_llm(cfg, prep, model_dir: Path) -> dict:
    from hf_llm.model import build_model
    from hf_llm.train.collate import PackedCollator, needs_varlen_kwargs
    from hf_llm.train.run import TrainData, fit, make_accelerator
    from hf_llm.train.stages import BlockStage

    out = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.train, cfg.train.precision, out)
    torch.manual_seed(cfg.train.seed)
    config = model_config(cfg, prep.tokenizer)
    attention = cfg.model.attn_implementation
    model = build_model(config, attention)  # as hf_llm.pretrain builds it
    collate = PackedCollator(prep.tokenizer.eos_token_id, varlen=needs_varlen_kwargs(attention))
    data = TrainData([BlockStage(prep.train, collate)], cfg.data.seq_len)
    state, model = fit(cfg, accelerator, model, data, cfg.train.precision, out, description="hf_llm")
    tokens_per_step = cfg.train.micro_batch_size * cfg.data.seq_len
    times = [tokens_per_step / p["tokens_per_second"] for p in state.history if "tokens_per_second" in p]
    plain = accelerator.unwrap_model(model, keep_torch_compile=False)
    compiled = any(getattr(m, "_compiled_call_impl", None) is not None for m in plain.modules())
    plain.save_pretrained(model_dir)
    return {**step_stats(times, tokens_per_step), "steps": len(times), "compiled": compiled}


def worker(side: str, spec_path: Path) -> None:
    """One side of one case, in its own process; writes its measurements next to the spec."""
    from hf_llm.config import load_config
    from hf_llm.data.pipeline import load_prepared

    spec = json.loads(spec_path.read_text())
    cfg = load_config(None, spec["overrides"])
    prep = load_prepared(spec["prepared"])
    model_dir = Path(spec["dir"]) / side
    if side == "trainer":
        texts = [json.loads(line)["text"] for line in Path(spec["train_file"]).read_text().splitlines()]
        result = run_trainer(cfg, prep, texts, model_dir)
    else:
        result = run_hf_llm(cfg, prep, model_dir)
    (Path(spec["dir"]) / f"{side}.json").write_text(json.dumps({**result, **peak_memory()}))


def score(model_dir: Path, tokenizer, texts: list[str], seq_len: int) -> float:
    """The ONE held-out scoring function of both sides: mean NLL per token over whole documents."""
    from transformers import AutoModelForCausalLM

    from hf_llm.evaluation import score_texts

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return score_texts(model, tokenizer, texts, seq_len, seq_len // 2, batch_size=16)["loss"]


def run_case(a, corpus: str, width: str, work: Path, prep_dir: Path, train_file: Path, held: list[str]) -> dict:
    from hf_llm.data.pipeline import load_prepared

    case_dir = work / f"{corpus}-{width}"
    case_dir.mkdir(parents=True, exist_ok=True)
    spec = {"overrides": overrides(a, width, case_dir / "run", train_file), "prepared": str(prep_dir),
            "dir": str(case_dir), "train_file": str(train_file)}
    (case_dir / "spec.json").write_text(json.dumps(spec))
    sides = {}
    for side in ("trainer", "hf_llm"):
        subprocess.run([sys.executable, __file__, "--worker", side, "--spec", str(case_dir / "spec.json")],
                       check=True)
        sides[side] = json.loads((case_dir / f"{side}.json").read_text())
    tokenizer = load_prepared(prep_dir).tokenizer
    for side in sides:
        sides[side]["held_out_loss"] = round(score(case_dir / side, tokenizer, held, a.seq_len), 4)
    from transformers import AutoConfig

    from hf_llm.train.metrics import model_flops_per_token

    fpt = model_flops_per_token(AutoConfig.from_pretrained(case_dir / "hf_llm"), a.seq_len)
    for side in sides.values():  # steady state against the peak (measured matmul on CPU, datasheet on GPU)
        side["mfu"] = round(side["steady_tokens_per_second"] * fpt / a.peak, 4) if getattr(a, "peak", None) else None
    ours, theirs = sides["hf_llm"], sides["trainer"]
    return {
        "corpus": corpus, "width": width, "steps": ours["steps"], "held_out_documents": len(held),
        "trainer": theirs, "hf_llm": ours,
        "speedup": round(ours["tokens_per_second"] / theirs["tokens_per_second"], 3),
        "steady_speedup": round(ours["steady_tokens_per_second"] / theirs["steady_tokens_per_second"], 3),
        "memory_ratio": round(ours["peak_memory_bytes"] / theirs["peak_memory_bytes"], 3),
        "held_out_loss_delta": round(ours["held_out_loss"] - theirs["held_out_loss"], 4),
    }


def prepare_corpus(a, corpus: str, work: Path) -> tuple[Path, Path, list[str]]:
    from hf_llm.config import load_config
    from hf_llm.data.pipeline import build_prepared_data

    docs = CORPORA[corpus]()
    if a.quick:
        docs = docs[:200]
    train, held = split_held_out(docs, a.held_out_bytes)
    train_file = work / f"{corpus}.jsonl"
    train_file.write_text("".join(json.dumps({"text": d}) + "\n" for d in train))
    cfg = load_config(None, overrides(a, "tiny", work / "unused", train_file))
    prep_dir = work / f"{corpus}-prepared"
    build_prepared_data(cfg.data, cfg.tokenizer, prep_dir)
    return prep_dir, train_file, held


def machine() -> str:
    from hf_llm.train.metrics import cpu_name

    where = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu_name()
    return f"{where}, {os.cpu_count()} CPUs ({torch.get_num_threads()} threads), torch {torch.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="a smoke run: few steps of small blocks, small corpora")
    ap.add_argument("--steps", type=int, default=100, help="optimizer steps of the tiny cases")
    ap.add_argument("--steps-d512", type=int, default=60, help="optimizer steps of the d512 cases")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--compile", default="auto", choices=["auto", "true", "false"],
                    help="train.compile of hf_llm's side; auto (the default) decides per case as a run would: at the "
                         "default steps the tiny cases run eager, the d512 ones compile (hf_llm.train.run)")
    ap.add_argument("--held-out-bytes", type=int, default=120_000)
    ap.add_argument("--corpora", default=",".join(CORPORA))
    ap.add_argument("--widths", default="tiny,d512", help=f"of {sorted(WIDTHS)} (125m: a GPU-sized case)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/bench_train.json"))
    ap.add_argument("--worker", choices=["trainer", "hf_llm"], help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.spec)
    if a.quick:
        a.steps, a.steps_d512, a.batch, a.seq_len, a.vocab, a.held_out_bytes = 5, 4, 4, 128, 1024, 10_000
    from hf_llm.train.metrics import measure_matmul_flops

    a.peak = measure_matmul_flops(torch.bfloat16 if a.precision == "bf16" else torch.float32)
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="bench_train-"))
    cases = []
    for corpus in a.corpora.split(","):
        prep_dir, train_file, held = prepare_corpus(a, corpus, work)
        for width in a.widths.split(","):
            case = run_case(a, corpus, width, work, prep_dir, train_file, held)
            print(json.dumps({**{k: case[k] for k in ("corpus", "width", "speedup", "steady_speedup", "memory_ratio",
                                                      "held_out_loss_delta")},
                              "compiled": case["hf_llm"]["compiled"]}), flush=True)
            cases.append(case)
            write_result(a, cases, start)  # after every case: a run stopped midway keeps what it measured
    print(json.dumps(write_result(a, cases, start), indent=2))


def write_result(a: argparse.Namespace, cases: list[dict], start: float) -> dict:
    result = {
        "machine": machine(), "quick": a.quick, "precision": a.precision, "batch": a.batch, "seq_len": a.seq_len,
        "hf_llm_compile": a.compile, "peak_matmul_flops": a.peak,
        "cases": cases, "wall_seconds": round(time.perf_counter() - start, 1),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
