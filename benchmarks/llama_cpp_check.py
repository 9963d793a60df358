"""Opt-in: does llama.cpp run an hf_llm export as transformers does? Tokens, logits, perplexity, greedy text.

    pip install llama-cpp-python        # builds llama.cpp from source (cmake; ~5-30 min on 2 cores)
    python benchmarks/llama_cpp_check.py runs/tiny/model [--outtypes f32,f16,q8_0] [--json FILE]

For each output type the model folder is written as GGUF (hf_llm.gguf, the code `hf-llm gguf` runs) and loaded by
llama.cpp's Python bindings, then compared with transformers on the same folder (fp32, eager, CPU):
- tokenization: llama.cpp's tokenizer against the exported one on hard cases (whitespace runs, tabs, digits,
  accents, CJK, emoji, a special token) and held-out documents: the number of texts tokenized differently;
- logits: the largest absolute difference over the held-out windows;
- perplexity: of the same token windows under both;
- greedy: the same prompts continued greedily by both; how many continuations agree token for token.
Held-out text: the last documents of the bundled corpus (`--documents`), cut into `--seq-len`-token windows.
Not part of the test suite: the bindings take minutes to build. The result is recorded in the README (GGUF).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
HARD_CASES = ["And it came to pass, in the 1611th year...", "  two  spaces\tand a tab\n\nnew lines   ",
              "Café déjà vu — naïve façade", "中文字符和日本語のテキスト", "emoji 🙂 and 12345678 digits",
              "end of a document<|endoftext|>and the next", "x = {'a': [1, 2]};\n\tprint(x)  # ok\r\n"]
PROMPTS = ["And it came to pass", "HACKER, n.", "The ", "In the beginning God created"]


def held_out_texts(n: int) -> list[str]:
    with gzip.open(REPO / "data" / "sample" / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line)["text"] for line in f]
    return docs[-n:]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def nll(logits: np.ndarray, ids: list[int]) -> float:
    """Summed negative log-likelihood of ids[1:] given the logits at each previous position."""
    lp = log_softmax(logits[:-1])
    return float(-lp[np.arange(len(ids) - 1), ids[1:]].sum())


def llama_logits(llm, ids: list[int]) -> np.ndarray:
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def llama_greedy(llm, ids: list[int], n: int) -> list[int]:
    llm.reset()
    llm.eval(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    return out


def check(model_dir: Path, outtypes: list[str], documents: int, seq_len: int, new_tokens: int, threads: int) -> dict:
    from llama_cpp import Llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from hf_llm.gguf import export_gguf

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    texts = HARD_CASES + held_out_texts(documents)
    stream = [i for t in held_out_texts(documents) for i in tok(t + tok.eos_token)["input_ids"]]
    windows = [stream[i:i + seq_len] for i in range(0, len(stream) - seq_len + 1, seq_len)]
    with torch.no_grad():
        hf_logits = [model(torch.tensor([w]), use_cache=False).logits[0].numpy() for w in windows]
        hf_greedy = [model.generate(torch.tensor([tok(p)["input_ids"]]), max_new_tokens=new_tokens, do_sample=False,
                                    pad_token_id=tok.pad_token_id)[0, len(tok(p)["input_ids"]):].tolist()
                     for p in PROMPTS]
    scored = sum(len(w) - 1 for w in windows)
    hf_ppl = math.exp(sum(nll(lg, w) for lg, w in zip(hf_logits, windows)) / scored)
    result = {"model_dir": str(model_dir), "parameters": sum(p.numel() for p in model.parameters()),
              "vocab_size": model.config.vocab_size, "windows": len(windows), "seq_len": seq_len,
              "scored_tokens": scored, "transformers_perplexity": hf_ppl, "texts": len(texts), "outtypes": {}}
    import llama_cpp

    result["llama_cpp_python"] = llama_cpp.__version__
    with tempfile.TemporaryDirectory() as tmp:
        for outtype in outtypes:
            path = export_gguf(model_dir, Path(tmp) / f"model-{outtype}.gguf", outtype)
            llm = Llama(str(path), n_ctx=max(seq_len, 64) + new_tokens + 16, n_threads=threads, logits_all=True,
                        verbose=False, n_batch=seq_len)
            mismatched = [t[:40] for t in texts
                          if llm.tokenize(t.encode("utf-8"), add_bos=False, special=True)
                          != tok(t, add_special_tokens=False)["input_ids"]]
            cpp_logits = [llama_logits(llm, w) for w in windows]
            cpp_ppl = math.exp(sum(nll(lg, w) for lg, w in zip(cpp_logits, windows)) / scored)
            greedy = [llama_greedy(llm, tok(p)["input_ids"], new_tokens) for p in PROMPTS]
            same_prefix = [next((i for i, (a, b) in enumerate(zip(g, h)) if a != b), len(h))
                           for g, h in zip(greedy, hf_greedy)]
            result["outtypes"][outtype] = {
                "file_mib": round(path.stat().st_size / 2**20, 2),
                "texts_tokenized_differently": len(mismatched), "examples": mismatched[:5],
                "max_abs_logit_diff": float(max(np.abs(a - b).max() for a, b in zip(cpp_logits, hf_logits))),
                "max_abs_logit": float(max(np.abs(b).max() for b in hf_logits)),
                "llama_cpp_perplexity": cpp_ppl,
                "greedy_identical": sum(s == new_tokens for s in same_prefix), "greedy_prompts": len(PROMPTS),
                "greedy_same_prefix_tokens": same_prefix,
            }
            del llm
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model_dir", type=Path, help="an exported model folder (e.g. runs/tiny/model)")
    parser.add_argument("--outtypes", default="f32,f16,q8_0")
    parser.add_argument("--documents", type=int, default=20, help="held-out documents (the corpus's last)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "llama_cpp_check.json")
    args = parser.parse_args(argv)
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama_cpp is not installed: pip install llama-cpp-python (builds llama.cpp with cmake)",
              file=sys.stderr)
        return 2
    result = check(args.model_dir, args.outtypes.split(","), args.documents, args.seq_len, args.new_tokens,
                   args.threads)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"transformers fp32: perplexity {result['transformers_perplexity']:.4f} over {result['scored_tokens']:,} "
          f"tokens ({result['windows']} windows of {result['seq_len']})")
    for outtype, r in result["outtypes"].items():
        print(f"llama.cpp {outtype:<5} perplexity {r['llama_cpp_perplexity']:.4f}, max |logit diff| "
              f"{r['max_abs_logit_diff']:.2e} (max |logit| {r['max_abs_logit']:.1f}), texts tokenized differently "
              f"{r['texts_tokenized_differently']}/{result['texts']}, greedy identical {r['greedy_identical']}/"
              f"{r['greedy_prompts']} ({r['file_mib']} MiB)")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
