# -*- coding: utf-8 -*-
"""
The package's architecture, checked on its source: every import of one d2_nucleus package by
another goes down the layer order README.md documents ("Repository layout"), never up (imports
inside functions included), and no module outgrows 400 lines.
"""
import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "d2_nucleus")

# floor of each top-level package / module of d2_nucleus: a module may import its own floor and below
LAYERS = {
    "utils": 1,
    "config": 2,
    "checkpoint": 3, "data": 3,
    "modeling": 4, "evaluation": 4,
    "export": 5,
    "measurements": 6,
    "engine": 7,
    "slide": 8, "types": 8,
}
MAX_LINES = 400


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                yield path, rel, name == "__init__.py"


def _imports(path, parts, is_package):
    """Absolute d2_nucleus module names ``path`` imports (at any depth of the file)."""
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_package else parts[:-1]
                base = base[: len(base) - node.level + 1]
                target = base + (node.module.split(".") if node.module else [])
            else:
                target = (node.module or "").split(".")
            if target[0] == "d2_nucleus":
                # "from ..data import x" may name a module x of that package
                yield target, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "d2_nucleus":
                    yield alias.name.split("."), []


def _layer(parts):
    return LAYERS.get(parts[1]) if len(parts) > 1 else 0


def test_every_package_has_a_layer():
    tops = {rel[1] for _, rel, _ in _modules() if len(rel) > 1}
    assert tops <= set(LAYERS), f"packages without a layer in this test and README: {sorted(tops - set(LAYERS))}"


def test_imports_go_down_the_layers():
    upward = []
    for path, parts, is_package in _modules():
        own = _layer(parts)
        for target, _ in _imports(path, parts, is_package):
            theirs = _layer(target)
            if len(parts) > 1 and theirs is not None and theirs > own:
                upward.append(f"{'.'.join(parts)} (layer {own}) imports {'.'.join(target)} (layer {theirs})")
    assert not upward, "imports up the layer order:\n" + "\n".join(upward)


def test_module_size():
    big = []
    for path, _, _ in _modules():
        with open(path, encoding="utf-8") as f:
            lines = sum(1 for _ in f)
        if lines > MAX_LINES:
            big.append(f"{os.path.relpath(path, ROOT)}: {lines} lines")
    assert not big, f"modules over {MAX_LINES} lines (split them):\n" + "\n".join(big)
