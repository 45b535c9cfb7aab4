"""The package's import structure, as docs/architecture.md draws it: every module sits in one
layer and imports only from its own layer and the layers below; no import cycle. Every import
counts, also those inside functions and under ``TYPE_CHECKING``."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "ecgtool"

# Lowest first. A name is a module, or a package together with all of its modules (measured_findings,
# supervised_baseline, fhir and api are placed for the modules under way beside this table).
LAYERS = {
    "base": (
        "ecgtool", "ecgtool.errors", "ecgtool.files", "ecgtool.output_lock", "ecgtool.devices",
        "ecgtool.registry", "ecgtool.exclusions", "ecgtool.record", "ecgtool.signal", "ecgtool.splits",
        "ecgtool.annotations", "ecgtool.metrics", "ecgtool.calibration", "ecgtool.plot", "ecgtool.measure",
        "ecgtool.measured_findings", "ecgtool.combined_calibration",
    ),
    "io": ("ecgtool.io",),
    "store": ("ecgtool.store", "ecgtool.ingest", "ecgtool.text_cache", "ecgtool.text", "ecgtool.split_measurements"),
    "model": (
        "ecgtool.model", "ecgtool.checkpoint_file", "ecgtool.calibration_file", "ecgtool.bundle",
        "ecgtool.fast_encoder", "ecgtool.split_embeddings", "ecgtool.embeddings",
    ),
    "apps": (
        "ecgtool.training", "ecgtool.predict", "ecgtool.calibrate", "ecgtool.bench",
        "ecgtool.search", "ecgtool.supervised_baseline", "ecgtool.fhir", "ecgtool.api",
    ),
    "cli": ("ecgtool.cli",),
}


def _modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


MODULES = _modules()


def imports_of(name: str, path: Path) -> set[str]:
    """The ecgtool modules (or packages) ``name`` imports anywhere in its source."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {module for module in found if (module == "ecgtool" or module.startswith("ecgtool.")) and module != name}


# ecgtool/__init__.py re-exports the Python API from its module __getattr__, imported on first use
# only (docs/api.md): the package's face, the one import that may point up.
LAZY_FACE = {"ecgtool": {"ecgtool.api"}}
GRAPH = {name: imports_of(name, path) - LAZY_FACE.get(name, set()) for name, path in MODULES.items()}
ORDER = list(LAYERS)


def layer_of(module: str) -> str | None:
    owners = [(len(entry), layer) for layer, entries in LAYERS.items() for entry in entries
              if module == entry or (entry != "ecgtool" and module.startswith(entry + "."))]
    return max(owners)[1] if owners else None


def test_every_module_has_a_layer():
    unplaced = [name for name in MODULES if layer_of(name) is None]
    assert not unplaced, f"place {', '.join(unplaced)} in a layer (docs/architecture.md and LAYERS here)"


def test_imports_point_down_the_layers():
    upward = [f"{name} ({layer_of(name)}) imports {target} ({layer_of(target)})"
              for name, targets in GRAPH.items() for target in sorted(targets)
              if layer_of(name) and layer_of(target) and ORDER.index(layer_of(target)) > ORDER.index(layer_of(name))]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycle():
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        if module in path:
            return path[path.index(module):] + [module]
        if module in done or module not in GRAPH:
            return None
        path.append(module)
        for target in sorted(GRAPH[module]):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return None

    for module in sorted(GRAPH):
        cycle = visit(module)
        assert cycle is None, "import cycle: " + " → ".join(cycle)


def _looks_up_another_module(node: ast.AST, parents: dict) -> bool:
    """``sys.modules`` used other than as ``sys.modules[__name__]`` (a module's own entry)."""
    if not (isinstance(node, ast.Attribute) and node.attr == "modules" and isinstance(node.value, ast.Name)
            and node.value.id == "sys"):
        return False
    parent = parents.get(node)
    return not (isinstance(parent, ast.Subscript) and isinstance(parent.slice, ast.Name) and parent.slice.id == "__name__")


def test_no_module_looks_another_up_in_sys_modules():
    lookups = []
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
        lookups += [f"{name}: line {node.lineno}" for node in ast.walk(tree) if _looks_up_another_module(node, parents)]
    assert not lookups, "sys.modules lookups: " + ", ".join(lookups)


def test_the_checks_above_see_function_level_and_type_checking_imports(tmp_path):
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ecgtool.bundle import Bundle\n"
              "def f():\n    from ecgtool.predict import predict_record\n    from . import files\n")
    module = tmp_path / "probe.py"
    module.write_text(source)
    assert imports_of("ecgtool.probe", module) == {"ecgtool.bundle", "ecgtool.predict", "ecgtool.files"}


def test_every_package_is_listed_in_pyproject():
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.importorskip("tomli")
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    packages = {name for name, path in MODULES.items() if path.name == "__init__.py"}
    assert packages <= listed, f"add {', '.join(sorted(packages - listed))} to [tool.setuptools] packages in pyproject.toml"
