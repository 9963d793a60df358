"""The `hf-llm` command and the plumbing the thin scripts share.

One table (`COMMANDS`) maps each sub-command to the job function its script runs, its config class and its default
recipe; `hf-llm pretrain ...` and `scripts/pretrain.py ...` both go through `run_command`, so they take the same
`[RECIPE.yaml] [key=value ...]` arguments and call the same function. A user error exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import io
import logging
import os
import sys
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from . import __version__
from .config import RunConfig, load_config, parse_cli
from .errors import HfLlmError
from .shipped import shipped_file


@dataclass(frozen=True)
class Command:
    """A sub-command. Job and schema are `module:attribute` names, imported when the command runs, so that
    `hf-llm --help` does not import torch for every command."""

    summary: str
    job: str
    schema: Optional[str] = None  # its config dataclass; None for a command with flags of its own (push)
    recipe: Optional[str] = None  # default recipe, relative to the checkout (a wheel ships it: hf_llm.shipped)
    info_logging: bool = False  # the job reports its progress through `logging`
    usage: str = ""  # the arguments of a command with flags of its own (schema None), for `hf-llm --help`


COMMANDS: dict[str, Command] = {
    "prepare-data": Command(
        "sources → cleaned, deduplicated, decontaminated, tokenised, packed folder (train/ validation/ rejects/ "
        "tokenizer/ data card), in process or on datatrove's executors (executor.kind=local|slurm|ray); pretrain on "
        "it with data.prepared=OUTPUT_DIR",
        "hf_llm.data.executor:prepare_data", "hf_llm.config:PrepareDataConfig", "configs/data/sample.yaml",
        info_logging=True),
    "plan": Command(
        "size, tokens, time and per-GPU memory of a run, and the launch it needs (ZeRO stage, batch, accumulation)",
        "hf_llm.planner:run_plan", "hf_llm.planner:PlanConfig"),
    "pretrain": Command(
        "pretrain a causal LM in this process; for several processes or GPUs: accelerate launch "
        "scripts/pretrain.py (same arguments)",
        "hf_llm.pretrain:run_pretraining", "hf_llm.config:RunConfig", "configs/recipes/pretrain_tiny.yaml"),
    "finetune": Command(
        "fine-tune a causal LM (full, LoRA, QLoRA); for several processes: accelerate launch scripts/finetune.py",
        "hf_llm.finetune:run_finetuning", "hf_llm.finetune:FinetuneRunConfig",
        "configs/recipes/finetune_lora_tiny.yaml"),
    "evaluate": Command(
        "perplexity and bits per byte on held-out text (sliding windows), greedy and sampled continuations; "
        "results to a JSON file and, with update_model_card=true, the model card",
        "hf_llm.evaluation:run_evaluation", "hf_llm.config:EvaluateConfig"),
    "push": Command(
        "upload an export (OUTPUT_DIR/model), an adapter or a prepared data folder to the Hugging Face Hub",
        "hf_llm.cli:push_main",
        usage="PATH REPO_ID [--private] [--revision R] [--repo-type T] [--endpoint URL] [--retries N]"),
    "gguf": Command(
        "write an exported model folder as one GGUF file for llama.cpp, Ollama or LM Studio (Llama models, byte-level "
        "BPE tokenizers; the tokenizer is declared so llama.cpp splits text exactly as it does)",
        "hf_llm.cli:gguf_main", usage="MODEL_DIR [--outfile FILE.gguf] [--outtype f32|f16|q8_0]"),
}


def _load(name: str) -> Any:
    module, attribute = name.split(":")
    return getattr(importlib.import_module(module), attribute)


# ------------------------------------------------------------------------------------------------------ running


def main(argv: Optional[list[str]] = None) -> int:
    """`hf-llm COMMAND [RECIPE.yaml] [key=value ...]`: the console script that `pip install -e .` installs."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 2
    args = parser.parse_args(argv)
    return run_command(args.command, args.args)


def run_command(name: str, argv: Optional[list[str]] = None, prog: Optional[str] = None) -> int:
    """Run sub-command `name` with `argv` (default: this process's arguments); `hf-llm NAME` and scripts/NAME.py
    both end here."""
    cmd = COMMANDS[name]
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = prog or f"hf-llm {name}"
    if cmd.schema is None:
        return _load(cmd.job)(argv, prog)
    if cmd.info_logging:
        logging.basicConfig(level=logging.INFO, format="%(message)s")
    recipe = str(shipped_file(cmd.recipe)) if cmd.recipe else None
    # The job's module (torch, transformers) is imported once the config has parsed: a config error costs no import.
    return run_cli(lambda cfg: _load(cmd.job)(cfg), recipe, argv, _load(cmd.schema), prog=prog,
                   summary=cmd.summary)


