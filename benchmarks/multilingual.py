"""Multilingual test corpora with ground truth, seeded: web-like pages in eight languages and six scripts, planted
copies, and pages a quality filter exists to reject. Used by benchmarks/bench_dedup.py (--multilingual), by the
filter and language-identification measurement below, and (small) by the tests.

    python benchmarks/multilingual.py [--pages 300] [--out benchmarks/results/bench_multilingual.json]

Text source: the word lists of the `wordfreq` package (Apache-2.0 code; its data CC-BY-SA 4.0, built from
Wikipedia, subtitles, news, books and web text), installed from PyPI, nothing downloaded at run time. A page is
sentences of words drawn by their real frequency (the top 4,000 words of the language), written as the language
writes them: spaces between words, or none in Japanese and Chinese, the language's full stop, paragraphs, and the
site's navigation lines at the top and bottom of every page of a site (so unrelated pages of one site share text,
as translated documentation does). It is not prose: word order is random. Word frequencies, word lengths, scripts
and stop-word rates are those of the language, which is what language identification, the filters and the
shingles look at. Licences: the generated pages are derived from CC-BY-SA data; none is committed to the repo.

Planted copies (of a page of the same language): `exact`; `word5` (5% of the words replaced by other words of the
language; in Japanese and Chinese, where words are not separated, this is `char5`); `char5` (5% of the characters
replaced by characters of the same script); `dropped` (one paragraph of five or more dropped: >= 80% kept). Bad
pages: `spam` (the same few keywords over and over), `templated` (one sentence template with its slots refilled),
`gibberish` (random strings of the language's letters).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

LANGUAGES = ("en", "de", "fr", "es", "ru", "ar", "ja", "zh", "ko")  # Latin, Cyrillic, Arabic, Han, Kana, Hangul
UNSPACED = ("ja", "zh")
COPY_KINDS = ("exact", "word5", "char5", "dropped")
BAD_KINDS = ("spam", "templated", "gibberish")
_STOP = {"ja": "。", "zh": "。", "ar": ".", "ko": "."}
_SCRIPT = {  # a word counts for the language when all its letters are of the language's script
    "ru": r"[\u0400-\u04ff]+", "ar": r"[\u0600-\u06ff]+", "ja": r"[\u3040-\u30ff\u4e00-\u9fff]+",
    "zh": r"[\u4e00-\u9fff]+", "ko": r"[\uac00-\ud7a3]+",
}


@functools.lru_cache(maxsize=None)
def vocabulary(lang: str, n: int = 4000) -> tuple[list[str], np.ndarray]:
    """The language's n most frequent alphabetic words and their probabilities (wordfreq's frequencies)."""
    import wordfreq

    freqs = wordfreq.get_frequency_dict(lang, wordlist="best")  # read from the list: no tokenizer (MeCab) needed
    import re

    script = re.compile(_SCRIPT.get(lang, r"[^\W\d_]+"))
    words = [w for w in wordfreq.top_n_list(lang, n * 3, wordlist="best") if script.fullmatch(w)][:n]
    freq = np.array([freqs[w] for w in words], dtype=np.float64)
    return words, freq / freq.sum()


@functools.lru_cache(maxsize=None)
def alphabet(lang: str) -> np.ndarray:
    """The letters the language's frequent words are written with (for character edits and gibberish)."""
    words, _ = vocabulary(lang)
    return np.array(sorted({c for w in words for c in w if c.isalpha()}))


def _sentence(rng: np.random.Generator, lang: str) -> str:
    words, p = vocabulary(lang)
    picked = list(rng.choice(words, size=int(rng.integers(7, 19)), p=p))
    if lang == "ko":  # wordfreq splits Korean into morphemes: glue one-syllable particles back onto their word
        glued: list[str] = []
        for w in picked:
            if glued and len(w) == 1:
                glued[-1] += w
            else:
                glued.append(w)
        picked = glued
    sep = "" if lang in UNSPACED else " "
    text = sep.join(picked)
    return text[:1].upper() + text[1:] + _STOP.get(lang, ".")


def _paragraph(rng: np.random.Generator, lang: str) -> str:
    sep = "" if lang in UNSPACED else " "
    return sep.join(_sentence(rng, lang) for _ in range(int(rng.integers(3, 7))))


def _navigation(rng: np.random.Generator, lang: str) -> tuple[str, str]:
    words, _ = vocabulary(lang)
    top = " | ".join(words[int(i)] for i in rng.integers(20, 400, size=6))
    bottom = " · ".join(words[int(i)] for i in rng.integers(20, 400, size=4))
    return top, bottom


