"""Data stage: ``SearchDataModule`` (test split, doubling training chunks, items prepared once) and a dataset registry.

Add a dataset with ``@register_dataset("name")`` on a ``factory(spec: DataSpec) -> Source``; a ``Source`` gives labels,
class names and its task cheaply (the label contract of each task type is in ``Source``'s docstring); an ``ImageSource`` decodes items to uint8 pixels (``decode(indices, workers)``) and names what
they depend on (``identity()``, the prepared-data cache key); a text source tokenises them.

Also public, for the zoo and the benchmarks: the tokenizer helpers (:func:`tokenize`, :func:`tokenizer_key`,
:func:`save_tokenizer`, :func:`tokenizer_files`), the built-in sources' readers (:func:`read_idx`,
:data:`FASHION_MNIST_DIR`, :func:`rotten_tomatoes`, :func:`orange_tab`, :func:`package_file`, :func:`table_source`)
and the image preparation (:func:`resize_pixels`, :class:`ToPixels`).
"""

from ._images import resize_pixels
from ._items import Items, ToPixels
from ._module import SearchDataModule
from ._sources import (DATASETS, FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, FASHION_MNIST_NPZ, DataSpec, ImageSource,
                       Source, read_idx, register_dataset)
from ._split import num_rounds
from ._derived import mosaics, rotated  # registers fashion_mnist_mosaic and fashion_mnist_rotation
from ._tasks import TASKS
from ._table import table_source  # registers the table dataset
from ._text import (orange_tab, package_file, rotten_tomatoes, save_tokenizer,  # registers the text datasets
                    tokenize, tokenizer_files, tokenizer_key)

__all__ = ["DATASETS", "DataSpec", "ImageSource", "Items", "SearchDataModule", "Source", "num_rounds", "register_dataset",
           "table_source", "FASHION_MNIST_DIR", "FASHION_MNIST_CLASSES", "FASHION_MNIST_NPZ", "read_idx",
           "resize_pixels", "ToPixels", "package_file", "orange_tab", "rotten_tomatoes", "save_tokenizer", "tokenize",
           "tokenizer_files", "tokenizer_key", "TASKS", "mosaics", "rotated"]
