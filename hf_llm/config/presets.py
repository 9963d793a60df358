"""Named presets for the data stages' configs (`data.clean.preset`, `data.dedup.near.preset`).

A config class declares `PRESETS`: name → {dotted field name (relative to the class): value}; every preset names
the same fields (`complete_presets` fills in class defaults), so choosing one sets all of them. Every value a
recipe or the command line gives wins over the preset, also one equal to the class default
(`data.clean.preset=web data.clean.c4.enabled=false` is web without C4). Two paths give that:
- `load_config` merges `preset_layers` between the schema's defaults and the user's layers, so OmegaConf lets the
  user's keys win, and builds the objects under `presets_resolved()`, which tells `apply_preset` to leave them be;
- a config built in Python (`CleanConfig(preset="web")`) applies its preset in `__post_init__`, to the fields that
  still hold their class defaults; to change one of those, assign it after construction.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import typing
from typing import Any, Iterator, Mapping

from omegaconf import OmegaConf

from ..errors import ConfigError

# Set while load_config turns merged layers into objects: their preset is already in the merged values.
_RESOLVED = contextvars.ContextVar("hf_llm_presets_resolved", default=False)


@contextlib.contextmanager
def presets_resolved() -> Iterator[None]:
    token = _RESOLVED.set(True)
    try:
        yield
    finally:
        _RESOLVED.reset(token)


def complete_presets(cls: type, presets: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each preset over the union of the fields any preset names; a field a preset leaves out keeps its class
    default there."""
    keys = list(dict.fromkeys(k for p in presets.values() for k in p))
    return {name: {k: p[k] if k in p else _class_default(cls, k) for k in keys} for name, p in presets.items()}


def apply_preset(cfg: Any, name: str, presets: Mapping[str, Mapping[str, Any]], what: str) -> None:
    """`__post_init__`'s half: check `name`; outside `load_config`, set the preset's fields that still hold their
    class defaults."""
    if name not in presets:
        raise ConfigError(f"{what}: unknown preset {name!r}; choose one of {sorted(presets)}")
    if _RESOLVED.get():
        return
    for dotted, value in presets[name].items():
        obj, leaf = _owner(cfg, dotted), dotted.rsplit(".", 1)[-1]
        if getattr(obj, leaf) == _class_default(type(obj), leaf):
            setattr(obj, leaf, value)


def preset_layers(schema: type, layers: list) -> list:
    """`load_config`'s half: for every config under `schema` that declares PRESETS, one OmegaConf layer holding
    the values of the preset the user's `layers` name (or of the default preset) at the config's path."""
    user = OmegaConf.merge(*layers) if layers else OmegaConf.create()
    out = []
    for path, cls in _preset_configs(schema):
        default = {f.name: f.default for f in dataclasses.fields(cls)}["preset"]
        name = OmegaConf.select(user, f"{path}.preset" if path else "preset", default=default)
        if name not in cls.PRESETS:  # reported, with the valid names, by the class's __post_init__
            continue
        layer = OmegaConf.create()
        for dotted, value in cls.PRESETS[name].items():
            OmegaConf.update(layer, f"{path}.{dotted}" if path else dotted, value, force_add=True)
        out.append(layer)
    return out


def _preset_configs(schema: type, prefix: str = "") -> list[tuple[str, type]]:
    found = [(prefix.rstrip("."), schema)] if hasattr(schema, "PRESETS") else []
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(hints[f.name]):
            found += _preset_configs(hints[f.name], f"{prefix}{f.name}.")
    return found


def _owner(cfg: Any, dotted: str) -> Any:
    obj = cfg
    for part in dotted.split(".")[:-1]:
        obj = getattr(obj, part)
    return obj


def _class_default(cls: type, dotted: str) -> Any:
    *path, leaf = dotted.split(".")
    for part in path:
        cls = typing.get_type_hints(cls)[part]
    f = {x.name: x for x in dataclasses.fields(cls)}[leaf]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default
