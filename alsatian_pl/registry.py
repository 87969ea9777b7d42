"""One registry shape for every kind users extend (block families, model builders, proxy scorers, datasets,
search strategies), as timm registers its models: ``@REGISTRY.register("name")`` adds an entry, ``REGISTRY.get(name)``
returns it or raises one ConfigError listing the known names."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

from .errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")
F = TypeVar("F")
_MISSING = object()


class Registry(dict[str, T], Generic[T]):
    """Named entries of one kind (``kind`` names it in messages). A dict, so ``name in r``, ``r[name]`` and
    ``list(r)`` work as usual; a name is taken once (registering the same object again is a no-op)."""

    def __init__(self, kind: str, entries: dict[str, T] | None = None, *, plural: str | None = None):
        super().__init__(entries or {})
        self.kind, self.plural = kind, plural or f"{kind}s"

    def register(self, name: str, entry: T | None = None) -> Callable[[F], F]:
        """Decorator (or direct call with ``entry``): add ``entry`` as ``name``; ConfigError if the name is taken."""
        def add(obj: F) -> F:
            if not name:
                raise ConfigError(f"a {self.kind} needs a non-empty name")
            if dict.get(self, name, obj) is not obj:
                raise ConfigError(f"{self.kind} name {name!r} is already taken by {_label(self[name])}")
            self[name] = obj  # type: ignore[assignment]
            return obj
        if entry is not None:
            add(entry)  # type: ignore[arg-type]
        return add

    def get(self, name: str, default: Any = _MISSING) -> T:  # type: ignore[override]
        """The entry called ``name``; without a ``default``, ConfigError listing the known names if there is none
        (with one, ``dict.get``)."""
        if default is not _MISSING:
            return dict.get(self, name, default)
        try:
            return self[name]
        except (KeyError, TypeError):
            raise ConfigError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self)

    def copy(self) -> "Registry[T]":
        return Registry(self.kind, dict(self), plural=self.plural)


def _label(obj: object) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__qualname__
