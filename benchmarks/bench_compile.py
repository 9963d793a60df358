"""What `train.compile` costs and saves on this machine: the numbers behind `train.compile=auto`.

For the tiny preset (d256) and the same model at d512, bf16 autocast, packed blocks (batch × seq_len), the training
step hf_llm runs (the chunked output loss, block-causal position ids, AdamW):

- steady state: an eager copy and a compiled copy of the same model in ONE process, stepped alternately (so machine
  load hits both alike); median step of each, after the first steps;
- compile cost: the first compiled step's time above the steady compiled step, in a fresh process, with an empty
  compile cache (cold) and again with the cache that run left (warm: what a second run, a resume or another
  process of the same run pays);
- for regional compilation (each decoder layer, what `train.compile=true` does) and the whole model.

It prints and writes (benchmarks/results/bench_compile.json) the break-even step count per case: compile seconds /
seconds saved per step. Not a test: timings are noisy, run it on a quiet machine.

    python benchmarks/bench_compile.py              # ~6 min on 2 CPU cores
    python benchmarks/bench_compile.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

WIDTHS = {"tiny": {}, "d512": {"hidden_size": 512, "intermediate_size": 1408}}
SKIP = 3  # first steps of each copy left out of the steady-state median


def build(width: str, seed: int = 0):
    from hf_llm.config import load_config
    from hf_llm.model import build_model, build_model_config

    cfg = load_config(None, [f"model.overrides.{k}={v}" for k, v in WIDTHS[width].items()])
    torch.manual_seed(seed)
    return build_model(build_model_config(cfg.model, cfg.tokenizer.vocab_size, {}))


def batch(args, vocab: int) -> dict:
    """Random tokens with an EOS (id 2) ending a document every ~`doc_tokens`: block-causal position ids as a packed
    corpus gives them."""
    from hf_llm.train.collate import PackedCollator

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, vocab, (args.batch, args.seq_len), generator=g)
    ends = torch.rand(args.batch, args.seq_len, generator=g) < 1.0 / args.doc_tokens
    ids[ends] = 2
    return PackedCollator(2)([{"input_ids": row} for row in ids])


def stepper(model, data: dict):
    from hf_llm.train.loss import OutputLoss

    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = OutputLoss(model.get_output_embeddings(), final_norm=model.model.norm)  # as output_loss_for builds it
    inputs = {k: v for k, v in data.items() if k != "labels"}
    normaliser = float((data["labels"][:, 1:] != -100).sum())

    def step() -> float:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = loss_fn(loss_fn.final_hidden(model, inputs), data["labels"], normaliser)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start
    return step


def compile_model(model, how: str) -> None:
    from hf_llm.train.run import compile_regions

    if how == "regional":
        compile_regions(model)
    else:
        model.compile()


def steady(args, width: str, how: str) -> dict:
    """Eager and compiled copies stepped alternately in this process."""
    eager, compiled = build(width), build(width)
    compile_model(compiled, how)
    data = batch(args, eager.config.vocab_size)
    steps = {"eager": stepper(eager, data), "compiled": stepper(compiled, data)}
    times = {"eager": [], "compiled": []}
    for _ in range(args.steps):
        for name, step in steps.items():
            times[name].append(step())
    e, c = (statistics.median(times[n][SKIP:]) for n in ("eager", "compiled"))
    return {"eager_step_seconds": e, "compiled_step_seconds": c, "steady_speedup": e / c}


def first_steps(args, width: str, how: str) -> dict:
    """A fresh process's compiled steps (its cache is what TORCHINDUCTOR_CACHE_DIR holds)."""
    model = build(width)
    start = time.perf_counter()
    compile_model(model, how)
    step = stepper(model, batch(args, model.config.vocab_size))
    times = [step() for _ in range(SKIP + 2)]
    return {"first_step_seconds": times[0], "compiled_step_seconds": statistics.median(times[1:]),
            "setup_seconds": time.perf_counter() - start - sum(times)}


def worker(args) -> None:
    result = (steady if args.worker == "steady" else first_steps)(args, args.width, args.how)
    print("RESULT " + json.dumps(result), flush=True)


def run_worker(args, kind: str, width: str, how: str, cache: Path) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    cmd = [sys.executable, __file__, "--worker", kind, "--width", width, "--how", how, "--steps", str(args.steps),
           "--batch", str(args.batch), "--seq-len", str(args.seq_len), "--doc-tokens", str(args.doc_tokens)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--widths", default="tiny,d512")
    ap.add_argument("--how", default="regional,whole")
    ap.add_argument("--steps", type=int, default=12, help="steps of each copy in the steady-state run")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--doc-tokens", type=int, default=700, help="mean document length of the packed blocks")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/bench_compile.json"))
    ap.add_argument("--worker", choices=["steady", "first"], help=argparse.SUPPRESS)
    ap.add_argument("--width", help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    if a.worker:
        return worker(a)
    if a.quick:
        a.steps, a.batch, a.seq_len, a.widths, a.how = 5, 4, 64, "tiny", "regional"
    from hf_llm.train.metrics import cpu_name

    cases = []
    for width in a.widths.split(","):
        for how in a.how.split(","):
            with tempfile.TemporaryDirectory(prefix="bench_compile-") as cache:
                cold = run_worker(a, "first", width, how, Path(cache))
                warm = run_worker(a, "first", width, how, Path(cache))
                state = run_worker(a, "steady", width, how, Path(cache))
            saved = state["eager_step_seconds"] - state["compiled_step_seconds"]
            case = {"width": width, "how": how, **{k: round(v, 4) for k, v in state.items()}}
            for name, run in (("cold", cold), ("warm", warm)):
                cost = run["first_step_seconds"] + run["setup_seconds"] - state["compiled_step_seconds"]
                case[f"compile_seconds_{name}"] = round(cost, 2)
                case[f"break_even_steps_{name}"] = round(cost / saved) if saved > 0 else None
            print(json.dumps(case), flush=True)
            cases.append(case)
    result = {"machine": f"{cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}", "batch": a.batch,
              "seq_len": a.seq_len, "precision": "bf16", "quick": a.quick, "cases": cases}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
