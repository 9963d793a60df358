"""Typed configs of the data-cleaning steps (normalise, PII, quality filters, exact and near dedup, decontamination)
and their named presets. They sit in the config layer, beside the run config that nests them, so that `config`
imports nothing from `data/`; the steps themselves (`hf_llm/data/clean.py`, `dedup.py`, `decontam.py`) import
their config from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from ..errors import ConfigError
from .domains import AT_LEAST_1, FRACTION, NON_NEGATIVE, POSITIVE, SEED, TEXT, OneOf, Range
from .presets import apply_preset, complete_presets

_DEFAULT_BOILERPLATE = (  # matched case-insensitively at the start of each stripped line
    r"all rights reserved\.?$",
    r"(?:click|tap) here to\b",
    r"(?:subscribe|sign up) (?:to|for) (?:our|the) newsletter\b",
    r"(?:share|follow us) on (?:facebook|twitter|instagram|linkedin)\b",
    r"\*{3} ?(?:start|end) of (?:the|this) project gutenberg\b",
)
_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")
# Stop words of other languages: each its ten most frequent function words (wordfreq's lists, checked by hand).
# Japanese, Chinese and Korean ones are particles and characters that attach to words, so they are counted as
# substrings there (hf_llm/data/clean.py). A language not listed has no stop-word rule (it is switched off, not
# guessed): English and documents of unknown language use `stop_words`.
_STOP_WORDS_BY_LANGUAGE = {  # space-separated
    "de": "der die und das ist nicht mit von zu den",
    "fr": "le la les et est des une que dans pour",
    "es": "el la los que y en del las por una",
    "it": "il di che la e per un non della sono",
    "pt": "o a que de os em um para uma não",
    "nl": "de het een en van is dat op niet voor",
    "pl": "i w nie na się z do to że jest",
    "ru": "и в не на что с по это как он",
    "uk": "і в не на що з та це як до",
    "ar": "في من على أن إلى عن التي الذي هذا مع",
    "ja": "の に は を が で て と た も",
    "zh": "的 了 是 在 不 和 有 这 我 也",
    "ko": "은 는 이 가 을 를 의 에 로 고",
}
_BULLETS = ("•", "●", "○", "◦", "▪", "‣", "-", "*")
_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")


@dataclass
class NormalizeConfig:
    enabled: bool = True  # normalised text tokenises consistently; off only for byte-exact corpora
    unicode_nfc: bool = True  # one code-point sequence per glyph, so "é" is one token sequence, not two
    strip_control_chars: bool = True  # NUL, BOM, zero-width spaces are invisible noise; \r\n becomes \n
    collapse_whitespace: bool = True  # runs of spaces and blank lines carry no meaning; indentation is kept
    # regexes, re.match'ed case-insensitively against each stripped line; a line that matches is deleted
    boilerplate_patterns: list[str] = field(default_factory=lambda: list(_DEFAULT_BOILERPLATE))


@dataclass
class PIIConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "email_placeholder": TEXT, "ip_placeholder": TEXT, "phone_placeholder": TEXT,
    }

    enabled: bool = True  # a model must not memorise contact details found in the corpus
    email: bool = True  # e-mail addresses are the most common PII in text
    ip: bool = True  # IPv4 (valid octets) and IPv6 addresses identify machines and people
    phone: bool = True  # international (+CC ...) and US formats; bare digit runs are left alone
    email_placeholder: str = "<EMAIL>"  # a fixed token keeps the sentence grammatical
    ip_placeholder: str = "<IP>"  # idem
    phone_placeholder: str = "<PHONE>"  # idem


@dataclass
class GopherQualityConfig:
    """Gopher document rules (Rae et al. 2021, Table A1); None disables one rule."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "min_words": NON_NEGATIVE, "max_words": AT_LEAST_1, "min_mean_word_length": NON_NEGATIVE,
        "max_mean_word_length": POSITIVE, "max_hash_ratio": NON_NEGATIVE, "max_ellipsis_ratio": NON_NEGATIVE,
        "max_bullet_lines": FRACTION, "max_ellipsis_lines": FRACTION, "min_alpha_words": FRACTION,
        "min_stop_words": NON_NEGATIVE, "min_stop_word_share": FRACTION,
    }

    enabled: bool = True  # mild enough for books, scripture and glossaries
    # Judge the prose only: fenced code blocks and doctest sessions are left out of every ratio (not the length),
    # since symbols, short tokens and repeated lines are what code is made of, not signs of a bad page.
    skip_code: bool = False
    min_words: Optional[int] = 50  # shorter pages are mostly titles, menus and stubs
    max_words: Optional[int] = 100_000  # longer ones are mostly dumps and logs
    min_mean_word_length: Optional[float] = 3.0  # below: tables of numbers, stutter, gibberish
    max_mean_word_length: Optional[float] = 10.0  # above: URLs, hashes, base64
    max_hash_ratio: Optional[float] = 0.1  # '#' per word: hashtag spam, markup
    max_ellipsis_ratio: Optional[float] = 0.1  # '...' per word: truncated snippets
    max_bullet_lines: Optional[float] = 0.9  # fraction of lines starting with a bullet: link lists, menus
    max_ellipsis_lines: Optional[float] = 0.3  # fraction of lines ending in an ellipsis: teaser lists
    min_alpha_words: Optional[float] = 0.8  # fraction of words with a letter: else numbers and symbols
    min_stop_words: Optional[int] = 2  # real English prose always uses some function words
    stop_words: list[str] = field(default_factory=lambda: list(_STOP_WORDS))  # Gopher's eight, case-insensitive
    # Where stop words are counted as substrings (ja, zh, ko: particles attach to words), two are met by chance in
    # any long run of those scripts' characters: there they must also be this share of the characters of the
    # words. Real text is at 8-20%; random characters of the script at < 4% (benchmarks/multilingual.py).
    min_stop_word_share: Optional[float] = 0.05
    # the rule's words for other languages (see _STOP_WORDS_BY_LANGUAGE); a language not listed skips the rule
    stop_words_by_language: dict[str, list[str]] = field(
        default_factory=lambda: {k: v.split() for k, v in _STOP_WORDS_BY_LANGUAGE.items()})
    bullets: list[str] = field(default_factory=lambda: list(_BULLETS))  # line prefixes counted as bullets


