"""Image files to intensities in [0, 1], the same values for every mode PIL opens.

PIL's own ``convert("RGB")`` clips 16-bit and 32-bit pixels to 255 and float pixels to 0 or 1, and drops alpha
whatever the colour under it. Here instead: 8-bit modes (1, L, P, RGB, CMYK, YCbCr, ...) divide by 255; 16-bit
(``I;16*``) by 65535; 32-bit integers (``I``) by 65535 when they hold 0..65535 (16-bit data, as PNG and TIFF readers
give it), else they are refused; floats (``F``) are taken as they are when they lie in [0, 1], else refused; images
with transparency (RGBA, LA, PA, RGBa, La, a palette or colour key with transparency) are composited over white;
an animation gives its first frame; the EXIF orientation is applied. A mode that cannot be decoded raises DataError.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..errors import DataError

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
_EIGHT_BIT = ("1", "L", "P", "RGB", "CMYK", "YCbCr", "LAB", "HSV")


def decode_image(file: Path, size: int) -> torch.Tensor:
    """float32 ``[1, C, H, W]`` in [0, 1] (C = 1 for grey modes, else 3) of the image file; JPEGs are decoded at
    the smallest scale that is still at least ``size`` pixels a side. DataError naming the file when it cannot be
    decoded."""
    pixels = torch.from_numpy(_decode(file, size, lambda image: intensities(image)))
    return pixels[None, None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)[None]


def prepare_image(file: Path, size: int) -> torch.Tensor:
    """uint8 ``[3, size, size]``: the image decoded as :func:`decode_image` does and resized (bilinear, antialiased,
    torchvision's resize): 8-bit images are resized as uint8, wider ones in float32 and then rounded; grey images
    repeat to three channels."""
    array = _decode(file, size, _pixels)
    with warnings.catch_warnings():  # a read-only view of PIL's bytes (no copy): only read, resize makes new pixels
        warnings.simplefilter("ignore", UserWarning)
        pixels = torch.from_numpy(array)
    pixels = pixels[None] if pixels.ndim == 2 else pixels.permute(2, 0, 1)
    return resize_pixels(pixels, size).expand(3, -1, -1)


def resize_pixels(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or float (in [0, 1]) ``[C, H, W]`` to uint8 ``[C, size, size]`` (bilinear, antialiased)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2.functional import resize

    if tuple(pixels.shape[-2:]) != (size, size):
        pixels = resize(pixels, [size, size], interpolation=InterpolationMode.BILINEAR, antialias=True)
    if pixels.dtype != torch.uint8:
        pixels = pixels.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return pixels


def _decode(file: Path, size: int, read: Callable[[Any], np.ndarray]) -> np.ndarray:
    """``read(image)`` of the opened image (first frame, EXIF orientation applied, JPEG drafted to >= ``size``);
    DataError naming the file when it cannot be decoded or is larger than PIL's decompression-bomb limit."""
    from PIL import Image, ImageOps

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(file) as image:
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.draft(None, (size, size))  # JPEG only: a reduced-scale decode, still >= size
                exif = "exif" in image.info or image.format in ("TIFF", "MPO")  # else there is no orientation tag
                if exif and image.getexif().get(0x0112, 1) != 1:  # an EXIF orientation: turn it as viewers do
                    image = ImageOps.exif_transpose(image)
                return read(image)
    except DataError as exc:  # a mode decoded without a known scale: refused, not guessed
        raise DataError(f"image {file}: {exc}. Convert it (e.g. to an 8- or 16-bit PNG) or remove it") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"image {file} is too large to decode safely ({exc}). Resize it, or remove it") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"cannot read image {file}: {exc}. Delete or replace the file, then run again") from None


def _pixels(image) -> np.ndarray:  # noqa: ANN001 - a PIL image
    """uint8 ``[H, W]`` / ``[H, W, 3]`` for 8-bit images without transparency (as PIL converts them), else the
    float32 :func:`intensities`."""
    if image.mode in _EIGHT_BIT and "transparency" not in image.info:
        target = "L" if image.mode in ("1", "L") else "RGB"
        return np.asarray(image if image.mode == target else image.convert(target))  # read-only: see prepare_image
    return intensities(image)


def intensities(image) -> np.ndarray:  # noqa: ANN001 - a PIL image
    """float32 ``[H, W]`` (grey) or ``[H, W, 3]`` in [0, 1], by the rules in the module docstring."""
    mode = image.mode
    if mode in _SIXTEEN_BIT:
        return np.asarray(image).astype(np.float32) / 65535
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise DataError(f"32-bit integer pixels from {values.min()} to {values.max()} have no known scale "
                            "(only 0..65535, 16-bit data, is read)")
        return values.astype(np.float32) / 65535
    if mode == "F":
        values = np.array(image, dtype=np.float32)  # a writable copy, as torch wants
        if values.size and not (np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1):
            raise DataError("floating-point pixels must lie in [0, 1]")
        return values
    if mode in _ALPHA or "transparency" in image.info:
        rgba = np.asarray(image.convert("LA" if mode in ("LA", "La") else "RGBA")).astype(np.float32) / 255
        alpha = rgba[..., -1:]
        out = rgba[..., :-1] * alpha + (1 - alpha)  # over white
        return out[..., 0] if out.shape[-1] == 1 else out
    grey = mode in ("1", "L")
    return np.asarray(image.convert("L" if grey else "RGB")).astype(np.float32) / 255
