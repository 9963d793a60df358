"""The passes of data preparation as datatrove pipeline steps (clean, exact, near, select; pack, merge: task_pack.py).

A pass's `run(data, rank, world_size)` does its task's share and writes it under work/PASS/ through
`hf_llm.io.publishing` (a temporary folder swapped into place when complete). The same objects run everywhere:
`executor.kind=process` calls each pass's one task here (hf_llm.data.executor.prepare_here); local, Slurm and Ray run
them as datatrove's tasks. Documents have a global index: sources in order, and within a source the tasks'
contiguous file shards in order, so every global decision is the same whatever the number of tasks (see `Layout`).
See hf_llm/data/executor.py for the passes and what each writes.
"""

from __future__ import annotations

import itertools
import multiprocessing
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from datatrove.pipeline.base import PipelineStep

from ..config import PrepareDataConfig
from ..io import publishing
from .batches import BATCH, iter_batches
from .selection import KEPT_CODE, Keys

PASSES = ("clean", "exact", "near", "select", "pack", "merge")  # in order; each waits for the one before
CHUNK = "chunk-{s}.arrow"
SIGNATURE_ROWS = 65_536  # signatures read from the memory map at once by the near pass (32 MB at 126 slots)  # one task's cleaned rows of source s
KEY_COLUMNS = ["reason", "detail", "chars_in", "chars_out", "hash_hi", "hash_lo", "contaminated_by",
               "pii_email", "pii_ip", "pii_phone", "language", "words_out"]


def shard(files: list[str], rank: int, world: int) -> list[str]:
    """Task `rank`'s contiguous share of `files`: concatenated in rank order they are `files` again."""
    return files[rank * len(files) // world : (rank + 1) * len(files) // world]


def save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


def worker_processes(num_proc: int) -> int:
    """`data.num_proc`, or 1 inside a datatrove worker: it is daemonic and may not start processes of its own."""
    return 1 if multiprocessing.current_process().daemon else num_proc


@dataclass
class Layout:
    """How many documents each (task, source) chunk holds, and where it starts in the global order."""

    counts: np.ndarray  # (tasks, sources)

    @classmethod
    def read(cls, root: Path, tasks: int) -> "Layout":
        return cls(np.array([load(root / "work" / "clean" / f"{r:05d}" / "counts.pkl") for r in range(tasks)],
                            dtype=np.int64).reshape(tasks, -1))

    def chunks(self) -> Iterator[tuple[int, int]]:
        """(task, source) in global order: source by source, tasks in order."""
        for s in range(self.counts.shape[1]):
            for r in range(self.counts.shape[0]):
                yield r, s

    def start(self, r: int, s: int) -> int:
        return int(self.counts[:, :s].sum() + self.counts[:r, s].sum())

    def source_start(self, r: int, s: int) -> int:
        """Where the chunk starts within its source."""
        return int(self.counts[:r, s].sum())

    @property
    def total(self) -> int:
        return int(self.counts.sum())


class HfLlmStep(PipelineStep):
    """One pass's task: `work(rank, world)` with the recipe, the resolved sources and the work folder."""

    type = "hf_llm"
    name = "step"

    def __init__(self, cfg: PrepareDataConfig, specs: list, root: str, tasks: dict[str, int]):
        super().__init__()
        self.cfg, self.specs, self.root, self.tasks = cfg, specs, Path(root), tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        started = time.perf_counter()
        with self.track_time():
            self.work(rank, world_size)
        seconds = self.root / "seconds"  # for the data card's timings (pass_timings), summed over tasks
        seconds.mkdir(parents=True, exist_ok=True)
        (seconds / f"{self.name}-{rank:05d}").write_text(f"{time.perf_counter() - started:.3f}")
        return iter(())

    def out(self, name: str) -> Path:
        return self.root / "work" / name

    def clean_dir(self, r: int) -> Path:
        return self.out("clean") / f"{r:05d}"

    def layout(self) -> Layout:
        return Layout.read(self.root, self.tasks["clean"])

    def tokenizer_made(self):
        """The select pass's tokenizer, from work/select/tokenizer/: one trained here reloads as the class it was
        built as (no auto classes: they import torch, seconds for a prepare_data run that needs none), a
        configured one through `load_tokenizer`."""
        from .tokenizer import load_tokenizer

        path = str(self.out("select") / "tokenizer")
        if self.cfg.tokenizer.name_or_path:
            return load_tokenizer(path)
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path)

    def work(self, rank: int, world: int) -> None:
        raise NotImplementedError


