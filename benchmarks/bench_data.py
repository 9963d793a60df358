"""Data pipeline throughput and memory, with run_clm's tokenise-and-group recipe as the baseline in the same run.

    python benchmarks/bench_data.py [--mb 100] [--second-mb 200] [--pack-mb 20] [--num-proc 2]
                                    [--memory-mb 50 200 800] [--baseline-ref 33deb2f | --no-baseline]
                                    [--out benchmarks/results/bench_data.json]

Corpus: the bundled sample (data/sample, 5.9 MB of public-domain text) repeated with edits until it reaches --mb
megabytes of JSON lines: each copy of a document has 20% of its words replaced by random words of the corpus (so
copies are new documents, not near duplicates), and 3% of documents are followed by a near copy (one run of 5% of
the words replaced) for the dedup pass to find. The script writes every corpus it needs itself. Measurements, each
in a fresh process so peak memory is its own:

  pack       hf_llm's pipeline steps (`steps.tokenize_batch` with datasets.map, then `ConcatPacker`) vs run_clm
             (`tokenizer(examples["text"])` with datasets.map, then `group_texts` with Python list concatenation,
             exactly as transformers'
             examples/pytorch/language-modeling/run_clm.py), same tokenizer, same documents, same block size;
             with one core each, two cores each (num_proc=2), and run_clm's default (tokenizer threads on).
  near_dedup the near pass's steps with exact dedup off: `dedup_keys` (batches of 1,000), `near_pairs` over all
             bands and `dedup_decisions` (one task): documents per second.
  pipeline   `build_prepared_data` (the passes in this process, `executor.kind=process`) with the default recipe
             (configs/data/sample.yaml settings) on the whole corpus: documents per second, per-pass timings, peak
             RSS of the process and of its workers.
  baseline   the same on the same corpus with the code of --baseline-ref (default: the last commit whose in-process
             path was a second orchestration), unpacked with `git archive` under --work: documents per second and
             memory side by side, and the ratio (the target: within 5%).
  memory     (--memory-mb) the pipeline at each size (default 50, 200 and 800 MB) with every filter off (clean
             preset none, dedup and decontamination off, as the 0.41 / 0.71 / 2.28 GB of the old in-process path were
             measured), plus the same with the default filters; peak memory at each size and its slope per MB.
  executor   (--executor) the same recipe on datatrove's local executor (hf_llm/data/executor.py) at 1 and 2
             workers vs the in-process path, all on the corpus split into --tasks files (a task reads whole files):
             documents per second, the scaling ratio, and the peak RSS of each worker process (sampled from /proc).
             `python benchmarks/bench_data.py --executor --mb 100` runs only this comparison.

Prints one JSON document and writes it to --out. The machine is shared: timings are what one run saw.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
SAMPLE = REPO / "data" / "sample" / "corpus.jsonl.gz"


# ------------------------------------------------------------------------------------------------------ corpus


def synthetic_corpus(path: Path, megabytes: float, seed: int = 0) -> dict:
    """Write ~`megabytes` MB of JSON lines (id, source, text) derived from the bundled corpus; returns its stats."""
    rng = np.random.default_rng(seed)
    base = [json.loads(line) for line in gzip.open(SAMPLE, "rt", encoding="utf-8")]
    vocab: dict[str, int] = {}
    docs = []
    for d in base:
        paras = [np.array([vocab.setdefault(w, len(vocab)) for w in p.split()], dtype=np.int32)
                 for p in d["text"].split("\n\n")]
        docs.append((d["source"], paras))
    words = np.array(list(vocab), dtype=object)
    target, written, n = int(megabytes * 2**20), 0, 0
    with open(path, "w", encoding="utf-8") as f:
        copy = 0
        while written < target:
            for i, (source, paras) in enumerate(docs):
                edited = []
                for p in paras:  # a new document: 20% of the words replaced
                    ids = p.copy()
                    hit = rng.random(len(ids)) < 0.2
                    ids[hit] = rng.integers(0, len(words), int(hit.sum()))
                    edited.append(ids)
                versions = [edited]
                if rng.random() < 0.03:  # a near copy follows: one run of 5% of its words replaced
                    flat = np.concatenate(edited)
                    k = max(1, len(flat) // 20)
                    at = int(rng.integers(0, max(1, len(flat) - k)))
                    flat[at : at + k] = rng.integers(0, len(words), k)
                    versions.append(np.split(flat, np.cumsum([len(x) for x in edited])[:-1]))
                for v, paras_ids in enumerate(versions):
                    text = "\n\n".join(" ".join(words[x].tolist()) for x in paras_ids)
                    line = json.dumps({"id": f"{copy}-{i}" + ("-near" if v else ""), "source": source, "text": text})
                    f.write(line + "\n")
                    written += len(line.encode("utf-8")) + 1
                    n += 1
                if written >= target:
                    break
            copy += 1
    return {"path": str(path), "megabytes": round(written / 2**20, 1), "documents": n}


def sample_tokenizer(path: Path):
    """The default recipe's tokenizer (byte-level BPE, 8,192 tokens) trained on the bundled corpus; cached."""
    from hf_llm.config import TokenizerConfig
    from hf_llm.data.tokenizer import load_tokenizer, train_bpe_tokenizer

    if not (path / "tokenizer.json").exists():
        texts = (json.loads(line)["text"] for line in gzip.open(SAMPLE, "rt", encoding="utf-8"))
        train_bpe_tokenizer(texts, TokenizerConfig(vocab_size=8192)).save_pretrained(str(path))
    return load_tokenizer(str(path))


