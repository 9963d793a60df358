"""Decontamination: 13-gram overlap with eval examples, eval sources from local files, Hub spec parsing."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from datasets import Dataset
from omegaconf import OmegaConf

from hf_llm.errors import ConfigError
from hf_llm.data.decontam import (
    DecontamConfig,
    build_index_from_config,
    build_ngram_index,
    contamination_batch,
    load_eval_texts,
    parse_eval_dataset_spec,
    read_eval_file,
)
from hf_llm.errors import DataError

EVAL_Q = "Natalia sold clips to forty eight of her friends in April and then she sold half as many clips in May"
OTHER_Q = "Which planet in the solar system has the longest day measured in hours of the local rotation period"
FILLER = "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor"


def flag(texts: list[str], index, cfg: DecontamConfig | None = None) -> list[str | None]:
    return contamination_batch({"text": texts}, index, cfg or DecontamConfig())["contaminated_by"]


@pytest.fixture()
def index():
    return build_ngram_index({"gsm8k": [EVAL_Q], "astro": [OTHER_Q, "too short to index"]}, ngram=13)


def test_shared_13gram_is_flagged_with_the_eval_name(index):
    words = EVAL_Q.split()
    leak = f"{FILLER} {' '.join(words[3:16])} {FILLER}"  # exactly 13 consecutive eval words
    near_miss = f"{FILLER} {' '.join(words[3:15])} {FILLER}"  # only 12
    other = f"{FILLER} {' '.join(OTHER_Q.split()[:13])}"
    assert flag([leak, near_miss, other, FILLER], index) == ["gsm8k", None, "astro", None]


def test_case_punctuation_and_spacing_do_not_hide_a_leak(index):
    words = EVAL_Q.split()[:13]
    shouty = "  ".join(w.upper() + "," for w in words[:7]) + "\n" + " -- ".join(words[7:]) + "!"
    assert flag([shouty], index) == ["gsm8k"]
    case_sensitive = DecontamConfig(lowercase=False)
    strict = build_ngram_index({"gsm8k": [EVAL_Q]}, ngram=13, lowercase=False)
    assert flag([" ".join(w.upper() for w in words)], strict, case_sensitive) == [None]
    assert flag([" ".join(words)], strict, case_sensitive) == ["gsm8k"]


def test_short_and_empty_documents_never_crash(index):
    assert flag(["", "Natalia sold clips", None], index) == [None, None, None]
    assert flag([], index) == []
    assert index.short_examples == {"gsm8k": 0, "astro": 1}  # "too short to index" is counted, not matched
    empty = build_ngram_index({}, ngram=13)
    assert flag([EVAL_Q], empty) == [None]


def test_config_and_index_must_agree(index):
    with pytest.raises(ConfigError, match="rebuild the index"):
        flag([EVAL_Q], index, DecontamConfig(ngram=8))


def test_config_is_an_omegaconf_structured_config():
    cfg = OmegaConf.merge(OmegaConf.structured(DecontamConfig), {"enabled": True, "eval_files": ["a.txt"]})
    assert OmegaConf.to_object(cfg) == DecontamConfig(enabled=True, eval_files=["a.txt"])
    with pytest.raises(ConfigError, match="ngram must be >= 1"):
        DecontamConfig(ngram=0)


def test_eval_files_txt_and_jsonl(tmp_path: Path):
    (tmp_path / "a.txt").write_text(f"{EVAL_Q}\n\n{OTHER_Q}\n")
    rows = [
        {"question": EVAL_Q, "choices": ["x", "y"], "text": "t1"},
        {"question": OTHER_Q, "choices": ["z"], "text": "t2"},
    ]
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(json.dumps(rows[0]) + "\n")
    assert read_eval_file(str(tmp_path / "a.txt")) == [EVAL_Q, OTHER_Q]  # blank lines skipped
    assert read_eval_file(str(tmp_path / "b.jsonl")) == ["t1", "t2"]  # default field
    assert read_eval_file(f"{tmp_path / 'b.jsonl'}:question") == [EVAL_Q, OTHER_Q]
    assert read_eval_file(f"{tmp_path / 'b.jsonl'}:choices") == ["x", "y", "z"]  # a list: one example each
    assert read_eval_file(f"{tmp_path / 'c.jsonl.gz'}:question") == [EVAL_Q]

    cfg = DecontamConfig(enabled=True, eval_files=[str(tmp_path / "a.txt"), f"{tmp_path / 'b.jsonl'}:question"])
    assert list(load_eval_texts(cfg)) == cfg.eval_files
    index = build_index_from_config(cfg)
    assert flag([EVAL_Q], index, cfg) == [str(tmp_path / "a.txt")]  # the first listed source wins a shared n-gram


def test_eval_file_errors_are_clear(tmp_path: Path):
    with pytest.raises(DataError, match="missing.txt' not found"):
        read_eval_file(str(tmp_path / "missing.txt"))
    (tmp_path / "b.jsonl").write_text(json.dumps({"question": EVAL_Q}) + "\n\n{broken\n")
    with pytest.raises(DataError, match="line 1 has no field 'text'"):
        read_eval_file(str(tmp_path / "b.jsonl"))
    with pytest.raises(DataError, match="line 3 is not valid JSON"):
        read_eval_file(f"{tmp_path / 'b.jsonl'}:question")
    (tmp_path / "c.csv").write_text("x\n")
    with pytest.raises(DataError, match=".txt or .jsonl"):
        read_eval_file(str(tmp_path / "c.csv"))
    with pytest.raises(ConfigError, match="no eval_files or eval_datasets"):
        build_index_from_config(DecontamConfig(enabled=True))


def test_hub_spec_syntax():
    assert parse_eval_dataset_spec("cais/mmlu:all:test:question") == ("cais/mmlu", "all", "test", "question")
    assert parse_eval_dataset_spec("Rowan/hellaswag:validation:ctx") == ("Rowan/hellaswag", None, "validation", "ctx")
    for bad in ("cais/mmlu", "a:b", "a::test:q", "a:b:c:d:e"):
        with pytest.raises(ConfigError, match="name\\[:config\\]:split:field"):
            parse_eval_dataset_spec(bad)


def test_decontamination_through_datasets_map(index):
    """The pipeline's step under `datasets.map(num_proc=2)` (the index pickles) flags each leak with its eval set."""
    from datasets import Features, Value

    from hf_llm.config.data_steps import CleanConfig, DedupConfig
    from hf_llm.data.steps import clean_keys_batch, step_features

    leak = f"{FILLER} {EVAL_Q}"
    texts = [FILLER, leak, OTHER_Q, "clean text"]
    columns = {"text": texts, "id": ["0", "1", "2", "3"], "read_reason": [None] * 4, "read_detail": [None] * 4}
    ds = Dataset.from_dict(columns, features=Features({k: Value("string") for k in columns}))
    out = ds.map(clean_keys_batch, batched=True, batch_size=2, num_proc=2,
                 features=step_features(ds.features, DedupConfig()),
                 fn_kwargs={"clean": CleanConfig(preset="none"), "dedup": DedupConfig(), "index": index,
                            "decontam": DecontamConfig(enabled=True)})
    assert [i for i, name in zip(out["id"], out["contaminated_by"]) if name is None] == ["0", "3"]
    assert out["contaminated_by"] == [None, "gsm8k", "astro", None]


