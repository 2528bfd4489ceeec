"""One small registry for named components (losses, students, corpus sources, cache backends)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> component mapping filled by a decorator.

    Each registered component declares ``name`` and ``config_type`` (a frozen dataclass) and is
    built as ``component(cfg)``. Lookups of unknown names raise ``KeyError`` listing the known
    names; they never return ``None``.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, component: T) -> T:
        name = getattr(component, "name", None)
        if not isinstance(name, str) or name != name.lower() or not name:
            raise ValueError(f"{self.kind} {component!r} needs a lowercase string `name`")
        if not hasattr(component, "config_type"):
            raise ValueError(f"{self.kind} {name!r} needs a `config_type`")
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = component
        return component

    def __call__(self, component: T) -> T:
        return self.register(component)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def names(self) -> list[str]:
        return sorted(self._items)
