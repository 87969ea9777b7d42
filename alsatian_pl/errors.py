"""User-facing errors: each says what is wrong and how to fix it; entry points print them without a traceback."""

from __future__ import annotations

__all__ = ["AlsatianError", "ConfigError", "DataError", "StoreError", "CorruptBlockError", "InvalidCandidateError",
           "BudgetTooSmallError",
           "SearchInterrupted", "DiskError", "CorruptFileError", "AlsatianWarning"]


class AlsatianError(Exception):
    """Base class for errors caused by user input (config, data, store, budget)."""


class ConfigError(AlsatianError, ValueError):
    """An invalid or inconsistent configuration value."""


class DataError(AlsatianError, ValueError):
    """A dataset that is missing, unreadable, too small or otherwise unusable."""


class StoreError(AlsatianError):
    """A block store problem: a missing model, an unsplittable architecture, a bad checkpoint."""


class CorruptBlockError(StoreError):
    """A block file whose bytes do not match its content hash (truncated or modified)."""


class InvalidCandidateError(StoreError):
    """Candidate models that cannot be scored: a block that fails at forward or gives outputs of another shape than
    the store recorded, weights or features that are not finite. ``models``: the candidates it stops (those of the
    step that failed); ``reason``: what failed, in words (the message adds the fix); ``block``: the failing block's
    hash (None: not one block's fault)."""

    def __init__(self, message: str, models: frozenset[str] | set[str] = frozenset(), reason: str = "",
                 block: str | None = None):
        super().__init__(message)
        self.models, self.reason, self.block = frozenset(models), reason or message, block


class BudgetTooSmallError(AlsatianError):
    """The cache budget cannot hold even one batch of a round; ``needed`` is the smallest budget that works."""

    def __init__(self, message: str, needed: int):
        super().__init__(message)
        self.needed = needed


class SearchInterrupted(AlsatianError):
    """The search was interrupted (Ctrl-C); the message says what was saved and how to resume."""


class DiskError(AlsatianError):
    """A file that cannot be written: a full disk, a read-only or forbidden folder, a file where a folder must be."""


class CorruptFileError(AlsatianError):
    """A file alsatian-pl wrote earlier (results, record, manifest) that is missing, truncated, damaged or edited."""


class AlsatianWarning(UserWarning):
    """Something the user should know that does not stop the run (the entry points print it as one line)."""
