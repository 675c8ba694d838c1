"""A small typed registry with a base-class check, lazy entries and "did you mean"."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Generic
from typing import TypeVar

from squeezeray._errors import SqueezerayError
from squeezeray._errors import UnknownNameError
from squeezeray._schema import did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes that subclass ``base``.

    Entries are either classes or lazy ``"package.module:Attr"`` strings that are
    imported on first lookup, so importing the registry stays cheap.

    Args:
        kind: What the registry holds, used in error messages ("technique").
        base: Every entry must be a subclass of this class.
    """

    def __init__(self, kind: str, base: type[T]) -> None:
        self.kind = kind
        self.base = base
        self._entries: dict[str, type[T] | str] = {}

    def register(self, name: str, entry: type[T] | str) -> None:
        if name in self._entries:
            raise SqueezerayError(f"{self.kind} {name!r} is already registered")
        if not isinstance(entry, str):
            self._check(name, entry)
        self._entries[name] = entry

    def _check(self, name: str, entry: object) -> None:
        if not (isinstance(entry, type) and issubclass(entry, self.base)):
            raise SqueezerayError(
                f"{self.kind} {name!r}: {entry!r} is not a subclass of {self.base.__name__}"
            )

    def get(self, name: str) -> type[T]:
        try:
            entry = self._entries[name]
        except KeyError:
            hint = did_you_mean(name, self._entries)
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}.{hint} Known: {', '.join(sorted(self._entries))}"
            ) from None
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            loaded = getattr(importlib.import_module(module_name), attr)
            self._check(name, loaded)
            self._entries[name] = loaded
            entry = loaded
        return entry

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
