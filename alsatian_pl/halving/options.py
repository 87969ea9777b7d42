"""The searcher's option checks: every ``search.*`` value is checked before anything runs, with one message naming
the key; and the scorer built from a name, a ``{"name", "kwargs"}`` mapping or an instance."""

from __future__ import annotations

from typing import Any, Mapping

from ..checks import choice, flag, text, whole
from ..errors import ConfigError
from ..io import check_folder
from ..precision import check_precision
from ..threads import check_threads
from ..score import ProxyScorer, get_scorer
from ..units import parse_bytes

__all__ = ["check_options", "make_scorer", "to_bytes", "block_batches", "MAX_SEED", "AUTO_BLOCK_BATCHES"]

MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed takes no more
AUTO_BLOCK_BATCHES = 4  # search.block_batches=auto: the most batches a step runs block by block (bench/notes/batches.md)


def check_options(*, prefetch: Any, result_size: Any, batch_size: Any, seed: Any, progress: Any,
                  channels_last: Any, resume: Any, confidence: Any, sizes: dict[str, Any],
                  precision: Any = "32-true", threads: Any = "auto",
                  on_invalid: Any = "error", block_batches: Any = "auto", **folders: Any) -> None:
    """ConfigError (DiskError for a folder that is a file) naming the first ``search.*`` value that is wrong."""
    if confidence is not None and (isinstance(confidence, bool) or not isinstance(confidence, (int, float))
                                   or not 0.5 <= confidence < 1):
        raise ConfigError("search.confidence must be a level in [0.5, 1) such as 0.9 (the models that could be best "
                          f"at 90%), or null for no intervals; got {confidence!r}")
    for key, value in sizes.items():
        try:
            parse_bytes(None if value == "auto" else value)
        except ConfigError as exc:
            raise ConfigError(f"search.{key}: {exc}") from None
    whole("search.result_size", result_size)
    whole("search.batch_size", batch_size)
    if whole("search.seed", seed, at_least=0) > MAX_SEED:
        raise ConfigError(f"search.seed must be at most {MAX_SEED} (2**64 - 1, what torch's generators take), "
                          f"got {seed}")
    for key, value in (("progress", progress), ("channels_last", channels_last), ("resume", resume)):
        flag(f"search.{key}", value)
    if block_batches != "auto":
        whole("search.block_batches", block_batches, hint=" (batches a step runs block by block; 1: each batch "
                                                          "through the whole chain) or auto")
    if prefetch not in ("auto", None, True, False):
        raise ConfigError(f"search.prefetch must be auto, true or false, got {prefetch!r}")
    check_precision(precision)
    check_threads(threads)
    choice("models.on_invalid", on_invalid, ("error", "skip"))  # the models group's key: what a bad candidate does
    for key, folder in folders.items():
        if folder is not None:
            check_folder(text(f"search.{key}", folder), f"search.{key}", writable=True)


def make_scorer(scorer: str | Mapping[str, Any] | ProxyScorer, kwargs: dict[str, Any] | None,
                seed: int) -> ProxyScorer:
    """A scorer from a name (with ``kwargs``), a ``{"name", "kwargs"}`` mapping, or as given."""
    if isinstance(scorer, ProxyScorer):
        return scorer
    if isinstance(scorer, Mapping):
        name, options = scorer.get("name", "linear"), dict(scorer.get("kwargs") or {})
        return get_scorer(str(name), seed=seed, **{**options, **(kwargs or {})})
    return get_scorer(scorer, seed=seed, **(kwargs or {}))


def block_batches(value: int | str) -> int:
    """The most batches a step runs block by block for ``search.block_batches=value`` (fewer where the budget leaves
    no room: :func:`~alsatian_pl.plan.plan_block_batches`)."""
    return AUTO_BLOCK_BATCHES if value == "auto" else int(value)


def to_bytes(value: int | str | None) -> int | None:
    """A byte count from an int, a size such as ``"4GB"``, or None."""
    return value if value is None or isinstance(value, int) else parse_bytes(str(value))
