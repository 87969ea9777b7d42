"""Argument checks shared by the constructors that config values reach (data module, zoo specs, searcher,
fine-tuning): each returns the value in its proper type or raises the caller's error class, naming the config key and
the value, so that a bad value is refused in one line before anything runs."""

from __future__ import annotations

import numbers
import os
from collections.abc import Mapping
from typing import Any, Iterable

from .errors import AlsatianError, ConfigError

__all__ = ["whole", "number", "flag", "choice", "text", "mapping"]


def whole(key: str, value: Any, *, at_least: int = 1, hint: str = "",
          error: type[AlsatianError] = ConfigError) -> int:
    """``value`` if it is a whole number (not a bool, not ``1.5``, not ``"abc"``) of at least ``at_least``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < at_least:
        kind = ("a positive whole number" + (f", at least {at_least}" if at_least > 1 else "") if at_least >= 1 else
                "a whole number, 0 or more" if at_least == 0 else f"a whole number, at least {at_least}")
        raise error(f"{key} must be {kind}{hint}, got {value!r}")
    return int(value)


def number(key: str, value: Any, *, above: float | None = None, below: float | None = None, hint: str = "",
           error: type[AlsatianError] = ConfigError) -> float:
    """``value`` as a float if it is a number strictly between ``above`` and ``below`` (where given; not NaN)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and value == value
    if not ok or (above is not None and value <= above) or (below is not None and value >= below):
        bounds = (f" strictly between {above} and {below}" if above is not None and below is not None else
                  f" above {above}" if above is not None else f" below {below}" if below is not None else "")
        raise error(f"{key} must be a number{bounds}{hint}, got {value!r}")
    return float(value)


def flag(key: str, value: Any, *, error: type[AlsatianError] = ConfigError) -> bool:
    """``value`` if it is true or false (Hydra parses ``key=true``/``key=false`` as booleans)."""
    if not isinstance(value, bool):
        raise error(f"{key} must be true or false, got {value!r}")
    return value


def choice(key: str, value: Any, options: Iterable[Any], *, error: type[AlsatianError] = ConfigError) -> Any:
    """``value`` if it is one of ``options``."""
    options = list(options)
    if value not in options:
        raise error(f"{key} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def text(key: str, value: Any, *, optional: bool = False, error: type[AlsatianError] = ConfigError) -> str | None:
    """``value`` if it is a non-empty string or a path (as a string; None too, when ``optional``)."""
    if value is None and optional:
        return None
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(value, str) or not value:
        raise error(f"{key} must be {'a path, a name or null' if optional else 'a non-empty string'}, got {value!r}")
    return value


def mapping(key: str, value: Any, *, error: type[AlsatianError] = ConfigError) -> dict[str, Any]:
    """``value`` as a dict if it is a mapping (None: empty)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise error(f"{key} must be a mapping of options (e.g. {key}.name=value), got {value!r}")
    return dict(value)
