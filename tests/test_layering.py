"""The layers: `mfpde` (problems) never imports an algorithm package, and `solvers` (algorithms) uses only the public
`mfpde` API (`mfpde.extend` for what algorithms are built from). Read from the source, so a new file is checked too."""

import ast
import inspect
from pathlib import Path

import pytest

import mfpde
import solvers
from mfpde._registry import algorithm, algorithms

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str):
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield path, [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                yield path, [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]


def _private(module: str) -> bool:
    return any(part.startswith("_") for part in module.split(".")[1:])


def test_mfpde_never_imports_solvers():
    found = [(path.name, name) for path, names in _imports("mfpde") for name in names if name.split(".")[0] == "solvers"]
    assert not found, found


def test_solvers_use_only_public_mfpde_names():
    found = [(path.name, name) for path, names in _imports("solvers") for name in names
             if name.split(".")[0] == "mfpde" and _private(name)]
    attributes = [(path.name, node.attr) for path in (ROOT / "solvers").rglob("*.py")
                  for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Attribute)
                  and isinstance(node.value, ast.Name) and node.value.id == "mfpde" and node.attr.startswith("_")]
    assert not found and not attributes, (found, attributes)


def test_every_algorithm_of_solvers_is_registered_by_name():
    exported = {name for name, obj in vars(solvers).items()
                if inspect.isclass(obj) and issubclass(obj, mfpde.AbstractAlgorithm) and not inspect.isabstract(obj)}
    assert set(vars(algorithms())) == exported
    assert all(algorithm(name) is getattr(solvers, name) for name in exported)
    with pytest.raises(ValueError, match=r"Unknown algorithm 'Euler'; registered: \[.*'Particles'"):
        algorithm("Euler")
