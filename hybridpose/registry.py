"""The one registry mechanism: skeletons, pose estimators, input sources, branches, engines, executors,
rule kinds and backbones are each a ``Registry`` of things found by name.

A registry knows the package that holds its built-ins and imports every module of it itself on first use
(modules named ``_x`` are helpers and left to be imported by those that use them), so what it holds never
depends on which modules happened to be imported before, and a new built-in is one new module in that
package that calls ``register`` (or uses it as a decorator).
"""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, MutableMapping
from typing import Generic, TypeVar

from .errors import ConfigError, HybridPoseError

T = TypeVar("T")


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries by name, in registration order; ``order`` (optional) sorts ``values()`` for lookups that
    try each entry in turn (input sources)."""

    def __init__(self, kind: str, package: str | None = None, *, error: type[HybridPoseError] = ConfigError,
                 unknown: str = "unknown {kind} {name!r}; choose one of {known}.",
                 order: Callable[[T], object] | None = None) -> None:
        self.kind = kind
        self._package = package
        self._error = error
        self._unknown = unknown
        self._order = order
        self._items: dict[str, T] = {}
        self._loaded = package is None

    def register(self, obj: T | None = None, *, name: str | None = None):
        """``register(obj)``, ``@register`` or ``@register(name=...)``: adds ``obj`` under ``name`` (default ``obj.name``)."""
        def add(o: T) -> T:
            self._items[name or getattr(o, "name")] = o
            return o

        return add if obj is None else add(obj)

    def get(self, name: str, default: object = None, *, error: str | None = None):  # type: ignore[override]
        """The entry ``name``; with a ``default``, that where there is none, else an error that lists the known names."""
        self._load()
        if name in self._items:
            return self._items[name]
        if default is not None:
            return default
        raise self._error(error or self._unknown.format(kind=self.kind, name=name, known=", ".join(self.names())))

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def ordered(self) -> list[T]:
        self._load()
        values = list(self._items.values())
        return sorted(values, key=self._order) if self._order else values

    def _load(self) -> None:
        if self._loaded:
            return
        self._loaded = True  # before importing: a built-in module registers into this registry as it loads
        package = importlib.import_module(self._package)
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_"):
                importlib.import_module(f"{self._package}.{module.name}")

    # MutableMapping: dict-like access (tests patch entries with monkeypatch.setitem)
    def __getitem__(self, name: str) -> T:
        self._load()
        return self._items[name]

    def __setitem__(self, name: str, value: T) -> None:
        self._items[name] = value

    def __delitem__(self, name: str) -> None:
        del self._items[name]

    def __iter__(self) -> Iterator[str]:
        self._load()
        return iter(self._items)

    def __len__(self) -> int:
        self._load()
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {sorted(self._items)})"
