"""What the project's code imports, read from the source (nothing is executed).

Used by the layout test (imports point one way) and the lineage test (each DVC stage's deps
cover every file its command can import). Every import statement counts, at module level or
inside a function (the CLI imports stages lazily), absolute or relative, ``import a.b`` or
``from a import b``; importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("pipeline", "stages", "storage", "cli")


def module_file(root: Path, name: str) -> Path | None:
    """The project file of dotted module ``name`` (a package's ``__init__.py``), or None."""
    parts = name.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(root: Path, path: Path, tree: ast.AST | None = None) -> set[str]:
    """Dotted names of every project module ``path`` imports (and the packages above them);
    ``tree`` limits the search to a part of the file (a function)."""
    tree = tree or ast.parse(path.read_text(), filename=str(path))
    package = module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)  # submodules
    out = set()
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # parent packages run too
            prefix = ".".join(parts[:i])
            if module_file(root, prefix) is not None:
                out.add(prefix)
    return out


def closure(root: Path, start: list[Path]) -> set[Path]:
    """Every project file the ``start`` files import, directly or not (``start`` included)."""
    seen: set[Path] = set()
    todo = list(start)
    return _grow(root, seen, todo)


def _grow(root: Path, seen: set[Path], todo: list[Path]) -> set[Path]:
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in imported_modules(root, path):
            found = module_file(root, name)
            if found is not None and found not in seen:
                todo.append(found)
    return seen


def command_closure(root: Path, command: str) -> set[Path]:
    """Every project file CLI command ``command`` (e.g. ``train-student``) can import: its
    module's top-level imports and those inside the command's own function (commands import
    their stage lazily), then everything those import."""
    from cli.main import app

    callback = next((c.callback for c in app.registered_commands if c.name == command), None)
    if callback is None:
        raise KeyError(f"no CLI command {command!r}")
    path = module_file(root, callback.__module__)
    tree = ast.parse(path.read_text(), filename=str(path))
    top = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))],
                     type_ignores=[])  # fmt: skip
    function = next(n for n in tree.body
                    if isinstance(n, ast.FunctionDef) and n.name == callback.__name__)  # fmt: skip
    helpers = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("_")]
    names = imported_modules(root, path, top) | imported_modules(root, path, function)
    for helper in helpers:  # module-private helpers the commands share
        names |= imported_modules(root, path, helper)
    start = [f for n in names if (f := module_file(root, n)) is not None]
    return closure(root, start) | {path}
