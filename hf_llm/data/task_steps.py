"""The executor's stages as datatrove pipeline steps (clean, exact, near, select; pack and merge: task_pack.py).

A step's `run(data, rank, world_size)` does its task's share and writes it under work/STAGE/ through `task_output`
(a temporary folder renamed into place when complete). Documents have a global index: sources in order, and
within a source the tasks' contiguous file shards in order, i.e. the in-process order (see `Layout`).
See hf_llm/data/executor.py for the stages and what each writes.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterator

import numpy as np
from datatrove.pipeline.base import PipelineStep

from ..config import PrepareDataConfig
from ..errors import DataError
from .batches import BATCH, iter_batches
from .selection import KEPT_CODE, Keys

CHUNK = "chunk-{s}.arrow"  # one task's cleaned rows of source s


def shard(files: list[str], rank: int, world: int) -> list[str]:
    """Task `rank`'s contiguous share of `files`: concatenated in rank order they are `files` again."""
    return files[rank * len(files) // world : (rank + 1) * len(files) // world]


@contextlib.contextmanager
def task_output(final: Path) -> Iterator[Path]:
    """A folder written in full or not at all: built under a temporary name, renamed to `final` at the end."""
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed attempt at this same task
        shutil.rmtree(stale, ignore_errors=True)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.mkdir(parents=True)
    yield tmp
    shutil.rmtree(final, ignore_errors=True)  # a complete output whose task was not yet marked complete
    os.replace(tmp, final)


def save(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)


def load(path: Path) -> Any:
    with open(path, "rb") as f:
        return pickle.load(f)


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
    """One stage's task: `work(rank, world)` with the recipe, the resolved sources and the work folder."""

    type = "hf_llm"
    name = "step"

    def __init__(self, cfg: PrepareDataConfig, specs: list, root: str, tasks: dict[str, int]):
        super().__init__()
        self.cfg, self.specs, self.root, self.tasks = cfg, specs, Path(root), tasks

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with self.track_time():
            self.work(rank, world_size)
        return iter(())

    def out(self, stage: str) -> Path:
        return self.root / "work" / stage

    def clean_dir(self, r: int) -> Path:
        return self.out("clean") / f"{r:05d}"

    def layout(self) -> Layout:
        return Layout.read(self.root, self.tasks["clean"])

    def work(self, rank: int, world: int) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- clean


class CleanStep(HfLlmStep):
    """Read this task's files of every source, clean each batch and compute its keys (`clean_keys_batch`)."""

    name = "clean"

    def work(self, rank: int, world: int) -> None:
        from datasets import Dataset

        from .decontam import build_index_from_config
        from .pipeline import collect_keys

        data = self.cfg.data
        index = build_index_from_config(data.decontam) if data.decontam.enabled else None
        with task_output(self.clean_dir(rank)) as tmp:
            cleaned = []
            for s, spec in enumerate(self.specs):
                path = tmp / CHUNK.format(s=s)
                write_cleaned(spec, shard(spec.files, rank, world), data, index, path)
                cleaned.append(Dataset.from_file(str(path)))
            keys = collect_keys(cleaned, data, tmp, index.names if index else [])
            keys.signatures = None  # on disk as tmp/minhash.u32, memory-mapped by the next stages
            save(keys, tmp / "keys.pkl")
            save([len(ds) for ds in cleaned], tmp / "counts.pkl")
            self.stat_update("documents_read", value=sum(len(ds) for ds in cleaned))


def write_cleaned(spec, files: list[str], data, index, path: Path) -> None:
    """The rows of `files` through `clean_keys_batch`, batch by batch, into one Arrow file."""
    from datasets.arrow_writer import ArrowWriter

    from .readers import iter_records
    from .steps import clean_keys_batch, step_features

    columns = list(spec.features())
    writer = ArrowWriter(features=step_features(spec.features(), data.dedup), path=str(path))
    batch: list[dict] = []

    def flush() -> None:
        cols = {c: [row.get(c) for row in batch] for c in columns}
        writer.write_batch(clean_keys_batch(cols, clean=data.clean, dedup=data.dedup, index=index,
                                            decontam=data.decontam, languages=data.languages,
                                            language_min_score=data.language_min_score))
        batch.clear()

    for record in iter_records(spec, files, data.strict) if files else ():
        batch.append(record)
        if len(batch) == BATCH:
            flush()
    if batch:
        flush()
    writer.finalize()


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
        from .dedup import find_exact_duplicates

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
        idx_all = idx_all[order]
        h = np.concatenate(hashes)[order] if hashes else np.zeros((0, 2), np.int64)
        records = np.ascontiguousarray(h, dtype=np.int64).view([("hi", "<i8"), ("lo", "<i8")]).ravel()
        cluster, drop = find_exact_duplicates(records) if self.cfg.data.dedup.exact.enabled else ([], [])
        drop = np.asarray(drop, dtype=np.int64)
        with task_output(self.out("exact") / f"{rank:05d}") as tmp:
            cluster = np.asarray(cluster, dtype=np.int64)
            save({"candidates": idx_all, "cluster": idx_all[cluster] if len(cluster) else cluster,
                  "dropped": idx_all[drop], "representative": idx_all[cluster[drop]] if len(drop) else drop},
                 tmp / "exact.pkl")
        self.stat_update("exact_dup", value=len(drop))


def exact_results(root: Path, tasks: int) -> list[dict]:
    return [load(root / "work" / "exact" / f"{k:05d}" / "exact.pkl") for k in range(tasks)]


# ----------------------------------------------------------------------------------------------------- near


class NearStep(HfLlmStep):
    """Near dedup over a group of LSH bands: `dedup.py`'s band keys and buckets over every exact survivor, candidate
    pairs verified with the estimated Jaccard. The union of the groups' pairs is the in-process candidate set."""

    name = "near"

    def work(self, rank: int, world: int) -> None:
        from .dedup import _band_keys, _bucket_pairs, estimated_jaccard

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
            cand, band_keys = [], []
            for r, s in lay.chunks():
                keys = task_keys(self.root, r)
                start = lay.start(r, s)
                local = np.flatnonzero((keys.status[s] == KEPT_CODE) & ~dropped[start : start + lay.counts[r, s]])
                sig = table.chunk(r, s)[local][:, cols]
                cand.append(lay.start(r, s) + local)
                band_keys.append(_band_keys(sig, SimpleNamespace(bands=len(bands), rows=near.rows)))
            cand_all = np.concatenate(cand)
            keys_all = np.concatenate(band_keys, axis=1)
            n = len(cand_all)
            codes = np.unique(np.concatenate([_bucket_pairs(k) for k in keys_all])) if n else np.zeros(0, np.int64)
            local_pairs = np.stack([codes // max(n, 1), codes % max(n, 1)], axis=1)
            if near.verify and len(local_pairs):
                members = np.unique(local_pairs)
                sig = table.rows(cand_all[members])
                compact = np.searchsorted(members, local_pairs)
                local_pairs = local_pairs[estimated_jaccard(sig, compact) >= near.threshold]
            pairs = cand_all[local_pairs] if len(local_pairs) else pairs
        with task_output(self.out("near") / f"{rank:05d}") as tmp:
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
    """The global decisions, as in process: `select_documents` on the keys with the sharded dedup decisions, the
    mixture, the origins that duplicates' details name, and the tokenizer (trained on the training documents)."""

    name = "select"

    def work(self, rank: int, world: int) -> None:
        from .selection import select_documents, select_mixture

        data = self.cfg.data
        lay = self.layout()
        keys = merged_keys(self.root, lay, self.specs)
        decided = dedup_from_shards(self.root, lay, keys, self.tasks, data.dedup)
        selection = select_documents(keys, data.dedup, data.validation_fraction, data.max_validation_documents, data.seed,
                              decided=decided)
        passes = select_mixture(selection, [s.weight for s in data.sources], data.mix_by, None, data.seed,
                              [s.label for s in self.specs])
        reps = np.unique(np.concatenate([r[r >= 0] for r in selection.representative]))
        origins = self.origins(lay, reps)
        with task_output(self.out("select")) as tmp:
            tokenizer = self.tokenizer(lay, selection)
            if data.packing == "best_fit" and tokenizer.pad_token_id is None:
                raise DataError("data.packing=best_fit needs a tokenizer with a pad token; set one or use "
                                "packing=concat")
            tokenizer.save_pretrained(str(tmp / "tokenizer"))
            save({"keys": keys, "selection": selection, "passes": passes, "origins": origins, "counts": lay.counts},
                 tmp / "selection.pkl")
            for r in range(lay.counts.shape[0]):
                save(task_selection(lay, selection, passes, keys, origins, r), tmp / f"task-{r:05d}.pkl")

    def origins(self, lay: Layout, reps: np.ndarray) -> dict[int, str]:
        """The origin (file:line) of every kept copy a duplicate's detail names."""
        from datasets import Dataset

        out: dict[int, str] = {}
        for r, s in lay.chunks():
            a = lay.start(r, s)
            sel = reps[(reps >= a) & (reps < a + lay.counts[r, s])]
            if len(sel):
                ds = Dataset.from_file(str(self.clean_dir(r) / CHUNK.format(s=s)))
                out.update(zip(sel.tolist(), ds.select(sel - a)["origin"]))
        return out

    def tokenizer(self, lay: Layout, selection):
        """As `pipeline._tokenizer`: the configured one, or a BPE trained on the training documents in order."""
        from datasets import Dataset

        from .tokenizer import load_tokenizer, train_bpe_tokenizer

        tok_cfg = self.cfg.tokenizer
        if tok_cfg.name_or_path:
            return load_tokenizer(tok_cfg.name_or_path)

        def texts() -> Iterator[str]:
            left = tok_cfg.max_train_documents
            for s in range(lay.counts.shape[1]):
                for r in range(lay.counts.shape[0]):
                    a = lay.source_start(r, s)
                    rows = np.flatnonzero(selection.train(s)[a : a + lay.counts[r, s]])
                    if left is not None:
                        rows = rows[:left]
                        left -= len(rows)
                    if len(rows):
                        ds = Dataset.from_file(str(self.clean_dir(r) / CHUNK.format(s=s)))
                        for _, b in iter_batches(ds, ["text"], rows):
                            yield from b["text"]

        return train_bpe_tokenizer(texts(), tok_cfg)


def merged_keys(root: Path, lay: Layout, specs: list) -> Keys:
    """The tasks' keys as one `Keys` per source in the global order, reason codes renumbered to one table."""
    from .sources import no_records_error as no_records
    from .steps import READ_REASONS

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
            keys.read_problem_count += k.read_problem_count
            keys.read_problems.extend(k.read_problems[: 100 - len(keys.read_problems)])
    for name, per_source in parts.items():
        setattr(keys, name, [np.concatenate(p) for p in per_source])
    keys.pii = pii
    for spec, status in zip(specs, keys.status):
        if not len(status):
            raise no_records(spec)
        usable = [c for c, reason in enumerate(keys.reasons) if reason not in (*READ_REASONS, "empty")]
        if not np.isin(status, usable).any():
            raise DataError(f"source {spec.path!r} has no non-empty text in column {spec.text_field!r} "
                            f"({len(status)} rows read; see rejects/ of a non-strict run for each row's reason)")
    return keys


def dedup_from_shards(root: Path, lay: Layout, keys: Keys, tasks: dict[str, int], dedup):
    """`DedupDecisions` from the exact partitions and the near band groups, as `dedup_decisions` makes them."""
    from .dedup import DedupDecisions, connected_components

    n = lay.total
    exact, near = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    rep = np.full(n, -1, dtype=np.int64)
    exact_cluster = near_cluster = np.zeros(0, dtype=np.int64)
    results = exact_results(root, tasks["exact"])
    if dedup.exact.enabled:
        for res in results:
            exact[res["dropped"]] = True
            rep[res["dropped"]] = res["representative"]
        exact_cluster = np.concatenate([res["cluster"] for res in results])
    if dedup.near.enabled:
        status = np.concatenate(keys.status)
        cand = np.flatnonzero((status == KEPT_CODE) & ~exact)
        pairs = [np.load(root / "work" / "near" / f"{k:05d}" / "pairs.npy") for k in range(tasks["near"])]
        labels = connected_components(n, np.unique(np.concatenate(pairs), axis=0))
        near_cluster = labels[cand]
        drop = cand[labels[cand] != cand]
        near[drop] = True
        rep[drop] = labels[drop]
    return DedupDecisions(exact, near, rep, exact_cluster, near_cluster)


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


__all__ = ["HfLlmStep", "Layout", "shard", "task_output"]