def pass_timings(root: Path, passes: tuple[str, ...]) -> dict[str, float]:
    """Seconds each pass's tasks spent in its step, summed over tasks (what `HfLlmStep.run` wrote)."""
    out: dict[str, float] = {}
    for name in passes:
        files = sorted((root / "seconds").glob(f"{name}-*"))
        out[f"{name}_seconds"] = round(sum(float(f.read_text()) for f in files), 3)
    return out


# ---------------------------------------------------------------------------------------------------- clean


class CleanStep(HfLlmStep):
    """Read this task's files of every source, clean each batch and compute its keys (`clean_keys_batch`)."""

    name = "clean"

    def work(self, rank: int, world: int) -> None:
        from datasets import Dataset

        from .decontam import build_index_from_config

        data = self.cfg.data
        index = build_index_from_config(data.decontam) if data.decontam.enabled else None
        with publishing(self.clean_dir(rank)) as tmp:
            cleaned = []
            for s, spec in enumerate(self.specs):
                path = tmp / CHUNK.format(s=s)
                write_cleaned(spec, shard(spec.files, rank, world), data, index, path)
                cleaned.append(Dataset.from_file(str(path)))
            keys = collect_keys(cleaned, data, tmp, index.names if index else [])  # signatures: tmp/minhash.u32
            save(keys, tmp / "keys.pkl")
            save([len(ds) for ds in cleaned], tmp / "counts.pkl")
            self.stat_update("documents_read", value=sum(len(ds) for ds in cleaned))


def write_cleaned(spec, files: list[str], data, index, path: Path) -> None:
    """The rows of `files` through `clean_keys_batch`, batch by batch, into one Arrow file; with `data.num_proc`
    worker processes a window of 2 batches per worker at a time (bounded memory), written in order."""
    from functools import partial

    from datasets.arrow_writer import ArrowWriter

    from .steps import clean_keys_batch, step_features

    writer = ArrowWriter(features=step_features(spec.features(), data.dedup), path=str(path))
    clean = partial(clean_keys_batch, clean=data.clean, dedup=data.dedup, index=index, decontam=data.decontam,
                    languages=data.languages, language_min_score=data.language_min_score)
    batches = record_batches(spec, files, data.strict)
    procs = worker_processes(data.num_proc)
    if procs > 1:
        with multiprocessing.get_context("fork").Pool(procs) as pool:
            while window := list(itertools.islice(batches, 2 * procs)):
                for out in pool.map(clean, window, chunksize=1):
                    writer.write_batch(out)
    else:
        for batch in batches:
            writer.write_batch(clean(batch))
    writer.finalize()


def record_batches(spec, files: list[str], strict: bool) -> Iterator[dict[str, list]]:
    """The records of `files` (`iter_records`) as column batches of `BATCH` rows."""
    from .readers import iter_records

    columns = list(spec.features())
    rows = iter_records(spec, files, strict) if files else iter(())
    while batch := list(itertools.islice(rows, BATCH)):
        yield {c: [row.get(c) for row in batch] for c in columns}


def collect_keys(cleaned: list, data, work: Path, eval_names: list[str]) -> Keys:
    """This task's cleaned chunks read once for their keys (~40 bytes a document); the MinHash signatures go to
    work/minhash.u32 (memory-mapped by the exact and near passes)."""
    from .selection import SignatureFile
    from .steps import READ_REASONS

    keys = Keys()
    near = data.dedup.near
    sigs = SignatureFile(work / "minhash.u32", near.num_perm) if near.enabled else None
    columns = KEY_COLUMNS + (["minhash"] if near.enabled else [])
    for ds in cleaned:
        status, chars_in, chars_out, hashes, contaminated, language, words = [], [], [], [], [], [], []
        pii = {"email": 0, "ip": 0, "phone": 0}
        for _, b in iter_batches(ds, columns, desc="clean + keys"):
            status.append(np.array([keys.code(r) for r in b["reason"]], dtype=np.int16))
            for reason, detail in zip(b["reason"], b["detail"]):
                if reason in READ_REASONS:
                    keys.note_read_problem(detail)
            chars_in.append(np.asarray(b["chars_in"], dtype=np.int64))
            chars_out.append(np.asarray(b["chars_out"], dtype=np.int64))
            language.append(np.array([keys.language_code(x) for x in b["language"]], dtype=np.int16))
            words.append(np.asarray(b["words_out"], dtype=np.int64))
            hashes.append(np.stack([np.asarray(b["hash_hi"], dtype=np.int64),
                                    np.asarray(b["hash_lo"], dtype=np.int64)], axis=1))
            contaminated.append(np.array([0 if n is None else eval_names.index(n) + 1 for n in b["contaminated_by"]],
                                         dtype=np.int16))
            for kind in pii:
                pii[kind] += int(np.asarray(b[f"pii_{kind}"]).sum())
            if sigs is not None:
                sigs.append(np.asarray(b["minhash"], dtype=np.uint32).reshape(-1, near.num_perm))
        cat = lambda parts, dtype, shape=(0,): np.concatenate(parts) if parts else np.zeros(shape, dtype)  # noqa: E731
        keys.status.append(cat(status, np.int16))
        keys.chars_in.append(cat(chars_in, np.int64))
        keys.chars_out.append(cat(chars_out, np.int64))
        keys.hashes.append(cat(hashes, np.int64, (0, 2)))
        keys.contaminated.append(cat(contaminated, np.int16))
        keys.language.append(cat(language, np.int16))
        keys.words_out.append(cat(words, np.int64))
        keys.pii.append(pii)
    if sigs is not None:
        sigs.close()
    return keys


