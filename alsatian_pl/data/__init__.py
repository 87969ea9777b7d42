"""Data stage: ``SearchDataModule`` (test split, doubling training chunks, items prepared once) and a dataset registry.

Add a dataset with ``@register_dataset("name")`` on a ``factory(spec: DataSpec) -> Source``; a ``Source`` gives labels
and class names cheaply; an ``ImageSource`` decodes items to uint8 pixels (``decode(indices, workers)``) and names what
they depend on (``identity()``, the prepared-data cache key); a text source tokenises them.
"""

from ._items import Items
from ._module import SearchDataModule
from ._sources import DATASETS, DataSpec, ImageSource, Source, register_dataset
from ._split import num_rounds
from . import _text  # noqa: F401  (register the text datasets)

__all__ = ["DATASETS", "DataSpec", "ImageSource", "Items", "SearchDataModule", "Source", "num_rounds", "register_dataset"]
