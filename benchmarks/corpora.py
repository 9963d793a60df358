"""Seeded corpora with planted copies and their ground truth, for benchmarks/bench_dedup.py and the near-dedup tests
(which import it from here: benchmarks never import the test package).

Three kinds of text that differ in style, so a setting tuned on one can be checked on the others:
  prose      the bundled sample (KJV, The Devil's Dictionary, the Jargon File), cut into paragraphs
  tech_docs  API reference pages built from the docstrings and source of the Python standard library and numpy
             (parsed with ast, nothing imported), with code blocks and the same site header and footer on every page
  web        short pages on a few site templates (navigation, banner, footer) whose content comes from a word-level
             Markov chain, so no two pages share a sentence by construction

Planted on base documents, one copy per base document so the ground truth is unambiguous:
  exact      the same text up to case and whitespace
  edit:R     words substituted, inserted or deleted at random positions, R = edits / words (each edit's kind drawn)
  para:F     a copy sharing whole paragraphs with the original that make up F >= 0.8 of the words of both (the
             rest replaced, dropped, or new ones added); shares are counted in words, as Jaccard is
and hard negatives, which are different documents and must all be kept:
  template   every page of a site shares its boilerplate (tech_docs, web: inherent in the kind)
  quote:Q    a document of its own text carrying a contiguous quoted run of another's paragraphs, Q = the larger
             share of either document's words the run makes up, below the 80% of `para`

Base documents that already overlap (KJV's Psalm 14 and 53, a docstring copied between modules) would be unplanted
duplicates; the pool keeps only documents that share under 10% of their word 5-grams with every other.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import re
import sysconfig
from collections import defaultdict
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample" / "corpus.jsonl.gz"
KINDS = ("prose", "tech_docs", "web")
EDIT_KINDS = ("sub", "ins", "del")
_SEP = re.compile(r"(\s+)")
_SENTENCE = re.compile(r"(?<=[.!?;:])\s+")


@dataclass
class Corpus:
    kind: str
    texts: list[str]
    cluster: np.ndarray  # ground truth: documents with the same id are copies of each other
    label: list[str]  # "base", "exact", "edit:0.05", "para:0.8", "quote:0.4", ... (the planted thing)
    seed: int
    related: np.ndarray = None  # index of the document a planted one was made from (copied, quoted); -1 for bases


# ------------------------------------------------------------------------------------------------- the pools


def _paragraphs(text: str, low: int = 30, high: int = 80) -> list[str]:
    """Blank-line paragraphs, short ones merged forward and long ones cut at sentence ends (so every document has
    several, as a paragraph-level copy needs)."""
    out: list[str] = []
    pending = ""
    for para in re.split(r"\n\s*\n", text.strip()):
        para = f"{pending} {para}".strip() if pending else para.strip()
        pending = ""
        if len(para.split()) < low:
            pending = para
            continue
        sentences, chunk = _SENTENCE.split(para), []
        for s in sentences:
            chunk.append(s)
            if sum(len(c.split()) for c in chunk) >= high:
                out.append(" ".join(chunk))
                chunk = []
        if chunk:
            out.append(" ".join(chunk))
    if pending:
        if out:
            out[-1] = f"{out[-1]} {pending}"
        else:
            out.append(pending)
    return out


@lru_cache(maxsize=1)
def _prose_pool() -> tuple[tuple[str, ...], ...]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    return tuple(tuple(_paragraphs(t)) for t in texts if 2000 <= len(t.encode()) <= 8000)


# Libraries whose docstrings and source make the tech_docs pages: "python" (the standard library and numpy, with
# numpydoc-templated docstrings) for the benchmark and the dedup tests; "hf" (datasets, accelerate, peft: Google
# style, Markdown code fences) held out, for checking the filter presets on documentation they were not set on.
def _library_roots(group: str) -> list[Path]:
    if group == "python":
        return [Path(sysconfig.get_paths()["stdlib"]), Path(np.__file__).parent]
    import importlib.util

    return [Path(importlib.util.find_spec(name).origin).parent for name in ("datasets", "accelerate", "peft")]


def _source_files(root: Path) -> list[Path]:
    skip = {"test", "tests", "idlelib", "site-packages", "__pycache__", "lib2to3", "turtledemo", "ensurepip"}
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith(("config-", ".")))
        files += [Path(folder) / n for n in sorted(names) if n.endswith(".py")]
    return files


def _documented(tree: ast.Module, module: str):
    """(qualified name, node) of every public def and class at the top level and inside top-level classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            yield f"{module}.{node.name}", node
            if isinstance(node, ast.ClassDef):
                for sub in node.body:
                    if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) and not sub.name.startswith("_"):
                        yield f"{module}.{node.name}.{sub.name}", sub


