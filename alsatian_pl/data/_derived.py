"""Built-in sets of the other task types, made deterministically from Fashion-MNIST (the embedded 3,000 items, or
the Debian training set when ``dataset.path`` names its folder):

- ``fashion_mnist_mosaic`` (multilabel): 2x2 mosaics of 28 px items, one to four tiles filled, the rest black;
  the labels are the classes shown.
- ``fashion_mnist_rotation`` (regression): every item turned by a known angle in [0°, 360°); the two targets are
  the angle's sine and cosine (continuous across 0°).

The same items, angles and tiles come out on every machine (a fixed generator, not ``dataset.seed``, which still
drives the subset and the split).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ._sources import (FASHION_MNIST_CLASSES, ArraySource, DataSpec, Source, fashion_mnist, fashion_mnist_embedded,
                       register_dataset)

__all__ = ["mosaics", "rotated"]

_MADE_WITH = 27  # the generator's seed: the sets are fixed, whatever dataset.seed splits them with
_EMBEDDED = 3000


def _base_items(spec: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST images uint8 [n, 28, 28] and class ids: the embedded items, or with ``dataset.path`` the
    training set read from that folder (as ``dataset=fashion_mnist`` reads it)."""
    if spec.path is None:
        images, labels, _ = fashion_mnist_embedded()
        return images, labels
    source = fashion_mnist(spec)
    return source.images, source.labels  # type: ignore[attr-defined]


def mosaics(images: np.ndarray, labels: np.ndarray, count: int,
            num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``count`` mosaics uint8 [count, 2h, 2w] of 1-4 items each (random tiles, the others black) and their labels
    float32 [count, num_classes] (1: the class is shown)."""
    rng = np.random.default_rng(_MADE_WITH)
    h, w = images.shape[1:]
    out = np.zeros((count, 2 * h, 2 * w), dtype=np.uint8)
    shown = np.zeros((count, num_classes), dtype=np.float32)
    filled = rng.integers(1, 5, size=count)
    for i in range(count):
        tiles = rng.permutation(4)[:filled[i]]
        picks = rng.integers(0, len(images), size=filled[i])
        for tile, k in zip(tiles, picks):
            r, c = divmod(int(tile), 2)
            out[i, r * h:(r + 1) * h, c * w:(c + 1) * w] = images[k]
            shown[i, labels[k]] = 1
    return out, shown


def rotated(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every image uint8 [n, h, w] turned by its own angle (bilinear, black outside) and the
    targets float32 [n, 2]: (sin, cos) of the angles, drawn uniformly in [0, 2π)."""
    rng = np.random.default_rng(_MADE_WITH)
    angles = rng.uniform(0, 2 * math.pi, size=len(images))
    cos, sin = np.cos(angles), np.sin(angles)
    theta = torch.tensor(np.stack([np.stack([cos, sin, 0 * cos], 1), np.stack([-sin, cos, 0 * cos], 1)], 1),
                         dtype=torch.float32)                                   # output -> input sampling grid
    x = torch.from_numpy(images).float().unsqueeze(1)
    out = []
    for s in range(0, len(x), 1024):
        grid = F.affine_grid(theta[s:s + 1024], list(x[s:s + 1024].shape), align_corners=False)
        out.append(F.grid_sample(x[s:s + 1024], grid, mode="bilinear", align_corners=False))
    pixels = torch.cat(out).squeeze(1).round().clamp(0, 255).to(torch.uint8).numpy()
    return pixels, np.stack([sin, cos], 1).astype(np.float32)


@register_dataset("fashion_mnist_mosaic")
def fashion_mnist_mosaic(spec: DataSpec) -> Source:
    """Multilabel: 3,000 mosaics of the embedded items (with ``dataset.path``: ``num_items`` of the full set's)."""
    count = _EMBEDDED if spec.path is None else max(_EMBEDDED, spec.num_items or _EMBEDDED)
    pixels, shown = mosaics(*_base_items(spec), count, len(FASHION_MNIST_CLASSES))
    return ArraySource(pixels, shown, list(FASHION_MNIST_CLASSES), spec, task="multilabel")


@register_dataset("fashion_mnist_rotation")
def fashion_mnist_rotation(spec: DataSpec) -> Source:
    """Regression: every embedded item (with ``dataset.path``: the full training set) turned by a known angle;
    targets ``sin`` and ``cos`` of the angle."""
    images, _ = _base_items(spec)
    pixels, targets = rotated(images)
    return ArraySource(pixels, targets, ["sin", "cos"], spec, task="regression")