def task_keys(root: Path, r: int) -> Keys:
    return load(root / "work" / "clean" / f"{r:05d}" / "keys.pkl")


def signatures(root: Path, r: int, rows: int, num_perm: int) -> np.ndarray:
    path = root / "work" / "clean" / f"{r:05d}" / "minhash.u32"
    if rows == 0:
        return np.zeros((0, num_perm), dtype=np.uint32)
    return np.memmap(path, dtype=np.uint32, mode="r", shape=(rows, num_perm))


# ---------------------------------------------------------------------------------------------------- exact


class ExactStep(HfLlmStep):
    """Exact dedup over one hash partition: every copy of a text has its hash, so copies meet in one task."""

    name = "exact"

    def work(self, rank: int, world: int) -> None:
        from .dedup import exact_partition

        lay = self.layout()
        idx, hashes = [], []
        for r in range(lay.counts.shape[0]):
            keys = task_keys(self.root, r)
            for s in range(lay.counts.shape[1]):
                h = keys.hashes[s]
                mine = np.flatnonzero((keys.status[s] == KEPT_CODE) & (h[:, 1] % world == rank))
                idx.append(lay.start(r, s) + mine)
                hashes.append(h[mine])
        idx_all = np.concatenate(idx) if idx else np.zeros(0, np.int64)
        order = np.argsort(idx_all, kind="stable")  # the first copy in the global order is the one kept
        h = np.concatenate(hashes)[order] if hashes else np.zeros((0, 2), np.int64)
        part = exact_partition(idx_all[order], h)
        with publishing(self.out("exact") / f"{rank:05d}") as tmp:
            save(part, tmp / "exact.pkl")
        self.stat_update("exact_dup", value=len(part["dropped"]))


def exact_results(root: Path, tasks: int) -> list[dict]:
    return [load(root / "work" / "exact" / f"{k:05d}" / "exact.pkl") for k in range(tasks)]


# ----------------------------------------------------------------------------------------------------- near


class NearStep(HfLlmStep):
    """Near dedup over a group of LSH bands: `dedup.py`'s band keys and buckets over every exact survivor, candidate
    pairs verified with the estimated Jaccard. The union of the groups' pairs is the in-process candidate set."""

    name = "near"

    def work(self, rank: int, world: int) -> None:
        from .dedup import band_keys, near_pairs

        near = self.cfg.data.dedup.near
        pairs = np.zeros((0, 2), dtype=np.int64)
        if near.enabled:
            lay = self.layout()
            dropped = np.zeros(lay.total, dtype=bool)
            for res in exact_results(self.root, self.tasks["exact"]):
                dropped[res["dropped"]] = True
            bands = [b for b in range(near.bands) if b % world == rank]
            cols = np.concatenate([np.arange(b * near.rows, (b + 1) * near.rows) for b in bands])
            table = SignatureTable(self.root, lay, near.num_perm)
            cand, keys = [], []
            for r, s in lay.chunks():
                task = task_keys(self.root, r)
                start = lay.start(r, s)
                local = np.flatnonzero((task.status[s] == KEPT_CODE) & ~dropped[start : start + lay.counts[r, s]])
                cand.append(start + local)
                sig = table.chunk(r, s)
                for a in range(0, len(local), SIGNATURE_ROWS):  # only 8 bytes a band stay per document
                    keys.append(band_keys(sig[local[a : a + SIGNATURE_ROWS]][:, cols], near.rows))
            cand_all = np.concatenate(cand)
            keys_all = np.concatenate(keys, axis=1) if keys else np.zeros((len(bands), 0), dtype=np.uint64)
            local_pairs = near_pairs(keys_all, lambda rows: table.rows(cand_all[rows]), near)
            pairs = cand_all[local_pairs] if len(local_pairs) else pairs
        with publishing(self.out("near") / f"{rank:05d}") as tmp:
            np.save(tmp / "pairs.npy", pairs)
        self.stat_update("near_pairs", value=len(pairs))