@lru_cache(maxsize=2)
def _api_entries(group: str = "python") -> tuple[tuple[str, str, str, str], ...]:
    """(module, heading, docstring, source excerpt) for every documented public def and class of a library group,
    read with ast (nothing is imported)."""
    entries = []
    for lib, path in ((root, f) for root in _library_roots(group) for f in _source_files(root)):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        parts = path.relative_to(lib if group == "python" and lib.name != "numpy" else lib.parent).with_suffix("").parts
        module = ".".join(parts).removesuffix(".__init__")
        lines = source.splitlines()
        for name, node in _documented(tree, module):
            doc = ast.get_docstring(node)
            if not doc or len(doc) < 80:
                continue
            head = f"class {name}" if isinstance(node, ast.ClassDef) else f"{name}({ast.unparse(node.args)})"
            body = node.body[1:] if len(node.body) > 1 else node.body
            start, end = body[0].lineno - 1, min(body[-1].end_lineno or body[0].lineno, body[0].lineno + 18)
            code = "\n".join(line for line in lines[start:end] if line.strip())
            entries.append((module, head, doc, code))
    return tuple(entries)


_DOC_HEADER = "{project} documentation » API reference » {module}\nindex | modules | next | previous"
_DOC_FOOTER = ("© Copyright {owner}. This page is licensed under the terms of the project's license. Examples, "
               "recipes, and other code in the documentation are additionally licensed under the Zero Clause BSD "
               "License. Found a bug? Show source.")


@lru_cache(maxsize=2)
def _tech_pool(group: str = "python") -> tuple[tuple[str, ...], ...]:
    """Page bodies of 2-8 KB: consecutive entries of one module, each a signature, its docstring and a code block;
    the first line names the module (the site's header and footer are added per page later)."""
    by_module: dict[str, list] = defaultdict(list)
    for e in _api_entries(group):
        by_module[e[0]].append(e)
    pages = []
    for module, entries in sorted(by_module.items()):
        page: list[str] = []
        for _, head, doc, code in entries:
            page += [head, *[p.strip() for p in re.split(r"\n\s*\n", doc) if p.strip()], f"```python\n{code}\n```"]
            if sum(len(p) + 2 for p in page) >= 2000:
                if sum(len(p) + 2 for p in page) <= 8000:
                    pages.append(tuple([module, *page]))
                page = []
    return tuple(pages)


_PROJECTS = {"numpy": ("NumPy", "2008-2024, NumPy Developers"), "datasets": ("Datasets", "2020-2024, Hugging Face"),
             "accelerate": ("Accelerate", "2021-2024, Hugging Face"), "peft": ("PEFT", "2023-2024, Hugging Face")}


def _tech_page(body: list[str]) -> list[str]:
    module, *parts = body
    project, owner = _PROJECTS.get(module.split(".")[0], ("Python 3", "2001-2024, Python Software Foundation"))
    return [_DOC_HEADER.format(project=project, module=module), *parts, _DOC_FOOTER.format(owner=owner)]


