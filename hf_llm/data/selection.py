"""The pipeline's global decisions, made once over small per-document keys (never over the text itself).

Pass one over the sources collects `Keys` (a status, lengths, a 128-bit hash, a MinHash signature per document);
from them `select_documents` decides, for every document of every source: kept, or rejected and why (exact_dup,
near_dup, decontaminated — filters were decided per document already), and which kept documents are held out for
validation. `select_mixture` then decides how many times each training document is drawn. The decisions are arrays
indexed by the document's position in its source, so each task of the pack pass takes the slice of its documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from ..config.data_steps import DedupConfig
from .dedup import DedupDecisions
from .mixture import mixture_counts, mixture_passes, validation_size
from ..errors import DataError
from .steps import READ_REASONS

KEPT_CODE = 0  # the status code of a kept document (codes index Keys.reasons; reason None)
READ_PROBLEMS_SHOWN = 100  # locations of unreadable rows kept for the data card (all are counted)
STEPS = ("read", "clean", "exact_dedup", "near_dedup", "decontaminate")


def step_of(reason: str) -> str:
    """The pipeline step that rejects a document for `reason`."""
    if reason in READ_REASONS:
        return "read"
    steps = {"exact_dup": "exact_dedup", "near_dup": "near_dedup", "decontaminated": "decontaminate"}
    return steps.get(reason, "clean")


@dataclass
class Keys:
    """What pass one keeps per document: ~20 bytes plus the MinHash signature (on disk)."""

    reasons: list[Optional[str]] = field(default_factory=lambda: [None])  # code → reason; code 0 = kept
    status: list[np.ndarray] = field(default_factory=list)  # per source: int16 reason code per document
    chars_in: list[np.ndarray] = field(default_factory=list)
    chars_out: list[np.ndarray] = field(default_factory=list)
    hashes: list[np.ndarray] = field(default_factory=list)  # per source: (n, 2) int64, one 128-bit hash per row
    contaminated: list[np.ndarray] = field(default_factory=list)  # per source: int16, 0 = clean, k = eval set k-1
    pii: list[dict[str, int]] = field(default_factory=list)
    languages: list[str] = field(default_factory=list)  # code → ISO 639 language ("" = no letters)
    language: list[np.ndarray] = field(default_factory=list)  # per source: int16 code into `languages` per document
    words_out: list[np.ndarray] = field(default_factory=list)  # per source: words of the cleaned text (clean.py's)
    read_problems: list[str] = field(default_factory=list)  # first locations of unreadable rows (file:line)
    read_problem_count: int = 0

    def note_read_problem(self, where: str) -> None:
        self.read_problem_count += 1
        if len(self.read_problems) < READ_PROBLEMS_SHOWN:
            self.read_problems.append(where)

    def code(self, reason: Optional[str]) -> int:
        if reason is None:
            return KEPT_CODE
        try:
            return self.reasons.index(reason)
        except ValueError:
            self.reasons.append(reason)
            return len(self.reasons) - 1

    def language_code(self, language: str) -> int:
        try:
            return self.languages.index(language)
        except ValueError:
            self.languages.append(language)
            return len(self.languages) - 1

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum([len(s) for s in self.status])]).astype(np.int64)


def check_sources(keys: Keys, specs: list) -> None:
    """Every source holds records, and some with text: else a clear error naming the source."""
    from .sources import no_records_error, no_usable_text_error

    usable = [c for c, reason in enumerate(keys.reasons) if reason not in (*READ_REASONS, "empty")]
    for spec, status in zip(specs, keys.status):
        if not len(status):
            raise no_records_error(spec)
        if not np.isin(status, usable).any():
            codes, counts = np.unique(status, return_counts=True)
            raise no_usable_text_error(spec, {keys.reasons[c]: int(n) for c, n in zip(codes, counts)},
                                       keys.read_problems)


class SignatureFile:
    """MinHash signatures appended batch by batch to a file, then memory-mapped: memory stays flat in corpus size."""

    def __init__(self, path: Path, num_perm: int):
        self.path, self.num_perm, self.rows = path, num_perm, 0
        self.f = open(path, "wb")  # noqa: SIM115

    def append(self, sig: np.ndarray) -> None:
        self.f.write(np.ascontiguousarray(sig, dtype=np.uint32).tobytes())
        self.rows += len(sig)

    def close(self) -> Optional[np.ndarray]:
        self.f.close()
        if self.rows == 0:
            return np.zeros((0, self.num_perm), dtype=np.uint32)
        return np.memmap(self.path, dtype=np.uint32, mode="r", shape=(self.rows, self.num_perm))


@dataclass
class Selection:
    status: list[np.ndarray]  # per source: reason code per document (0 = kept)
    validation: list[np.ndarray]  # per source: bool, held out
    representative: list[np.ndarray]  # per source: global index of the kept copy for duplicates, else -1
    offsets: np.ndarray
    clusters: dict[str, dict]  # exact / near: cluster statistics for the data card

    def kept(self, i: int) -> np.ndarray:
        return self.status[i] == KEPT_CODE

    def train(self, i: int) -> np.ndarray:
        return (self.status[i] == KEPT_CODE) & ~self.validation[i]


def select_documents(keys: Keys, dedup: DedupConfig, decided: DedupDecisions, validation_fraction: float,
                     max_validation: int, seed: int) -> Selection:
    """Exact dedup, near dedup (both across all sources: `decided`, from the exact and near passes),
    decontamination, then the validation hold-out."""
    offsets = keys.offsets
    status = np.concatenate(keys.status) if keys.status else np.zeros(0, dtype=np.int16)
    clusters = {}
    rep = decided.representative  # the kept copy of each duplicate, -1 for every other document
    if dedup.exact.enabled:
        status[decided.exact] = keys.code("exact_dup")
        clusters["exact"] = _cluster_stats(decided.exact_cluster)
    if dedup.near.enabled:
        status[decided.near] = keys.code("near_dup")
        clusters["near"] = _cluster_stats(decided.near_cluster)
    if keys.contaminated:
        hit = (np.concatenate(keys.contaminated) > 0) & (status == KEPT_CODE)
        status[hit] = keys.code("decontaminated")
    kept = np.flatnonzero(status == KEPT_CODE)
    validation = np.zeros(len(status), dtype=bool)
    if len(kept) == 0:
        raise DataError(_nothing_left(keys, status))
    if len(kept) < 2:
        raise DataError(f"the corpus has {len(kept)} usable document(s); at least 2 are needed to hold out validation")
    n_val = validation_size(len(kept), validation_fraction, max_validation)
    validation[kept[np.random.default_rng(seed).choice(len(kept), n_val, replace=False)]] = True
    split = lambda a: [a[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]  # noqa: E731
    return Selection(split(status), split(validation), split(rep), offsets, clusters)


def _cluster_stats(cluster_of: np.ndarray) -> dict:
    """Clusters of two or more documents: how many, how many documents they remove, the largest sizes."""
    if len(cluster_of) == 0:
        return {"clusters": 0, "documents_removed": 0, "largest": []}
    ids, sizes = np.unique(cluster_of, return_counts=True)
    multi = sizes > 1
    order = np.argsort(-sizes[multi], kind="stable")[:5]
    return {
        "clusters": int(multi.sum()),
        "documents_removed": int((sizes[multi] - 1).sum()),
        "largest": [{"representative": int(ids[multi][k]), "size": int(sizes[multi][k])} for k in order],
    }


def _nothing_left(keys: Keys, status: np.ndarray) -> str:
    codes, counts = np.unique(status, return_counts=True)
    top = sorted(((int(n), keys.reasons[c]) for c, n in zip(codes, counts)), reverse=True)[:6]
    listing = ", ".join(f"{reason}: {n}" for n, reason in top)
    return (
        f"no document is left after reading, cleaning and deduplication ({len(status)} read; {listing}). "
        "Check the text_field and the input files, or loosen the filter named most often "
        "(e.g. data.clean.gopher_quality.min_words=10, data.clean.gopher_quality.enabled=false)"
    )


def select_mixture(selection: Selection, weights: list[float], mix_by: str, mean_tokens: Optional[list[float]],
                 seed: int, labels: list[str]) -> list[list[np.ndarray]]:
    """Per source, per pass: the document indices (within the source) drawn into the training mixture.

    One source is taken as it is. Several are drawn so that source i gets weights[i] / sum(weights) of the
    training documents (mix_by=documents) or tokens (mix_by=tokens, from each source's mean document length),
    keeping the total; a source with too little is repeated (several passes), one with too much subsampled.
    """
    train = [np.flatnonzero(selection.train(i)) for i in range(len(selection.status))]
    if len(train) == 1:
        return [[train[0]]]
    for label, t, w in zip(labels, train, weights):
        if w > 0 and len(t) == 0:
            raise DataError(f"source {label!r} has weight {w} but no training document left after cleaning and "
                            "deduplication (see rejects/ and data_card.json)")
    lengths = mean_tokens if mix_by == "tokens" else None
    counts = mixture_counts([len(t) for t in train], weights, lengths)
    return [[t[p] for p in mixture_passes(len(t), c, seed + i)] for i, (t, c) in enumerate(zip(train, counts))]
