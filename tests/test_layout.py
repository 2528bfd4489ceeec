"""The import direction of ARCHITECTURE.md: cli -> stages -> {pipeline, storage}."""

import ast

import pytest
from conftest import ROOT


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


@pytest.mark.parametrize("package", ["pipeline", "storage", "stages"])
def test_imports_point_one_way(package):
    forbidden = {"pipeline": ("stages", "cli"), "storage": ("stages", "cli"), "stages": ("cli",)}
    for path in (ROOT / package).rglob("*.py"):
        for module in _imports(path):
            top = module.split(".")[0]
            assert top not in forbidden[package], f"{path.relative_to(ROOT)} imports {module}"
            if package == "stages" and module.startswith("stages."):
                raise AssertionError(f"{path.relative_to(ROOT)}: stages never import each other")
