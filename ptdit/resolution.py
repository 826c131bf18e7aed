"""The resolution table: the single place that maps an image size (and latent frame count) to the latent shape, the
token grid and the attention window, and that holds the aspect-ratio bins of each size class.

Images: VAE factor 8 and patch 2, so the token grid is (height / 16, width / 16). A size belongs to the class whose
square's area is nearest its own (256, 512, 1024, 2048: the paper's table), and is cut into that class's windows
(2 x 2, 4 x 4, 8 x 8, 16 x 16 tokens), so each side is a multiple of the class's grid: 16 x the window side in
pixels (32, 64, 128, 256). Video: the latent frame count F must be a multiple of the temporal window p_t = 4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from .contract.errors import InputError
from .contract.sizes import Size

VAE_FACTOR = 8
TOKEN_PIXELS = VAE_FACTOR * 2  # image pixels per token side (the VAE's factor x the patch)
TEMPORAL_WINDOW = 4
MAX_RATIO = 4  # the widest aspect ratio a size takes, either way: the bins' (PixArt's 0.25 to 4.0)
CLASS_WINDOWS: dict[int, int] = {256: 2, 512: 4, 1024: 8, 2048: 16}  # class (square side) -> window side, tokens
IMAGE_WINDOWS: dict[int, tuple[int, int, int]] = {res: (1, side, side) for res, side in CLASS_WINDOWS.items()}
SUPPORTED_RESOLUTIONS = tuple(IMAGE_WINDOWS)
# The aspect ratios (height / width) of PixArt-alpha's 1024 bins (diffusers' ASPECT_RATIO_1024_BIN, 64-pixel
# sides): each class's bins are these ratios snapped to the class's own grid (size_bins).
PIXART_RATIOS = (0.25, 0.26, 0.27, 0.28, 0.32, 0.33, 0.35, 0.4, 0.42, 0.48, 0.5, 0.52, 0.57, 0.6, 0.68, 0.72, 0.78,
                 0.82, 0.88, 0.94, 1.0, 1.07, 1.13, 1.21, 1.29, 1.38, 1.46, 1.67, 1.75, 2.0, 2.09, 2.4, 2.5, 3.0, 4.0)

Triple = tuple[int, int, int]


def _accepted() -> str:
    return ", ".join(str(r) for r in SUPPORTED_RESOLUTIONS)


def size_class(height: int, width: int) -> int:
    """The class whose square's area is nearest (in ratio) to height x width."""
    return min(SUPPORTED_RESOLUTIONS, key=lambda res: (abs(math.log(height * width / res ** 2)), res))


def resolution_of(size: Size) -> int:
    """What a manifest calls a size's resolution: its side if it is square, else its class."""
    return size.height if size.square else size_class(size.height, size.width)


def grid_pixels(res_class: int) -> int:
    """The pixels a side of a size of this class is a multiple of: one attention window."""
    return TOKEN_PIXELS * CLASS_WINDOWS[res_class]


@lru_cache(maxsize=None)
def size_bins(res_class: int) -> tuple[Size, ...]:
    """The class's aspect-ratio bins, from the narrowest to the widest: for each of PixArt's ratios and its
    reciprocal (PixArt's list is not quite symmetric: 0.35 has no 2.86), the size on the class's grid that is
    nearest to it, counting a ratio error twice an area error (a ratio error is cropped away after binning; an area
    error only costs compute). Ratios that snap to the same size share it."""
    grid, area = grid_pixels(res_class), res_class ** 2
    sides = range(grid, 4 * res_class + 1, grid)

    def cost(size: Size, ratio: float) -> tuple[float, int, int]:
        error = 2 * abs(math.log(size.ratio / ratio)) + abs(math.log(size.height * size.width / area))
        return error, size.height, size.width

    candidates = [Size(h, w) for h in sides for w in sides]
    ratios = {*PIXART_RATIOS, *(1 / ratio for ratio in PIXART_RATIOS)}  # portrait and landscape alike
    chosen = {min(candidates, key=lambda size: cost(size, ratio)) for ratio in ratios}
    return tuple(sorted(chosen, key=lambda size: -size.ratio))


def check_frames(frames: int | None) -> None:
    if frames is not None and (frames < TEMPORAL_WINDOW or frames % TEMPORAL_WINDOW):
        raise InputError(
            f"unsupported frame count {frames}: video needs a latent frame count that is a positive "
            f"multiple of {TEMPORAL_WINDOW} (e.g. 4, 8, 16)"
        )


