"""Tiled VAE decoding with the published blending (Open-Sora-Plan's CausalVAE tiled_decode2d): latent tiles of
`tile` x `tile` starting at the plan's row starts down and its column starts across (each axis planned on its own),
each decoded on its own; every tile is blended linearly into the one above and the one to its left over `blend`
pixels, in place and in row-major order as published (so a tile blends with neighbours that were already blended
themselves), then cropped to `keep` pixels per side (the last tile of a row or column is no larger) and the crops
concatenated. A video is decoded in causal chunks of latent frames, one after the other, each chunk tiled the same
way; every chunk after the first drops its first decoded frame. The plan
(ptdit.contract.pipeline_manifest.TilePlan) and the chunks are computed by the export (ptdit.contract.vae_decode)
and read from the pipeline manifest; this module only carries them out.
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from ptdit.contract.pipeline_manifest import TilePlan

from ..errors import RuntimeFailure
from ..sampling.text import non_finite


def _blend(earlier: np.ndarray, later: np.ndarray, extent: int, axis: int) -> None:
    """Along `axis` (-2: rows, -1: columns): later[y] = earlier[-extent + y] (1 - y / extent) + later[y] y / extent
    for y < extent, in place."""
    earlier, later = np.moveaxis(earlier, axis, 0), np.moveaxis(later, axis, 0)  # views: writes reach the tile
    extent = min(earlier.shape[0], later.shape[0], extent)
    for y in range(extent):
        w = y / extent
        later[y] = earlier[-extent + y] * (1 - w) + later[y] * w


def decode_chunks(latent: np.ndarray, chunks: Sequence[tuple[int, int]], plan: TilePlan,
                  decode: Callable[[np.ndarray], np.ndarray]) -> Iterator[np.ndarray]:
    """latent [1, C, T, H, W] -> the frames of each chunk in turn, [1, 3, f, H f, W f] (the first frame of every
    chunk after the first dropped: the chunk before ended on it), so only one chunk's pixels are held at a time."""
    for k, (start, end) in enumerate(chunks):
        pixels = decode_tiled(np.ascontiguousarray(latent[:, :, start:end]), plan, decode)
        yield pixels if k == 0 else pixels[:, :, 1:]


def decode_tiled(latent: np.ndarray, plan: TilePlan, decode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """latent [1, C, H, W] -> image [1, 3, H f, W f] (or [1, C, t, H, W] -> [1, 3, f, H f, W f]); `decode` maps a
    latent tile to its pixels."""
    if not plan.tiled:
        return decode(latent)
    rows = [[decode(np.ascontiguousarray(latent[..., i:i + plan.tile, j:j + plan.tile])).copy()
             for j in plan.column_starts] for i in plan.starts]
    out_rows = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                _blend(rows[i - 1][j], tile, plan.blend, axis=-2)
            if j > 0:
                _blend(row[j - 1], tile, plan.blend, axis=-1)
            kept.append(tile[..., :plan.keep, :plan.keep])
        out_rows.append(np.concatenate(kept, axis=-1))
    return np.concatenate(out_rows, axis=-2)


def to_unit(image: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] (or [1, 3, F, H, W]) in [-1, 1] -> float32 [H, W, 3] ([F, H, W, 3]) in [0, 1]: clamped,
    (x + 1) / 2. NaN or inf is refused: it would become a valid-looking (black) image."""
    bad = non_finite(image)
    if bad:
        what = "video frames have" if image.ndim == 5 else "image has"
        raise RuntimeFailure(f"the decoded {what} {bad} NaN or infinite values")
    return np.moveaxis((np.clip(image[0].astype(np.float32), -1.0, 1.0) + 1.0) / 2.0, 0, -1)


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] (or [1, 3, F, H, W]) in [-1, 1] -> [H, W, 3] ([F, H, W, 3]) uint8, as published: clamp,
    (x + 1) / 2, x 255, rounded; NaN or inf refused."""
    return np.round(to_unit(image) * 255.0).astype(np.uint8)
