"""Filter presets by corpus kind: what the default keeps of curated text, what it still rejects, and how presets
and a recipe's own values combine."""

from __future__ import annotations

import gzip
import json

import pytest

from hf_llm.config import PrepareDataConfig, config_to_yaml, load_config
from hf_llm.errors import ConfigError
from hf_llm.data.clean import (
    C4Config,
    CleanConfig,
    FineWebConfig,
    GopherQualityConfig,
    GopherRepetitionConfig,
    clean_document,
    gopher_quality,
    gopher_repetition,
    without_code,
)

from ..conftest import SAMPLE
from benchmarks.corpora import BAD_KINDS, bad_pages, base_documents


def rejected(texts: list[str], cfg: CleanConfig) -> float:
    return sum(clean_document(t, cfg)[0] is not None for t in texts) / len(texts)


@pytest.fixture(scope="module")
def sample() -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


# The curated thresholds were set looking at the sample and at API pages of the standard library and numpy; the
# pages of datasets, accelerate and peft (Google-style docstrings, Markdown code fences) were not looked at.
@pytest.mark.parametrize("libraries", ["python", "hf"])
def test_default_keeps_curated_text(sample, libraries):
    docs = ["\n\n".join(d) for d in base_documents("tech_docs", 2000, seed=31, libraries=libraries)]
    assert len(docs) > 300
    assert rejected(sample, CleanConfig()) <= 0.03
    assert rejected(docs, CleanConfig()) <= 0.03


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_default_still_rejects_spam_templated_and_gibberish(kind):
    pages = bad_pages(kind, 150, seed=77)
    assert rejected(pages, CleanConfig()) >= 0.95


def test_code_is_left_out_of_the_ratios_not_out_of_the_length():
    prose = ("The function returns the sum of the two arrays, and it raises an error when the shapes of the arrays "
             "do not match. Use it with care on very large inputs, because it has to allocate the result first. ")
    code = "```python\n" + "\n".join(["x = np.zeros((3, 3))", "y = x + 1", "}", "return y"] * 12) + "\n```"
    doctest = ">>> a = [1, 2, 3]\n>>> sum(a)\n6\n>>> len(a)\n3"
    more = ("Each call copies its inputs once. For data that does not fit in memory, read it in chunks and add the "
            "partial results, which gives the same answer with a fraction of the memory and no temporary files.")
    text = f"{prose}\n\n{code}\n\n{doctest}\n\n{more}"
    assert without_code(text) == f"{prose}\n\n\n\n{more}"
    assert gopher_repetition(text, GopherRepetitionConfig()) is not None  # repeated code lines, counted as text
    assert gopher_repetition(text, GopherRepetitionConfig(skip_code=True)) is None
    assert gopher_quality(text, GopherQualityConfig(skip_code=True)) is None
    # The length counts code (a page of code is a page); prose too short to judge is not judged.
    short = "A note.\n\n```\n" + "word " * 60 + "\n```"
    assert gopher_quality(short, GopherQualityConfig(skip_code=True)) is None
    assert gopher_quality(short, GopherQualityConfig()) == "gopher_quality:stop_words"
    assert gopher_quality("A note.\n\n```\nx = 1\n```", GopherQualityConfig(skip_code=True)) == (
        "gopher_quality:word_count")
    unclosed = "```\n" + "buy cheap watches now " * 40  # an unclosed fence hides nothing
    assert gopher_repetition(unclosed, GopherRepetitionConfig(skip_code=True)) is not None


def test_presets_set_what_they_name():
    web = CleanConfig(preset="web")
    assert web.c4.enabled and web.fineweb.enabled and not web.gopher_repetition.skip_code
    assert web.gopher_repetition == GopherRepetitionConfig() and web.gopher_quality == GopherQualityConfig()
    assert web.c4 == C4Config(enabled=True) and web.fineweb == FineWebConfig(enabled=True)  # the published rules
    none = CleanConfig(preset="none")
    assert not (none.gopher_quality.enabled or none.gopher_repetition.enabled or none.c4.enabled)
    assert none.normalize.enabled and none.pii.enabled  # no filter, but text is still normalised and scrubbed
    assert CleanConfig(preset="books").gopher_quality.max_words is None
    code_docs = CleanConfig(preset="code_docs")
    assert code_docs.gopher_repetition.max_dup_line_frac is None and code_docs.gopher_quality.skip_code
    default = CleanConfig()
    assert default.preset == "curated" and default.gopher_repetition.skip_code and not default.c4.enabled
    with pytest.raises(ConfigError, match="unknown preset 'crawl'"):
        CleanConfig(preset="crawl")