@dataclass
class GopherRepetitionConfig:
    """Gopher repetition rules (Rae et al. 2021, Table A1): maximum fractions; None disables one rule."""

    # what each field may hold (hf_llm/config/domains.py): every rule is a fraction
    DOMAINS: ClassVar[dict] = dict.fromkeys(
        ["max_dup_line_frac", "max_dup_para_frac", "max_dup_line_char_frac", "max_dup_para_char_frac"]
        + [f"max_top_{n}gram_char_frac" for n in (2, 3, 4)] + [f"max_dup_{n}gram_char_frac" for n in range(5, 11)],
        FRACTION)

    enabled: bool = True  # repeated lines and phrases are the clearest sign of templated pages
    skip_code: bool = False  # count repeats in the prose only (code repeats `return`, `}` and fences by design)
    max_dup_line_frac: Optional[float] = 0.30  # duplicated lines / lines
    max_dup_para_frac: Optional[float] = 0.30  # duplicated paragraphs / paragraphs
    max_dup_line_char_frac: Optional[float] = 0.20  # chars in duplicated lines / chars
    max_dup_para_char_frac: Optional[float] = 0.20  # chars in duplicated paragraphs / chars
    max_top_2gram_char_frac: Optional[float] = 0.20  # chars in the most frequent 2-gram / chars
    max_top_3gram_char_frac: Optional[float] = 0.18  # idem, 3-gram
    max_top_4gram_char_frac: Optional[float] = 0.16  # idem, 4-gram
    max_dup_5gram_char_frac: Optional[float] = 0.15  # chars in repeated 5-grams / chars
    max_dup_6gram_char_frac: Optional[float] = 0.14  # idem, 6-grams
    max_dup_7gram_char_frac: Optional[float] = 0.13  # idem, 7-grams
    max_dup_8gram_char_frac: Optional[float] = 0.12  # idem, 8-grams
    max_dup_9gram_char_frac: Optional[float] = 0.11  # idem, 9-grams
    max_dup_10gram_char_frac: Optional[float] = 0.10  # idem, 10-grams


