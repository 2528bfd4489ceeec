"""The README and docs/ tell the truth about the interface: every `pipeline` command and flag
they quote exists, and every params key they quote (dotted, or in an inline ``{kind: ...}``
setting) is one the config loader accepts."""

import dataclasses
import re
import typing
from pathlib import Path

import pytest
import typer
from conftest import ROOT

from cli.main import app
from pipeline.core.config import Choice
from pipeline.evaluation.report import ReportConfig
from pipeline.evaluation.scoring import EvaluateConfig
from pipeline.export.config import ExportConfig
from pipeline.losses import LOSSES
from pipeline.pretraining.hubert import PretrainConfig
from pipeline.students import STUDENTS, StudentConfig, SweepConfig
from pipeline.teacher.caching import CacheTeacherConfig
from pipeline.training.config import TrainConfig
from stages.prepare import PrepareConfig

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SECTIONS = {
    "prepare": PrepareConfig, "cache_teacher": CacheTeacherConfig, "train": TrainConfig,
    "evaluate": EvaluateConfig, "report": ReportConfig, "export": ExportConfig,
    "pretrain_teacher": PretrainConfig,
    "sweep": SweepConfig, "students": dict[str, StudentConfig],
}  # fmt: skip
# a dotted key that is not part of a path, a module or a file name, nor quoted as an error
KEY = re.compile(rf"(?<![\w./-])(?<!unknown key )(?:{'|'.join(SECTIONS)})(?:\.[\w<>$]+)+")
FILES = ("json", "yaml", "md", "py", "tsv", "pt", "onnx", "safetensors", "png")
PLACEHOLDER = re.compile(r"^(<\w+>|\$\{\w+\}|\w+)$")


def snippets(text: str) -> list[str]:
    """The code a page quotes: each line of its fenced blocks (continuations joined) and each
    inline code span of its prose."""
    out = []
    for block in re.findall(r"```\w*\n(.*?)```", text, re.S):
        out += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"```\w*\n.*?```", "", text, flags=re.S)
    return out + re.findall(r"`([^`\n]+)`", prose)