@lru_cache(maxsize=1)
def _markov() -> dict[tuple[str, str], list[str]]:
    """Order-2 word chain over the sample and the API docstrings (sentences of both styles)."""
    chain: dict[tuple[str, str], list[str]] = defaultdict(list)
    texts = ["\n\n".join(p) for p in _prose_pool()] + [e[2] for e in _api_entries()]
    for text in texts:
        words = ["<s>", "<s>", *text.split()]
        for a, b, c in zip(words, words[1:], words[2:]):
            chain[(a, b)].append(c)
            if c.endswith((".", "!", "?")):
                chain[(b, c)].append("</s>")
    return dict(chain)


def _sentence(rng: np.random.Generator, chain: dict, starts: list[tuple[str, str]]) -> str:
    a, b = starts[int(rng.integers(len(starts)))]
    words = [b]
    while len(words) < 40:
        options = chain.get((a, b))
        if not options:
            break
        c = options[int(rng.integers(len(options)))]
        if c == "</s>":
            break
        words.append(c)
        a, b = b, c
    s = " ".join(words)
    return s if s.endswith((".", "!", "?")) else s + "."


_SITES = [
    ("The Daily Ledger", ["Home", "World", "Business", "Tech", "Sport", "Opinion", "Newsletters"]),
    ("Garden & Grove", ["Home", "Plants", "Tools", "Seasonal guides", "Community", "Shop"]),
    ("Byte Forum", ["Forums", "Latest", "Top", "Categories", "Members", "Help"]),
    ("Harbor Travel", ["Destinations", "Deals", "Hotels", "Flights", "Travel tips", "Contact"]),
    ("Kitchen Notes", ["Recipes", "Baking", "Quick dinners", "Vegetarian", "Videos", "Subscribe"]),
    ("City Council Updates", ["Services", "Meetings", "Planning", "Parking", "Report a problem"]),
]


def _web_page(rng: np.random.Generator, site: int, chain: dict, starts: list) -> list[str]:
    name, menu = _SITES[site]
    title = _sentence(rng, chain, starts).rstrip(".!?")
    title = " ".join(title.split()[:9])
    body = [" ".join(_sentence(rng, chain, starts) for _ in range(int(rng.integers(2, 5))))
            for _ in range(int(rng.integers(3, 7)))]
    return [
        f"{name}\n{' | '.join(menu)}\nSearch this site",
        f"{title} - {name}",
        *body,
        "We use cookies to personalise content and to analyse our traffic. You can change your preferences at "
        "any time in the privacy settings.",
        f"Related: {' · '.join(' '.join(_sentence(rng, chain, starts).split()[:5]) for _ in range(3))}",
        f"About {name} | Careers | Advertise with us | Privacy | Terms\nCopyright {name}. Made with care.",
    ]


def _shingles(text: str, n: int = 5) -> set:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(1, len(words) - n + 1))}


def unrelated(docs: list[list[str]], max_shared: float = 0.1) -> list[list[str]]:
    """Drop every document sharing >= max_shared of its 5-grams with an earlier kept one (natural duplicates)."""
    sets = [_shingles("\n\n".join(d)) for d in docs]
    owner: dict = {}
    kept = []
    for i, s in enumerate(sets):
        shared: dict[int, int] = defaultdict(int)
        for g in s:
            j = owner.get(g)
            if j is not None:
                shared[j] += 1
        if any(c >= max_shared * min(len(s), len(sets[j])) for j, c in shared.items()):
            continue
        for g in s:
            owner.setdefault(g, i)
        kept.append(i)
    return [docs[i] for i in kept]


def base_documents(kind: str, n: int, seed: int, libraries: str = "python") -> list[list[str]]:
    """n distinct base documents of `kind` as lists of paragraphs, drawn with `seed` (fewer if the pool is small);
    `libraries` picks the tech_docs pages' source (see _library_roots)."""
    rng = np.random.default_rng(seed)
    if kind == "web":
        chain = _markov()
        starts = [k for k in chain if k[0] == "<s>"]
        return [_web_page(rng, int(rng.integers(len(_SITES))), chain, starts) for _ in range(n)]
    pool = _prose_pool() if kind == "prose" else _tech_pool(libraries)
    order = rng.permutation(len(pool))
    docs = unrelated([list(pool[i]) for i in order])[:n]  # on the content: every page shares the site template
    return docs if kind == "prose" else [_tech_page(d) for d in docs]