@dataclass
class Page:
    text: str
    paragraphs: list[str]


def clean_page(rng: np.random.Generator, lang: str, nav: tuple[str, str]) -> Page:
    paragraphs = [_paragraph(rng, lang) for _ in range(int(rng.integers(4, 9)))]
    return Page("\n\n".join([nav[0], *paragraphs, nav[1]]), paragraphs)


def _substitute_words(rng: np.random.Generator, lang: str, text: str, rate: float) -> str:
    words, p = vocabulary(lang)
    tokens = text.split(" ")
    for i in np.flatnonzero(rng.random(len(tokens)) < rate):
        tokens[i] = str(rng.choice(words, p=p))
    return " ".join(tokens)


def _substitute_chars(rng: np.random.Generator, lang: str, text: str, rate: float) -> str:
    chars, letters = list(text), alphabet(lang)
    candidates = [i for i, c in enumerate(chars) if c.isalpha()]
    for i in np.asarray(candidates)[rng.random(len(candidates)) < rate]:
        chars[i] = str(rng.choice(letters))
    return "".join(chars)


def planted_copy(rng: np.random.Generator, lang: str, page: Page, nav: tuple[str, str], kind: str) -> str:
    if kind == "exact":
        return page.text
    if kind == "word5":
        if lang in UNSPACED:
            return _substitute_chars(rng, lang, page.text, 0.05)
        return _substitute_words(rng, lang, page.text, 0.05)
    if kind == "char5":
        return _substitute_chars(rng, lang, page.text, 0.05)
    if kind == "dropped":
        paragraphs = list(page.paragraphs)
        if len(paragraphs) >= 5:
            del paragraphs[int(rng.integers(len(paragraphs)))]
        return "\n\n".join([nav[0], *paragraphs, nav[1]])
    raise ValueError(kind)


@dataclass
class Corpus:
    texts: list[str] = field(default_factory=list)
    language: list[str] = field(default_factory=list)
    kind: list[str] = field(default_factory=list)  # "original", "unrelated" or a copy kind
    original: list[int] = field(default_factory=list)  # index of the page a copy copies, else -1


