"""Every image mode PIL opens decodes to the same values as a reference computed from the pixels that were encoded
(numpy, no PIL conversion): 1, L, P (with and without transparency), RGB, RGBA, CMYK, I;16, I, F, LA, PA, an
animation (its first frame) and an EXIF-rotated image; modes without a known scale are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from _harness import in_process, one_error_line

H, W = 6, 8
RNG = np.random.default_rng(0)
GREY = RNG.integers(0, 256, (H, W), dtype=np.uint8)
RGB = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
ALPHA = RNG.integers(0, 256, (H, W), dtype=np.uint8)
INDEX = RNG.integers(0, 4, (H, W), dtype=np.uint8)
PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [120, 130, 140]], dtype=np.uint8)
WIDE = RNG.integers(0, 65536, (H, W)).astype(np.uint16)
CMYK = RNG.integers(0, 256, (H, W, 4), dtype=np.uint8)
FLOAT = RNG.random((H, W), dtype=np.float32)


def _over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = (alpha / 255.0)[..., None] if colour.ndim == 3 else alpha / 255.0
    return colour / 255.0 * a + (1 - a)


def _palette_image(index: np.ndarray):
    from PIL import Image

    image = Image.fromarray(index, mode="P")
    image.putpalette(PALETTE.reshape(-1).tolist())
    return image


def _cases():
    """name -> (write(path) -> written path, reference intensities [H, W] or [H, W, 3] in [0, 1])."""
    from PIL import Image

    def save(image, name, **kw):
        def write(folder):
            path = folder / name
            image.save(path, **kw)
            return path
        return write

    transparent = _palette_image(INDEX)
    transparent.info["transparency"] = 3
    frames = [_palette_image(INDEX), _palette_image((INDEX + 1) % 4)]
    cmy, k = CMYK[..., :3].astype(float), CMYK[..., 3:].astype(float)
    rotated = Image.fromarray(RGB)
    exif = rotated.getexif()
    exif[0x0112] = 6  # Orientation: the viewer turns it 90 degrees clockwise
    pa = _palette_image(INDEX).convert("PA")
    return {
        "1": (save(Image.fromarray(GREY > 127), "bits.png"), (GREY > 127).astype(float)),
        "L": (save(Image.fromarray(GREY), "grey.png"), GREY / 255.0),
        "P": (save(_palette_image(INDEX), "palette.png"), PALETTE[INDEX] / 255.0),
        "P with transparency": (save(transparent, "palette-t.png"),
                                np.where((INDEX == 3)[..., None], 1.0, PALETTE[INDEX] / 255.0)),
        "RGB": (save(Image.fromarray(RGB), "rgb.png"), RGB / 255.0),
        "RGBA": (save(Image.fromarray(np.dstack([RGB, ALPHA]), mode="RGBA"), "rgba.png"), _over_white(RGB, ALPHA)),
        "LA": (save(Image.fromarray(np.dstack([GREY, ALPHA]), mode="LA"), "la.png"), _over_white(GREY, ALPHA)),
        "PA": (save(pa, "pa.tiff"), PALETTE[INDEX] / 255.0),
        "CMYK": (save(Image.fromarray(CMYK, mode="CMYK"), "cmyk.tiff"), np.round((255 - cmy) * (255 - k) / 255) / 255),
        "I;16": (save(Image.fromarray(WIDE), "wide.png"), WIDE / 65535.0),
        "I": (save(Image.fromarray(WIDE.astype(np.int32)), "int.tiff"), WIDE / 65535.0),
        "F": (save(Image.fromarray(FLOAT), "float.tiff"), FLOAT.astype(np.float64)),
        "animated": (save(frames[0], "anim.gif", save_all=True, append_images=frames[1:], optimize=False),
                     PALETTE[INDEX] / 255.0),
        "EXIF-rotated": (save(rotated, "rotated.png", exif=exif), np.rot90(RGB, k=-1) / 255.0),
    }


CASES = _cases()


@pytest.mark.parametrize("mode", sorted(CASES))
def test_every_mode_decodes_to_the_reference(mode, tmp_path):
    from alsatian_pl.data._images import decode_image
    from alsatian_pl.data._images import resize_pixels
    from alsatian_pl.data._sources import DataSpec, FolderSource

    write, reference = CASES[mode]
    path = write(tmp_path)
    decoded = decode_image(path, 8)[0].double().numpy()
    ref = reference if reference.ndim == 2 else reference.transpose(2, 0, 1)
    np.testing.assert_allclose(decoded.reshape(ref.shape), ref, rtol=0, atol=1e-6)
    spec = DataSpec("image_folder", str(tmp_path), None, 8, 0.5, 0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    _, prepared, errors, _ = next(FolderSource([path], np.zeros(1, dtype=np.int64), ["a"], spec).decode(np.arange(1), 0))
    expected = resize_pixels(torch.from_numpy(np.ascontiguousarray(ref, dtype=np.float32)).reshape(-1, *ref.shape[-2:]),
                             8).expand(3, -1, -1)
    assert not errors and prepared.dtype == torch.uint8 and prepared.shape == (1, 3, 8, 8)
    assert (prepared[0].int() - expected.int()).abs().max() <= 1  # within one grey level of the reference


@pytest.mark.parametrize(("name", "values", "words"), [
    ("int-wide.tiff", np.array([[0, 70000]], dtype=np.int32), "32-bit integer pixels from 0 to 70000"),
    ("int-negative.tiff", np.array([[-5, 10]], dtype=np.int32), "32-bit integer pixels from -5 to 10"),
    ("float-bright.tiff", np.array([[0.0, 2.0]], dtype=np.float32), "floating-point pixels must lie in [0, 1]"),
    ("float-nan.tiff", np.array([[0.0, np.nan]], dtype=np.float32), "floating-point pixels must lie in [0, 1]"),
])
def test_pixels_without_a_known_scale_are_refused_in_one_line(name, values, words, tmp_path, capsys):
    from PIL import Image

    from alsatian_pl.data._images import decode_image

    Image.fromarray(values).save(tmp_path / name)
    status, err = in_process(capsys, decode_image, tmp_path / name, 8)
    assert status == 2
    one_error_line(err, words, name, "Convert it")
