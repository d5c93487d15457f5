"""The package's layers import downward only (issue 9's target).

Order, lowest first: errors/utils/configuration/lazy -> data -> text -> layers -> encoders ->
models -> evaluation -> training -> checkpoint (used by training to save) ... see LAYERS.
Evaluation sits *below* training: the trainer scores dev with the one inference path, and
evaluation never imports training (it once did, through ``training/batching.py``).  Imports
inside functions count too (a lazy import is still a dependency), except the registries'
``"module:Class"`` strings, which are data.
"""
from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "iein"

#: layer of each top-level module or package of iein; a module may import its own layer or lower
LAYERS: dict[str, int] = {
    "errors": 0, "utils": 0, "atomic": 0, "configuration": 0, "lazy": 0, "__init__": 0,
    "data": 1, "hub": 1,
    "text": 2,
    "layers": 3,
    "encoders": 4,
    "models": 5,
    "checkpoint": 6,
    "evaluation": 6,
    "training": 7,
    "recognizer": 8, "shipped": 8, "output_formats": 8, "stream": 8, "sharing": 8, "reproduce": 8, "batch_predict": 8, "pretrained": 8,
    "server": 9, "cli": 10, "__main__": 11,
}


def _top(module: str) -> str:
    return module.split(".")[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    rel = path.relative_to(SRC).with_suffix("")
    package = list(rel.parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
                if not target:  # "from . import x" at the package root
                    target = node.names[0].name
            elif node.module and node.module.startswith("iein"):
                target = node.module[len("iein."):] if node.module != "iein" else node.names[0].name
            else:
                continue
            out.append((node.lineno, target))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("iein."):
                    out.append((node.lineno, alias.name[len("iein."):]))
    return out


def test_every_module_has_a_layer():
    tops = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")}
    assert tops <= set(LAYERS), f"give these a layer: {sorted(tops - set(LAYERS))}"


def test_imports_go_downward_only():
    bad = []
    for path in SRC.rglob("*.py"):
        if path == SRC / "__init__.py":
            continue  # the package's front door: `iein.Recognizer` is re-exported lazily
        own = _top(str(path.relative_to(SRC).with_suffix("")).replace("/", "."))
        for line, target in _imports(path):
            top = _top(target)
            if top in LAYERS and LAYERS[top] > LAYERS[own]:
                bad.append(f"{path.relative_to(SRC)}:{line} ({own}, layer {LAYERS[own]}) imports {target} "
                           f"(layer {LAYERS[top]})")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_training_and_evaluation_do_not_import_each_other_both_ways():
    ev = [t for p in (SRC / "evaluation").rglob("*.py") for _, t in _imports(p)]
    assert not [t for t in ev if _top(t) == "training"]
