"""Tiled VAE decoding with the published blending (Open-Sora-Plan's CausalVAE tiled_decode2d): latent tiles of
`tile` x `tile` at a stride of tile (1 - overlap), each decoded on its own; every tile is blended linearly into
the one above and the one to its left over `blend` pixels, in place and in row-major order as published
(so a tile blends with neighbours that were already blended themselves), then cropped to `keep` pixels per
side and the crops concatenated. The plan (ptdit.contract.pipeline_manifest.TilePlan) is computed by the export and
read from the pipeline manifest; this module only carries it out.
"""

from __future__ import annotations

from typing import Callable

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


def needed_tiles(plan: TilePlan, height: int, width: int) -> set[tuple[int, int]]:
    """The latent tile shapes the decode of a [.., height, width] latent calls the decoder with."""
    if not plan.tiled:
        return {(height, width)}
    return {(min(plan.tile, height - i), min(plan.tile, width - j)) for i in plan.starts for j in plan.starts}


def decode_tiled(latent: np.ndarray, plan: TilePlan, decode: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """latent [1, C, H, W] -> image [1, 3, H f, W f]; `decode` maps a latent tile to its pixels."""
    if not plan.tiled:
        return decode(latent)
    rows = [[decode(np.ascontiguousarray(latent[..., i:i + plan.tile, j:j + plan.tile])).copy()
             for j in plan.starts] for i in plan.starts]
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


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[1, 3, H, W] in [-1, 1] -> [H, W, 3] uint8, as published: clamp, (x + 1) / 2, x 255, rounded. NaN or inf
    is refused: it would become a valid-looking (black) image."""
    bad = non_finite(image)
    if bad:
        raise RuntimeFailure(f"the decoded image has {bad} NaN or infinite values")
    pixels = (np.clip(image[0].astype(np.float32), -1.0, 1.0) + 1.0) / 2.0 * 255.0
    return np.round(pixels).astype(np.uint8).transpose(1, 2, 0)