def run_cli(job: Callable, recipe: Optional[str], argv: Optional[list[str]] = None, schema: type = RunConfig,
            prog: Optional[str] = None, summary: str = "") -> int:
    """Parse `[RECIPE.yaml] [key=value ...]` into `schema` (with `recipe` as the default recipe), run `job` on it;
    `--help` lists every key. Returns the exit status."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked datasets workers and tokenizers threads clash
    argv = sys.argv[1:] if argv is None else argv
    try:
        if any(a in ("-h", "--help") for a in argv):
            print(command_help(schema, recipe, prog or Path(sys.argv[0]).name, summary))
            return 0
        cfg = parse_cli(argv, recipe, schema)
        job(cfg)
    except HfLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def push_main(argv: list[str], prog: str = "hf-llm push") -> int:
    """`push PATH REPO_ID [--private] [--revision R]`: also the command a run prints when one of its pushes failed.
    The token comes from HF_TOKEN or `hf auth login`."""
    from .hub import push_path

    parser = argparse.ArgumentParser(
        prog=prog, description=COMMANDS["push"].summary + ". A prepared data folder (train/ + validation/ + "
        "data_card.json) is pushed as a dataset repository with its data card as README. The token comes from "
        "HF_TOKEN or `hf auth login`.")
    parser.add_argument("path", help="folder to upload")
    parser.add_argument("repo_id", help="user/name or org/name")
    parser.add_argument("--private", action=argparse.BooleanOptionalAction, default=True,
                        help="visibility of a new repository (default: private; an existing one keeps its own)")
    parser.add_argument("--revision", default="main", help="branch to commit to (created when missing)")
    parser.add_argument("--repo-type", choices=("model", "dataset"), default=None,
                        help="default: dataset for a prepared data folder, else model")
    parser.add_argument("--endpoint", default=None,
                        help="a private Hub or mirror (default: HF_ENDPOINT or huggingface.co)")
    parser.add_argument("--retries", type=int, default=3, help="further attempts after a failure, with backoff")
    args = parser.parse_args(argv)
    try:
        url = push_path(args.path, args.repo_id, private=args.private, revision=args.revision,
                        repo_type=args.repo_type, endpoint=args.endpoint, retries=args.retries)
    except HfLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"pushed {args.path} to {args.repo_id}@{args.revision}: {url}")
    return 0


def gguf_main(argv: list[str], prog: str = "hf-llm gguf") -> int:
    """`gguf MODEL_DIR [--outfile F] [--outtype T]`: the same writer as a job's `export.gguf=T`."""
    from .gguf import OUTTYPES, export_gguf, job_gguf_path

    parser = argparse.ArgumentParser(prog=prog, description=COMMANDS["gguf"].summary + ".")
    parser.add_argument("model_dir", help="an exported model folder (OUTPUT_DIR/model, merged/, or any Llama folder)")
    parser.add_argument("--outfile", default=None, help="default: MODEL_DIR/model-OUTTYPE.gguf")
    parser.add_argument("--outtype", choices=OUTTYPES, default="f16",
                        help="f32 (exact), f16 (default, as llama.cpp's converter) or q8_0 (8-bit blocks)")
    args = parser.parse_args(argv)
    outfile = args.outfile or job_gguf_path(Path(args.model_dir), args.outtype)
    try:
        path = export_gguf(args.model_dir, outfile, args.outtype)
    except HfLlmError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB, {args.outtype}); run it with llama.cpp: "
          f"llama-cli -m {path}")
    return 0


# ------------------------------------------------------------------------------------------------------- help


def build_parser() -> argparse.ArgumentParser:
    lines = []
    for name, cmd in COMMANDS.items():
        lines.append(f"  {name:<13} " + "\n                ".join(textwrap.wrap(cmd.summary, 92)))
        keys = cmd.usage if cmd.schema is None else " ".join(top_level_keys(_load(cmd.schema)))
        lines.append("                keys: " + "\n                      ".join(textwrap.wrap(keys, 86)))
    epilog = (
        "commands (each takes [RECIPE.yaml] [key=value ...], the arguments of its script in scripts/):\n"
        + "\n".join(lines)
        + "\n\n`hf-llm COMMAND --help` lists every key with its default and what it is for. Several processes or GPUs:"
          "\n  accelerate launch scripts/pretrain.py [RECIPE.yaml] [key=value ...]"
    )
    parser = argparse.ArgumentParser(
        prog="hf-llm", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=epilog,
        description="Raw text to a trained, evaluated and published language model on the Hugging Face stack.")
    parser.add_argument("--version", action="version", version=f"hf_llm {__version__}")
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND", help=", ".join(COMMANDS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="[RECIPE.yaml] [key=value ...] (see COMMAND --help)")
    return parser


