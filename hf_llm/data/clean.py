"""Text cleaning: normalisation, PII scrubbing and heuristic quality filters (Gopher, C4, FineWeb).

Everything here is a pure, module-level function, so the pipeline's batched step (`steps.clean_keys_batch`, under
`datasets.map(num_proc=N)`) can pickle it. Nothing is dropped: `clean_document` returns a `reason` (None = kept)
and the pipeline splits kept from rejected, so every document is accounted for.

The rule sections' own defaults are the published heuristics for *web crawl* text (Common Crawl): Gopher (Rae et al.
2021, Table A1), C4 (Raffel et al. 2020) and FineWeb (Penedo et al. 2024), with the semantics of datatrove's
implementations except where noted. They are tuned for web pages, not for curated text: C4 line rules and FineWeb
would gut verse, dictionary entries and glossaries, and Gopher's repetition limits reject documentation whose code
samples and parameter lists repeat by design. `CleanConfig.preset` picks rules by corpus kind (`_CLEAN_PRESETS`):
`curated` (the default: books, documentation, anything chosen by hand), `books`, `code_docs`, `web` (the published
rules, C4 and FineWeb on) and `none`.

Every language (see language.py): `clean_document` identifies the document's language first; rules that count words
count whitespace tokens, as in Dolma's Gopher implementation (no nltk), except in languages written without spaces
(ja, zh, th, ...: `UNSPACED_LANGUAGES`), where each character of those scripts is a word and the runs of other
characters between them are words too; the stop-word rule takes the language's own list (`stop_words_by_language`;
particles of ja and zh are counted as substrings, Korean ones where they end a word) and is skipped for a language
with no list; `data.clean.by_language` overrides thresholds per language (mean word length is off where words are
not separated). Terminal punctuation includes 。！？ and the Arabic question mark.

Differences from datatrove: words are whitespace tokens, as in Dolma's Gopher implementation (no nltk); blank lines
are ignored by line-based ratios (our documents separate paragraphs with blank lines); the most frequent n-gram
counts only if it occurs at least twice; C4 rejects a page with "lorem ipsum" or "{" anywhere, as the paper says,
and counts sentences with a regex.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections import Counter
from itertools import accumulate
from typing import Sequence

from ..config.data_steps import (C4Config, CleanConfig, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig,
                                 NormalizeConfig, PIIConfig)
from .language import UNSPACED_CHARS, UNSPACED_LANGUAGES, identify_language, language_decision

# ---------------------------------------------------------------- patterns (compiled once, immutable)
# Speed: the regex engine skips fast only when a pattern starts with a plain character or set, so the costly
# patterns below run only after a cheap `in` test or "hint" pattern says they can match.

_ODD_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u200b\u2028\u2029\u2060\ufeff]")  # keeps \t \n, ZWJ
_TO_NEWLINE = str.maketrans({"\r": "\n", "\v": "\n", "\f": "\n", "\x85": "\n", "\u2028": "\n", "\u2029": "\n"})
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f\u00ad\u200b\u2060\ufeff]")
_ODD_SPACE = re.compile(r"[^\S\n ]")  # tab, NBSP and other Unicode spaces
_INNER_SPACE = re.compile(r"(?<=\S)(?:[^\S\n]{2,}|[^\S\n ])")  # only after a non-space: indentation survives
_TRAILING_SPACE = re.compile(r"[^\S\n]+$", re.M)
_BLANK_LINES = re.compile(r"\n{3,}")
_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")
_PARAGRAPH_SPLIT = re.compile(r"\n[^\S\n]*\n\s*")
_LETTER = re.compile(r"[^\W\d_]")
_CITATION = re.compile(r"\s*(?:\[\d*\]|\[edit\]|\[citation needed\])", re.I)
_SENTENCE_END = re.compile(r"[.!?]+['\")\]]*(?=\s|$)|[。！？]+[」』）]*")
_UNSPACED_WORD = re.compile(rf"[{UNSPACED_CHARS}]|[^\s{UNSPACED_CHARS}]+")
_TERMINAL = (".", "!", "?", '"', "'", "。", "！", "？", "؟", "」", "』")  # C4's and FineWeb's, with CJK and Arabic
_SUBSTRING_STOP_WORDS = UNSPACED_LANGUAGES | {"ko"}  # particles attach to the words before them
_SUFFIX_STOP_WORDS = frozenset({"ko"})  # Korean particles end a word: counted there only
# A language's own rules apply when the model gives it at least this probability. Below, the text is gibberish
# (random letters score 0.1-0.6 in some language, often one with no stop-word list) or a mix: the default (English)
# rules judge it.
RULES_MIN_SCORE = 0.65  # FineWeb's threshold for English

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
_OCTET = r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)"
_IPV4 = re.compile(rf"(?<![\w.]){_OCTET}(?:\.{_OCTET}){{3}}(?!\w|\.\d)")
_IPV4_HINT = re.compile(r"\d\.\d{1,3}\.\d")
_H = r"[0-9A-Fa-f]{1,4}"
_IPV6 = re.compile(
    r"(?<![\w:])(?:"
    + "|".join(
        (
            rf"(?:{_H}:){{7}}{_H}",  # full form
            *(rf"(?:{_H}:){{1,{k}}}(?::{_H}){{1,{7 - k}}}" for k in range(6, 0, -1)),  # a::b compressions
            rf":(?::{_H}){{1,7}}",  # ::1
            rf"(?:{_H}:){{1,7}}:",  # fe80::
        )
    )
    + r")(?![\w:])"
)
_PHONE = re.compile(
    r"(?<![\w+.\-/])(?:"
    r"\+\d{1,3}[ .\-]?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{1,4}){1,5}"  # +44 20 7946 0958, +49 (0)30 1234
    r"|\+\d{7,15}"  # +442079460958
    r"|(?:1[ .\-])?(?:\(\d{3}\)[ .\-]?|\d{3}[ .\-])\d{3}[ .\-]\d{4}"  # (202) 555-0143, 1-800-555-0199
    r")(?![\w\-]|[./]\d)"
)
_PHONE_HINT_PLUS = re.compile(r"\+\d")
_PHONE_HINT_US = re.compile(r"\d{3}[ .\-]\d{4}")


@functools.lru_cache(maxsize=32)
def _compile_boilerplate(patterns: tuple[str, ...]) -> re.Pattern:
    """One case-insensitive alternation, compiled once per distinct pattern list (a tuple, as configs don't hash).

    A leading global flag such as "(?i)" becomes a scoped group, which an alternation allows.
    """
    scoped = []
    for p in patterns:
        m = _GLOBAL_FLAGS.match(p)
        scoped.append(f"(?{m.group(1)}:{p[m.end():]})" if m else f"(?:{p})")
    return re.compile("|".join(scoped), re.I)


@functools.lru_cache(maxsize=32)
def _compile_stop_words(words: tuple[str, ...], mode: str = "word") -> re.Pattern:
    """word: whole words; substring: anywhere (ja, zh); suffix: at the end of a word (Korean particles)."""
    alternation = "(?:" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + ")"
    pattern = {"word": rf"\b{alternation}\b", "substring": alternation, "suffix": rf"{alternation}\b"}[mode]
    return re.compile(pattern, re.I)


@functools.lru_cache(maxsize=4)
def _tokens(text: str, unspaced: bool = False) -> tuple[str, ...]:
    """The words of a document, shared by its filters (the str hash is cached, so lookups are cheap): whitespace
    tokens, or in a language written without spaces each character of its script and each run of other
    non-space characters."""
    return tuple(_UNSPACED_WORD.findall(text)) if unspaced else tuple(text.split())


def count_words(text: str, language: str) -> int:
    """Words of a document as the filters count them (characters of its script where words are not separated)."""
    return len(_tokens(text, language in UNSPACED_LANGUAGES))


def language_rules(cfg: CleanConfig, language: str) -> CleanConfig:
    """`cfg` with `cfg.by_language[language]`'s thresholds applied (cfg itself when it names none); built once per
    config and language and remembered on the config object."""
    rules = cfg.by_language.get(language)
    if not rules:
        return cfg
    memo = cfg.__dict__.setdefault("_by_language_resolved", {})
    if language not in memo:
        import copy

        out = copy.deepcopy(cfg)
        out.__dict__.pop("_by_language_resolved", None)
        for dotted, value in rules.items():
            *path, leaf = dotted.split(".")
            obj = out
            for part in path:
                obj = getattr(obj, part)
            setattr(obj, leaf, value)
        memo[language] = out
    return memo[language]


# ---------------------------------------------------------------- normalisation and PII


def normalize_text(text: str, cfg: NormalizeConfig) -> str:
    """NFC, control characters out, whitespace collapsed (indentation kept), boilerplate lines deleted."""
    if not cfg.enabled:
        return text
    if cfg.unicode_nfc and not unicodedata.is_normalized("NFC", text):
        text = unicodedata.normalize("NFC", text)
    if cfg.strip_control_chars and _ODD_CHARS.search(text):
        text = _CONTROL.sub("", text.replace("\r\n", "\n").translate(_TO_NEWLINE))
    if cfg.collapse_whitespace:
        odd = _ODD_SPACE.search(text) is not None
        if odd or "  " in text:
            text = _INNER_SPACE.sub(" ", text)
        if odd or " \n" in text:
            text = _TRAILING_SPACE.sub("", text)
    if cfg.boilerplate_patterns:
        rx = _compile_boilerplate(tuple(cfg.boilerplate_patterns))
        lines = text.split("\n")
        kept = [line for line in lines if not rx.match(line.strip())]
        if len(kept) < len(lines):
            text = "\n".join(kept)
    if cfg.collapse_whitespace:
        if "\n\n\n" in text:
            text = _BLANK_LINES.sub("\n\n", text)
        text = text.strip("\n").rstrip()
    return text


def _replace(pattern: re.Pattern, text: str, placeholder: str, valid=None) -> tuple[str, int]:
    """Substitute matches that pass `valid`; a function replacement keeps placeholders literal (no \\1)."""
    n = 0

    def repl(m: re.Match) -> str:
        nonlocal n
        if valid is not None and not valid(m.group()):
            return m.group()
        n += 1
        return placeholder

    return pattern.sub(repl, text), n


def _phone_ok(s: str) -> bool:
    return 7 <= sum(c.isdigit() for c in s) <= 15  # E.164 numbers have at most 15 digits


def _ipv6_ok(s: str) -> bool:
    return any(c.isdigit() for c in s)  # real addresses have digits; C++ "Face::Bed" does not


def scrub_pii(text: str, cfg: PIIConfig) -> tuple[str, dict[str, int]]:
    """Replace e-mails, IP addresses and phone numbers with placeholders; return the text and counts per kind."""
    counts = {"email": 0, "ip": 0, "phone": 0}
    if not cfg.enabled:
        return text, counts
    if cfg.email and "@" in text:  # e-mail first: its domain may look like an IP or a number
        text, counts["email"] = _replace(_EMAIL, text, cfg.email_placeholder)
    if not any(d in text for d in "0123456789"):  # the rest all need digits; most prose has none
        return text, counts
    if cfg.ip:
        n6 = n4 = 0
        if "::" in text or text.count(":") >= 7:
            text, n6 = _replace(_IPV6, text, cfg.ip_placeholder, _ipv6_ok)
        if _IPV4_HINT.search(text):
            text, n4 = _replace(_IPV4, text, cfg.ip_placeholder)
        counts["ip"] = n4 + n6
    if cfg.phone and (("+" in text and _PHONE_HINT_PLUS.search(text)) or _PHONE_HINT_US.search(text)):
        text, counts["phone"] = _replace(_PHONE, text, cfg.phone_placeholder, _phone_ok)
    return text, counts


# ---------------------------------------------------------------- filters


@functools.lru_cache(maxsize=4)
def without_code(text: str) -> str:
    """The text without its code: fenced blocks (``` or ~~~, fences included; an unclosed fence is text) and
    doctest sessions (a `>>>` line and the lines up to the next blank one, its output). Shared by the Gopher rules
    of one document, hence the cache."""
    if "```" not in text and "~~~" not in text and ">>>" not in text:
        return text
    lines = text.split("\n")
    fences = [i for i, line in enumerate(lines) if line.lstrip().startswith(("```", "~~~"))]
    hidden = [False] * len(lines)
    for a, b in zip(fences[0::2], fences[1::2]):  # fences pair up in order; an odd last one opens nothing
        hidden[a : b + 1] = [True] * (b + 1 - a)
    session = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        session = stripped.startswith(">>>") or (session and bool(stripped))
        hidden[i] = hidden[i] or session
    return "\n".join(line for line, h in zip(lines, hidden) if not h)


def _lines(text: str) -> list[str]:
    """Stripped non-blank lines: blank lines only separate paragraphs here, they are not content."""
    return [s for s in (line.strip() for line in text.split("\n")) if s]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """Number and total length of items already seen earlier in the list (first occurrences don't count)."""
    seen: set[str] = set()
    n = chars = 0
    for item in items:
        if item in seen:
            n += 1
            chars += len(item)
        else:
            seen.add(item)
    return n, chars


def gopher_quality(text: str, cfg: GopherQualityConfig, language: str = "") -> str | None:
    """First failed Gopher quality rule as "gopher_quality:<rule>", or None if the document passes. `language`
    (an ISO 639 code, "" unknown) picks the segmentation and the stop words."""
    if not cfg.enabled:
        return None
    unspaced = language in UNSPACED_LANGUAGES
    words = _tokens(text, unspaced)
    n = len(words)
    if n == 0 or (cfg.min_words is not None and n < cfg.min_words) or (cfg.max_words is not None and n > cfg.max_words):
        return "gopher_quality:word_count"
    if cfg.skip_code:  # the length counts code; the ratios below judge the prose, if there is enough to judge
        text = without_code(text)
        words = _tokens(text, unspaced)
        n = len(words)
        if n < max(1, cfg.min_words or 0):
            return None
    mean = sum(map(len, words)) / n if cfg.min_mean_word_length is not None or cfg.max_mean_word_length is not None \
        else 0.0
    if (cfg.min_mean_word_length is not None and mean < cfg.min_mean_word_length) or (
        cfg.max_mean_word_length is not None and mean > cfg.max_mean_word_length
    ):
        return "gopher_quality:mean_word_length"
    if cfg.max_hash_ratio is not None and text.count("#") / n > cfg.max_hash_ratio:
        return "gopher_quality:hash_ratio"
    if cfg.max_ellipsis_ratio is not None and (text.count("...") + text.count("…")) / n > cfg.max_ellipsis_ratio:
        return "gopher_quality:ellipsis_ratio"
    lines = _lines(text)
    if cfg.max_bullet_lines is not None and cfg.bullets:
        bullets = tuple(cfg.bullets)
        if sum(line.startswith(bullets) for line in lines) / len(lines) > cfg.max_bullet_lines:
            return "gopher_quality:bullet_lines"
    if cfg.max_ellipsis_lines is not None:
        if sum(line.endswith(("...", "…")) for line in lines) / len(lines) > cfg.max_ellipsis_lines:
            return "gopher_quality:ellipsis_lines"
    if cfg.min_alpha_words is not None:
        alpha = sum(map(str.isalpha, words))  # exact for pure words; look closer only if that is not enough
        if alpha < cfg.min_alpha_words * n:
            alpha += sum(1 for w in words if not w.isalpha() and _LETTER.search(w))
            if alpha < cfg.min_alpha_words * n:
                return "gopher_quality:alpha_words"
    stop_words = cfg.stop_words if language in ("", "en") else cfg.stop_words_by_language.get(language)
    if cfg.min_stop_words and stop_words:  # a language with no list skips the rule
        substrings = language in _SUBSTRING_STOP_WORDS
        need = cfg.min_stop_words
        if substrings and cfg.min_stop_word_share:
            need = max(need, math.ceil(cfg.min_stop_word_share * sum(map(len, words))))  # per character
        found = 0
        mode = "suffix" if language in _SUFFIX_STOP_WORDS else "substring" if substrings else "word"
        for _ in _compile_stop_words(tuple(stop_words), mode).finditer(text):  # stop early: prose hits soon
            found += 1
            if found >= need:
                break
        else:
            return "gopher_quality:stop_words"
    return None


def _top_ngram_chars(grams: list[tuple[str, ...]]) -> tuple[int, int]:
    """(count, chars of all its occurrences) of the most frequent n-gram."""
    gram, count = Counter(grams).most_common(1)[0]
    return count, count * (sum(map(len, gram)) + len(gram) - 1)


def _repeated_ngram_chars(words: tuple[str, ...], n: int, starts: list[int], cum: list[int]) -> int:
    """Chars in n-grams seen earlier, by datatrove's walk: a repeat counts once and jumps past itself.

    Only `starts` (positions whose 5-gram repeats) are visited: an n-gram anywhere else occurs once, so it can be
    neither a repeat nor the first copy of one, and skipping it gives the same answer as the full walk.
    """
    seen: set[tuple[str, ...]] = set()
    chars = resume = 0
    for i in starts:
        if i < resume or i + n > len(words):
            continue
        gram = words[i : i + n]
        if gram in seen:
            chars += cum[i + n] - cum[i] + n - 1
            resume = i + n
        else:
            seen.add(gram)
    return chars


def gopher_repetition(text: str, cfg: GopherRepetitionConfig, language: str = "") -> str | None:
    """First failed Gopher repetition rule as "gopher_repetition:<rule>", or None if the document passes; n-grams
    are of `language`'s words (characters where words are not separated)."""
    if not cfg.enabled:
        return None
    if cfg.skip_code:
        text = without_code(text)
    total = len(text)
    if total == 0:
        return None
    if "\n" in text.strip():  # a one-line document has no duplicate lines or paragraphs
        units = (("para", lambda: [p for p in _PARAGRAPH_SPLIT.split(text.strip()) if p], cfg.max_dup_para_frac,
                  cfg.max_dup_para_char_frac),
                 ("line", lambda: _lines(text), cfg.max_dup_line_frac, cfg.max_dup_line_char_frac))
        for unit, split, max_frac, max_char_frac in units:  # paragraphs first, then lines (split only if reached)
            parts = split()
            n_dup, dup_chars = _duplicates(parts)
            if max_frac is not None and n_dup / len(parts) > max_frac:
                return f"gopher_repetition:dup_{unit}_frac"
            if max_char_frac is not None and dup_chars / total > max_char_frac:
                return f"gopher_repetition:dup_{unit}_char_frac"

    words = _tokens(text, language in UNSPACED_LANGUAGES)
    top = ((2, cfg.max_top_2gram_char_frac), (3, cfg.max_top_3gram_char_frac), (4, cfg.max_top_4gram_char_frac))
    repeats = True  # becomes False once some n-gram size has no repeat: then no longer one repeats either
    for n, limit in top:
        if len(words) < n or not repeats:
            break
        if limit is None and n < 4:
            continue
        count, chars = _top_ngram_chars(list(zip(*(words[i:] for i in range(n)))))
        repeats = count > 1
        if limit is not None and repeats and chars / total > limit:
            return f"gopher_repetition:top_{n}gram_char_frac"
    if not repeats:
        return None
    dups = (
        (5, cfg.max_dup_5gram_char_frac), (6, cfg.max_dup_6gram_char_frac), (7, cfg.max_dup_7gram_char_frac),
        (8, cfg.max_dup_8gram_char_frac), (9, cfg.max_dup_9gram_char_frac), (10, cfg.max_dup_10gram_char_frac),
    )  # fmt: skip
    limits = [limit for n, limit in dups if limit is not None and len(words) >= n]
    if not limits:
        return None
    grams = list(zip(*(words[i:] for i in range(5))))
    counts = Counter(grams)
    if len(counts) == len(grams):
        return None  # no repeated 5-gram, so no longer n-gram repeats either
    starts = [i for i, gram in enumerate(grams) if counts[gram] > 1]
    cum = [0, *accumulate(map(len, words))]
    # every repeated n-gram (n >= 5) lies inside repeated 5-grams: their chars bound all six rules at once
    if sum(cum[i + 5] - cum[i] + 4 for i in starts) <= min(limits) * total:
        return None
    for n, limit in dups:
        if limit is None or len(words) < n:
            continue
        chars = _repeated_ngram_chars(words, n, starts, cum)
        if chars == 0:
            break  # no repeated n-gram, so no longer one either
        if chars / total > limit:
            return f"gopher_repetition:dup_{n}gram_char_frac"
    return None


def c4_filter(text: str, cfg: C4Config, language: str = "") -> tuple[str | None, str]:
    """C4 rules: (None, text with bad lines deleted), or ("c4:<rule>", unchanged text) if the page goes."""
    if not cfg.enabled:
        return None, text
    if cfg.reject_lorem_ipsum and "lorem ipsum" in text.lower():
        return "c4:lorem_ipsum", text
    if cfg.reject_curly_bracket and "{" in text:
        return "c4:curly_bracket", text
    policy = tuple(cfg.policy_phrases)
    kept: list[str] = []
    sentences = 0
    unspaced = language in UNSPACED_LANGUAGES
    for line in _lines(text):
        words = _UNSPACED_WORD.findall(line) if unspaced else line.split()
        if cfg.max_word_length > 0 and any(len(w) > cfg.max_word_length for w in words):
            continue
        if cfg.remove_citations and "[" in line:
            line = _CITATION.sub("", line).strip()
        if cfg.require_terminal_punct and (not line.endswith(_TERMINAL) or line.endswith("...")):
            continue
        if len(words) < cfg.min_words_per_line:
            continue
        low = line.lower()
        if cfg.drop_javascript_lines and "javascript" in low:
            continue
        if cfg.drop_policy_lines and any(p in low for p in policy):
            continue
        sentences += max(1, len(_SENTENCE_END.findall(line)))
        kept.append(line)
    if not kept or sentences < cfg.min_sentences:
        return "c4:too_few_sentences", text
    return None, "\n".join(kept)


def fineweb_filter(text: str, cfg: FineWebConfig, language: str = "") -> str | None:
    """First failed FineWeb rule as "fineweb:<rule>", or None. Blank lines are ignored by the ratios."""
    if not cfg.enabled:
        return None
    lines = _lines(text)
    if not lines or sum(line.endswith(_TERMINAL) for line in lines) / len(lines) <= cfg.line_punct_min:
        return "fineweb:line_punct_ratio"
    if sum(len(line) <= cfg.short_line_chars for line in lines) / len(lines) >= cfg.short_line_max:
        return "fineweb:short_line_ratio"
    if _duplicates(lines)[1] / max(1, len(text) - text.count("\n")) >= cfg.dup_line_char_max:
        return "fineweb:dup_line_char_ratio"
    if (len(lines) - 1) / max(1, len(_tokens(text, language in UNSPACED_LANGUAGES))) > cfg.newline_word_max:
        return "fineweb:newline_word_ratio"
    return None


# ---------------------------------------------------------------- entry points


def clean_document(text: str | None, cfg: CleanConfig, keep_languages: Sequence[str] = (),
                   min_language_score: float = 0.0) -> tuple[str | None, str, dict[str, int], str, float]:
    """Normalise, identify the language, scrub, then filter one document with its language's rules:
    (reason or None, text, PII counts, language, score). A language outside `keep_languages` (empty: all) or
    identified below `min_language_score` is rejected with reason "language" before any filter runs."""
    counts = {"email": 0, "ip": 0, "phone": 0}
    text = normalize_text(text or "", cfg.normalize)
    if not text.strip():
        return "empty", text, counts, "", 0.0
    language, score = identify_language(text)
    if language_decision(language, score, keep_languages, min_language_score) is not None:
        return "language", text, counts, language, score
    rules = language if score >= RULES_MIN_SCORE else ""  # unsure: gibberish, or mixed; the default rules judge it
    cfg = language_rules(cfg, rules)
    text, counts = scrub_pii(text, cfg.pii)
    reason = gopher_repetition(text, cfg.gopher_repetition, rules) or gopher_quality(text, cfg.gopher_quality, rules)
    if reason is None:
        reason, text = c4_filter(text, cfg.c4, rules)  # the one filter that rewrites text (deletes lines)
    if reason is None:
        reason = fineweb_filter(text, cfg.fineweb, rules)
    return reason, text, counts, language, score
