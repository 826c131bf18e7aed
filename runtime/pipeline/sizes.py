"""The size a picture is drawn at, and the picture fitted to the size asked for (resolution binning, as diffusers'
PixArt pipelines do it): a size the folder holds is drawn as it is; any other, with binning, at the folder's size
nearest in aspect ratio (then in area), then resized to cover the size asked for and centre-cropped to it."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ptdit.contract.errors import InputError, option
from ptdit.contract.sizes import Size

from ..run_options import SIDE

if TYPE_CHECKING:
    from PIL.Image import Image

PIXEL_MULTIPLE = 8  # of a side asked for


def _listed(sizes: Sequence[Size]) -> str:
    return ", ".join(map(str, sizes))


def choose_size(sizes: Sequence[Size], height: int | None, width: int | None, binning: bool) -> Size:
    """The size of `sizes` (the folder's, the default first) that draws height x width (both None: the default)."""
    if height is None and width is None:
        return sizes[0]
    if height is None or width is None:
        missing = "height" if height is None else "width"
        raise InputError(f"pass {option('height')} and {option('width')} together ({option(missing)} is missing)")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or not SIDE.accepts(value) or value % PIXEL_MULTIPLE:
            raise InputError(f"{option(name)} must be a multiple of {PIXEL_MULTIPLE} {SIDE.interval()}, got {value!r}")
    wanted = Size(height, width)
    if wanted in sizes:
        return wanted
    if not binning:
        raise InputError(f"{wanted} is not a size of this pipeline: it holds {_listed(sizes)}; ask for one of them, "
                         f"or draw the nearest and crop it with resolution binning (the default, turned off by "
                         f"{option('use_resolution_binning')})")
    return min(sizes, key=lambda size: (abs(math.log(size.ratio / wanted.ratio)),
                                        abs(math.log(size.height * size.width / (height * width)))))


def _cover(width: int, height: int, size: Size) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """The resize that covers `size` keeping the aspect ratio, and the centred crop box of `size` in it."""
    scale = max(size.width / width, size.height / height)
    resized = (max(size.width, round(width * scale)), max(size.height, round(height * scale)))
    left, top = (resized[0] - size.width) // 2, (resized[1] - size.height) // 2
    return resized, (left, top, left + size.width, top + size.height)


def fit_image(image: Image, size: Size) -> Image:
    """A PIL image resized (bicubic) to cover `size` and centre-cropped to it; itself when it is that size."""
    if (image.height, image.width) == (size.height, size.width):
        return image
    from PIL import Image as PILImage

    resized, box = _cover(image.width, image.height, size)
    return image.resize(resized, PILImage.Resampling.BICUBIC).crop(box)


def fit_array(pixels: np.ndarray, size: Size) -> np.ndarray:
    """float [..., H, W, 3] in [0, 1] fitted as fit_image fits an image (each channel resized in float), clipped to
    [0, 1]; itself when it is that size."""
    if pixels.shape[-3:-1] == (size.height, size.width):
        return pixels
    from PIL import Image as PILImage

    resized, box = _cover(pixels.shape[-2], pixels.shape[-3], size)
    flat = pixels.reshape(-1, *pixels.shape[-3:])
    out = np.empty((len(flat), size.height, size.width, 3), np.float32)
    for i, picture in enumerate(flat):
        for c in range(3):
            channel = PILImage.fromarray(np.ascontiguousarray(picture[..., c], dtype=np.float32), "F")
            out[i, ..., c] = np.asarray(channel.resize(resized, PILImage.Resampling.BICUBIC).crop(box))
    return np.clip(out, 0.0, 1.0).reshape(*pixels.shape[:-3], size.height, size.width, 3)