def test_verbatim_overlaps_through_the_shipped_step_match_a_reference():
    """Paraphrase-free leaks (an eval passage copied verbatim, then recased, rewrapped, its quotes curled and
    punctuation changed) are found by the pipeline's own step on the n-gram code near dedup shares, exactly where a
    plain reference over the documented word definition finds a shared 13-gram, and nowhere else."""
    import re

    import numpy as np

    from hf_llm.config.data_steps import CleanConfig, DedupConfig
    from hf_llm.data.steps import clean_keys_batch

    from benchmarks.corpora import base_documents

    def words(text: str) -> list[str]:
        return re.findall(r"(?:[0-9A-Za-z_]|[^\x00-\x7f\u0080-\u00bf\u2000-\u206f\u3000-\u303f])+", text.lower())

    def grams(text: str) -> set:
        w = words(text)
        return {tuple(w[i : i + 13]) for i in range(len(w) - 12)}

    rng = np.random.default_rng(41)
    pages = base_documents("tech_docs", 300, seed=41, libraries="hf")
    docs = ["\n\n".join(d) for d in pages]
    evals = []
    for i in rng.choice(len(docs), size=40, replace=False).tolist():
        tokens = "\n\n".join(pages[i][1:-1]).split()  # the page's own text, not the site's header and footer
        start = int(rng.integers(0, len(tokens) - 30))
        span = tokens[start : start + int(rng.integers(14, 30))]
        noisy = [t.upper() if rng.random() < 0.3 else t for t in span]
        noisy = [t.replace("'", "\u2019").replace('"', "\u201c") for t in noisy]
        text = "".join(t + rng.choice([" ", "\n", " -- ", ", ", "  "]) for t in noisy).strip()
        evals.append(text)
        # a paraphrase: every 10th word replaced, so no 13 consecutive words survive
        evals.append(" ".join("zzz" if k % 10 == 5 else t for k, t in enumerate(span)))
    index = build_ngram_index({"eval": evals}, ngram=13)
    n = len(docs)
    batch = {"text": docs, "read_reason": [None] * n, "read_detail": [None] * n}
    out = clean_keys_batch(batch, CleanConfig(preset="none"), DedupConfig(), index, DecontamConfig(enabled=True))
    eval_grams = set().union(*(grams(e) for e in evals))
    expected = ["eval" if grams(out["text"][i]) & eval_grams else None for i in range(n)]
    assert out["contaminated_by"] == expected
    assert 40 <= sum(x is not None for x in expected) < n  # every leak found, and not everything is flagged
