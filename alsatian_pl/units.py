"""Human units: byte sizes (``parse_bytes("512MB") == 512 * 2**20`` and back with ``format_bytes``) and model
names short enough to read (``display_names``)."""

from __future__ import annotations

import os
import re
from typing import Sequence

from .errors import ConfigError

__all__ = ["parse_bytes", "format_bytes", "display_names"]

_UNITS = {"": 1, "B": 1, "K": 2**10, "KB": 2**10, "KIB": 2**10, "M": 2**20, "MB": 2**20, "MIB": 2**20,
          "G": 2**30, "GB": 2**30, "GIB": 2**30, "T": 2**40, "TB": 2**40, "TIB": 2**40}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*$")


def parse_bytes(value: int | float | str | None) -> int | None:
    """Bytes from an int or a string like ``"512MB"``/``"4GB"`` (binary units); ``None``/"none"/"inf" mean unlimited."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"invalid byte size {value!r}: use a number of bytes or a string such as '512MB' or '4GB'")
    if isinstance(value, (int, float)):
        if value != value:
            raise ConfigError(f"invalid byte size {value!r}: use a number of bytes or a string such as '512MB' or '4GB'")
        if value < 0:
            raise ConfigError(f"byte size must not be negative, got {value}")
        return None if value == float("inf") else int(value)  # inf (1e400 too): unlimited, as the string "inf"
    text = str(value).strip()
    if text.lower() in {"none", "null", "inf", "unlimited"}:
        return None
    match = _PATTERN.match(text)
    if not match or match.group(2).upper() not in _UNITS:
        raise ConfigError(f"invalid byte size {value!r}: use a number of bytes or a string such as '512MB' or '4GB'")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def format_bytes(n: int | float | None) -> str:
    """Short human form of a byte count, e.g. ``'1.5 GiB'``."""
    if n is None:
        return "unlimited"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def display_names(names: Sequence[str]) -> dict[str, str]:
    """Short names that still tell models apart: the part after the prefix all of them share (a zoo's id), cut at
    a ``-``, e.g. ``effnet_lite0_zoo-9555119592-007`` -> ``007``; a lone name stays whole."""
    names = list(names)
    if len(names) < 2:
        return {n: n for n in names}
    prefix = os.path.commonprefix(names)
    cut = prefix.rfind("-") + 1
    return {n: n[cut:] or n for n in names}
