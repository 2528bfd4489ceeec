"""The student registry and the per-student config (architecture + weighted losses)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.core.config import ConfigError, from_dict
from pipeline.core.registry import Registry
from pipeline.losses import LOSSES

STUDENTS: Registry = Registry("student architecture")


@dataclass(frozen=True)
class _RawStudent:
    arch: str
    model: dict[str, Any]
    losses: dict[str, dict[str, Any]]
    seeds: list[int] | None = None


@dataclass(frozen=True)
class StudentConfig:
    """One entry of the ``students`` mapping in params.yaml.

    Attributes:
        arch: registered student architecture (``lstm``).
        model: that architecture's config dataclass.
        losses: loss name -> its config (each has a ``weight``); the total is their weighted sum.
        seeds: training seeds: one model per seed, the seed fixing its initialisation, dropout
            and batch order (shared by every student trained with that seed), all trained in one
            run, each evaluated; None trains one, with ``train.seed``.
    """

    arch: str
    model: Any
    losses: dict[str, Any]
    seeds: tuple[int, ...] | None = None

    def training_seeds(self, default: int) -> tuple[int, ...]:
        """The seeds this student trains with (``default``: ``train.seed``, without ``seeds``)."""
        return self.seeds if self.seeds is not None else (default,)


def parse_student(data: Mapping[str, Any], where: str) -> StudentConfig:
    """Build a :class:`StudentConfig` from ``students.<name>``, checking every key."""
    raw = from_dict(_RawStudent, data, where)
    try:
        model_type = STUDENTS[raw.arch].config_type
        loss_types = {name: LOSSES[name].config_type for name in raw.losses}
    except KeyError as err:
        raise ConfigError(f"{where}: {err.args[0]}") from err
    if not raw.losses:
        raise ConfigError(f"{where}.losses: name at least one loss ({', '.join(LOSSES.names())})")
    if raw.seeds is not None and (not raw.seeds or len(set(raw.seeds)) < len(raw.seeds)
                                  or min(raw.seeds) < 0):  # fmt: skip
        raise ConfigError(f"{where}.seeds: a list of distinct seeds >= 0, got {raw.seeds}")
    model = from_dict(model_type, raw.model, f"{where}.model")
    losses = {
        name: from_dict(loss_types[name], cfg, f"{where}.losses.{name}")
        for name, cfg in raw.losses.items()
    }
    seeds = None if raw.seeds is None else tuple(raw.seeds)
    return StudentConfig(arch=raw.arch, model=model, losses=losses, seeds=seeds)


def parse_students(params: Mapping[str, Any]) -> dict[str, StudentConfig]:
    """Every entry of the top-level ``students`` mapping of loaded params, checked."""
    raw = params.get("students")
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError("params needs a non-empty `students` mapping (name -> student)")
    for name in raw:
        _check_name(name, "students")
    return {name: parse_student(cfg, f"students.{name}") for name, cfg in raw.items()}


def _check_name(name: Any, where: str) -> None:
    if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(f"{where}.{name}: names may hold letters, digits, '_' and '-' only")


@dataclass(frozen=True)
class SweepConfig:
    """The ``sweep`` section of params.yaml: students the ``sweep`` stage trains together, in
    one pass over the cache, each then evaluated by its own stage.

    Attributes:
        base: the student they vary, written out as a ``students`` entry is (its own copy,
            so that changing a student of ``students`` never re-runs the sweep).
        students: name -> the dotted keys inside ``base`` they change, with their values
            (``{losses.dkd.beta: 8.0}``); names must not be those of ``students``.
    """

    base: dict[str, Any]
    students: dict[str, dict[str, Any]]


def sweep_students(params: Mapping[str, Any]) -> dict[str, StudentConfig]:
    """The students of the ``sweep`` section of loaded params, each checked like a student.

    Raises:
        ConfigError: a bad base, a name taken by ``students``, a bad changed key (named).
    """
    from pipeline.core.config import override

    cfg = from_dict(SweepConfig, params.get("sweep"), "sweep")
    parse_student(cfg.base, "sweep.base")
    for name in cfg.students:
        _check_name(name, "sweep.students")
    taken = sorted(set(cfg.students) & set(params.get("students") or {}))
    if taken:
        raise ConfigError(f"sweep.students.{taken[0]}: already the name of a student")
    return {
        name: parse_student(override(cfg.base, changes), f"sweep.students.{name}")
        for name, changes in cfg.students.items()
    }


def grid_students(
    base_name: str, base: Mapping[str, Any], grid: Mapping[str, list[Any]]
) -> dict[str, dict[str, Any]]:
    """Raw configs of every combination of ``grid`` (dotted key -> values) applied to ``base``.

    Names read like ``dkd_b4-beta8-tau2``: the base name, then each key's last part and value.
    """
    from pipeline.core.config import override

    combos: list[tuple[str, dict]] = [(base_name, dict(base))]
    for key, values in grid.items():
        label = key.rsplit(".", 1)[-1]
        combos = [
            (f"{name}-{label}{value}", override(raw, {key: value}))
            for name, raw in combos
            for value in values
        ]
    return dict(combos)


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``["losses.dkd.beta=1,4,8", ...]`` -> ``{"losses.dkd.beta": [1, 4, 8]}`` (YAML values)."""
    import yaml

    axes = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key or not values:
            raise ConfigError(f"--grid {item!r}: expected KEY=V1,V2,...")
        axes[key] = [yaml.safe_load(v) for v in values.split(",")]
    return axes