def check_size(height: int, width: int) -> int:
    """The class of a size on its class's grid, else an InputError naming the nearest sizes that are."""
    if isinstance(height, bool) or isinstance(width, bool) or not isinstance(height, int) \
            or not isinstance(width, int) or height < 1 or width < 1:
        raise InputError(f"size {width!r}x{height!r} is not a size: pass positive integers WIDTHxHEIGHT")
    res_class = size_class(height, width)
    grid = grid_pixels(res_class)
    area_bounds = (SUPPORTED_RESOLUTIONS[0] ** 2 / 2, 2 * SUPPORTED_RESOLUTIONS[-1] ** 2)
    if not MAX_RATIO ** -1 <= height / width <= MAX_RATIO or not area_bounds[0] <= height * width <= area_bounds[1]:
        nearest = min(size_bins(res_class), key=lambda b: abs(math.log(b.ratio * width / height)))
        raise InputError(f"size {width}x{height} is outside the resolution table: a size takes an aspect ratio from "
                         f"1:{MAX_RATIO} to {MAX_RATIO}:1 and an area within a factor 2 of a class's square (256 to "
                         f"2048); nearest: {nearest}")
    if height % grid or width % grid:
        rounded = {Size(max(grid, step(height / grid) * grid), max(grid, step(width / grid) * grid))
                   for step in (round, math.floor)}
        near = [size for size in sorted(rounded, key=str) if _on_its_grid(size)] or [
            min(size_bins(res_class), key=lambda b: abs(math.log(b.ratio * width / height)))]
        raise InputError(f"size {width}x{height} is not on the {res_class} class's grid: each side must be a multiple "
                         f"of {grid} pixels (one {CLASS_WINDOWS[res_class]} x {CLASS_WINDOWS[res_class]} token "
                         f"window); nearest: {', '.join(map(str, near))}")
    return res_class


def _on_its_grid(size: Size) -> bool:
    grid = grid_pixels(size_class(size.height, size.width))
    return size.height % grid == 0 and size.width % grid == 0


def window_for(height: int, width: int | None = None, *, frames: int | None = None) -> Triple:
    """Attention window (p_t, p_h, p_w) in tokens for an image of height x width (width None: square), or a video
    of `frames` latent frames."""
    if width is None:
        if height not in IMAGE_WINDOWS:
            raise InputError(f"unsupported resolution {height}: accepted resolutions are {_accepted()}")
        res_class = height
    else:
        res_class = check_size(height, width)
    check_frames(frames)
    _, p_h, p_w = IMAGE_WINDOWS[res_class]
    return (TEMPORAL_WINDOW if frames is not None else 1, p_h, p_w)


def latent_hw(res: int) -> int:
    """Latent pixels per side for a square image resolution (checked against the table)."""
    window_for(res)
    return res // VAE_FACTOR


def latent_size(height: int, width: int) -> tuple[int, int]:
    """Latent (height, width) of an image size (checked against the table)."""
    window_for(height, width)
    return height // VAE_FACTOR, width // VAE_FACTOR


def resolution_of_latent(latent_side: int) -> int:
    return latent_side * VAE_FACTOR


@dataclass(frozen=True)
class Geometry:
    """Token grid and windows of one forward pass."""

    grid: Triple  # tokens (F, H, W)
    window: Triple  # tokens per window (p_t, p_h, p_w)

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]

    @property
    def window_size(self) -> int:
        """P, tokens per window."""
        return self.window[0] * self.window[1] * self.window[2]

    @property
    def windows(self) -> Triple:
        """Number of windows along (F, H, W)."""
        return (self.grid[0] // self.window[0], self.grid[1] // self.window[1], self.grid[2] // self.window[2])

    @property
    def num_windows(self) -> int:
        return self.num_tokens // self.window_size

    @property
    def shift(self) -> Triple:
        """Shifted-window offset: half a window along every axis."""
        return (self.window[0] // 2, self.window[1] // 2, self.window[2] // 2)


def geometry(latent_fhw: Triple, patch_size: int, window: Triple | None = None) -> Geometry:
    """Geometry of a latent of shape (F, H, W); F == 1 is an image. `window` overrides the table (expert
    use) and is validated."""
    frames, height, width = latent_fhw
    video_frames = frames if frames > 1 else None
    if height % patch_size or width % patch_size:
        raise InputError(f"latent {height}x{width} is not divisible by the patch size {patch_size}")
    grid = (frames, height // patch_size, width // patch_size)
    if window is None:
        window = window_for(resolution_of_latent(height), resolution_of_latent(width), frames=video_frames)
    else:
        check_frames(video_frames)
        window = tuple(int(w) for w in window)  # type: ignore[assignment]
        if len(window) != 3 or any(w < 1 or g % w for w, g in zip(window, grid)):
            raise InputError(
                f"window {window} does not tile the token grid {grid}: every window side must divide the grid"
            )
    return Geometry(grid=grid, window=window)