class SignatureTable:
    """The clean tasks' MinHash signatures, memory-mapped; rows by global index."""

    def __init__(self, root: Path, lay: Layout, num_perm: int):
        self.root, self.lay, self.num_perm = root, lay, num_perm
        self.maps = {r: signatures(root, r, int(lay.counts[r].sum()), num_perm) for r in range(lay.counts.shape[0])}

    def chunk(self, r: int, s: int) -> np.ndarray:
        start = int(self.lay.counts[r, :s].sum())  # within the task's file, sources follow each other
        return self.maps[r][start : start + int(self.lay.counts[r, s])]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), self.num_perm), dtype=np.uint32)
        for r, s in self.lay.chunks():
            a = self.lay.start(r, s)
            sel = np.flatnonzero((idx >= a) & (idx < a + self.lay.counts[r, s]))
            if len(sel):
                out[sel] = self.chunk(r, s)[idx[sel] - a]
        return out


# --------------------------------------------------------------------------------------------------- select


class SelectStep(HfLlmStep):
    """The global decisions: the dedup decisions from the exact and near passes, `select_documents` (decontamination,
    validation held out by document), the tokenizer (trained on the training documents), the mixture, and the
    origins that duplicates' details name; then each pack task's share of them."""

    name = "select"

    def work(self, rank: int, world: int) -> None:
        from .dedup import dedup_decisions
        from .pack import check_packing
        from .selection import select_documents, select_mixture

        data = self.cfg.data
        lay = self.layout()
        keys = merged_keys(self.root, lay, self.specs)
        status = np.concatenate(keys.status)
        pairs = None
        if data.dedup.near.enabled:
            pairs = np.concatenate([np.load(self.out("near") / f"{k:05d}" / "pairs.npy")
                                    for k in range(self.tasks["near"])])
            pairs = np.unique(pairs, axis=0)
        decided = dedup_decisions(lay.total, status == KEPT_CODE, exact_results(self.root, self.tasks["exact"]),
                                  pairs, data.dedup)
        selection = select_documents(keys, data.dedup, decided, data.validation_fraction,
                                     data.max_validation_documents, data.seed)
        tokenizer = self.tokenizer(lay, selection)
        check_packing(data.packing, tokenizer.pad_token_id)  # before any document is tokenised
        mean_tokens = None
        if data.mix_by == "tokens" and len(self.specs) > 1:
            mean_tokens = self.mean_tokens(lay, selection, tokenizer)
        passes = select_mixture(selection, [s.weight for s in data.sources], data.mix_by, mean_tokens, data.seed,
                                [s.label for s in self.specs])
        reps = np.unique(np.concatenate([r[r >= 0] for r in selection.representative]))
        origins = self.origins(lay, reps)
        with publishing(self.out("select")) as tmp:
            tokenizer.save_pretrained(str(tmp / "tokenizer"))
            save({"keys": keys, "selection": selection, "passes": passes, "origins": origins, "counts": lay.counts},
                 tmp / "selection.pkl")
            for r in range(lay.counts.shape[0]):
                save(task_selection(lay, selection, passes, keys, origins, r), tmp / f"task-{r:05d}.pkl")

    def chunk(self, r: int, s: int):
        from datasets import Dataset

        return Dataset.from_file(str(self.clean_dir(r) / CHUNK.format(s=s)))

    def origins(self, lay: Layout, reps: np.ndarray) -> dict[int, str]:
        """The origin (file:line) of every kept copy a duplicate's detail names."""
        out: dict[int, str] = {}
        for r, s in lay.chunks():
            a = lay.start(r, s)
            sel = reps[(reps >= a) & (reps < a + lay.counts[r, s])]
            if len(sel):
                out.update(zip(sel.tolist(), self.chunk(r, s).select(sel - a)["origin"]))
        return out

    def train_texts(self, lay: Layout, selection, s: int, limit=None, desc: str = "") -> Iterator[list[str]]:
        """Batches of source s's training documents in the global order, at most `limit` documents."""
        left = limit
        for r in range(lay.counts.shape[0]):
            a = lay.source_start(r, s)
            rows = np.flatnonzero(selection.train(s)[a : a + lay.counts[r, s]])
            if left is not None:
                rows = rows[:left]
                left -= len(rows)
            if len(rows):
                for _, b in iter_batches(self.chunk(r, s), ["text"], rows, desc=desc):
                    yield b["text"]

    def tokenizer(self, lay: Layout, selection):
        """The configured tokenizer, or a byte-level BPE trained on the training documents (not validation)."""
        from .tokenizer import load_tokenizer, train_bpe_tokenizer

        tok_cfg = self.cfg.tokenizer
        if tok_cfg.name_or_path:
            return load_tokenizer(tok_cfg.name_or_path)

        def texts() -> Iterator[str]:
            left = tok_cfg.max_train_documents
            for s in range(lay.counts.shape[1]):
                for batch in self.train_texts(lay, selection, s, left, desc="tokenizer"):
                    if left is not None:
                        left -= len(batch)
                    yield from batch

        return train_bpe_tokenizer(texts(), tok_cfg)

    def mean_tokens(self, lay: Layout, selection, tokenizer) -> list[float]:
        """Each source's mean tokens per training document (`data.mix_by=tokens`), counted as the pack pass
        tokenises (`tokenize_batch`: EOS, and BOS where the tokenizer's family adds one)."""
        from .steps import tokenize_batch
        from .tokenizer import BatchEncoder, adds_bos

        encoder, bos = BatchEncoder(tokenizer), tokenizer.bos_token_id if adds_bos(tokenizer) else None
        means = []
        for s in range(lay.counts.shape[1]):
            total = n = 0
            for texts in self.train_texts(lay, selection, s, desc="count tokens"):
                k = len(texts)
                counts = tokenize_batch(texts, [None] * k, list(range(k)), encoder, np.zeros(k, dtype=bool),
                                        tokenizer.eos_token_id, bos, len(tokenizer))["n_tokens"]
                total, n = total + int(np.asarray(counts).sum()), n + k
            means.append(total / n if n else 0.0)
        return means


