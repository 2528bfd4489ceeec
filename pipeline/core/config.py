"""Typed configuration: ``params.yaml`` sections -> frozen dataclasses, strictly checked.

Every section of ``params.yaml`` maps to one frozen dataclass. :func:`from_dict` rejects
unknown and missing keys and wrong types, naming the full key (``students.kd.losses.kd.tau``)
so a typo never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.core.errors import ConfigError, single_line

T = TypeVar("T")


class FieldError(ValueError):
    """A bad value of one field, raised by a config dataclass's ``__post_init__``;
    :func:`from_dict` turns it into a :class:`ConfigError` naming the full dotted key."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check(ok: bool, field: str, message: str) -> None:
    """Raise :class:`FieldError` for ``field`` unless ``ok``; e.g.
    ``check(self.lr > 0, "lr", f"must be > 0, got {self.lr}")``."""
    if not ok:
        raise FieldError(field, message)


def positive(cfg: Any, *fields: str) -> None:
    """Each named numeric field of ``cfg`` must be > 0."""
    for name in fields:
        value = getattr(cfg, name)
        check(value > 0, name, f"must be > 0, got {value!r}")


def non_negative(cfg: Any, *fields: str) -> None:
    """Each named numeric field of ``cfg`` must be >= 0."""
    for name in fields:
        value = getattr(cfg, name)
        check(value >= 0, name, f"must be >= 0, got {value!r}")


def load_params(path: str | Path) -> dict[str, Any]:
    """Read a params YAML file into a plain dict (sections at the top level)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as err:
        raise ConfigError(f"params file {path} not found") from err
    except IsADirectoryError as err:
        raise ConfigError(f"params file {path} is a folder; pass a YAML file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"params file {path} cannot be read ({err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(yaml_problem(path, err)) from err
    if not isinstance(data, dict):
        raise ConfigError(f"params file {path} must hold a mapping of sections")
    return data


def yaml_problem(path: Path, err: yaml.YAMLError) -> str:
    """PyYAML's complaint about ``path`` in one line, at the line and column it names
    (``params.yaml:3:11: not valid YAML: expected ',' or '}', but got ':' (while parsing a
    flow mapping, from line 2)``)."""
    mark = getattr(err, "problem_mark", None)
    where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
    problem = getattr(err, "problem", None) or single_line(err)
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and start is not None:
        problem += f" ({context}, from line {start.line + 1})"
    elif context:
        problem += f" ({context})"
    return f"{where}: not valid YAML: {problem}"


def override(params: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with each dotted key of ``changes`` set to its value; ``None``
    values (CLI flags not given) change nothing."""
    out = dict(params)
    for key, value in changes.items():
        if value is None:
            continue
        head, _, rest = key.partition(".")
        if rest and not isinstance(out.get(head, {}), Mapping):
            raise ConfigError(f"cannot override {key}: {head} is not a section")
        out[head] = override(out.get(head, {}), {rest: value}) if rest else value
    return out


def section(params: Mapping[str, Any], name: str, cls: type[T]) -> T:
    """Build ``cls`` from the top-level section ``name`` of loaded params."""
    if name not in params:
        raise ConfigError(f"params has no section {name!r} (sections: {', '.join(params)})")
    return from_dict(cls, params[name], where=name)


@dataclass(frozen=True)
class Choice:
    """A params section that names its kind: ``{kind: <registered name>, ...its settings}``.

    Declare such a field as ``Annotated[Choice, REGISTRY]``: :func:`from_dict` checks ``kind``
    against the registry and the other keys against that component's ``config_type``, so a
    params file names only the variant it uses. ``build()`` makes the component.

    Attributes:
        kind: the registered name.
        cfg: its config dataclass.
        registry: where ``kind`` is registered.
    """

    kind: str
    cfg: Any
    registry: Any = dataclasses.field(repr=False, compare=False)

    def build(self) -> Any:
        return self.registry[self.kind](self.cfg)


def _choice(registry: Any, value: Any, key: str) -> Choice:
    if not isinstance(value, Mapping) or "kind" not in value:
        raise ConfigError(
            f"{key}: expected a mapping with a kind ({', '.join(registry.names())}), got {value!r}"
        )
    kind = value["kind"]
    if kind not in registry:
        raise ConfigError(
            f"{key}.kind: unknown {registry.kind} {kind!r}; registered: "
            f"{', '.join(registry.names())}"
        )
    settings = {k: v for k, v in value.items() if k != "kind"}
    return Choice(kind, from_dict(registry[kind].config_type, settings, key), registry)


def from_dict(cls: type[T], data: Any, where: str) -> T:
    """Build the dataclass ``cls`` from ``data``, recursively and strictly.

    Args:
        cls: a dataclass type. Field annotations may be primitives, nested dataclasses,
            ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, ``X | None``, ``Literal`` and
            ``Annotated[Choice, REGISTRY]`` (a section that names its kind).
        data: the mapping to convert.
        where: the dotted key of ``data``, used in error messages.

    Raises:
        ConfigError: on unknown, missing or mistyped keys, naming the dotted key.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown key {where}.{unknown[0]} (allowed in {where}: {', '.join(fields)})"
        )
    values = {}
    for name, field in fields.items():
        key = f"{where}.{name}"
        if name not in data:
            no_default = field.default is dataclasses.MISSING
            if no_default and field.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key}")
            continue
        values[name] = _convert(hints[name], data[name], key)
    try:
        return cls(**values)
    except FieldError as err:
        raise ConfigError(f"{where}.{err.field}: {err.message}") from err
    except (TypeError, ValueError, KeyError) as err:  # __post_init__ checks, registry lookups
        raise ConfigError(f"{where}: {err.args[0] if err.args else err}") from err


def _convert(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Annotated and args[0] is Choice:
        return _choice(args[1], value, key)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {tp}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return origin(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        item = args[1] if args else Any
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    return _primitive(tp, value, key)


def _primitive(tp: Any, value: Any, key: str) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is Path and isinstance(value, str):
        return Path(value)
    ok = isinstance(value, tp) and not (tp is int and isinstance(value, bool))
    if not ok:
        raise ConfigError(f"{key}: expected {tp.__name__}, got {value!r}")
    return value


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (for checkpoints and cache headers); the inverse
    of :func:`from_dict`."""
    return _plain(cfg)


def _plain(v: Any) -> Any:
    if isinstance(v, Choice):
        return {"kind": v.kind, **_plain(v.cfg)}
    if dataclasses.is_dataclass(v):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v) if f.init}
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v