@dataclass
class C4Config:
    """C4 line and page rules (Raffel et al. 2020); modifies the text by deleting lines."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "min_words_per_line": NON_NEGATIVE, "max_word_length": AT_LEAST_1, "min_sentences": NON_NEGATIVE,
    }

    enabled: bool = False  # deletes every line without terminal punctuation: guts verse, headwords, glossaries
    require_terminal_punct: bool = True  # keep only lines ending in . ! ? " ' (not "...")
    min_words_per_line: int = 3  # shorter lines are buttons, menus and captions
    max_word_length: int = 1000  # a "word" this long is minified code or a data blob; the line goes
    min_sentences: int = 5  # pages with fewer sentences left are too thin to keep
    remove_citations: bool = True  # Wikipedia-style [1], [edit], [citation needed]
    drop_javascript_lines: bool = True  # "please enable JavaScript" notices
    drop_policy_lines: bool = True  # cookie and terms-of-use banners
    reject_lorem_ipsum: bool = True  # placeholder pages
    reject_curly_bracket: bool = True  # a '{' on a web page almost always means code or templates
    policy_phrases: list[str] = field(default_factory=lambda: list(_POLICY))  # C4's policy substrings


@dataclass
class FineWebConfig:
    """FineWeb's extra rules (Penedo et al. 2024, datatrove FineWebQualityFilter)."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "line_punct_min": FRACTION, "short_line_max": FRACTION, "short_line_chars": NON_NEGATIVE,
        "dup_line_char_max": FRACTION, "newline_word_max": NON_NEGATIVE,
    }

    enabled: bool = False  # tuned on web pages; rejects dictionaries and any doc with one repeated line
    line_punct_min: float = 0.12  # rejected at or below: fraction of lines ending in . ' " ! ?
    short_line_max: float = 0.67  # rejected at or above: fraction of lines of <= short_line_chars
    short_line_chars: int = 30  # what "short" means
    dup_line_char_max: float = 0.01  # rejected at or above: chars in duplicated lines / chars
    newline_word_max: float = 0.3  # rejected above: line breaks per word, i.e. lists of fragments


# Curated text repeats itself on purpose (refrains, genealogies, the same parameter described for each function):
# the share of text in repeated n-grams, lines and paragraphs may be twice Gopher's web limits before a page is
# templated. Measured (with code left out, below): at these limits 1.3% of the bundled sample and 2.2% of API
# reference pages are rejected (at Gopher's: 2.7% and 10%; 20% counting code), while pages generated from one
# sentence template repeat 45% or more of their text in 5-grams.
_CURATED_REPEATS = {
    "gopher_repetition.max_dup_line_frac": 0.4,
    "gopher_repetition.max_dup_para_char_frac": 0.3,
    "gopher_repetition.max_dup_line_char_frac": 0.3,
    **{f"gopher_repetition.max_dup_{n}gram_char_frac": round(0.35 - 0.01 * n, 2) for n in range(5, 11)},
}
_SKIP_CODE = {"gopher_quality.skip_code": True, "gopher_repetition.skip_code": True}
# Named rule sets by corpus kind; a recipe's own values win over them (hf_llm/config/presets.py). Each names only
# what differs from the rule sections' defaults, the published web values.
_CLEAN_PRESETS: dict[str, dict] = {
    # Anything chosen by hand: books, papers, documentation with code. Keeps >97% of such text (see above) and
    # still rejects keyword spam, templated and gibberish pages (tests/unit/test_clean_presets.py).
    "curated": {**_SKIP_CODE, **_CURATED_REPEATS},
    # Long-form prose and verse, one book per document: no upper length limit (Gopher's 100k words cuts novels).
    "books": {**_CURATED_REPEATS, "gopher_quality.max_words": None},
    # API references and READMEs: as curated, and repeated section headings ("Parameters", "Returns") are no
    # template; identifiers run long and symbols are common even outside code blocks.
    "code_docs": {**_SKIP_CODE, **_CURATED_REPEATS, "gopher_repetition.max_dup_line_frac": None,
                  "gopher_quality.max_mean_word_length": 12.0, "gopher_quality.min_alpha_words": 0.6},
    # Crawled pages: the published Gopher, C4 and FineWeb rules as datatrove runs them for FineWeb.
    "web": {"c4.enabled": True, "fineweb.enabled": True},
    # No quality filter (normalisation and PII scrubbing still run; empty documents still go).
    "none": {"gopher_quality.enabled": False, "gopher_repetition.enabled": False},
}


# Rules whose thresholds differ by language (dotted fields under data.clean, as in the presets). In languages written
# without spaces (ja, zh, th, ...) a "word" is a character (clean.py), so mean word length means nothing there.
# Measured on benchmarks/multilingual.py's pages (README, "Every language"): the defaults elsewhere keep >= 97%.
_UNSPACED_RULES = {"gopher_quality.min_mean_word_length": None, "gopher_quality.max_mean_word_length": None}
_BY_LANGUAGE: dict[str, dict[str, Any]] = {lang: dict(_UNSPACED_RULES) for lang in ("ja", "zh", "th", "lo", "km", "my")}
# A Hangul character is a whole syllable: Korean words are 2-4 characters long, so Gopher's mean of >= 3 (letters of
# English words) rejected every Korean page measured; 1.5 still catches runs of single characters.
# Korean particles are counted where they end a word (clean.py): 3% of the characters, tuned on seed 0 of
# benchmarks/multilingual.py (5% kept 95% of clean pages; 2-3% kept all and rejected 97% of spam).
_BY_LANGUAGE["ko"] = {"gopher_quality.min_mean_word_length": 1.5, "gopher_quality.min_stop_word_share": 0.03}


