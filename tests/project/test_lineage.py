"""DVC's lineage cannot drift from the code: every file a stage's command can import is a dep of
that stage (a listed file, or inside a listed folder), and a param section per stage.

Deps may be broader than the closure (a whole package where the stage uses most of it; cheaper
than a missing dep) but never narrower. Empty ``__init__.py`` files (a docstring only) cannot
change what a stage does and need no listing."""

import ast
import copy

import yaml
from conftest import ROOT
from lineage import command_closure


def stages(dvc: dict) -> list[tuple[str, str, list[str]]]:
    """``(stage, CLI command, deps)`` of each stage (a foreach stage once, by its template)."""
    out = []
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        words = body["cmd"].split()
        assert words[0] == "pipeline", f"stage {name}: dvc.yaml calls only `pipeline <command>`"
        deps = [d if isinstance(d, str) else next(iter(d)) for d in body.get("deps", [])]
        out.append((name, words[1], deps))
    return out


def _trivial(path) -> bool:
    if path.name != "__init__.py":
        return False
    body = ast.parse(path.read_text()).body
    return all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


def uncovered(dvc: dict) -> list[str]:
    """``stage: file`` for each file a stage's command imports that its deps do not cover."""
    problems = []
    for name, command, deps in stages(dvc):
        for path in sorted(command_closure(ROOT, command)):
            rel = path.relative_to(ROOT).as_posix()
            covered = any(rel == d or rel.startswith(d.rstrip("/") + "/") for d in deps)
            if not covered and not _trivial(path):
                problems.append(f"{name}: {rel} (imported by `pipeline {command}`) is not a dep")
    return problems


def test_every_stage_depends_on_every_file_its_command_imports():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert uncovered(dvc) == []


def test_removing_a_dep_is_caught_naming_the_stage_and_the_file():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    for stage, dep, file in [
        ("train", "pipeline/audio", "pipeline/audio/files.py"),
        ("evaluate_student", "storage", "storage/reader.py"),
        ("cache_teacher", "pipeline/teacher/kmeans.py", "pipeline/teacher/kmeans.py"),
    ]:
        broken = copy.deepcopy(dvc)
        body = broken["stages"][stage].get("do", broken["stages"][stage])
        body["deps"].remove(dep)
        problems = uncovered(broken)
        assert any(p.startswith(f"{stage}: {file} ") for p in problems), (stage, problems)


def test_each_stage_declares_the_params_sections_its_command_loads():
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    params = {name: s.get("do", s)["params"] for name, s in dvc.items()}
    assert params == {
        "prepare": ["prepare"],
        "cache_teacher": ["cache_teacher"],
        "train": ["train", "students.${key}"],
        "sweep": ["train", "sweep"],
        "evaluate_teacher": ["evaluate", "cache_teacher.teacher"],
        "evaluate_baseline": ["evaluate", "cache_teacher.teacher"],
        "evaluate_student": ["evaluate"],
        "evaluate_sweep": ["evaluate"],
        "report": ["evaluate", "report", "students", "sweep"],
        "export": ["export"],
    }
    assert dvc["train"]["foreach"] == dvc["evaluate_student"]["foreach"] == "${students}"
    assert dvc["evaluate_sweep"]["foreach"] == "${sweep.students}"
    assert dvc["evaluate_baseline"]["foreach"] == "${evaluate.baselines}"