# ----------------------------------------------------------------------------------------------------- edits


def edit_words(text: str, rate: float, rng: np.random.Generator, vocab: list[str],
               kinds: tuple[str, ...] = EDIT_KINDS) -> str:
    """round(rate * words) edits at distinct random word positions, each a substitution, an insertion before the
    word, or a deletion (drawn from `kinds`); replacement and inserted words are drawn from `vocab`. Whitespace
    (line breaks, indentation) around untouched words is kept."""
    parts = _SEP.split(text)
    words, seps = parts[0::2], parts[1::2] + [""]
    slots = [i for i, w in enumerate(words) if w]
    k = max(1, round(rate * len(slots)))
    chosen = rng.choice(slots, size=min(k, len(slots)), replace=False)
    ops = rng.choice(kinds, size=len(chosen))
    for i, op in zip(chosen.tolist(), ops.tolist()):
        if op == "sub":
            words[i] = vocab[int(rng.integers(len(vocab)))]
        elif op == "ins":
            words[i] = f"{vocab[int(rng.integers(len(vocab)))]} {words[i]}"
        else:
            words[i] = ""
            if "\n" not in seps[i]:
                seps[i] = ""
            elif i > 0 and "\n" not in seps[i - 1]:
                seps[i - 1] = ""
    return "".join(w + s for w, s in zip(words, seps))


def _words(paras: list[str]) -> np.ndarray:
    return np.array([len(p.split()) for p in paras], dtype=float)


def paragraph_copy(paras: list[str], share: float, rng: np.random.Generator,
                   spare: list[str]) -> tuple[list[str], float] | None:
    """A copy sharing whole paragraphs that make up >= `share` of the words of both documents: some of the
    original's paragraphs are replaced (by spare text of the same length), dropped, or joined by spare paragraphs.
    Returns (copy, the shared fraction of the smaller side), or None if no paragraph is small enough to change."""
    words = _words(paras)
    total = words.sum()
    mode = str(rng.choice(["replace", "drop", "add"]))
    if mode == "add":
        budget, extra, out = total * (1 / share - 1), [], list(paras)
        for p in spare:
            if len(extra) and sum(len(x.split()) for x in extra) + len(p.split()) > budget:
                break
            extra.append(p if len(p.split()) <= budget else " ".join(p.split()[: int(budget)]))
        if not extra or not budget >= 1:
            return None
        for p in extra:
            out.insert(int(rng.integers(len(out) + 1)), p)
        return out, total / (total + sum(len(x.split()) for x in extra))
    changed, left = [], total
    for i in rng.permutation(len(paras)).tolist():
        if left - words[i] >= share * total:
            changed.append(i)
            left -= words[i]
    if not changed:
        return None
    out = list(paras)
    spare_words = " ".join(spare).split()
    for i in sorted(changed, reverse=True):
        if mode == "replace":
            start = int(rng.integers(max(1, len(spare_words) - int(words[i]))))
            out[i] = " ".join(spare_words[start : start + int(words[i])])
        else:
            del out[i]
    return out, left / total


def quote_document(own: list[str], quoted: list[str], share: float,
                   rng: np.random.Generator) -> tuple[list[str], float]:
    """`own` paragraphs with a contiguous run of `quoted`'s paragraphs inserted, the run making up at most `share`
    of the words of the result and of `quoted` (at least one paragraph). Returns the document and the larger of
    the two shares."""
    qw, ow = _words(quoted), _words(own).sum()
    best = (0, 1)
    for start in rng.permutation(len(quoted)).tolist():
        end, run = start, 0.0
        while end < len(quoted) and run + qw[end] <= share * min(qw.sum(), ow + run + qw[end]):
            run += qw[end]
            end += 1
        if end - start > best[1] - best[0] or best == (0, 1) and end > start:
            best = (start, end)
    start, end = best
    run = qw[start:end].sum()
    at = int(rng.integers(len(own) + 1))
    return own[:at] + quoted[start:end] + own[at:], float(max(run / (ow + run), run / qw.sum()))


