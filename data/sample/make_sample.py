"""Rebuild the bundled sample corpus from Debian's public-domain text packages.

Provenance (all public domain, see LICENSE.md beside this file):
  bible-kjv-text  King James Version of the Bible (1611), via the `bible` program of package bible-kjv
  dict-devil      Ambrose Bierce, The Devil's Dictionary (1911)
  jargon-text     The Jargon File 4.4.7 ("in the public domain, to be freely used, shared, and modified")

Run on a Debian machine:
  apt-get install bible-kjv dict-devil jargon-text && python data/sample/make_sample.py
It writes data/sample/corpus.jsonl.gz: one JSON document per line with id, source and text.
"""

from __future__ import annotations

import gzip
import json
import re
import subprocess
from pathlib import Path

OUT = Path(__file__).with_name("corpus.jsonl.gz")


def paragraphs(text: str) -> list[str]:
    paras = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    # Table-of-contents and headword-index lines are one or two words: not prose.
    return [p for p in paras if len(p.split()) >= 6]


def group(paras: list[str], max_chars: int = 2500) -> list[str]:
    docs, cur = [], []
    for p in paras:
        if cur and sum(len(x) for x in cur) + len(p) > max_chars:
            docs.append("\n\n".join(cur))
            cur = []
        cur.append(p)
    if cur:
        docs.append("\n\n".join(cur))
    return docs


def kjv_chapters() -> list[str]:
    raw = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    chapters: dict[str, list[str]] = {}
    for line in raw.splitlines():
        m = re.match(r"^(\w+?\d*?)(\d+):(\d+) (.*)$", line)
        if m:
            chapters.setdefault(m.group(1) + m.group(2), []).append(m.group(4).strip())
        elif line.strip() and chapters:
            next(reversed(chapters.values()))[-1] += " " + line.strip()
    return [" ".join(v) for v in chapters.values()]


def main() -> None:
    devil = gzip.open("/usr/share/dictd/devil.dict.dz").read().decode("utf-8", "replace")
    devil = devil[devil.index("PREFACE"):]
    jargon = gzip.open("/usr/share/doc/jargon-text/jargon.txt.gz").read().decode("utf-8", "replace")
    sources = {
        "kjv": kjv_chapters(),
        "devils_dictionary": group(paragraphs(devil)),
        "jargon_file": group(paragraphs(jargon)),
    }
    n = 0
    with gzip.open(OUT, "wt", encoding="utf-8") as f:
        for source, docs in sources.items():
            for i, doc in enumerate(docs):
                f.write(json.dumps({"id": f"{source}-{i:05d}", "source": source, "text": doc}) + "\n")
                n += 1
    print(f"wrote {n} documents to {OUT}")


if __name__ == "__main__":
    main()