def commands_quoted(page: Path) -> list[tuple[str, list[str]]]:
    """``(command, flags)`` for each ``pipeline <command> --flag ...`` a page quotes."""
    found = []
    for line in snippets(page.read_text()):
        for match in re.finditer(r"\bpipeline((?:\s+-\w+)*)\s+([a-z][a-z-]*)(.*)", line):
            rest = re.split(r"[;|#]|&&", match.group(3))[0]
            found.append((match.group(2), re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", rest)))
    return found


def test_every_quoted_command_and_flag_exists():
    group = typer.main.get_command(app)
    problems, seen = [], 0
    for page in PAGES:
        for name, flags in commands_quoted(page):
            seen += 1
            command = group.commands.get(name)
            if command is None:
                problems.append(f"{page.name}: `pipeline {name}` is not a command")
                continue
            known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            problems += [f"{page.name}: `pipeline {name} {f}`: no such option"
                         for f in flags if f not in known | {"--help"}]  # fmt: skip
    assert problems == [] and seen > 20


def _fields(cls) -> dict[str, typing.Any]:
    return typing.get_type_hints(cls, include_extras=True)


def _accepts(kind, keys: list[str]) -> bool:
    """Whether the dotted ``keys`` lead somewhere inside a setting of type ``kind``."""
    if not keys or kind is typing.Any:
        return True
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated and args[0] is Choice:
        registry = args[1]
        return keys == ["kind"] or any(
            _accepts(registry[n].config_type, keys) for n in registry.names()
        )
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return any(_accepts(a, keys) for a in args if a is not type(None))
    if origin is dict:
        return bool(PLACEHOLDER.match(keys[0])) and _accepts(args[1], keys[1:])
    if kind is StudentConfig:
        head, rest = keys[0], keys[1:]
        if head == "model":
            return any(_accepts(STUDENTS[n].config_type, rest) for n in STUDENTS.names())
        if head == "losses":
            return not rest or (rest[0] in LOSSES and _accepts(LOSSES[rest[0]].config_type,
                                                             rest[1:]))  # fmt: skip
        return head in _fields(kind) and not rest  # arch, seeds
    if dataclasses.is_dataclass(kind):
        fields = _fields(kind)
        return keys[0] in fields and _accepts(fields[keys[0]], keys[1:])
    return False  # a leaf (a number, a string, a list) has no keys inside


FLOW = re.compile(r"\{kind: ([\w-]+)([^{}]*)\}")  # a setting quoted inline: {kind: kaldi, dir: ...}


def _kinds(kind, found: dict[str, list]) -> dict[str, list]:
    """Every ``kind`` a setting of type ``kind`` can name (``Annotated[Choice, registry]``,
    at any depth) -> the config dataclasses registered under that name."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin is typing.Annotated and args[0] is Choice:
        for name in args[1].names():
            config = args[1][name].config_type
            if config not in found.setdefault(name, []):
                found[name].append(config)
                _kinds(config, found)
    elif dataclasses.is_dataclass(kind):
        for field in _fields(kind).values():
            _kinds(field, found)
    else:
        for arg in args:
            _kinds(arg, found)
    return found


def test_every_quoted_kind_and_its_keys_exist():
    """``{kind: <name>, key: value, ...}`` quoted anywhere names a registered kind and only keys
    its settings have (the corpus sources, storage backends, codecs, ...)."""
    kinds: dict[str, list] = {}
    for section in SECTIONS.values():
        _kinds(section, kinds)
    problems, seen = [], set()
    for page in PAGES:
        for line in snippets(page.read_text()):
            for name, rest in FLOW.findall(line):
                seen.add(name)
                keys = re.findall(r"(?:^|,)\s*(\w+)\s*:", rest)
                if name not in kinds:
                    problems.append(f"{page.name}: {{kind: {name}}} is not a registered kind")
                elif not any(all(k in _fields(c) for k in keys) for c in kinds[name]):
                    problems.append(f"{page.name}: {{kind: {name}}} takes no such keys: {keys}")
    assert problems == []
    assert {"kaldi", "lhotse", "hf", "manifest", "librispeech"} <= seen


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_params_key_exists(page):
    keys = {k for line in snippets(page.read_text()) for k in KEY.findall(line)
            if k.rsplit(".", 1)[1] not in FILES}  # fmt: skip
    unknown = []
    for key in sorted(keys):
        section, *rest = key.rstrip(".").split(".")
        if not _accepts(SECTIONS[section], rest):
            unknown.append(key)
    assert unknown == []


def _source_kinds(text: str) -> list[str]:
    """The corpus sources a params file's ``prepare.source`` names: its ``kind`` and, in its
    comments, each ``{kind: ...}``."""
    section = re.search(r"^prepare:\n(.*?)^\S", text, re.S | re.M)
    source = re.search(r"^  source:.*?(?=^  \S)", section[1], re.S | re.M)[0]
    return re.findall(r"\bkind: ([\w-]+)", source)


def test_the_listed_corpus_sources_are_the_registered_ones():
    """The sources' registry is the one list of them: params.yaml's comments (and the params
    files that copy them) list every registered source once, as docs/data.md does, and
    `pipeline prepare --help` reads them from the registry."""
    from typer.testing import CliRunner

    from pipeline.corpus.sources import SOURCES

    registered = sorted(SOURCES.names())
    for path in [ROOT / "params.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]:
        kinds = _source_kinds(path.read_text())
        assert set(kinds) <= set(registered), path.name
        if len(kinds) > 1 or path.name == "params.yaml":  # a file that lists them
            assert sorted(kinds) == registered, path.name
    data = (ROOT / "docs" / "data.md").read_text()
    section = re.search(r"^## Corpus sources .*?\n(.*?)^## ", data, re.S | re.M)[1]
    assert sorted(re.findall(r"^- `([\w-]+)`", section, re.M)) == registered
    shown = CliRunner().invoke(app, ["prepare", "--help"], env={"COLUMNS": "200"}).output
    assert all(re.search(rf"- {kind} \(", shown) for kind in registered), shown