def _case_and_space(text: str, rng: np.random.Generator) -> str:
    return text.upper() if rng.random() < 0.5 else text.replace(" ", "  ").replace("\n\n", "\n\n\n") + "\n"


# --------------------------------------------------------------------------------------------------- corpora


def make_corpus(kind: str, seed: int, n_base: int = 1500, edit_rates: tuple[float, ...] = (0.01, 0.03, 0.05),
                copies: float = 0.3, exact: float = 0.05, para: float = 0.1, quotes: float = 0.1,
                quote_share: tuple[float, float] = (0.2, 0.5), edit_kinds: tuple[str, ...] = EDIT_KINDS,
                para_share: tuple[float, float] = (0.8, 1.0)) -> Corpus:
    """Base documents (up to n_base: the tech_docs pool holds ~650 after spares), then on distinct bases: `exact`
    copies, `copies` edited copies (rates drawn from `edit_rates`), `para` paragraph copies, and `quotes` quoting
    documents built from spare bases; shuffled."""
    rng = np.random.default_rng(seed)
    n_para, n_quote = int(para * n_base) + 1, int(quotes * n_base) + 1
    docs = base_documents(kind, n_base + n_para + n_quote, seed)
    bases, spares = docs[: len(docs) - n_para - n_quote], docs[len(docs) - n_para - n_quote :]
    para_spare, quote_own = spares[:n_para], spares[n_para:]
    if len(bases) < min(n_base, 200):  # a small pool gives fewer bases than asked (the pool's size is the limit)
        raise ValueError(f"{kind}: only {len(bases)} base documents available for n_base={n_base}")
    vocab = [w for d in bases[:300] for p in d for w in p.split()]
    texts = ["\n\n".join(d) for d in bases]
    cluster = list(range(len(bases)))
    label = ["base"] * len(bases)
    made_from = [-1] * len(bases)
    order = rng.permutation(len(bases)).tolist()

    def take(frac: float, min_paragraphs: int = 1) -> list[int]:
        fit = [i for i in order if len(bases[i]) >= min_paragraphs][: int(frac * len(bases))]
        for i in fit:
            order.remove(i)
        return fit

    for i in take(exact):
        texts.append(_case_and_space(texts[i], rng))
        cluster.append(i)
        label.append("exact")
        made_from.append(i)
    for i in take(copies):
        rate = float(edit_rates[int(rng.integers(len(edit_rates)))])
        texts.append(edit_words(texts[i], rate, rng, vocab, edit_kinds))
        cluster.append(i)
        label.append(f"edit:{rate:.2f}")
        made_from.append(i)
    for k, i in enumerate(take(para, min_paragraphs=5)):
        made = paragraph_copy(bases[i], float(rng.uniform(*para_share)), rng, para_spare[k % n_para])
        if made is None:  # every paragraph is over 20% of the text: this base gets no copy
            continue
        copy, shared = made
        texts.append("\n\n".join(copy))
        cluster.append(i)
        label.append(f"para:{_bin(shared)}")
        made_from.append(i)
    for k, i in enumerate(take(quotes)):
        doc, shared = quote_document(quote_own[k % n_quote], bases[i], float(rng.uniform(*quote_share)), rng)
        texts.append("\n\n".join(doc))
        cluster.append(len(cluster) + 10**6)  # a document of its own: not a copy of anything
        label.append(f"quote:{_bin(shared)}")
        made_from.append(i)
    perm = rng.permutation(len(texts))
    where = np.empty(len(perm), dtype=np.int64)
    where[perm] = np.arange(len(perm))
    related = np.array([-1 if made_from[p] < 0 else where[made_from[p]] for p in perm], dtype=np.int64)
    return Corpus(kind, [texts[p] for p in perm], np.asarray(cluster)[perm], [label[p] for p in perm], seed, related)