def peak_rss_mb() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"peak_rss_mb": round(me, 1), "peak_rss_workers_mb": round(kids, 1)}


class MemorySampler(threading.Thread):
    """Peak anonymous and file-backed resident memory of this process, sampled every 0.1 s from /proc.

    ru_maxrss counts the pages of memory-mapped Arrow files that were read; those are page cache the kernel takes
    back under pressure, not memory the pipeline needs. RssAnon is what it needs (heap, numpy arrays).
    """

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssFile": 0}
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                for line in open("/proc/self/status"):
                    key = line.split(":")[0]
                    if key in self.peak:
                        self.peak[key] = max(self.peak[key], int(line.split()[1]) // 1024)
            except OSError:  # not Linux: ru_maxrss only
                return
            time.sleep(0.1)

    def stop(self) -> dict:
        self.running = False
        self.join()
        return {"peak_anonymous_mb": self.peak["RssAnon"], "peak_file_backed_mb": self.peak["RssFile"]}


# ------------------------------------------------------------------------------------------------------ stages


def stage_pack(corpus: Path, work: Path, megabytes: float, seq_len: int, num_proc: int) -> dict:
    import datasets
    from itertools import chain

    datasets.disable_caching()  # every map really runs
    datasets.disable_progress_bars()
    tokenizer = sample_tokenizer(work / "tokenizer")
    subset = work / f"pack_{megabytes}mb.jsonl"
    if not subset.exists():
        with open(corpus, encoding="utf-8") as src, open(subset, "w", encoding="utf-8") as dst:
            size = 0
            for line in src:
                dst.write(line)
                size += len(line.encode())
                if size >= megabytes * 2**20:
                    break
    docs = datasets.load_dataset("json", data_files=str(subset), split="train", cache_dir=str(work / "hf"))
    docs = docs.select_columns(["text"])
    procs = num_proc if num_proc > 1 else None
    ours_docs = docs.add_column("reason", [None] * len(docs))  # what the pipeline's step reads besides the text

    t = time.perf_counter()
    stats = pipeline_pack(ours_docs, tokenizer, seq_len, procs)
    ours = time.perf_counter() - t

    # transformers examples/pytorch/language-modeling/run_clm.py, verbatim apart from logging
    def tokenize_function(examples):
        return tokenizer(examples["text"])

    def group_texts(examples):
        concatenated_examples = {k: list(chain(*examples[k])) for k in examples.keys()}
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        total_length = (total_length // seq_len) * seq_len
        result = {
            k: [t[i : i + seq_len] for i in range(0, total_length, seq_len)]
            for k, t in concatenated_examples.items()
        }
        result["labels"] = result["input_ids"].copy()
        return result

    t = time.perf_counter()
    tokenized = docs.map(tokenize_function, batched=True, num_proc=procs, remove_columns=["text"])
    t_tok = time.perf_counter() - t
    lm = tokenized.map(group_texts, batched=True, num_proc=procs)
    theirs = time.perf_counter() - t
    base_tokens = sum(len(x) for x in tokenized["input_ids"])
    return {
        "documents": len(docs), "megabytes": megabytes, "seq_len": seq_len, "num_proc": num_proc,
        "hf_llm": {"seconds": round(ours, 2), "tokens": stats["tokens"], "blocks": stats["blocks"],
                   "tokens_per_second": round(stats["tokens"] / ours)},
        "run_clm": {"seconds": round(theirs, 2), "tokenize_seconds": round(t_tok, 2),
                    "group_texts_seconds": round(theirs - t_tok, 2), "tokens": base_tokens, "blocks": len(lm),
                    "tokens_per_second": round(base_tokens / theirs)},
        "speedup": round((stats["tokens"] / ours) / (base_tokens / theirs), 2),
        "note": "run_clm adds no EOS between documents (GPT-2 style tokenizer), so it has one token fewer per document",
    }


def pipeline_pack(docs, tokenizer, seq_len: int, procs) -> dict:
    """The pack pass's tokenise and pack steps (as `task_pack.tokenize_documents` and emit.py run them), no BOS."""
    from datasets import Features

    from hf_llm.data.batches import BATCH
    from hf_llm.data.pack import ConcatPacker, arrow_lists_to_numpy, id_dtype
    from hf_llm.data.steps import tokenize_batch, tokenize_features
    from hf_llm.data.tokenizer import BatchEncoder

    kwargs = {"encoder": BatchEncoder(tokenizer), "keep": np.ones(len(docs), dtype=bool),
              "eos": tokenizer.eos_token_id, "bos": None, "vocab_size": len(tokenizer)}
    ids = docs.map(tokenize_batch, batched=True, batch_size=BATCH, num_proc=procs, with_indices=True,
                   input_columns=["text", "reason"], remove_columns=docs.column_names, fn_kwargs=kwargs,
                   features=tokenize_features(Features(), len(tokenizer)))
    flat, lengths = arrow_lists_to_numpy(ids.data.column("input_ids"))
    packer = ConcatPacker(seq_len, id_dtype(len(tokenizer)))
    packer.add(flat, lengths)
    packer.finish()
    return packer.stats


def stage_near_dedup(corpus: Path, documents: int) -> dict:
    from hf_llm.config.data_steps import DedupConfig, ExactDedupConfig
    from hf_llm.data.dedup import band_keys, dedup_decisions, dedup_keys, near_pairs

    texts = []
    with open(corpus, encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) >= documents:
                break
    cfg = DedupConfig(exact=ExactDedupConfig(enabled=False))
    t = time.perf_counter()
    keys = [dedup_keys(texts[i : i + 1000], cfg) for i in range(0, len(texts), 1000)]
    sig = np.concatenate([k["minhash"] for k in keys])
    t_sig = time.perf_counter() - t
    pairs = near_pairs(band_keys(sig, cfg.near.rows), lambda rows: sig[rows], cfg.near)  # one task: every band
    drop = np.flatnonzero(dedup_decisions(len(texts), np.ones(len(texts), dtype=bool), [], pairs, cfg).near)
    total = time.perf_counter() - t
    return {"documents": len(texts), "mean_chars": round(float(np.mean([len(x) for x in texts]))),
            "signatures_seconds": round(t_sig, 2), "cluster_seconds": round(total - t_sig, 2),
            "documents_per_second": round(len(texts) / total), "near_duplicates_removed": len(drop)}


FILTERS_OFF = ["data.clean.preset=none", "data.clean.normalize.enabled=false", "data.clean.pii.enabled=false",
               "data.dedup.exact.enabled=false", "data.dedup.near.enabled=false", "data.decontam.enabled=false"]


def stage_pipeline(corpus: Path, work: Path, num_proc: int, filters_off: bool = False) -> dict:
    """`build_prepared_data` on the corpus with the default recipe (or every filter off); also imported from the
    --baseline-ref checkout, so it uses only what both versions have."""
    import shutil

    from hf_llm.config import PrepareDataConfig, load_config
    from hf_llm.data.pipeline import build_prepared_data

    cfg = load_config(REPO / "configs" / "data" / "sample.yaml", [
        f"data.sources=[{{path: '{corpus}'}}]", f"data.num_proc={num_proc}",
        "tokenizer.max_train_documents=20000",  # BPE training is not what is measured; a capped sample is usual
        *(FILTERS_OFF if filters_off else []),
    ], schema=PrepareDataConfig)
    out = work / f"prepared_{os.getpid()}"
    sampler = MemorySampler()
    sampler.start()
    t = time.perf_counter()
    prep = build_prepared_data(cfg.data, cfg.tokenizer, out)
    seconds = time.perf_counter() - t
    memory = sampler.stop()
    card = prep.card
    read = card["steps"][0]["documents_in"]
    near = card.get("duplicate_clusters", {}).get("near")
    result = {
        "filters_off": filters_off, "num_proc": num_proc, "seconds": round(seconds, 1),
        "documents_in": read, "documents_out": card["split"]["train_documents"] + card["split"]["validation_documents"],
        "documents_per_second": round(read / seconds, 1),
        "megabytes_per_second": round(card["steps"][0]["characters_in"] / 2**20 / seconds, 2),
        "train_tokens": card["train"]["tokens"], "rejections": card["rejections"],
        "near_duplicates_removed": near["documents_removed"] if near else None,
        "step_seconds": card["timings_seconds"], **peak_rss_mb(), **memory,
    }
    shutil.rmtree(out, ignore_errors=True)
    return result


def baseline_checkout(work: Path, ref: str) -> Path:
    """The repository at `ref`, unpacked once under `work` (`git archive`: no worktree is registered)."""
    folder = work / f"baseline-{ref}"
    if not (folder / "hf_llm").is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def memory_sizes(sizes: list[float], work: Path, num_proc: int) -> dict:
    """The default path's peak memory at each corpus size, every filter off and with the default filters."""
    out: dict = {"sizes_mb": sizes, "filters_off": [], "default_filters": []}
    for mb in sizes:
        common = ["--mb", str(mb), "--work", str(work), "--num-proc", str(num_proc)]
        info = run_stage(["--stage", "corpus", *common])
        for key, stage in (("filters_off", "pipeline_filters_off"), ("default_filters", "pipeline")):
            out[key].append({"corpus": info, **run_stage(["--stage", stage, *common])})
    for key in ("filters_off", "default_filters"):
        runs = out[key]
        for mem in ("peak_rss_mb", "peak_anonymous_mb"):
            if len(runs) > 1 and runs[-1]["corpus"]["megabytes"] > runs[0]["corpus"]["megabytes"]:
                slope = (runs[-1][mem] - runs[0][mem]) / (runs[-1]["corpus"]["megabytes"] - runs[0]["corpus"]["megabytes"])
                out[f"{key}_{mem}_per_extra_mb"] = round(slope, 4)
    out["note"] = ("peak_anonymous_mb is what the process holds (heap, numpy arrays); peak_rss_mb adds the pages of "
                   "memory-mapped Arrow files read (reclaimable page cache). Flat in corpus size means the slope is "
                   "the global steps' arrays only (see hf_llm/data/executor.py: ~0.1 GB per million documents, plus "
                   "the near pass's band keys with dedup on)")
    return out


def split_corpus(corpus: Path, parts: int) -> Path:
    """The corpus as `parts` files of consecutive lines (the executor shards by file); both paths read this folder."""
    folder = corpus.with_name(f"{corpus.stem}_{parts}parts")
    if not folder.is_dir():
        lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
        folder.mkdir()
        for k in range(parts):
            (folder / f"part-{k:03d}.jsonl").write_text("".join(lines[k * len(lines) // parts:
                                                                      (k + 1) * len(lines) // parts]))
    return folder


class TreeMemory(threading.Thread):
    """Peak RSS of every descendant process (the executor's workers), polled every 0.2 s."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, float] = {}
        self.running = True

    def run(self) -> None:
        import psutil

        me = psutil.Process()
        while self.running:
            for child in me.children(recursive=True):
                try:
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), child.memory_info().rss / 2**20)
                except psutil.Error:
                    pass
            time.sleep(0.2)

    def stop(self) -> dict:
        self.running = False
        self.join()
        top = sorted(self.peaks.values(), reverse=True)
        return {"peak_rss_per_worker_mb": round(top[0], 1) if top else None, "processes_seen": len(top)}


def stage_executor(corpus: Path, work: Path, workers: int, tasks: int) -> dict:
    """`prepare_data` on the local executor (workers > 0) or in process (workers == 0) on the split corpus."""
    import shutil

    from hf_llm.config import PrepareDataConfig, load_config
    from hf_llm.data.executor import prepare_data

    folder = split_corpus(corpus, tasks)
    out = work / f"prepared_executor_{workers}"
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(f"{out}.executor", ignore_errors=True)
    extra = ([] if workers == 0 else
             ["executor.kind=local", f"executor.tasks={tasks}", f"executor.workers={workers}",
              f"executor.dedup_tasks={tasks}"])
    cfg = load_config(REPO / "configs" / "data" / "sample.yaml", [
        f"output_dir={out}", f"data.sources=[{{path: '{folder}'}}]", "tokenizer.max_train_documents=20000", *extra,
    ], schema=PrepareDataConfig)
    tree, sampler = TreeMemory(), MemorySampler()
    tree.start()
    sampler.start()
    t = time.perf_counter()
    card = prepare_data(cfg)
    seconds = time.perf_counter() - t
    memory = {**sampler.stop(), **tree.stop()}
    if workers <= 1:  # tasks run in this process (the children seen are datatrove's manager processes)
        memory["peak_rss_per_worker_mb"] = peak_rss_mb()["peak_rss_mb"]
    read = card["steps"][0]["documents_in"]
    kept = card["split"]["train_documents"] + card["split"]["validation_documents"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(f"{out}.executor", ignore_errors=True)
    return {"workers": workers, "tasks": tasks if workers else None, "seconds": round(seconds, 1),
            "documents_in": read, "documents_kept": kept, "documents_per_second": round(read / seconds, 1),
            "rejections": card["rejections"], "step_seconds": card["timings_seconds"], **memory}


def executor_comparison(common: list[str], tasks: int) -> dict:
    runs = {f"workers_{w}" if w else "in_process": run_stage(["--stage", "executor", "--workers", str(w),
                                                             "--tasks", str(tasks), *common]) for w in (0, 1, 2)}
    base = runs["in_process"]["documents_per_second"]
    runs["ratio"] = {"workers_1_vs_in_process": round(runs["workers_1"]["documents_per_second"] / base, 2),
                     "workers_2_vs_in_process": round(runs["workers_2"]["documents_per_second"] / base, 2),
                     "workers_2_vs_workers_1": round(runs["workers_2"]["documents_per_second"] /
                                                     runs["workers_1"]["documents_per_second"], 2)}
    kept = {runs[k]["documents_kept"] for k in ("in_process", "workers_1", "workers_2")}
    runs["same_kept_documents"] = len(kept) == 1
    return runs


# -------------------------------------------------------------------------------------------------------- main


def pack_comparisons(a, common: list[str]) -> dict:
    """Both recipes with the same cores: one each (tokenizers' threads off), two each (num_proc=2); and run_clm's
    default, where the Rust tokenizer may use both cores' threads while hf_llm's encoder runs in one process."""
    stage = ["--stage", "pack", "--pack-mb", str(a.pack_mb), "--seq-len", str(a.seq_len), *common]
    runs = {
        "one_core_each": run_stage([*stage, "--pack-num-proc", "1"], TOKENIZERS_PARALLELISM="false"),
        "two_cores_each": run_stage([*stage, "--pack-num-proc", "2"], TOKENIZERS_PARALLELISM="false"),
        "run_clm_default_threads": run_stage([*stage, "--pack-num-proc", "1"], TOKENIZERS_PARALLELISM="true"),
    }
    runs["speedup"] = {k: v["speedup"] for k, v in runs.items()}
    return runs


def corpus_info(corpus: Path, megabytes: float) -> dict:
    if not corpus.exists():
        return synthetic_corpus(corpus, megabytes)
    return {"path": str(corpus), "megabytes": round(corpus.stat().st_size / 2**20, 1),
            "documents": sum(1 for _ in open(corpus, encoding="utf-8"))}


MEMORY_KEYS = ("peak_rss_mb", "peak_anonymous_mb", "peak_file_backed_mb", "peak_rss_workers_mb")


def extrapolate(runs: list[tuple[float, dict]]) -> dict:
    """Time and peak memory for 1 GB (1,024 MB) from the largest run, and memory's slope between two runs."""
    mb, big = runs[-1]
    out = {"from_megabytes": [r[0] for r in runs],
           "pipeline_minutes_per_gb": round(big["seconds"] * 1024 / mb / 60, 1),
           **{f"{key}_at_sizes": [r[1].get(key) for r in runs] for key in MEMORY_KEYS}}
    if len(runs) == 2 and runs[1][0] > runs[0][0]:
        (m0, r0), (m1, r1) = runs
        for key in MEMORY_KEYS:
            slope = (r1[key] - r0[key]) / (m1 - m0)
            out[f"{key}_per_extra_mb"] = round(slope, 3)
            out[f"{key}_at_1gb"] = round(r1[key] + max(0.0, slope) * (1024 - m1))
    out["note"] = ("time: linear in corpus size (every step is per document; dedup clustering is near-linear numpy). "
                   "memory: a linear fit through the two sizes. peak_rss_mb (ru_maxrss) includes the pages of the "
                   "memory-mapped Arrow files read so far (reclaimable page cache); peak_anonymous_mb is the memory "
                   "the process itself holds; workers: the largest datasets.map worker's ru_maxrss")
    return out



def run_baseline(corpus: Path, work: Path, num_proc: int, ref: str) -> dict:
    """`stage_pipeline` with the code of `ref` imported instead of this checkout's (this process imports nothing of
    hf_llm before)."""
    folder = baseline_checkout(work, ref)
    global REPO
    REPO = folder
    sys.path.insert(0, str(folder))
    for name in [m for m in sys.modules if m == "hf_llm" or m.startswith("hf_llm.")]:
        del sys.modules[name]
    import hf_llm

    assert Path(hf_llm.__file__).resolve().is_relative_to(folder.resolve()), hf_llm.__file__
    return {"ref": ref, **stage_pipeline(corpus, work, num_proc)}


def run_stage(args: list[str], **env_extra: str) -> dict:
    """One stage in a fresh interpreter: its peak memory is its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", **env_extra}
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"stage {args} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, default=100.0, help="size of the synthetic corpus for the pipeline run")
    p.add_argument("--pack-mb", type=float, default=20.0, help="corpus prefix for the tokenise-and-pack comparison")
    p.add_argument("--seq-len", type=int, default=1024)
    p.add_argument("--dedup-docs", type=int, default=20000)
    p.add_argument("--num-proc", type=int, default=2, help="datasets.map workers of the pipeline run")
    p.add_argument("--pack-num-proc", type=int, default=1, help="datasets.map workers of both packing recipes")
    p.add_argument("--baseline-ref", default="33deb2f",
                   help="git ref whose in-process pipeline is the baseline (the last with a second orchestration)")
    p.add_argument("--no-baseline", action="store_true", help="skip the baseline run")
    p.add_argument("--memory-mb", type=float, nargs="*", default=None,
                   help="also measure peak memory at these corpus sizes (the README's: 50 200 800)")
    p.add_argument("--second-mb", type=float, default=0.0,
                   help="also run the pipeline on a corpus of this size: peak memory and time at two sizes give the "
                        "per-GB extrapolation")
    p.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "hf_llm_bench_data"),
                   help="corpora and outputs (hundreds of MB; kept between runs, outside the checkout)")
    p.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "bench_data.json"))
    p.add_argument("--executor", action="store_true",
                   help="only compare the local executor (1 and 2 workers) with the in-process path on --mb MB")
    p.add_argument("--tasks", type=int, default=4, help="executor tasks (and files the corpus is split into)")
    p.add_argument("--workers", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--stage", help=argparse.SUPPRESS)
    a = p.parse_args()
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"corpus_{a.mb:g}mb.jsonl"
    if a.stage == "pack":
        print(json.dumps(stage_pack(corpus, work, a.pack_mb, a.seq_len, a.pack_num_proc)))
        return
    if a.stage == "near_dedup":
        print(json.dumps(stage_near_dedup(corpus, a.dedup_docs)))
        return
    if a.stage == "corpus":
        print(json.dumps(corpus_info(corpus, a.mb)))
        return
    if a.stage == "executor":
        print(json.dumps(stage_executor(corpus, work, a.workers, a.tasks)))
        return
    if a.stage in ("pipeline", "pipeline_filters_off"):
        print(json.dumps(stage_pipeline(corpus, work, a.num_proc, a.stage == "pipeline_filters_off")))
        return
    if a.stage == "baseline":
        print(json.dumps(run_baseline(corpus, work, a.num_proc, a.baseline_ref)))
        return

    started = time.perf_counter()
    load_before = os.getloadavg()
    info = corpus_info(corpus, a.mb)
    common = ["--mb", str(a.mb), "--work", str(work), "--num-proc", str(a.num_proc)]
    if a.executor:
        result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                              "load_average_at_start": [round(x, 2) for x in load_before]},
                  "corpus": info, "executor": executor_comparison(common, a.tasks)}
        result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        out = Path(a.out).with_name("bench_data_executor.json") if a.out.endswith("bench_data.json") else Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(json.dumps(result, indent=2))
        return
    result = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_average_at_start": [round(x, 2) for x in load_before]},
        "corpus": info,
        "pack": pack_comparisons(a, common),
        "near_dedup": run_stage(["--stage", "near_dedup", "--dedup-docs", str(a.dedup_docs), *common]),
        "pipeline": run_stage(["--stage", "pipeline", *common]),
    }
    if not a.no_baseline:
        result["baseline"] = run_stage(["--stage", "baseline", "--baseline-ref", a.baseline_ref, *common])
        result["pipeline_vs_baseline_documents_per_second"] = round(
            result["pipeline"]["documents_per_second"] / result["baseline"]["documents_per_second"], 3)
    if a.memory_mb:
        result["memory"] = memory_sizes(a.memory_mb, work, a.num_proc)
    runs = [(info["megabytes"], result["pipeline"])]
    if a.second_mb:
        second = ["--mb", str(a.second_mb), "--work", str(work), "--num-proc", str(a.num_proc)]
        big = run_stage(["--stage", "corpus", *second])
        result["pipeline_second_size"] = {"corpus": big, **run_stage(["--stage", "pipeline", *second])}
        runs.append((big["megabytes"], result["pipeline_second_size"]))
    result["per_gb_extrapolation"] = extrapolate(runs)
    result["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["seconds"] = round(time.perf_counter() - started, 1)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