def test_a_recipes_own_values_win_over_the_preset(tmp_path):
    cfg = load_config(overrides=["data.clean.preset=web", "data.clean.c4.enabled=false",
                                 "data.clean.gopher_repetition.max_dup_5gram_char_frac=0.2"], schema=PrepareDataConfig)
    clean = cfg.data.clean
    assert clean.fineweb.enabled and not clean.c4.enabled  # false is the class default, and still wins
    assert clean.gopher_repetition.max_dup_5gram_char_frac == 0.2
    assert clean.gopher_repetition.max_dup_6gram_char_frac == GopherRepetitionConfig().max_dup_6gram_char_frac
    (tmp_path / "saved.yaml").write_text(config_to_yaml(cfg))
    assert load_config(tmp_path / "saved.yaml", schema=PrepareDataConfig) == cfg
    default = load_config(overrides=[], schema=PrepareDataConfig).data.clean
    assert default == CleanConfig()
    with pytest.raises(ConfigError, match="preset must be one of curated"):
        load_config(overrides=["data.clean.preset=crawl"], schema=PrepareDataConfig)


def test_each_preset_keeps_what_it_is_for(sample):
    docs = ["\n\n".join(d) for d in base_documents("tech_docs", 2000, seed=32, libraries="hf")]
    assert rejected(sample, CleanConfig(preset="books")) <= 0.03
    assert rejected(docs, CleanConfig(preset="code_docs")) <= 0.03
    assert rejected(docs, CleanConfig(preset="web")) > 0.3  # what the web rules would cost documentation
    assert rejected(sample + docs, CleanConfig(preset="none")) == 0
    for kind in BAD_KINDS:
        assert rejected(bad_pages(kind, 60, seed=78), CleanConfig(preset="web")) >= 0.95


def test_data_card_shows_what_each_filter_cost(sample, tmp_path):
    from datasets import load_from_disk

    from hf_llm.config import DataConfig, SourceConfig, TokenizerConfig
    from hf_llm.data.pipeline import build_prepared_data

    bad = {kind: bad_pages(kind, 4, seed=79) for kind in BAD_KINDS}
    rows = [{"id": f"good{i}", "text": t} for i, t in enumerate(sample[:60])]
    rows += [{"id": f"{kind}{i}", "text": t} for kind, pages in bad.items() for i, t in enumerate(pages)]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(sources=[SourceConfig(path=str(path))], seq_len=64)
    built = build_prepared_data(data, TokenizerConfig(vocab_size=320), tmp_path / "out")
    f = built.card["filters"]
    rejects = load_from_disk(str(built.path / "rejects")).to_list()
    by_reason: dict[str, list] = {}
    for r in rejects:
        by_reason.setdefault(r["reason"], []).append(r)
    assert f["preset"] == "curated" and f["documents_checked"] == len(rows)
    assert f["rejected"] >= 0.95 * sum(map(len, bad.values()))
    assert {rule: r["documents"] for rule, r in f["rules"].items()} == {k: len(v) for k, v in by_reason.items()}
    for rule, r in f["rules"].items():
        assert r["share"] == round(r["documents"] / len(rows), 4) and r["characters"] > 0
        assert 1 <= len(r["examples"]) <= 3
        assert [e["origin"] for e in r["examples"]] == [x["origin"] for x in by_reason[rule][: len(r["examples"])]]
        assert r["examples"][0]["text"] == " ".join(by_reason[rule][0]["text"].split())[:160]
    md = (built.path / "DATA_CARD.md").read_text()
    assert "## Filters (preset `curated`: gopher_repetition, gopher_quality)" in md
    assert all(f"| {rule} | {r['documents']:,} |" in md for rule, r in f["rules"].items())