def top_level_keys(schema: type) -> list[str]:
    """`output_dir model.* train.* ...`: a config's keys, sections collapsed."""
    from .config import _field_type, _list_item_type

    keys = []
    for f in dataclasses.fields(schema):
        if dataclasses.is_dataclass(_field_type(schema, f.name)):
            keys.append(f"{f.name}.*")
        elif _list_item_type(schema, f.name) is not None:
            keys.append(f"{f.name}[].*")
        else:
            keys.append(f.name)
    return keys


def command_help(schema: type, recipe: Optional[str], prog: str, summary: str = "") -> str:
    """Usage, then every key as `key = default  # why`, the defaults being those of the default recipe."""
    values, source = schema(), "the config's defaults"
    if recipe is not None and Path(recipe).is_file():
        values = load_config(recipe, [], schema)
        source = f"the default recipe {_shown_path(recipe)} over the config's defaults"
    elif recipe is not None:
        source += f" (the default recipe {recipe} is missing: this is not a checkout; pass a RECIPE.yaml)"
    rows = [(key, value, why) for key, value, why in config_rows(schema, values)]
    width = min(56, max(len(f"{k} = {v}") for k, v, _ in rows) + 2)
    lines = [f"  {f'{k} = {v}':<{width - 2}}  # {why}" if why else f"  {k} = {v}" for k, v, why in rows]
    return "\n".join([
        f"usage: {prog} [RECIPE.yaml] [key=value ...]", "",
        *textwrap.wrap(summary, 116), "",
        "A recipe is a YAML file of these keys (nested by section); each key=value on the command line overrides one",
        "(lists: key=[a,b]; a list of sections: key=[{path: a.jsonl}]). Unknown keys are an error, and so is a value",
        "outside the domain shown in [brackets] (checked before any work starts).", "",
        f"config keys (values: {source}):",
        *lines,
    ])


def _shown_path(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return path


def config_rows(schema: type, values: Any, prefix: str = "") -> Iterator[tuple[str, str, str]]:
    """(dotted key, value as YAML, comment) for every leaf of a config; a list of sections also lists the keys
    of one item as `key[].sub` with the item defaults."""
    from .config import _field_type, _list_item_type

    from .config.domains import domains_of

    why = field_comments(schema)
    domains = {name: str(d) for name, d in domains_of(schema).items() if str(d)}
    for f in dataclasses.fields(schema):
        key = prefix + f.name
        ftype = _field_type(schema, f.name)
        value = getattr(values, f.name) if values is not None else _field_default(f)
        if dataclasses.is_dataclass(ftype):
            yield from config_rows(ftype, value, f"{key}.")
            continue
        comment = why.get(f.name, "")
        if f.name in domains:  # what the field may hold, as load_config checks it
            comment = f"[{domains[f.name]}] {comment}".strip()
        yield key, _inline(value), comment
        item = _list_item_type(schema, f.name)
        if item is not None:
            yield from config_rows(item, None, f"{key}[].")


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return "(required)"


def _inline(value: Any) -> str:
    """A value as the flow YAML that an override takes (`null`, `true`, `[a, b]`, `{path: x}`)."""
    import yaml

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return dataclasses.asdict(v)
        return [plain(x) for x in v] if isinstance(v, (list, tuple)) else v

    text = yaml.safe_dump(plain(value), default_flow_style=True, width=10**9, sort_keys=False, allow_unicode=True)
    text = text.strip()
    return text[: -len("...")].strip() if text.endswith("\n...") else text


def field_comments(cls: type) -> dict[str, str]:
    """Each field's `# why` comment from the source of `cls` and its dataclass bases: the comment on the field's
    line, else the comment lines right above it. The config classes document their fields this way, and the help
    should say what the code says."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_own_field_comments(klass))
    return comments


def _own_field_comments(klass: type) -> dict[str, str]:
    try:
        source = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):  # no source shipped (a zipped or compiled install): help without comments
        return {}
    found: dict[str, str] = {}
    depth, line, inline, above, prev = 0, [], [], [], None
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            (inline if line else above).append(tok.string.lstrip("#").strip())
        elif tok.type == tokenize.NL:
            if not line and prev != tokenize.COMMENT:
                above = []  # a blank line ends a comment block
        elif tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            # A field is a class-body line `name: type ...`; methods' bodies are deeper.
            if depth == 1 and len(line) > 1 and line[0].type == tokenize.NAME and line[1].string == ":":
                found[line[0].string] = " ".join(inline or above)
            line, inline, above = [], [], []
        else:
            line.append(tok)
        prev = tok.type
    return found


if __name__ == "__main__":  # `python -m hf_llm.cli ...`, also under `accelerate launch -m hf_llm.cli pretrain ...`
    sys.exit(main())
