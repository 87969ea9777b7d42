"""The family registry: the first registered family whose ``matches`` accepts a model splits it."""

from __future__ import annotations

from typing import Callable, TypeVar

from torch import nn

from ..errors import StoreError
from ..registry import Registry


class BlockFamily:
    """One model family: ``matches(model)`` and ``split(model) -> list[nn.Module]`` (the feature-extractor blocks)."""

    name: str = ""

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def split(self, model: nn.Module) -> list[nn.Module]:
        raise NotImplementedError


FAMILIES: Registry[BlockFamily] = Registry("block family", plural="block families")  # in registration order: the first match splits
C = TypeVar("C", bound=Callable[[], BlockFamily])


def register_family(cls: C) -> C:
    """Class decorator: instantiate ``cls`` and register the family in :data:`FAMILIES` under its ``name``."""
    family = cls()
    if not family.name:
        raise ValueError(f"{cls.__name__} must set a name")
    FAMILIES.register(family.name, family)
    return cls


def families() -> list[str]:
    """Names of the registered families, in the order :func:`family_of` tries them."""
    return list(FAMILIES)


def family_of(model: nn.Module) -> BlockFamily:
    """The family that can split ``model``; a StoreError saying why when none can."""
    for family in FAMILIES.values():
        if family.matches(model):
            return family
    raise StoreError(
        f"cannot split a {type(model).__module__}.{type(model).__name__} into blocks: no registered block family "
        f"matches it (known families: {', '.join(FAMILIES)}). Alsatian needs a model whose feature extractor is "
        "declared as a sequence of blocks; register a BlockFamily for this architecture with "
        "alsatian_pl.blocks.register_family."
    )


def split_model(model: nn.Module) -> list[nn.Module]:
    """The ordered feature-extractor blocks of ``model`` (they share parameters with it)."""
    return family_of(model).split(model)
