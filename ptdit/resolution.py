"""The resolution table: the single place that maps an image resolution (and latent frame count)
to the latent shape, the token grid and the attention window.

Images: VAE factor 8 and patch 2, so the token grid is res/16 per side, always cut into 8 x 8 windows.
Video: the latent frame count F must be a multiple of the temporal window p_t = 4.
"""

from __future__ import annotations

from dataclasses import dataclass

from .contract.errors import InputError

VAE_FACTOR = 8
TEMPORAL_WINDOW = 4
IMAGE_WINDOWS: dict[int, tuple[int, int, int]] = {
    256: (1, 2, 2),
    512: (1, 4, 4),
    1024: (1, 8, 8),
    2048: (1, 16, 16),
}
SUPPORTED_RESOLUTIONS = tuple(IMAGE_WINDOWS)

Triple = tuple[int, int, int]


def _accepted() -> str:
    return ", ".join(str(r) for r in SUPPORTED_RESOLUTIONS)


def check_frames(frames: int | None) -> None:
    if frames is not None and (frames < TEMPORAL_WINDOW or frames % TEMPORAL_WINDOW):
        raise InputError(
            f"unsupported frame count {frames}: video needs a latent frame count that is a positive "
            f"multiple of {TEMPORAL_WINDOW} (e.g. 4, 8, 16)"
        )


def window_for(res: int, frames: int | None = None) -> Triple:
    """Attention window (p_t, p_h, p_w) in tokens for an image resolution, or a video of `frames` latent frames."""
    if res not in IMAGE_WINDOWS:
        raise InputError(f"unsupported resolution {res}: accepted resolutions are {_accepted()}")
    check_frames(frames)
    _, p_h, p_w = IMAGE_WINDOWS[res]
    return (TEMPORAL_WINDOW if frames is not None else 1, p_h, p_w)


def latent_hw(res: int) -> int:
    """Latent pixels per side for an image resolution (checked against the table)."""
    window_for(res)
    return res // VAE_FACTOR


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
        if height != width:
            raise InputError(
                f"non-square latent {height}x{width}: the resolution table covers square images "
                f"({_accepted()}); pass an explicit window to override it"
            )
        window = window_for(resolution_of_latent(height), video_frames)
    else:
        check_frames(video_frames)
        window = tuple(int(w) for w in window)  # type: ignore[assignment]
        if len(window) != 3 or any(w < 1 or g % w for w, g in zip(window, grid)):
            raise InputError(
                f"window {window} does not tile the token grid {grid}: every window side must divide the grid"
            )
    return Geometry(grid=grid, window=window)
