"""Every numeric and enumerated config field declares its domain, and a value outside it stops a command at parse
time: `error: ...`, exit status 2, no traceback, the job never called (so no data is read). The table of fields is
derived from the dataclasses, so a new field without a domain fails here."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import typing

import pytest

from hf_llm import cli
from hf_llm.config import load_config
from hf_llm.config.domains import Checked, Text, check_values, domains_of, needs_domain
from hf_llm.errors import ConfigError

from ..conftest import REPO

SCHEMAS = {name: cli._load(cmd.schema) for name, cmd in cli.COMMANDS.items() if cmd.schema}
# A list of sections is overridden whole: the item a bad value is put into, with the keys it needs besides.
LIST_ITEMS = {"sources": "{path: corpus.jsonl, %s}", "stages": "{prepared: folder, %s}", "tasks": "{path: t.jsonl, %s}",
              "data": "{path: held_out.jsonl, %s}"}


def _leaves(schema: type, prefix: str = ""):
    """(override key, its list field or None, class, field name, type hint) for every scalar field under `schema`."""
    hints = typing.get_type_hints(schema)
    for f in dataclasses.fields(schema):
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            yield from _leaves(hint, f"{prefix}{f.name}.")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass(typing.get_args(hint)[0]):
            item = typing.get_args(hint)[0]
            for _, _, cls, name, h in _leaves(item):
                yield f"{prefix}{f.name}", f.name, cls, name, h
        else:
            yield f"{prefix}{f.name}", None, schema, f.name, hint


def _table():
    """One row per (class, field), reached through the first command whose config holds it."""
    seen, rows = set(), []
    for command, schema in SCHEMAS.items():
        for key, list_field, cls, name, hint in _leaves(schema):
            if (cls, name) not in seen:
                seen.add((cls, name))
                rows.append((command, key, list_field, cls, name, hint))
    return rows


TABLE = _table()
DECLARED = [r for r in TABLE if r[4] in domains_of(r[3])]


def _override(key: str, list_field, name: str, value) -> list[str]:
    shown = "[]" if value == [] else value
    if list_field is None:
        return [f"{key}={shown}"]
    return [f"{key}=[{LIST_ITEMS[list_field] % f'{name}: {shown}'}]"]


def test_every_scalar_field_of_every_config_declares_its_domain():
    missing = [f"{cls.__name__}.{name}" for _, _, _, cls, name, hint in TABLE
               if needs_domain(hint) and name not in domains_of(cls)]
    assert not missing, f"fields without a domain (add them to the class's DOMAINS): {missing}"
    for cls in {r[3] for r in TABLE}:
        stale = set(domains_of(cls)) - {f.name for f in dataclasses.fields(cls)}
        assert not stale, f"{cls.__name__}.DOMAINS names fields it does not have: {stale}"


@pytest.mark.parametrize("command,key,list_field,cls,name,hint", DECLARED,
                         ids=[f"{r[3].__name__}.{r[4]}" for r in DECLARED])
def test_each_field_refuses_a_value_outside_its_domain(command, key, list_field, cls, name, hint):
    """check_values is what load_config runs on the merged values: each field alone, outside its domain."""
    domain = domains_of(cls)[name]
    if isinstance(domain, (Text, Checked)):
        return  # free text has no outside; Checked fields are refused by their class (test below, through main)
    assert check_values({name: domain.invalid()}, cls) == [f"{name} {domain.problem(domain.invalid())}"]
    default = {f.name: f for f in dataclasses.fields(cls)}[name]
    if default.default is not dataclasses.MISSING and default.default is not None:
        assert domain.problem(default.default) is None, "the default lies outside its own domain"


@pytest.fixture
def jobs_must_not_run(monkeypatch):
    """Every command's job replaced by one that fails the test: a config error must stop before any work."""
    calls: list[str] = []
    real = cli._load

    def load(name: str):
        if any(cmd.job == name for cmd in cli.COMMANDS.values()):
            return lambda *a, **k: calls.append(name)
        return real(name)

    monkeypatch.setattr(cli, "_load", load)
    return calls


