"""Data stage: ``SearchDataModule`` (test split, doubling training chunks, items prepared once) and a dataset registry.

Add a dataset with ``@register_dataset("name")`` on a ``factory(spec: DataSpec) -> Source``; a ``Source`` gives labels
and class names cheaply and prepares model-ready items (pixels, or token ids for text) once in ``prepare(indices)``.
"""

from ._module import SearchDataModule
from ._sources import DATASETS, DataSpec, Source, register_dataset
from ._split import num_rounds
from . import _text  # noqa: F401  (register the text datasets)

__all__ = ["DATASETS", "DataSpec", "SearchDataModule", "Source", "num_rounds", "register_dataset"]
