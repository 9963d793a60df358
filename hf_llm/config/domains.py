"""What values each config field may take, declared once per class and checked when a config is parsed.

Every config class lists its fields' domains in a `DOMAINS` class attribute: a numeric field its range, an
enumerated one its choices, a free string `TEXT`, a field of another shape (checked by the class itself) `Checked`.
`load_config` checks every value of a parsed config against them before any object is built, so `train.lr=-1`
fails at once with `error: ...` and exit status 2 — never after data preparation. `hf-llm COMMAND --help` shows each
field's domain, and a test feeds every declared field a value outside it (tests/unit/test_config_domains.py), so a
new field without a domain fails that test.

Bools, lists of strings, mappings and nested sections need no entry: OmegaConf checks their type and shape.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class Range:
    """A number in [lo, hi] (an end is open when `*_open`, absent when None); `also` lists allowed exceptions."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    also: tuple = ()  # e.g. (-1,) for "-1 = all"

    def problem(self, value: Any) -> Optional[str]:
        if value in self.also:
            return None
        if isinstance(value, float) and math.isnan(value):
            return f"must be {self}, got nan"
        low = self.lo is not None and (value <= self.lo if self.lo_open else value < self.lo)
        high = self.hi is not None and (value >= self.hi if self.hi_open else value > self.hi)
        return f"must be {self}, got {value!r}" if low or high else None

    def invalid(self) -> Any:
        """A value outside the range (for the table-driven test)."""
        if self.lo is not None:
            return self.lo - 1 if not self.lo_open or self.lo != 0 else 0
        return self.hi + 1

    def __str__(self) -> str:
        if self.lo is not None and self.hi is not None:
            text = f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        elif self.lo is not None:
            text = f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        else:
            text = f"{'<' if self.hi_open else '<='} {_num(self.hi)}"
        return text + "".join(f" or {_num(a)}" for a in self.also)


@dataclass(frozen=True)
class OneOf:
    """One of a fixed set of names; `fold_case` accepts YAML's true/false as well as "true"/"false"."""

    choices: tuple
    fold_case: bool = False

    def problem(self, value: Any) -> Optional[str]:
        shown = str(value).lower() if self.fold_case else value
        return None if shown in self.choices else f"must be one of {', '.join(self.choices)}; got {value!r}"

    def invalid(self) -> Any:
        return "no-such-choice"

    def __str__(self) -> str:
        return " | ".join(self.choices)


@dataclass(frozen=True)
class Text:
    """Any string (a path, a name, a template): nothing to check here."""

    def problem(self, value: Any) -> Optional[str]:
        return None

    def invalid(self) -> Any:
        return None

    def __str__(self) -> str:
        return ""


@dataclass(frozen=True)
class Checked:
    """A field of a shape the class checks itself in `__post_init__` (a name or a list of names); `bad` is a value
    it must refuse (for the table-driven test)."""

    what: str
    bad: Any

    def problem(self, value: Any) -> Optional[str]:
        return None

    def invalid(self) -> Any:
        return self.bad

    def __str__(self) -> str:
        return self.what


Domain = typing.Union[Range, OneOf, Text, Checked]

TEXT = Text()
POSITIVE = Range(0, lo_open=True)  # > 0
NON_NEGATIVE = Range(0)  # >= 0
AT_LEAST_1 = Range(1)
FRACTION = Range(0, 1)  # [0, 1]
SEED = Range(0, 2**32 - 1)  # numpy's and torch's seeds are unsigned 32-bit


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def domains_of(cls: type) -> dict[str, Domain]:
    """The `DOMAINS` of `cls` and its dataclass bases (a subclass's entry wins)."""
    found: dict[str, Domain] = {}
    for klass in reversed(cls.__mro__):
        found.update(klass.__dict__.get("DOMAINS", {}))
    return found


def needs_domain(hint: Any) -> bool:
    """Whether a field of this type must declare a domain: numbers, strings, and fields typed Any."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union and len(args) == 1:
        hint = args[0]
    return hint in (int, float, str) or hint is Any


def check_values(values: Any, schema: type, prefix: str = "") -> list[str]:
    """Every field of `values` (a plain dict/list tree of `schema`) outside its declared domain, as messages."""
    problems: list[str] = []
    if not isinstance(values, dict) or not dataclasses.is_dataclass(schema):
        return problems
    hints = typing.get_type_hints(schema)
    domains = domains_of(schema)
    for f in dataclasses.fields(schema):
        if f.name not in values:
            continue
        value, hint, key = values[f.name], hints[f.name], prefix + f.name
        if dataclasses.is_dataclass(hint):
            problems += check_values(value, hint, key + ".")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            for i, item in enumerate(value or []):
                problems += check_values(item, typing.get_args(hint)[0], f"{key}[{i}].")
        elif value is not None and f.name in domains:
            problem = domains[f.name].problem(value)
            if problem:
                problems.append(f"{key} {problem}")
    return problems