@pytest.mark.parametrize("command", list(SCHEMAS))
def test_every_field_out_of_domain_through_the_cli_main(command, jobs_must_not_run, capsys):
    """All the command's range and choice fields at once (load_config reports every one), through `hf-llm`'s main."""
    rows = [r for r in DECLARED if r[0] == command and not isinstance(domains_of(r[3])[r[4]], (Text, Checked))]
    lists: dict[str, list[str]] = {}
    argv = []
    for _, key, list_field, cls, name, _ in rows:
        if list_field is None:
            argv += _override(key, None, name, domains_of(cls)[name].invalid())
        else:
            lists.setdefault(key, []).append(f"{name}: {domains_of(cls)[name].invalid()}")
    for key, items in lists.items():
        list_field = key.rsplit(".", 1)[-1]
        argv.append(f"{key}=[{LIST_ITEMS[list_field] % ', '.join(items)}]")
    assert cli.main([command, *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid configuration") and "Traceback" not in err
    for _, key, list_field, cls, name, _ in rows:
        shown = f"{key}[0].{name}" if list_field else key
        assert f"{shown} must be" in err, f"{shown} not reported:\n{err}"
    assert not jobs_must_not_run


CHECKED = [r for r in DECLARED if isinstance(domains_of(r[3])[r[4]], Checked)]


@pytest.mark.parametrize("command,key,list_field,cls,name,hint", CHECKED, ids=[f"{r[3].__name__}.{r[4]}" for r in CHECKED])
def test_fields_checked_by_their_class_fail_through_the_cli_main(command, key, list_field, cls, name, hint,
                                                                  jobs_must_not_run, capsys):
    bad = domains_of(cls)[name].invalid()
    assert cli.main([command, *_override(key, list_field, name, bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and key in err and "Traceback" not in err
    assert not jobs_must_not_run


@pytest.mark.parametrize("override,message", [
    ("data.sources={path: a.jsonl}", "data.sources expects a list, e.g. data.sources=[{path: ...}, ...]; got a mapping"),
    ("data.clean=[1,2]", "data.clean expects a mapping (a section"),
    ("train=[1]", "train expects a mapping"),
    ("model.overrides=[1]", "model.overrides expects a mapping"),
    ("eval.sample_prompts={a: b}", "eval.sample_prompts expects a list, e.g. eval.sample_prompts=[a,b]"),
    ("train.lr=[1,2]", "train.lr expects a single value, got a list"),
    ("data.sources.0.path=x.jsonl", "data.sources.0.path: a key=value override cannot change one item of a list; "
                                    "give data.sources whole"),
    ("data.sources=[]", "data.sources is empty: name at least one source"),
])
def test_wrong_shapes_and_an_empty_source_list_name_the_key(override, message, jobs_must_not_run, capsys):
    with pytest.raises(ConfigError, match=None) as e:
        load_config(None, [override])
    assert message in str(e.value)
    assert cli.main(["pretrain", override]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not jobs_must_not_run


def test_help_shows_each_fields_domain():
    text = cli.command_help(SCHEMAS["pretrain"], None, "hf-llm pretrain")
    lines = {line.split(" = ")[0].strip(): line for line in text.splitlines() if " = " in line}
    assert "# [> 0] peak learning rate" in lines["train.lr"]
    assert "# [>= 1]" in lines["train.max_steps"]
    assert "[cosine | wsd | linear | constant]" in lines["train.schedule"]
    assert "[in (0, 1)]" in lines["data.validation_fraction"]


def test_a_real_process_stops_before_reading_data(tmp_path):
    """The console entry point in a subprocess: the named source does not exist, so reading data first would fail
    with a different message; the output folder is never created."""
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "hf_llm.cli", "pretrain", f"output_dir={out}", "train.lr=-1",
                           "train.max_steps=-3", f"data.sources=[{{path: '{tmp_path / 'missing.jsonl'}'}}]"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("error: invalid configuration") and "Traceback" not in proc.stderr
    assert "train.lr must be > 0, got -1.0" in proc.stderr and "train.max_steps must be >= 1, got -3" in proc.stderr
    assert "missing.jsonl" not in proc.stderr and not out.exists()