@dataclass
class CleanConfig:
    """Cleaning stage: normalise, scrub PII, then filters in the order of the fields below."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "preset": OneOf(tuple(_CLEAN_PRESETS)),
    }

    PRESETS: ClassVar[dict] = {}  # set below the class: _CLEAN_PRESETS over all the fields any of them names

    preset: str = "curated"  # curated | books | code_docs | web | none: the filters' defaults (see _CLEAN_PRESETS)
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)  # runs first: filters see clean text
    pii: PIIConfig = field(default_factory=PIIConfig)  # before filters, so rejected rows are scrubbed too
    gopher_repetition: GopherRepetitionConfig = field(default_factory=GopherRepetitionConfig)  # FineWeb's order
    gopher_quality: GopherQualityConfig = field(default_factory=GopherQualityConfig)  # idem
    c4: C4Config = field(default_factory=C4Config)  # idem
    fineweb: FineWebConfig = field(default_factory=FineWebConfig)  # idem
    # Per identified language: {field: value} over the settings above (e.g. {"ja": {"gopher_quality.min_words":
    # 100}}), for rules whose thresholds differ by language; the defaults switch mean word length off where words
    # are not separated (_BY_LANGUAGE).
    by_language: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {k: dict(v) for k, v in _BY_LANGUAGE.items()})

    def __post_init__(self) -> None:
        apply_preset(self, self.preset, self.PRESETS, "data.clean.preset")
        for lang, rules in self.by_language.items():
            for dotted in rules:
                obj = self
                for part in dotted.split("."):
                    if not hasattr(obj, part):
                        raise ConfigError(f"data.clean.by_language.{lang}: unknown setting {dotted!r}; name a field "
                                          "under data.clean, e.g. 'gopher_quality.min_words'")
                    obj = getattr(obj, part)


CleanConfig.PRESETS = complete_presets(CleanConfig, _CLEAN_PRESETS)


# Named settings for NearDedupConfig; a recipe's own values win over them (hf_llm/config/presets.py).
_NEAR_PRESETS: dict[str, dict[str, Any]] = {
    "edited": {},  # the field defaults below: copies with a few words changed or paragraphs swapped
    # FineWeb's (Penedo et al. 2024; datatrove's MinhashConfig): 5-grams, 14 bands x 8 rows, no verification.
    # Its S-curve is centred near J = 0.72, so copies with 5% of their words replaced (J ~ 0.6) mostly survive.
    "fineweb": {"ngram": 5, "num_perm": 112, "bands": 14, "rows": 8, "threshold": 0.75, "verify": False},
}


@dataclass
class ExactDedupConfig:
    enabled: bool = True  # exact copies are the cheapest, highest-precision duplicates to remove


@dataclass
class NearDedupConfig:
    """Defaults chosen by measurement (benchmarks/bench_dedup.py: the Jaccard of edited copies and hard negatives
    on three kinds of text, and the S-curve of each banding); FineWeb's settings are preset=fineweb."""

    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "preset": OneOf(tuple(_NEAR_PRESETS)), "ngram": AT_LEAST_1, "num_perm": AT_LEAST_1, "bands": AT_LEAST_1,
        "rows": AT_LEAST_1, "threshold": Range(0, 1, lo_open=True), "seed": SEED, "char_ngram": NON_NEGATIVE,
    }

    PRESETS: ClassVar[dict] = {}  # set below the class: _NEAR_PRESETS over all the fields any of them names

    enabled: bool = True  # near copies (mirrors, edited reposts) skew the mix and encourage memorisation
    preset: str = "edited"  # edited | fineweb: the defaults of the fields below; a recipe's own values win
    # Word 3-grams: copies with 5% of their words edited at random keep J >= 0.75 (5-grams: >= 0.62; 10% edits
    # >= 0.59 vs 0.40), while the negatives do not move with n: pages on one template share J < 0.1, a document
    # quoting 20-70% of another J <= 0.44 (p99 of 3-gram Jaccards, bench_dedup.py's three corpora).
    ngram: int = 3
    # Character n-grams for documents in scripts written without spaces (zh, ja, th; hf_llm/data/dedup.py), where
    # a whitespace "word" is a whole phrase: 0 cuts them into words like the rest. Tuned on benchmarks/multilingual.py
    # (seed 0, 3/4/5): 3 caught every 5%-character-edited ja/zh copy with no false drop; 5 missed 15-25% in zh.
    char_ngram: int = 3
    num_perm: int = 126  # = bands * rows; Jaccard estimate std 0.044 at J = 0.55; keys ~0.3 ms per 5 KB doc
    # 42 bands of 3 rows: P(candidate) = 1 - (1 - J^3)^42 is 0.9995 at J = 0.55 and 0.6% at J = 0.05 (unrelated
    # pages of one site), so the LSH loses almost no copy and verification sees few pairs. (FineWeb's 14 x 8 is at
    # 0.05 for J = 0.5: without a lower curve no threshold can catch 5%-edited copies.)
    bands: int = 42
    rows: int = 3  # rows per band; bands * rows must equal num_perm
    # Estimated Jaccard at or above which a candidate pair is a near duplicate. Set on prose (seed 0) half-way
    # between the lowest copies that must go (p1: J = 0.71 for paragraph copies sharing >= 80% of the text, 0.76
    # for 5% edits) and the highest quoting documents that must stay (p99: J = 0.41): 0.55 is 2.6-2.7 standard
    # errors from a J = 0.665 copy (the p1 on API docs) and from a document sharing 60% of its text both ways.
    threshold: float = 0.55
    seed: int = 42  # seeds the permutations; signatures are only comparable when computed with the same seed
    verify: bool = True  # drop candidate pairs estimated below threshold: 3-row bands pair 68% of J = 0.3 pages
    lowercase: bool = True  # case differences alone should not hide a near copy

    def __post_init__(self) -> None:
        apply_preset(self, self.preset, self.PRESETS, "data.dedup.near.preset")
        if self.bands * self.rows != self.num_perm:
            raise ConfigError(
                f"near dedup: bands * rows must equal num_perm, got {self.bands} * {self.rows} = "
                f"{self.bands * self.rows} != {self.num_perm}; e.g. num_perm=126 with bands=42, rows=3"
            )
        if self.ngram < 1:
            raise ConfigError(f"near dedup: ngram must be >= 1, got {self.ngram}")
        if self.char_ngram < 0:
            raise ConfigError(f"near dedup: char_ngram must be >= 0 (0 = words), got {self.char_ngram}")
        if not 0.0 < self.threshold <= 1.0:
            raise ConfigError(f"near dedup: threshold must be in (0, 1], got {self.threshold}")