def score(corpus: Corpus, dropped: np.ndarray) -> dict:
    """Recall and precision of a set of dropped documents against the ground truth.

    In a true cluster of n documents of which d were dropped, min(d, n - 1) drops are right (one copy must stay)
    and the rest wrong, as is every drop of a document that has no copy. Recall per planted label counts the
    clusters of that label whose copy went; precision = right drops / all drops.
    """
    dropped = np.asarray(dropped, dtype=bool)
    ids, inverse, sizes = np.unique(corpus.cluster, return_inverse=True, return_counts=True)
    d = np.bincount(inverse, weights=dropped, minlength=len(ids))
    right = np.minimum(d, sizes - 1)
    labels = np.asarray(corpus.label)
    recall = {}
    for lab in sorted({x for x in corpus.label if x != "base" and not x.startswith("quote")}, key=_label_key):
        group = np.unique(inverse[labels == lab])
        recall[lab] = round(float(right[group].sum() / (sizes[group] - 1).sum()), 4)
    total = float(dropped.sum())
    quote = np.char.startswith(labels.astype(str), "quote")
    return {
        "documents": len(labels),
        "copies": int((sizes - 1).sum()),  # drops a perfect method would make
        "quote_docs": int(quote.sum()),
        "dropped": int(total),
        "false_drops": int(total - right.sum()),
        "precision": round(float(right.sum() / total), 4) if total else 1.0,
        "recall": recall,
        "quote_docs_dropped": int((dropped & quote).sum()),
    }


def restrict(corpus: Corpus, keep: np.ndarray) -> Corpus:
    """The documents where `keep` is true (e.g. those a filter let through), ground truth carried along."""
    idx = np.flatnonzero(keep)
    new = np.full(len(keep), -1, dtype=np.int64)
    new[idx] = np.arange(len(idx))
    related = None if corpus.related is None else np.where(corpus.related[idx] >= 0, new[corpus.related[idx]], -1)
    return Corpus(corpus.kind, [corpus.texts[i] for i in idx], corpus.cluster[idx], [corpus.label[i] for i in idx],
                  corpus.seed, related)


def write_jsonl(corpus: Corpus, path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(corpus.texts)))
    return path


def _bin(share: float, width: float = 0.1) -> str:
    """The share rounded down to its bin (0.8 for 0.80-0.89), so labels group documents of similar overlap."""
    return f"{np.floor(share / width + 1e-9) * width:.1f}"


def _label_key(label: str) -> tuple[str, float]:
    name, _, value = label.partition(":")
    return name, float(value or 0)


def recall_by_group(recall: dict, prefix: str, low: float = 0.0, high: float = 1.0) -> float:
    """Mean recall over the labels `prefix:v` with low <= v <= high (each label weighted equally)."""
    values = [r for lab, r in recall.items() if lab.startswith(prefix) and low <= _label_key(lab)[1] <= high]
    return float(np.mean(values)) if values else float("nan")


# ------------------------------------------------------------------------------------ pages a filter must reject

_PRODUCTS = ["watches", "sneakers", "phone cases", "vitamins", "car insurance", "loans", "hotel deals", "perfume",
             "handbags", "web hosting", "diet pills", "casino bonus", "sunglasses", "headphones", "crypto signals"]
_CITIES = ["Austin", "Leeds", "Dublin", "Denver", "Perth", "Lyon", "Osaka", "Boston", "Cardiff", "Tampa", "Calgary",
           "Bristol", "Phoenix", "Utrecht", "Adelaide", "Porto", "Omaha", "Bergen"]
_SERVICES = ["plumber", "locksmith", "dentist", "roofing company", "divorce lawyer", "moving company", "electrician",
             "wedding photographer", "dog groomer", "tax accountant", "driving school", "pest control"]
_TEMPLATES = [
    "Looking for the best {s} in {c}? Our {s} team in {c} is available 24/7 and offers free quotes to every "
    "customer in the {c} area.",
    "{C} {s} reviews: compare the top rated {s} services in {c} and book online today with a {n}% discount.",
    "Find cheap {s} near {c}. We list {n} verified {s} companies in {c} with prices, photos and opening hours.",
    "Welcome to our {s} directory for {c}. Click on a {s} below to see the address and phone number in {c}.",
]