def merged_keys(root: Path, lay: Layout, specs: list) -> Keys:
    """The tasks' keys as one `Keys` per source in the global order, reason codes renumbered to one table."""
    from .selection import check_sources

    keys = Keys()
    parts: dict[str, list[list]] = {k: [[] for _ in specs] for k in ("status", "chars_in", "chars_out", "hashes",
                                                                      "contaminated", "language", "words_out")}
    pii = [{"email": 0, "ip": 0, "phone": 0} for _ in specs]
    for r, s in lay.chunks():
        k = task_keys(root, r)
        remap = np.array([keys.code(reason) for reason in k.reasons], dtype=np.int16)
        parts["status"][s].append(remap[k.status[s]])
        for name in ("chars_in", "chars_out", "hashes", "contaminated", "words_out"):
            parts[name][s].append(getattr(k, name)[s])
        languages = np.array([keys.language_code(x) for x in k.languages], dtype=np.int16)  # one code table
        parts["language"][s].append(languages[k.language[s]])
        for kind in pii[s]:
            pii[s][kind] += k.pii[s][kind]
        if s == 0:  # read problems are counted per task, over all its sources
            for where in k.read_problems:
                keys.note_read_problem(where)
            keys.read_problem_count += k.read_problem_count - len(k.read_problems)
    for name, per_source in parts.items():
        setattr(keys, name, [np.concatenate(p) for p in per_source])
    keys.pii = pii
    check_sources(keys, specs)
    return keys


def task_selection(lay: Layout, selection, passes: list, keys: Keys, origins: dict, r: int) -> dict:
    """What task r's pack step needs of the selection: its chunks' decisions, mixture rows and duplicate origins."""
    out: dict[str, list] = {"status": [], "validation": [], "representative": [], "chars_out": [], "passes": []}
    for s in range(lay.counts.shape[1]):
        a, b = lay.source_start(r, s), lay.source_start(r, s) + int(lay.counts[r, s])
        out["status"].append(selection.status[s][a:b])
        out["validation"].append(selection.validation[s][a:b])
        out["representative"].append(selection.representative[s][a:b])
        out["chars_out"].append(keys.chars_out[s][a:b])
        out["passes"].append([p[(p >= a) & (p < b)] - a for p in passes[s]])
    reps = np.unique(np.concatenate([x[x >= 0] for x in out["representative"]]))
    return {**out, "reasons": list(keys.reasons), "origins": {int(i): origins[int(i)] for i in reps}}


__all__ = ["PASSES", "CleanStep", "ExactStep", "HfLlmStep", "Layout", "NearStep", "SelectStep", "pass_timings", "shard"]
