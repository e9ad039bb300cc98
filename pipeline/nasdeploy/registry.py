"""A name -> constructor registry, so adding an op, space, backend or strategy is adding an entry."""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from nasdeploy.errors import NasDeployError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; ``register`` is usable as a decorator."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(item: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} registered twice")
            self._items[name] = item
            return item

        return add

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items))
            raise NasDeployError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def names(self) -> list[str]:
        return list(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)
