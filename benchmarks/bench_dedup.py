"""Near dedup side by side on the same generated corpora: hf_llm's pipeline steps vs datasketch's MinHashLSH.

    python benchmarks/bench_dedup.py [--docs 1200] [--seed 0] [--procs 2] [--out benchmarks/results/bench_dedup.json]

Corpora (benchmarks/corpora.py): three kinds of text (prose from the bundled sample, API docs with code blocks, short
web pages on site templates), each with seeded copies (exact; 1%, 3%, 5% or 10% of the words substituted, inserted or
deleted at random positions; paragraph copies sharing >= 80% of the text) and hard negatives (pages on one
template; documents quoting 20-50% of another), one corpus per kind and edit rate, all methods on the same one.

Methods: `hf_llm` is what prepare_data runs, the same functions (`dedup_keys` per batch of 1,000, as
`clean_keys_batch` calls it, then `exact_partition`, `near_pairs` and `dedup_decisions` as the exact, near and
select passes run them with one task), at its defaults; `hf_llm[fineweb]`
the same with data.dedup.near.preset=fineweb (5-grams, 14 x 8, no verification); `datasketch` is MinHashLSH at
threshold 0.5 with 128 permutations, documents queried then inserted in order (a hit drops the document), on word
5-grams (the setting the issue compared) and on word 3-grams (hf_llm's shingles). datatrove's four on-disk MinHash
stages are not run: they need spacy, and ENV_NOTES measured them at ~140 docs/s, 20x below either method here.

Also measured: the true Jaccard (exact shingle sets) of each kind of planted pair and of template mates, at 3- and
5-grams; the S-curve of each banding and the drop rate of the whole method by true Jaccard; throughput on
documents of 2-8 KB in 1 and `--procs` processes (signatures + LSH + clustering); clustering alone at scale.
Prints the README table; writes everything as JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from hf_llm.data.batches import BATCH  # noqa: E402
from hf_llm.data.dedup import (  # noqa: E402
    DedupConfig,
    NearDedupConfig,
    band_keys,
    dedup_decisions,
    dedup_keys,
    exact_partition,
    near_pairs,
    ngram_hashes,
)
from hf_llm.config.data_steps import ExactDedupConfig  # noqa: E402
from benchmarks.corpora import KINDS, Corpus, base_documents, make_corpus, score  # noqa: E402

EDIT_RATES = (0.01, 0.03, 0.05, 0.10)


# ---------------------------------------------------------------------------------------------------- methods


def _keys(texts: list[str], cfg: DedupConfig) -> dict:
    return dedup_keys(texts, cfg)


def hf_llm_dedup(texts: list[str], cfg: DedupConfig, procs: int = 1) -> tuple[np.ndarray, dict]:
    """Dropped mask and timings of the pipeline's own steps: keys per batch (in `procs` processes, as
    datasets.map(num_proc) runs them), then the global decisions."""
    batches = [texts[i : i + BATCH] for i in range(0, len(texts), BATCH)]
    t0 = time.perf_counter()
    if procs > 1:
        with get_context("fork").Pool(procs) as pool:
            parts = pool.map(partial(_keys, cfg=cfg), batches)
    else:
        parts = [_keys(b, cfg) for b in batches]
    hashes = np.concatenate([p["hash"] for p in parts])
    sig = np.concatenate([p["minhash"] for p in parts])
    t1 = time.perf_counter()
    decided = one_task_decisions(hashes, sig, cfg)
    t2 = time.perf_counter()
    return decided.exact | decided.near, {"keys_s": t1 - t0, "decisions_s": t2 - t1}


def one_task_decisions(hashes: np.ndarray, sig: np.ndarray, cfg: DedupConfig):
    """The exact, near and select passes' dedup steps with one task: one hash partition, every band."""
    n = len(sig)
    exact = [exact_partition(np.arange(n), hashes)] if cfg.exact.enabled else []
    kept = np.ones(n, dtype=bool)
    for part in exact:
        kept[part["dropped"]] = False
    cand = np.flatnonzero(kept)
    pairs = None
    if cfg.near.enabled:
        pairs = cand[near_pairs(band_keys(sig[cand], cfg.near.rows), lambda rows: sig[cand[rows]], cfg.near)]
    return dedup_decisions(n, np.ones(n, dtype=bool), exact, pairs, cfg)


