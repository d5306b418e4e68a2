"""The package's layers: no module imports a layer above its own.

    base (_constants, _cli, _extension, _version, the compiled _C)
      < ops (and cwarp.reference) < nn (and cwarp.transforms) < data < models < eval < train < apps

The probe (eval) scores any backbone and needs nothing of the trainer; the
trainer's online evaluation uses the probe, so eval sits below train. Every
import counts, those inside functions too (a lazy import is still a
dependency). ``cwarp/__init__.py`` is the lazy facade of the public API and is
left out; ``import cwarp`` elsewhere reaches the ops and modules it exposes,
so it counts as an import of the nn layer.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "cwarp"
LAYERS = ("base", "ops", "nn", "data", "models", "eval", "train", "apps")
RANK = {name: i for i, name in enumerate(LAYERS)}
# Top-level modules and the layer they belong to.
MODULE_LAYER = {"_constants": "base", "_cli": "base", "_extension": "base", "_version": "base", "_C": "base",
                "reference": "ops", "transforms": "nn"}


def layer_of(dotted: str) -> str:
    """The layer of a module named ``cwarp.<...>``; ``cwarp`` alone is the public facade (nn)."""
    parts = dotted.split(".")
    if len(parts) == 1:
        return "nn"
    head = parts[1]
    if head in MODULE_LAYER:
        return MODULE_LAYER[head]
    if head in RANK:
        return head
    # A public name taken from the facade (``from cwarp import local_warp``).
    return "nn"


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name[: -len(".__init__")]
        if name != "cwarp":
            yield name, path


def imported_cwarp_modules(name: str, path: pathlib.Path):
    """(line, dotted name) of every cwarp module the file imports, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "cwarp":
                    yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "cwarp":
                continue
            for alias in node.names:
                # ``from cwarp import models`` imports the subpackage; ``from cwarp.x import y`` the module x.
                yield node.lineno, f"{module}.{alias.name}" if module == "cwarp" else module


MODULES = list(_modules())


def test_every_module_has_a_layer():
    for name, _ in MODULES:
        assert layer_of(name) in RANK, name
    assert {name.split(".")[1] for name, _ in MODULES} <= set(RANK) | set(MODULE_LAYER), \
        "a new top-level package or module of cwarp needs a place in LAYERS / MODULE_LAYER"


@pytest.mark.parametrize("name,path", MODULES, ids=[name for name, _ in MODULES])
def test_no_upward_import(name, path):
    own = layer_of(name)
    upward = [f"{path.relative_to(PACKAGE.parent)}:{line} imports {target} ({layer_of(target)} is above {own})"
              for line, target in imported_cwarp_modules(name, path) if RANK[layer_of(target)] > RANK[own]]
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    """The walk finds imports inside functions and relative ones, so a violation cannot hide there."""
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from cwarp.train.config import RunConfig\n\nfrom ..train import loop\n")
    found = [target for _, target in imported_cwarp_modules("cwarp.eval.probe", fake)]
    assert sorted(found) == ["cwarp.train", "cwarp.train.config"]
    assert all(RANK[layer_of(t)] > RANK["eval"] for t in found)