def _spam_page(rng: np.random.Generator) -> str:
    kws = rng.choice(_PRODUCTS, size=3, replace=False).tolist()
    lines = []
    for _ in range(int(rng.integers(12, 30))):
        k = kws[int(rng.integers(3))]
        lines.append(" ".join(rng.choice([f"cheap {k}", f"best {k}", f"buy {k} online", f"{k} sale", f"discount {k}",
                                          f"{k} free shipping", f"top {k} 2024", f"{k} deals"], size=4).tolist()))
    return "\n".join(lines)


def _templated_page(rng: np.random.Generator) -> str:
    template = _TEMPLATES[int(rng.integers(len(_TEMPLATES)))]
    out = []
    for _ in range(int(rng.integers(15, 40))):
        s, c = _SERVICES[int(rng.integers(len(_SERVICES)))], _CITIES[int(rng.integers(len(_CITIES)))]
        out.append(template.format(s=s, c=c, C=c.upper(), n=int(rng.integers(5, 90))))
    sep = "\n" if rng.random() < 0.5 else " "
    return sep.join(out)


def _gibberish_page(rng: np.random.Generator) -> str:
    style = int(rng.integers(4))
    n = int(rng.integers(120, 500))
    if style == 0:  # random letter strings
        letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
        words = ["".join(rng.choice(letters, size=int(rng.integers(2, 11)))) for _ in range(n)]
    elif style == 1:  # base64 / hex blobs
        alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"))
        words = ["".join(rng.choice(alphabet, size=int(rng.integers(16, 64)))) for _ in range(n // 4)]
    elif style == 2:  # symbol and number soup
        tokens = ["|", "--", "==", "##", "0x", "%%", "::", ">>", "1.0", "42", "9999", "$$", "@@", "~~", "[]", "{}"]
        words = rng.choice(tokens, size=n).tolist()
    else:  # shuffled keywords with no grammar (a scraped tag cloud)
        pool = [w for p in _PRODUCTS + _SERVICES + _CITIES for w in p.lower().split()]
        words = rng.choice(pool, size=n).tolist()
    lines, i = [], 0
    while i < len(words):
        k = int(rng.integers(6, 16))
        lines.append(" ".join(words[i : i + k]))
        i += k
    return "\n".join(lines)


def _menu_page(rng: np.random.Generator) -> str:
    name, menu = _SITES[int(rng.integers(len(_SITES)))]
    items = [f"{m} {int(rng.integers(1, 99))}" if rng.random() < 0.3 else m for m in menu * 6]
    rng.shuffle(items)
    prefix = str(rng.choice(["", "» ", "• ", "- "]))
    return "\n".join([name, *[prefix + x for x in items], f"Copyright {name}"])


def _repeated_paragraph_page(rng: np.random.Generator, chain: dict, starts: list) -> str:
    para = " ".join(_sentence(rng, chain, starts) for _ in range(3))
    other = " ".join(_sentence(rng, chain, starts) for _ in range(2))
    parts = [para] * int(rng.integers(3, 6)) + [other]
    rng.shuffle(parts)
    return "\n\n".join(parts)


BAD_KINDS = ("spam", "templated", "gibberish", "menu", "repeated")


def bad_pages(kind: str, n: int, seed: int) -> list[str]:
    """n generated pages of one kind a quality filter exists to reject (see BAD_KINDS)."""
    rng = np.random.default_rng(seed)
    if kind == "repeated":
        chain = _markov()
        starts = [k for k in chain if k[0] == "<s>"]
        return [_repeated_paragraph_page(rng, chain, starts) for _ in range(n)]
    make = {"spam": _spam_page, "templated": _templated_page, "gibberish": _gibberish_page, "menu": _menu_page}[kind]
    return [make(rng) for _ in range(n)]
