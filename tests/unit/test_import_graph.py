"""The package's imports run one way: scripts → jobs → train/data → config → errors.

Every `import` of one of our modules counts, also one inside a function (a lazy import that dodges a cycle is still
a cycle). A module may import its own layer or a lower one; the graph has no cycle.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "hf_llm"

# Lowest first. A prefix names a package and everything in it; the longest matching prefix wins.
LAYERS: list[tuple[str, ...]] = [
    ("hf_llm.errors", "hf_llm.io", "hf_llm.estimate", "hf_llm.auth", "hf_llm.shipped"),  # leaves: import nothing of ours
    ("hf_llm.config",),  # typed configs and their presets
    ("hf_llm.data", "hf_llm.model", "hf_llm.cards", "hf_llm.plots", "hf_llm.train.collate", "hf_llm.train.metrics",
     "hf_llm.train.optim", "hf_llm.train.checkpoint", "hf_llm.train.loss",
     "hf_llm.train.samplers"),  # data steps and training parts
    ("hf_llm.evaluation", "hf_llm.downstream", "hf_llm.hub", "hf_llm.gguf"),  # scoring and publishing, which the loop calls
    # the one loop, what it trains on and with which objective, its downstream pass, and its launcher
    ("hf_llm.train", "hf_llm.train.loop", "hf_llm.train.objective", "hf_llm.train.stages", "hf_llm.train.downstream",
     "hf_llm.train.run"),
    ("hf_llm.pretrain", "hf_llm.finetune", "hf_llm.sft", "hf_llm.planner"),  # the jobs
    ("hf_llm.cli",),  # the command line
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """Every module of ours that `path` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found |= {c for c in candidates if c.split(".")[0] == "hf_llm" and _exists(c)}
    return found - {name}


def _exists(module: str) -> bool:
    path = ROOT.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def layer_of(module: str) -> int:
    if module == "hf_llm":  # the package's __init__: the version, nothing else
        return 0
    best = max(((len(p), i) for i, layer in enumerate(LAYERS) for p in layer
                if module == p or module.startswith(p + ".")), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in {__file__}")
    return best[1]


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports_of(p) for p in sorted(ROOT.rglob("*.py"))}


def test_every_module_has_a_layer():
    for module in graph():
        layer_of(module)


def test_no_upward_imports():
    upward = [f"{m} (layer {layer_of(m)}) imports {d} (layer {layer_of(d)})"
              for m, deps in graph().items() for d in sorted(deps) if layer_of(d) > layer_of(m)]
    assert not upward, "imports must run one way:\n" + "\n".join(upward)


def test_no_import_cycles():
    g = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for d in sorted(g[m]):
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " → ".join(path[path.index(d):] + [d]))
            if d in g and d not in state:
                visit(d)
        path.pop()
        state[m] = 2

    for m in g:
        if m not in state:
            visit(m)


def test_the_walk_sees_lazy_imports():
    """The checks above are only as good as `imports_of`: it must see an import inside a function."""
    probe = ROOT / "data" / "steps.py"
    assert "hf_llm.data.clean" in imports_of(probe)
    lazy = [m for m, deps in graph().items() if any(layer_of(d) == layer_of(m) for d in deps)]
    assert lazy  # same-layer imports exist, so the cycle check has edges to walk


@pytest.mark.parametrize("cycle", [("a", "b"), ("a", "b", "c")])
def test_the_cycle_check_fails_on_a_cycle(cycle, monkeypatch):
    fake = {m: {cycle[(i + 1) % len(cycle)]} for i, m in enumerate(cycle)}
    monkeypatch.setattr(sys.modules[__name__], "graph", lambda: fake)
    with pytest.raises(AssertionError, match="import cycle"):
        test_no_import_cycles()


def test_benchmarks_and_the_package_never_import_the_test_package():
    """Benchmarks and hf_llm run from a checkout without tests/ (an sdist, a wheel): what both need, such as the
    corpus generators, lives in benchmarks/ and tests import it from there."""
    offenders = []
    for path in sorted([*(ROOT.parent / "benchmarks").glob("*.py"), *ROOT.rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level
                     else [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(ROOT.parent)}: {n}" for n in names if n.split(".")[0] == "tests"]
    assert not offenders, offenders