def datasketch_dedup(texts: list[str], ngram: int, threshold: float = 0.5, num_perm: int = 128):
    """MinHashLSH as it is usually run for dedup: each document queried, dropped on a hit, else inserted."""
    from datasketch import MinHash, MinHashLSH

    t0 = time.perf_counter()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    dropped = np.zeros(len(texts), dtype=bool)
    for i, text in enumerate(texts):
        words = _WORDS.findall(text.lower())
        shingles = {" ".join(words[k : k + ngram]).encode() for k in range(max(1, len(words) - ngram + 1))}
        m = MinHash(num_perm=num_perm)
        m.update_batch(list(shingles))
        if lsh.query(m):
            dropped[i] = True
        else:
            lsh.insert(i, m)
    return dropped, {"total_s": time.perf_counter() - t0, "bands": lsh.b, "rows": lsh.r}


def _words_regex():
    import re

    return re.compile(r"(?:[0-9A-Za-z_]|[^\x00-\x7f\u0080-\u00bf\u2000-\u206f\u3000-\u303f])+")  # hf_llm's words


_WORDS = _words_regex()


def methods(have_datasketch: bool) -> dict:
    out = {"hf_llm": lambda t: _hf(t, DedupConfig()),
           "hf_llm[fineweb]": lambda t: _hf(t, DedupConfig(near=NearDedupConfig(preset="fineweb")))}
    if have_datasketch:
        out["datasketch 5-gram"] = lambda t: _ds(t, 5)
        out["datasketch 3-gram"] = lambda t: _ds(t, 3)
    return out


def _hf(texts, cfg):
    dropped, t = hf_llm_dedup(texts, cfg)
    return dropped, len(texts) / (t["keys_s"] + t["decisions_s"])


def _ds(texts, ngram):
    dropped, t = datasketch_dedup(texts, ngram)
    return dropped, len(texts) / t["total_s"]


# ------------------------------------------------------------------------------------------------- quality


def summarise(s: dict) -> dict:
    recall = s["recall"]
    edit = [v for k, v in recall.items() if k.startswith("edit")]
    para = [v for k, v in recall.items() if k.startswith("para") and float(k.split(":")[1]) >= 0.8]
    return {"recall_edit": edit[0] if edit else None, "recall_para80": round(float(np.mean(para)), 4) if para else None,
            "recall_exact": recall.get("exact"), "precision": s["precision"], "dropped": s["dropped"],
            "false_drops": s["false_drops"], "quote_docs_dropped": s["quote_docs_dropped"]}


def quality(kinds: list[str], n_base: int, seed: int, have_datasketch: bool) -> dict:
    out: dict = {}
    for kind in kinds:
        out[kind] = {}
        for rate in EDIT_RATES:
            corpus = make_corpus(kind, seed, n_base=n_base, edit_rates=(rate,))
            row = {"documents": len(corpus.texts),
                   "mean_kb": round(float(np.mean([len(t.encode()) for t in corpus.texts])) / 1000, 2)}
            for name, run in methods(have_datasketch).items():
                dropped, rate_docs = run(corpus.texts)
                row[name] = {**summarise(score(corpus, dropped)), "docs_per_s": round(rate_docs)}
            out[kind][f"{rate:.2f}"] = row
            print(f"  {kind} edits {rate:.0%}: " + ", ".join(
                f"{m} R={v['recall_edit']} P={v['precision']}" for m, v in row.items() if isinstance(v, dict)),
                flush=True)
    return out


