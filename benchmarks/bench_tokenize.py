"""hf_llm's `BatchEncoder` against the tokenizers library's own batch encoding, on the same texts, same tokenizer.

    python benchmarks/bench_tokenize.py [--docs 6000] [--repeats 3] [--out benchmarks/results/bench_tokenize.json]

Tokenizer: the default recipe's byte-level BPE (8,192 tokens) trained on the bundled corpus (data/sample), cached
under --work. Texts, in batches of 1,000 (the pipeline's batch):
  prose  the bundled corpus (data/sample/corpus.jsonl.gz, public-domain books), as the pipeline reads it
  code   documentation pages generated here from this Python's standard library sources: a markdown heading and
         prose line, then ~3 KB of Python in a fenced block (indentation, operators, digits, long identifiers)
  edge   generated hard cases: CJK, emoji, combining marks, U+2028, no-break spaces, tabs, runs of spaces and
         newlines, contractions in upper case, and a literal "<|endoftext|>" (it must stay text)
Methods (each encodes every batch of a kind; ids compared for exact equality with the first):
  transformers  `tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"]` (what the
                pipeline calls when BatchEncoder is off)
  backend       `tokenizer.backend_tokenizer` with `encode_special_tokens=True`, `encode_batch_fast(texts)`
                (the library's batch call without offsets)
  BatchEncoder  a fresh `BatchEncoder(tokenizer).encode_flat` per kind (its piece cache starts empty, as in a new
                worker process), flat ids + lengths
Each method also turns its output into the flat numpy ids + lengths the packers take, and that is timed too.
Tokenizer threads are off (TOKENIZERS_PARALLELISM=false: the pipeline's datasets.map workers are one process per
core); `backend_threads` repeats the backend with them on. Best of --repeats. The machine may be shared: timings
are what one run saw.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import sysconfig
import tempfile
import time
from itertools import chain
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
SAMPLE = REPO / "data" / "sample" / "corpus.jsonl.gz"
BATCH = 1000


def prose_texts(n: int) -> list[str]:
    texts = [json.loads(line)["text"] for line in gzip.open(SAMPLE, "rt", encoding="utf-8")]
    return (texts * (n // len(texts) + 1))[:n]


def code_texts(n: int, chunk: int = 3000) -> list[str]:
    """Documentation pages with code blocks, cut from the standard library's sources (deterministic per Python)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out: list[str] = []
    for path in sorted(stdlib.glob("*.py")):
        source = path.read_text(encoding="utf-8", errors="replace")
        for k in range(0, len(source), chunk):
            out.append(f"# {path.stem}, part {k // chunk + 1}\n\nThe `{path.stem}` module, as shipped with Python "
                       f"{platform.python_version()}:\n\n```python\n{source[k : k + chunk]}\n```\n")
            if len(out) == n:
                return out
    return (out * (n // max(1, len(out)) + 1))[:n]


def edge_texts(n: int, seed: int = 0) -> list[str]:
    parts = ["Hello  world's 3.14", "naïve café", "東京タワー", "🙂👍🏽", "e\u0301", "x\u00a0y", "line\u2028sep", "tabs\t\tend",
             "  \n\n  ", "I'LL DON'T we'VE", "<|endoftext|>", "x<|endoftext|>y", "1,234,567.89", "snake_case_name",
             "   trailing   ", "\r\n", "Ωμέγα", "ﬁ ligature", "\u200bzero width", "مرحبا", "🇫🇷"]
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(parts, size=int(rng.integers(5, 60)))) for _ in range(n)]


def batches(texts: list[str]) -> list[list[str]]:
    return [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]


def to_flat(ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    return np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(lengths.sum())), lengths


def methods(tokenizer) -> dict:
    from hf_llm.data.tokenizer import BatchEncoder

    backend = tokenizer.backend_tokenizer
    backend.encode_special_tokens = True  # a literal "<|endoftext|>" stays text, as split_special_tokens=True

    def transformers_call(texts):
        return to_flat(tokenizer(texts, add_special_tokens=False, split_special_tokens=True)["input_ids"])

    def backend_call(texts):
        return to_flat([e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)])

    return {"transformers": lambda: transformers_call, "backend": lambda: backend_call,
            "BatchEncoder": lambda: BatchEncoder(tokenizer).encode_flat}


def run_kind(tokenizer, texts: list[str], repeats: int) -> dict:
    parts = batches(texts)
    result, reference = {}, None
    for name, make in methods(tokenizer).items():
        best, outputs = float("inf"), None
        for _ in range(repeats):
            encode = make()  # a fresh encoder each repeat: BatchEncoder's cache is filled inside the timing
            t = time.perf_counter()
            outputs = [encode(b) for b in parts]
            best = min(best, time.perf_counter() - t)
        flat = np.concatenate([o[0] for o in outputs])
        lengths = np.concatenate([o[1] for o in outputs])
        if reference is None:
            reference = (flat, lengths)
        equal = bool(np.array_equal(flat, reference[0]) and np.array_equal(lengths, reference[1]))
        result[name] = {"seconds": round(best, 3), "tokens": int(len(flat)),
                        "tokens_per_second": round(len(flat) / best), "ids_equal_to_transformers": equal}
    for name in ("backend", "BatchEncoder"):
        result[name]["speedup_vs_transformers"] = round(result["transformers"]["seconds"] / result[name]["seconds"], 2)
    result["BatchEncoder"]["speedup_vs_backend"] = round(result["backend"]["seconds"] / result["BatchEncoder"]["seconds"],
                                                         2)
    return {"documents": len(texts), "megabytes": round(sum(len(t.encode()) for t in texts) / 2**20, 2), **result}


def run_backend(tokenizer, texts: list[str], repeats: int) -> dict:
    """The backend alone, with whatever tokenizer threads the environment allows."""
    encode = methods(tokenizer)["backend"]()
    parts = batches(texts)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        tokens = sum(len(encode(b)[0]) for b in parts)
        best = min(best, time.perf_counter() - t)
    return {"seconds": round(best, 3), "tokens_per_second": round(tokens / best)}


def sample_tokenizer(path: Path):
    from hf_llm.config import TokenizerConfig
    from hf_llm.data.tokenizer import load_tokenizer, train_bpe_tokenizer

    if not (path / "tokenizer.json").exists():
        texts = (json.loads(line)["text"] for line in gzip.open(SAMPLE, "rt", encoding="utf-8"))
        train_bpe_tokenizer(texts, TokenizerConfig(vocab_size=8192)).save_pretrained(str(path))
    return load_tokenizer(str(path))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=6000, help="documents of each kind")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "hf_llm_bench_tokenize"))
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_tokenize.json"))
    a = p.parse_args()
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = sample_tokenizer(Path(a.work) / "tokenizer")
    kinds = {"prose": prose_texts(a.docs), "code": code_texts(a.docs), "edge": edge_texts(a.docs)}
    load = os.getloadavg()
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "load_average_at_start": [round(x, 2) for x in load]},
              "tokenizer": {"vocab_size": len(tokenizer), "kind": "byte-level BPE trained on data/sample"},
              "kinds": {k: run_kind(tokenizer, texts, a.repeats) for k, texts in kinds.items()}}
    os.environ["TOKENIZERS_PARALLELISM"] = "true"  # read by tokenizers on every batch call
    result["backend_threads"] = {k: run_backend(tokenizer, texts, a.repeats) for k, texts in kinds.items()}
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