def dedup_corpus(pages_per_language: int, seed: int, languages=LANGUAGES, sites: int = 5) -> Corpus:
    """Per language: `pages_per_language` pages on `sites` sites (shared navigation), and a copy of every second
    page (the copy kinds in turn), each placed after its original; ground truth in `kind` and `original`."""
    rng = np.random.default_rng(seed)
    c = Corpus()
    for lang in languages:
        navs = [_navigation(rng, lang) for _ in range(sites)]
        for k in range(pages_per_language):
            nav = navs[k % sites]
            page = clean_page(rng, lang, nav)
            at = len(c.texts)
            c.texts.append(page.text), c.language.append(lang), c.kind.append("original"), c.original.append(-1)
            if k % 2 == 0:
                kind = COPY_KINDS[(k // 2) % len(COPY_KINDS)]
                c.texts.append(planted_copy(rng, lang, page, nav, kind))
                c.language.append(lang), c.kind.append(kind), c.original.append(at)
    return c


def bad_page(rng: np.random.Generator, lang: str, kind: str) -> str:
    words, p = vocabulary(lang)
    sep = "" if lang in UNSPACED else " "
    if kind == "spam":
        keywords = [words[int(i)] for i in rng.integers(50, 1500, size=5)]
        lines = [sep.join(rng.choice(keywords, size=int(rng.integers(4, 9)))) for _ in range(int(rng.integers(30, 60)))]
        return "\n".join(lines)
    if kind == "templated":
        template = [str(w) for w in rng.choice(words, size=12, p=p)]
        slots = rng.choice(12, size=3, replace=False)
        lines = []
        for _ in range(int(rng.integers(25, 50))):
            filled = list(template)
            for s in slots:
                filled[s] = str(rng.choice(words[200:2000]))
            lines.append(sep.join(filled) + _STOP.get(lang, "."))
        return "\n".join(lines)
    if kind == "gibberish":
        letters = alphabet(lang)
        tokens = ["".join(rng.choice(letters, size=int(rng.integers(2, 10))))
                  for _ in range(int(rng.integers(80, 300)))]
        lines = [" ".join(tokens[i : i + 12]) for i in range(0, len(tokens), 12)]
        return "\n".join(lines)
    raise ValueError(kind)


def filter_corpus(pages_per_language: int, seed: int, languages=LANGUAGES) -> dict[str, dict[str, list[str]]]:
    """{language: {"clean": pages, "spam": ..., "templated": ..., "gibberish": ...}}."""
    rng = np.random.default_rng(seed)
    out = {}
    for lang in languages:
        nav = _navigation(rng, lang)
        out[lang] = {"clean": [clean_page(rng, lang, nav).text for _ in range(pages_per_language)]}
        for kind in BAD_KINDS:
            out[lang][kind] = [bad_page(rng, lang, kind) for _ in range(max(20, pages_per_language // 5))]
    return out


def snippets(n: int, seed: int, languages=LANGUAGES, sentences: int = 2) -> list[tuple[str, str]]:
    """Held-out (language, text) of `sentences` sentences each, for language identification accuracy."""
    rng = np.random.default_rng(seed)
    sep = lambda lang: "" if lang in UNSPACED else " "  # noqa: E731
    return [(lang, sep(lang).join(_sentence(rng, lang) for _ in range(sentences)))
            for lang in languages for _ in range(n)]


# ------------------------------------------------------------------------------------------------ measurement


def datatrove_reasons(texts: list[str], lang: str) -> list:
    """datatrove's Gopher repetition + quality filters at their defaults with `language=lang` (its word tokenizer
    for the language; its stop words are the English list, as it ships them): None = kept, else the rule."""
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    filters = [GopherRepetitionFilter(language=lang), GopherQualityFilter(language=lang)]
    out = []
    for i, t in enumerate(texts):
        reason = None
        for f in filters:
            verdict = f.filter(Document(text=t, id=str(i)))
            if verdict is not True:
                reason = verdict[1] if isinstance(verdict, tuple) else "rejected"
                break
        out.append(reason)
    return out


def measure_filters(pages: int, seed: int, with_datatrove: bool = True) -> dict:
    """Share kept of clean pages, share rejected of each bad kind, per language, at the default preset (and with
    datatrove's Gopher filters for its language, where its tokenizer loads); the rules that rejected clean pages."""
    from hf_llm.config.data_steps import CleanConfig
    from hf_llm.data.clean import clean_document

    cfg = CleanConfig()
    out = {}
    for lang, kinds in filter_corpus(pages, seed).items():
        row = {}
        if with_datatrove:
            try:
                dt = {kind: datatrove_reasons(texts, lang) for kind, texts in kinds.items()}
                row["datatrove"] = {f"{k}_{'kept' if k == 'clean' else 'rejected'}":
                                    round(sum((r is None) == (k == "clean") for r in v) / len(v), 4)
                                    for k, v in dt.items()}
            except Exception as e:  # its tokenizer for the language is not installed or does not load
                row["datatrove"] = f"not run ({type(e).__name__}: {str(e)[:80]})"
        for kind, texts in kinds.items():
            reasons = [clean_document(t, cfg)[0] for t in texts]
            share = sum(r is None for r in reasons) / len(reasons)
            key = f"{kind}_{'kept' if kind == 'clean' else 'rejected'}"
            row[key] = round(share if kind == "clean" else 1 - share, 4)
            if kind == "clean":
                top = {}
                for r in reasons:
                    if r:
                        top[r] = top.get(r, 0) + 1
                row["clean_rejected_by"] = top
        out[lang] = row
    return out


def measure_identification(n: int, seed: int) -> dict:
    from hf_llm.data.language import identify_language

    out = {}
    for sentences in (1, 3):
        per = {}
        t0 = time.perf_counter()
        items = snippets(n, seed, sentences=sentences)
        for lang, text in items:
            got, _ = identify_language(text)
            per.setdefault(lang, []).append(got == lang)
        dt = time.perf_counter() - t0
        out[f"{sentences}_sentence"] = {"accuracy": {k: round(float(np.mean(v)), 4) for k, v in per.items()},
                                        "mean_chars": round(float(np.mean([len(t) for _, t in items])), 1),
                                        "docs_per_s": round(len(items) / dt)}
    return out


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pages", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)  # the report seed; the settings were tuned on seed 0
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bench_multilingual.json"))
    args = ap.parse_args(argv)
    import platform

    result = {"machine": platform.processor() or platform.machine(), "note": "shared, busy machine: timings noisy",
              "seed": args.seed, "pages_per_language": args.pages,
              "identification": measure_identification(200, args.seed + 100),
              "filters": measure_filters(args.pages, args.seed)}
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
