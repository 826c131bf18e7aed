"""Tiled VAE decoding: the published plan and blend, against an untiled decode where the two must agree."""

from __future__ import annotations

import numpy as np
import pytest

from ptdit.contract.pipeline_manifest import TilePlan
from runtime.pipeline.tiling import decode_tiled, to_uint8

PUBLISHED_1024 = {"starts": [0, 56, 112], "tile": 64, "factor": 8, "blend": 64, "keep": 448}


def upsample(latent: np.ndarray) -> np.ndarray:
    """A decoder with no reach beyond its own pixel: each tile's pixels are exactly the full decode's there."""
    image = np.repeat(np.repeat(latent[:, :3], 8, axis=-2), 8, axis=-1)
    return np.tanh(image)


def test_tiles_stitch_to_the_untiled_decode_when_tiles_agree():
    """Where overlapping tiles hold the same pixels, blending them changes nothing: the tiled decode at 1024
    (a 3 x 3 grid of 64 / 64 / 16 latent tiles) equals the untiled one to rounding."""
    latent = np.random.default_rng(0).standard_normal((1, 4, 128, 128)).astype(np.float32)
    sizes = []

    def decode(tile: np.ndarray) -> np.ndarray:
        sizes.append(tile.shape[-2:])
        return upsample(tile)

    tiled = decode_tiled(latent, TilePlan.from_dict(PUBLISHED_1024), decode)
    assert tiled.shape == (1, 3, 1024, 1024)
    assert sorted(set(sizes)) == [(16, 16), (16, 64), (64, 16), (64, 64)] and len(sizes) == 9
    np.testing.assert_allclose(tiled, upsample(latent), rtol=0, atol=1e-6)


def test_the_blend_is_linear_across_the_overlap():
    """Tiles of constant value per tile: across each border the value ramps linearly from the tile above (or to
    the left) to this one over 64 pixels, as published (weight y / 64)."""
    plan = TilePlan.from_dict(PUBLISHED_1024)
    values = iter(range(100))

    def decode(tile: np.ndarray) -> np.ndarray:
        return np.full((1, 3, tile.shape[-2] * 8, tile.shape[-1] * 8), float(next(values)), np.float32)

    image = decode_tiled(np.zeros((1, 4, 128, 128), np.float32), plan, decode)
    column = image[0, 0, :, 0]  # tiles (0,0)=0, (1,0)=3, (2,0)=6 down the first column
    assert column[447] == 0 and column[448] == 3 * 0 / 64 + 0 and column[448 + 32] == pytest.approx(3 * 32 / 64)
    assert column[448 + 64] == 3 and column[896 + 16] == pytest.approx(3 + 3 * 16 / 64)
    row = image[0, 0, 0, :]  # tiles (0,0)=0, (0,1)=1, (0,2)=2 along the first row
    assert row[447] == 0 and row[448 + 16] == pytest.approx(16 / 64) and row[448 + 64] == 1
    assert row[896 + 32] == pytest.approx(1 + 32 / 64)


def test_small_latents_are_decoded_whole_and_pixels_map_to_uint8():
    plan = TilePlan.from_dict({"starts": [0], "tile": 32, "factor": 8, "blend": 0, "keep": 256})
    calls = []
    image = decode_tiled(np.zeros((1, 4, 32, 32), np.float32), plan, lambda t: calls.append(t.shape) or upsample(t))
    assert calls == [(1, 4, 32, 32)] and image.shape == (1, 3, 256, 256)
    pixels = to_uint8(np.array([[[[-2.0, -1.0, 0.0, 1.0, 3.0]]] * 3]).reshape(1, 3, 1, 5))
    assert pixels.shape == (1, 5, 3) and pixels[0, :, 0].tolist() == [0, 0, 128, 255, 255]
