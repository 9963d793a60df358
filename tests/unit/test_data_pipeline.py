"""The data pipeline end to end on a small corpus with planted problems: rejects with reasons, split by document,
mixing, best_fit packing, the data card, and clear errors (any number of tasks: test_data_executor.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk

from hf_llm.config import DataConfig, PrepareDataConfig, SourceConfig, TokenizerConfig, load_config
from hf_llm.data.pipeline import build_prepared_data
from hf_llm.errors import DataError

from ..conftest import REPO, sample_documents

TOK = TokenizerConfig(vocab_size=320)


def make_corpus(root: Path) -> dict[str, Path]:
    """a.jsonl: 40 real documents (id, url, text) plus one planted case per reason; b.txt: 12 paragraphs."""
    docs = sample_documents(200)
    a = [{"id": f"a{i}", "url": f"https://example.org/{i}", "text": d["text"]} for i, d in enumerate(docs[:40])]
    words = a[5]["text"].split()
    span = len(words) // 20  # 5% of the words replaced in one run: a near copy (an edited passage)
    words[100 : 100 + span] = docs[100]["text"].split()[:span]
    eval_line = " ".join(a[7]["text"].split()[10:30])
    planted = [
        {"id": "exact", "url": "https://mirror.example.org/3", "text": a[3]["text"]},
        {"id": "near", "url": "https://mirror.example.org/5", "text": " ".join(words)},
        {"id": "short", "url": None, "text": "Too short to be a document."},
        {"id": "blank", "url": None, "text": "   "},
        {"id": "null", "url": None, "text": None},
    ]
    lines = [json.dumps(r) for r in a + planted]
    lines.insert(10, '{"id": "broken", "text": "no closing quote}')
    (root / "a.jsonl").write_text("\n".join(lines) + "\n")
    (root / "b.txt").write_text("\n\n".join(" ".join(d["text"].split()) for d in docs[150:162]) + "\n")
    (root / "eval.txt").write_text(eval_line + "\n")
    return {"a": root / "a.jsonl", "b": root / "b.txt", "eval": root / "eval.txt"}


def config(files: dict[str, Path], **overrides) -> DataConfig:
    data = DataConfig(sources=[SourceConfig(path=str(files["a"]), weight=3.0), SourceConfig(path=str(files["b"]))],
                      seq_len=64, validation_fraction=0.1, mix_by="tokens", save_documents=True)
    data.decontam.enabled = True
    data.decontam.eval_files = [str(files["eval"])]
    for k, v in overrides.items():
        setattr(data, k, v)
    return data


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict[str, Path]:
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "prepared"
    return build_prepared_data(config(corpus), TOK, out)


def rows(path: Path) -> list[dict]:
    return load_from_disk(str(path)).to_list()


def test_every_dropped_document_is_in_rejects_with_its_reason_and_columns(built, corpus):
    rejects = {r["id"]: r for r in rows(built.path / "rejects")}
    assert rejects["exact"]["reason"] == "exact_dup" and rejects["exact"]["detail"] == f"duplicate of {corpus['a']}:4"
    assert rejects["near"]["reason"] == "near_dup" and rejects["near"]["url"] == "https://mirror.example.org/5"
    assert rejects["short"]["reason"] == "gopher_quality:word_count"
    assert rejects["blank"]["reason"] == rejects["null"]["reason"] == "empty"
    assert rejects["a7"]["reason"] == "decontaminated" and str(corpus["eval"]) in rejects["a7"]["detail"]
    broken = [r for r in rows(built.path / "rejects") if r["reason"] == "malformed"]
    assert len(broken) == 1 and broken[0]["origin"] == f"{corpus['a']}:11"
    assert broken[0]["text"] == '{"id": "broken", "text": "no closing quote}'  # the line as it was
    kept = {d["id"] for d in rows(built.path / "documents") if d["id"] is not None}
    assert not kept & set(rejects)
    read = built.card["steps"][0]["documents_in"]
    assert read == 40 + 5 + 1 + 12 == len(rows(built.path / "rejects")) + len(rows(built.path / "documents"))
    counts: dict[str, int] = {}
    for r in rows(built.path / "rejects"):
        counts[r["reason"]] = counts.get(r["reason"], 0) + 1
    assert counts == built.card["rejections"]


def test_split_is_by_document(built):
    docs = rows(built.path / "documents")
    train = {d["origin"] for d in docs if d["split"] == "train"}
    val = [d for d in docs if d["split"] == "validation"]
    assert val and train and not train & {d["origin"] for d in val}
    # the validation blocks are exactly the validation documents, tokenised, EOS-separated, in order
    tok = built.tokenizer
    stream = [t for d in val for t in tok(d["text"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]]
    blocks = np.asarray(built.validation["input_ids"]).reshape(-1).tolist()
    assert blocks == stream[: len(blocks)] and len(stream) - len(blocks) < 64


def test_mixing_by_tokens_follows_the_weights(built):
    mix = built.card["mixture"]["sources"]
    assert mix["a"]["mixture_token_share"] == pytest.approx(0.75, abs=0.05)
    assert mix["b"]["mixture_passes"] >= 2  # the small source is repeated to reach its share


def test_data_card_contents(built, corpus):
    card = built.card
    for key in ("train", "validation", "sources", "fingerprint", "unigram_validation_loss", "steps", "rejections",
                "duplicate_clusters", "token_length_histogram", "decontamination"):
        assert key in card, key
    assert card["train"]["tokens"] > 0 and card["train"]["seq_len"] == 64 and card["unigram_validation_loss"] > 0
    steps = {s["step"]: s for s in card["steps"]}
    assert list(steps) == ["read", "clean", "exact_dedup", "near_dedup", "decontaminate"]
    for a, b in zip(card["steps"], card["steps"][1:]):
        assert a["documents_out"] == b["documents_in"]
    assert steps["exact_dedup"]["rejected"] == {"exact_dup": 1} and steps["read"]["rejected"] == {"malformed": 1}
    assert steps["clean"]["tokens_out"] < steps["clean"]["tokens_in"] and steps["read"]["tokens_in"] is None
    assert steps["clean"]["by_source"]["b"]["documents_in"] == 12
    assert card["duplicate_clusters"]["near"]["clusters"] == 1
    assert card["decontamination"]["removed"] == {str(corpus["eval"]): 1}
    hist = card["token_length_histogram"]
    assert sum(hist["counts"]) == hist["documents"] == steps["decontaminate"]["documents_out"]
    md = (built.path / "DATA_CARD.md").read_text()
    for section in ("## Summary", "## Steps", "## Sources", "## Rejections", "## Duplicates", "## Document length"):
        assert section in md
    assert "█" in md and (built.path / "token_lengths.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    # DATA_CARD.md shows exactly the pictures written beside it (rejections: the fixture has some).
    shown = set(re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md))
    assert shown == {p.name for p in built.path.glob("*.png")} == {"token_lengths.png", "rejections.png",
                                                                  "languages.png"}
    assert (built.path / "tokenizer" / "tokenizer.json").is_file()


def test_best_fit_packs_whole_documents_with_padding(corpus, tmp_path):
    built = build_prepared_data(config(corpus, packing="best_fit", best_fit_window=16), TOK, tmp_path / "best_fit")
    assert set(built.train.column_names) == {"input_ids", "position_ids", "labels"}
    assert built.card["train"]["padding_tokens"] > 0 and built.card["train"]["tokens_dropped_at_end"] == 0


@pytest.mark.parametrize("key", ["lazy_read", "streaming"])
def test_lazy_read_is_a_deprecated_no_op(key):
    with pytest.warns(FutureWarning, match="data.lazy_read .*has no effect"):
        load_config(None, [f"data.{key}=true"], schema=PrepareDataConfig)


def test_nothing_left_after_filtering_is_a_clear_error(tmp_path):
    f = tmp_path / "short.jsonl"
    f.write_text("".join(json.dumps({"text": f"only {i} words here"}) + "\n" for i in range(5)))
    with pytest.raises(DataError, match=r"no document is left .*gopher_quality:word_count: 5.*min_words"):
        build_prepared_data(DataConfig(sources=[SourceConfig(path=str(f))]), TOK, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tmp").exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"text": ""}\n{"text": null}\n')
    with pytest.raises(DataError, match="has no usable text in column 'text'"):
        build_prepared_data(DataConfig(sources=[SourceConfig(path=str(empty))]), TOK, tmp_path / "out")


@pytest.mark.parametrize("recipe", sorted((REPO / "configs" / "data").glob("*.yaml")), ids=lambda p: p.name)
def test_every_data_recipe_loads(recipe):
    cfg = load_config(recipe, schema=PrepareDataConfig)
    assert cfg.data.sources and all(Path(REPO / s.path).exists() for s in cfg.data.sources if s.format != "hub")
