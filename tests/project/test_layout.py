"""The import direction of the layout (docs/development.md), enforced on the source:

    cli -> stages -> pipeline (training, evaluation, teacher, students, ...) -> storage
        -> pipeline.core

`pipeline.core` imports nothing else of the project; `storage` only itself and the core;
`pipeline` never `stages` or `cli`; a stage never another stage; nothing imports `cli` but
`cli`. Inside `pipeline`, the subpackages have an order (:data:`ORDER`, bottom first): each
imports only subpackages below its own level, and `pipeline.nn` (the students' modules, which
an exported student takes along) nothing outside itself. Also: no module over ~300 lines, no
stage `run()` over ~50."""

import ast
import shutil

import pytest
from conftest import ROOT
from lineage import PACKAGES, imported_modules, module_name


def _layer(module: str) -> str:
    if module in ("pipeline", "pipeline.core") or module.startswith("pipeline.core."):
        return "core"  # pipeline/__init__.py is empty: importing the core runs only it
    return module.split(".")[0]


ALLOWED = {
    "core": {"core"},
    "storage": {"storage", "core"},
    "pipeline": {"pipeline", "storage", "core"},
    "stages": {"pipeline", "storage", "core", "stages"},
    "cli": {"cli", "stages", "pipeline", "storage", "core"},
}


ORDER = [  # pipeline's subpackages, bottom first: each imports only those on lower levels
    ("core",),
    ("nn",),  # torch only: travels with exported students
    ("audio",),
    ("corpus", "losses"),
    ("teacher", "students"),
    ("training",),
    ("evaluation", "export", "pretraining"),
]
LEVEL = {sub: level for level, subs in enumerate(ORDER) for sub in subs}


def _subpackage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "pipeline" and len(parts) > 1 else None


def _inside_pipeline(me: str, module: str) -> bool:
    """Whether pipeline module ``me`` may import ``module`` by the order of subpackages."""
    mine, theirs = _subpackage(me), _subpackage(module)
    if mine == "nn":  # nothing of the project outside pipeline.nn, not even storage
        return theirs == "nn" or module == "pipeline"  # (an empty package, run on the way)
    if theirs is None or theirs == mine:
        return True
    return LEVEL[theirs] < LEVEL[mine]


def violations(root) -> list[str]:
    """Every import against the rule, as ``file imports module``."""
    found = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            me = module_name(root, path)
            for module in sorted(imported_modules(root, path)):
                target = _layer(module)
                own_stage = me.startswith("stages.") and module in ("stages", me)
                if (
                    target not in ALLOWED[_layer(me)]
                    or (target == "stages" and _layer(me) == "stages" and not own_stage)
                    or (_subpackage(me) and not _inside_pipeline(me, module))
                ):
                    found.append(f"{path.relative_to(root)} imports {module}")
    return found


def test_every_subpackage_of_pipeline_has_its_place_in_the_order():
    subpackages = {p.parent.name for p in (ROOT / "pipeline").glob("*/__init__.py")}
    assert subpackages == set(LEVEL)


def test_imports_point_one_way():
    assert violations(ROOT) == []
    assert "import" not in (ROOT / "pipeline" / "__init__.py").read_text()


@pytest.mark.parametrize(
    ("file", "line"),
    [
        ("storage/base.py", "from stages import prepare"),
        ("storage/header.py", "import pipeline.training.loop"),
        ("pipeline/core/io.py", "from ..training import loop"),
        ("pipeline/training/trainee.py", "from cli.common import app"),
        ("stages/prepare.py", "from stages.cache_teacher import run"),
        ("pipeline/students/base.py", "from stages import train_student as t"),
        ("pipeline/teacher/model.py", "from pipeline.students import STUDENTS"),  # same level
        ("pipeline/students/base.py", "import pipeline.evaluation.report"),  # upward
        ("pipeline/audio/files.py", "from ..corpus import manifest"),  # upward, relative
        ("pipeline/nn/lstm.py", "from pipeline.core import errors"),  # nn: itself only
        ("pipeline/nn/conv.py", "from storage import open_cache"),
    ],
)
def test_a_planted_back_import_is_caught(tmp_path, file, line):
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    path = tmp_path / file
    path.write_text(path.read_text() + f"\n\ndef _planted():\n    {line}\n")
    assert [v for v in violations(tmp_path) if v.startswith(file)], line


def test_modules_and_stage_functions_stay_small():
    long_modules = {
        str(p.relative_to(ROOT)): n
        for package in PACKAGES
        for p in (ROOT / package).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 300
    }
    assert long_modules == {}
    for path in (ROOT / "stages").glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef) and node.name == "run":
                lines = node.end_lineno - node.lineno + 1
                assert lines <= 50, f"{path.name}: run() is {lines} lines"


def test_the_tests_are_laid_out_like_the_packages():
    """Each test file sits in ``tests/<package>/`` (a subpackage of pipeline, or storage, cli)
    or ``tests/project/`` (the repository as a whole), none at the top; module names are
    unique, and pyproject's ``pythonpath`` makes tests/ and each folder importable by name."""
    import tomllib

    tests = ROOT / "tests"
    packages = set(LEVEL) | {"storage", "cli", "project"}
    folders = {p.parent.name for p in tests.rglob("test_*.py")}
    assert not list(tests.glob("test_*.py")) and folders <= packages
    assert all(p.parent.parent == tests for p in tests.rglob("test_*.py"))
    names = [p.name for p in tests.rglob("test_*.py")]
    assert len(names) == len(set(names))
    pytest_options = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]
    paths = pytest_options["ini_options"]["pythonpath"]
    assert paths == ["tests", *(f"tests/{f}" for f in sorted(folders))]