def boundary(kinds: list[str], n_base: int, seed: int, have_datasketch: bool) -> dict:
    """Drop rate of paragraph copies by the share of text they keep (0.5-1.0): where each method's boundary is."""
    out = {}
    for kind in kinds:
        corpus = make_corpus(kind, seed + 100, n_base=n_base, copies=0.0, exact=0.0, para=0.4, quotes=0.0,
                             para_share=(0.5, 1.0))
        out[kind] = {name: score(corpus, run(corpus.texts)[0])["recall"]
                     for name, run in methods(have_datasketch).items()}
    return out


# ----------------------------------------------------------------------------------------- Jaccard, S-curve


def _sets(texts: list[str], n: int) -> list[np.ndarray]:
    hashes, offsets, _ = ngram_hashes(texts, n)
    return [np.unique(hashes[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]


def _jaccard(a: np.ndarray, b: np.ndarray) -> float:
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def jaccard_table(corpus: Corpus, ns=(3, 5), template_pairs: int = 2000, seed: int = 0) -> dict:
    """Quantiles of the true Jaccard of each planted pair kind (and of random pairs of base documents: pages on one
    template, for tech_docs and web) at each shingle size."""
    rng = np.random.default_rng(seed)
    labels = np.array([lab.rsplit(":", 1)[0] if lab.startswith(("para", "quote")) else lab for lab in corpus.label])
    groups = {lab: np.flatnonzero((labels == lab) & (corpus.related >= 0)) for lab in set(labels) if lab != "base"}
    base = np.flatnonzero(labels == "base")
    out = {}
    for n in ns:
        sets = _sets(corpus.texts, n)
        q = {}
        for lab, idx in sorted(groups.items()):
            j = [_jaccard(sets[i], sets[corpus.related[i]]) for i in idx]
            q[lab] = _quantiles(j)
        pairs = rng.choice(base, size=(template_pairs, 2))
        q["unrelated (same kind)"] = _quantiles([_jaccard(sets[a], sets[b]) for a, b in pairs if a != b])
        out[f"{n}-gram"] = q
    return out


def _quantiles(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"n": int(len(v)), "p1": round(float(np.percentile(v, 1)), 3), "p50": round(float(np.median(v)), 3),
            "p99": round(float(np.percentile(v, 99)), 3), "max": round(float(v.max()), 3)} if len(v) else {"n": 0}


def s_curves(have_datasketch: bool) -> dict:
    """P(candidate) = 1 - (1 - J^r)^b of each banding at J = 0.1 ... 0.9."""
    bandings = {"hf_llm (42 x 3)": (42, 3), "fineweb (14 x 8)": (14, 8)}
    if have_datasketch:
        from datasketch import MinHashLSH

        lsh = MinHashLSH(threshold=0.5, num_perm=128)
        bandings[f"datasketch t=0.5 ({lsh.b} x {lsh.r})"] = (lsh.b, lsh.r)
    grid = [round(x, 2) for x in np.arange(0.1, 0.95, 0.1)]
    return {name: {str(j): round(1 - (1 - j**r) ** b, 4) for j in grid} for name, (b, r) in bandings.items()}


def drop_rate_by_jaccard(corpora: list[Corpus]) -> dict:
    """Of every planted or quoting document, the share hf_llm drops, by the true 3-gram Jaccard with the document
    it was made from: the S-curve of LSH + verification together."""
    js, drops = [], []
    for corpus in corpora:
        dropped, _ = hf_llm_dedup(corpus.texts, DedupConfig())
        sets = _sets(corpus.texts, 3)
        for i in np.flatnonzero(corpus.related >= 0):
            if corpus.label[i] == "exact":
                continue
            js.append(_jaccard(sets[i], sets[corpus.related[i]]))
            drops.append(bool(dropped[i] or dropped[corpus.related[i]]))
    js, drops = np.array(js), np.array(drops)
    edges = np.round(np.arange(0.0, 1.01, 0.1), 2)
    out = {}
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (js >= lo) & (js < hi)
        if m.any():
            out[f"{lo:.1f}-{hi:.1f}"] = {"pairs": int(m.sum()), "dropped": round(float(drops[m].mean()), 3)}
    return out


# ---------------------------------------------------------------------------------------------------- speed


def speed_corpus(n: int, seed: int) -> list[str]:
    """n documents of 2-8 KB (uniform), glued from paragraphs of the prose and API-doc pools, 10% near copies."""
    rng = np.random.default_rng(seed)
    paras = [p for kind in ("prose", "tech_docs") for d in base_documents(kind, 5000, seed) for p in d]
    docs = []
    while len(docs) < n:
        target, doc = int(rng.integers(2000, 8001)), []
        while sum(len(p) + 2 for p in doc) < target:
            doc.append(paras[int(rng.integers(len(paras)))])
        docs.append("\n\n".join(doc)[:target])
    for i in rng.choice(n, size=n // 10, replace=False):  # some work for the clustering
        words = docs[i].split(" ")
        for k in rng.choice(len(words), size=max(1, len(words) // 20), replace=False):
            words[k] = "edited"
        docs[int(rng.integers(n))] = " ".join(words)
    return docs


def speed(n: int, seed: int, procs: int, have_datasketch: bool) -> dict:
    texts = speed_corpus(n, seed)
    out = {"documents": n, "mean_kb": round(float(np.mean([len(t.encode()) for t in texts])) / 1000, 2)}
    for p in sorted({1, procs}):
        _, t = hf_llm_dedup(texts, DedupConfig(), procs=p)
        out[f"hf_llm, {p} process{'es' if p > 1 else ''}"] = {
            "keys_s": round(t["keys_s"], 2), "decisions_s": round(t["decisions_s"], 2),
            "docs_per_s": round(n / (t["keys_s"] + t["decisions_s"]))}
    if have_datasketch:
        sub = texts[: n // 4]  # a quarter is enough to time it
        for ngram in (5, 3):
            _, t = datasketch_dedup(sub, ngram)
            out[f"datasketch {ngram}-gram, 1 process"] = {"docs_per_s": round(len(sub) / t["total_s"])}
    return out


def cluster_scale(n: int, seed: int = 1) -> dict:
    """Clustering alone (`near_pairs` + `dedup_decisions`, exact dedup off) on n random signatures with 10% planted near copies
    (~80% of slots shared)."""
    dedup = DedupConfig(exact=ExactDedupConfig(enabled=False))
    cfg = dedup.near
    rng = np.random.default_rng(seed)
    sig = rng.integers(0, 2**32, size=(n, cfg.num_perm), dtype=np.uint32)
    copies = rng.choice(n, size=n // 10, replace=False)
    originals = rng.integers(0, n, size=len(copies))
    keep_slots = rng.random((len(copies), cfg.num_perm)) < 0.8
    sig[copies] = np.where(keep_slots, sig[originals], sig[copies])
    t = time.perf_counter()
    dropped = int(one_task_decisions(np.zeros((n, 2), dtype=np.int64), sig, dedup).near.sum())
    s = time.perf_counter() - t
    return {"documents": n, "seconds": round(s, 2), "docs_per_s": round(n / s), "dropped": dropped}


# ------------------------------------------------------------------------------------------------- report


def readme_table(result: dict) -> str:
    first = next(iter(next(iter(result["quality"].values())).values()))
    names = [m for m in first if m not in ("documents", "mean_kb")]
    lines = ["| corpus | edits | " + " | ".join(f"{m} R / P" for m in names) + " |",
             "|---|---:|" + "---:|" * len(names)]
    for kind, rows in result["quality"].items():
        for rate, row in rows.items():
            cells = [f"{row[m]['recall_edit']:.2f} / {row[m]['precision']:.3f}" for m in names]
            lines.append(f"| {kind} ({row['documents']:,} docs) | {float(rate):.0%} | " + " | ".join(cells) + " |")
        row = rows["0.05"]
        cells = [f"{row[m]['recall_para80']:.2f} / –" for m in names]
        lines.append(f"| {kind} | ≥80% paragraphs | " + " | ".join(cells) + " |")
    lines += ["", "| throughput, 2-8 KB documents | docs/s |", "|---|---:|"]
    lines += [f"| {k} | {v['docs_per_s']:,} |" for k, v in result["speed"].items() if isinstance(v, dict)]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- every language


def datatrove_dedup(texts: list[str], language: str) -> tuple[np.ndarray, float]:
    """datatrove's MinHash decisions at its defaults (FineWeb's: word 5-grams from the language's word tokenizer,
    14 buckets x 8 hashes, a document is a duplicate when it shares a bucket), computed with datatrove's own
    `get_shingles`/`get_signature` in this process; clustering by connected components, as its cluster stage. The
    four on-disk stages are not run (ENV_NOTES: ~140 docs/s), so docs/s counts shingles and signatures only."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig

    from hf_llm.data.dedup import connected_components

    step = MinhashDedupSignature(output_folder="/tmp/unused-datatrove-sigs",
                                 config=MinhashConfig(hash_config=HashConfig(hash_fc="sha1")), language=language)
    step.get_shingles(texts[0])  # loads the word tokenizer (spacy, sudachi, jieba) before the clock starts
    t0 = time.perf_counter()
    buckets: dict = {}
    pairs = []
    for i, text in enumerate(texts):
        for b, band in enumerate(step.get_signature(step.get_shingles(text))):
            first = buckets.setdefault((b, tuple(band)), i)
            if first != i:
                pairs.append((first, i))
    seconds = time.perf_counter() - t0
    labels = connected_components(len(texts), np.array(sorted(set(pairs)), dtype=np.int64).reshape(-1, 2))
    return labels != np.arange(len(texts)), len(texts) / seconds


def multilingual(pages: int, seed: int, have_datasketch: bool, char_ngrams=(3,), languages=None) -> dict:
    """Recall per copy kind and language, false drops, docs/s on benchmarks/multilingual.py's corpus (8 languages,
    5 sites each). `hf_llm` is the default; `hf_llm[words]` the same with char_ngram=0 (the behaviour before
    shingles by script); `hf_llm[charN]` tuning variants; datasketch cuts words as hf_llm[words] does."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from multilingual import COPY_KINDS, LANGUAGES, dedup_corpus

    c = dedup_corpus(pages, seed, languages or LANGUAGES)
    runs = {"hf_llm[words]": lambda t: _hf(t, DedupConfig(near=NearDedupConfig(char_ngram=0)))}
    for n in char_ngrams:
        runs["hf_llm" if n == NearDedupConfig().char_ngram else f"hf_llm[char{n}]"] = (
            lambda t, n=n: _hf(t, DedupConfig(near=NearDedupConfig(char_ngram=n))))
    if have_datasketch:
        runs["datasketch 5-gram"] = lambda t: _ds(t, 5)
    kinds, langs = np.array(c.kind), np.array(c.language)
    out = {}
    skipped = []
    try:  # datatrove runs one language at a time (its word tokenizer is per language): copies are within one
        import datatrove  # noqa: F401

        def _dt(texts):
            dropped, rates = np.zeros(len(texts), dtype=bool), []
            for lang in dict.fromkeys(c.language):
                idx = np.flatnonzero(langs == lang)
                try:
                    d, rate = datatrove_dedup([texts[i] for i in idx], lang)
                except Exception as e:  # a tokenizer package missing (spacy, sudachipy, jieba, mecab-ko)
                    print(f"  datatrove {lang}: not run ({type(e).__name__}: {str(e)[:80]})", flush=True)
                    skipped.append(lang)
                    continue
                dropped[idx] = d
                rates.append(rate)
            return dropped, float(np.mean(rates)) if rates else 0.0

        runs["datatrove (language tokenizers)"] = _dt
    except ImportError:
        pass
    for name, run in runs.items():
        dropped, docs_per_s = run(c.texts)
        row = {"docs_per_s": round(docs_per_s), "recall": {}}
        not_run = skipped if name.startswith("datatrove") else []
        if not_run:
            row["not_run"] = list(not_run)
        for lang in dict.fromkeys(c.language):
            if lang in not_run:
                continue
            row["recall"][lang] = {k: round(float(dropped[(kinds == k) & (langs == lang)].mean()), 4)
                                   for k in COPY_KINDS if ((kinds == k) & (langs == lang)).any()}
        originals = kinds == "original"
        false = dropped & originals
        row["false_drops"] = int(false.sum())
        row["false_drops_by_language"] = {lang: int((false & (langs == lang)).sum()) for lang in dict.fromkeys(langs)}
        row["precision"] = round(float((dropped & ~originals).sum() / max(1, dropped.sum())), 4)
        out[name] = row
        print(f"  {name}: precision {row['precision']}, false drops {row['false_drops']}, {row['docs_per_s']} docs/s",
              flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=1200, help="base documents per corpus (tech_docs has ~650)")
    parser.add_argument("--seed", type=int, default=0, help="corpus seed (the tests use others)")
    parser.add_argument("--procs", type=int, default=2, help="processes for the throughput run")
    parser.add_argument("--speed-docs", type=int, default=6000, help="2-8 KB documents for the throughput run")
    parser.add_argument("--cluster-docs", type=int, default=1_000_000, help="signatures for the clustering scale run")
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument("--multilingual", type=int, default=0, metavar="PAGES",
                        help="only the multilingual run: PAGES pages per language (benchmarks/multilingual.py)")
    parser.add_argument("--char-ngrams", type=int, nargs="+", default=[3], help="char n-gram sizes to compare")
    parser.add_argument("--languages", nargs="+", help="languages of the multilingual run (default: all eight + en)")
    args = parser.parse_args(argv)
    try:
        import datasketch

        have_datasketch, ds_version = True, datasketch.__version__
    except ImportError:
        have_datasketch, ds_version = False, None
    if args.multilingual:
        result = {"seed": args.seed, "pages_per_language": args.multilingual, "load_average_at_start": os.getloadavg(),
                  "multilingual": multilingual(args.multilingual, args.seed, have_datasketch, args.char_ngrams,
                                               args.languages)}
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")
        return 0
    load0 = os.getloadavg()
    result: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "python": platform.python_version(), "load_average_at_start": load0},
                    "versions": {"numpy": np.__version__, "datasketch": ds_version},
                    "defaults": {k: v for k, v in vars(NearDedupConfig()).items()},
                    "datatrove": "not run (needs spacy; its on-disk stages ran at ~140 docs/s, see ENV_NOTES)"}
    print("quality (recall R of the planted copies, precision P of the drops):", flush=True)
    result["quality"] = quality(args.kinds, args.docs, args.seed, have_datasketch)
    result["paragraph_share_boundary"] = boundary(args.kinds, args.docs, args.seed, have_datasketch)
    corpora = [make_corpus(k, args.seed, n_base=args.docs, edit_rates=EDIT_RATES, quote_share=(0.2, 0.7))
               for k in args.kinds]
    result["jaccard"] = {c.kind: jaccard_table(c) for c in corpora}
    result["s_curve"] = s_curves(have_datasketch)
    result["drop_rate_by_true_jaccard"] = drop_rate_by_jaccard(corpora)
    print("throughput:", flush=True)
    result["speed"] = speed(args.speed_docs, args.seed, args.procs, have_datasketch)
    if args.cluster_docs:
        result["cluster_scale"] = cluster_scale(args.cluster_docs)
    result["machine"]["load_average_at_end"] = os.getloadavg()
    result["readme_table"] = readme_table(result)
    print(json.dumps({k: v for k, v in result.items() if k != "readme_table"}, indent=1))
    print(result["readme_table"])
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