NearDedupConfig.PRESETS = complete_presets(NearDedupConfig, _NEAR_PRESETS)


@dataclass
class DedupConfig:
    exact: ExactDedupConfig = field(default_factory=ExactDedupConfig)  # runs first: cheap, removes most copies
    near: NearDedupConfig = field(default_factory=NearDedupConfig)  # runs on what exact dedup kept


@dataclass
class DecontamConfig:
    DOMAINS: ClassVar[dict] = {  # what each field may hold (hf_llm/config/domains.py)
        "ngram": AT_LEAST_1, "text_field": TEXT, "char_ngram": NON_NEGATIVE,
    }

    enabled: bool = False  # opt-in: it needs eval sets, and removing training text is a choice to make knowingly
    ngram: int = 13  # overlap length that counts as contamination (GPT-3 and lm-eval-harness use 13 words)
    # The same in characters for texts in scripts written without spaces (zh, ja, th: a word is ~1.5 characters
    # there, so 13 words is ~20 characters); 0 cuts them into whitespace words, which an edit anywhere defeats.
    char_ngram: int = 20
    eval_files: list[str] = field(default_factory=list)  # local eval sets: .txt / .jsonl[:field] (see module doc)
    eval_datasets: list[str] = field(default_factory=list)  # Hub eval sets: "name[:config]:split:field"
    text_field: str = "text"  # field read from .jsonl eval files whose entry names none
    lowercase: bool = True  # "The Answer" in training text still leaks "the answer" in the eval

    def __post_init__(self) -> None:
        if self.ngram < 1:
            raise ConfigError(f"decontam: ngram must be >= 1, got {self.ngram}")
        if self.char_ngram < 0:
            raise ConfigError(f"decontam: char_ngram must be >= 0 (0 = words), got {self.char_ngram}")
