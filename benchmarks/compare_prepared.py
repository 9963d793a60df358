"""Compare two prepared folders: `python benchmarks/compare_prepared.py A B [--documents-only]`.

Prints, per part, whether A and B hold the same rows: the kept documents (the split's documents/ when saved, else
the data card's split counts), rejects/ (text, origin, reason, detail), the packed blocks of train/ and validation/
(row for row), the tokenizer's files (byte for byte), and the data card (less its timings and the executor's own
section). Exit status 1 on a difference.
`--documents-only` compares the kept and rejected documents alone (the blocks differ when tasks pack apart).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VOLATILE = ("timings_seconds", "executor")  # differ between equal builds: seconds measured, how it ran


def table(folder: Path, part: str) -> list:
    from datasets import load_from_disk

    if not (folder / part).exists():
        return []
    ds = load_from_disk(str(folder / part))
    return sorted(map(repr, ds.to_list())) if part in ("rejects", "documents") else ds.to_list()


def card(folder: Path) -> dict:
    data = json.loads((folder / "data_card.json").read_text())
    return {k: v for k, v in data.items() if k not in VOLATILE}


def files(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*")) if f.is_file()}


def compare(a: Path, b: Path, documents_only: bool) -> dict[str, bool]:
    parts = ["rejects", "documents"] + ([] if documents_only else ["train", "validation"])
    same = {part: table(a, part) == table(b, part) for part in parts}
    same["tokenizer files"] = files(a / "tokenizer") == files(b / "tokenizer")
    ca, cb = card(a), card(b)
    if documents_only:
        same["card: kept and rejected"] = all(ca[k] == cb[k] for k in ("split", "rejections", "duplicate_clusters"))
    else:
        same["data card"] = ca == cb
        for k in sorted(set(ca) | set(cb)):
            if ca.get(k) != cb.get(k):
                print(f"  card differs at {k!r}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--documents-only", action="store_true")
    args = parser.parse_args()
    same = compare(args.a, args.b, args.documents_only)
    for part, ok in same.items():
        print(f"{part:24s} {'identical' if ok else 'DIFFERENT'}")
    return 0 if all(same.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
