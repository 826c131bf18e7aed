"""Tiled VAE decoding: the published plan and blend, against an untiled decode where the two must agree."""

from __future__ import annotations

import numpy as np
import pytest

from ptdit.contract.pipeline_manifest import TilePlan
from ptdit.contract.vae_decode import decoder_shapes, is_tiled, tile_plan
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


# Today's plans of square latents (image; video of 9 latent frames), as the code before per-axis planning gave them:
# pipeline.json of square folders must not change.
SQUARE_PLANS = {
    (32, None): {"starts": [0], "tile": 32, "factor": 8, "blend": 0, "keep": 256},
    (32, 9): {"starts": [0], "tile": 32, "factor": 8, "blend": 0, "keep": 256},
    (64, None): {"starts": [0], "tile": 64, "factor": 8, "blend": 0, "keep": 512},
    (64, 9): {"starts": [0, 56], "tile": 64, "factor": 8, "blend": 64, "keep": 448},
    (128, None): PUBLISHED_1024,
    (128, 9): PUBLISHED_1024,
    (256, None): {"starts": [0, 56, 112, 168, 224], "tile": 64, "factor": 8, "blend": 64, "keep": 448},
    (256, 9): {"starts": [0, 56, 112, 168, 224], "tile": 64, "factor": 8, "blend": 64, "keep": 448},
}


@pytest.mark.parametrize("side,frames", sorted(SQUARE_PLANS, key=str))
def test_square_latents_keep_today_s_plans(side, frames):
    plan = tile_plan(side, side, frames, 8)
    assert plan.to_dict() == SQUARE_PLANS[side, frames] and plan.columns is None
    assert TilePlan.from_dict(SQUARE_PLANS[side, frames]) == plan  # folders written before read as they did


def test_rows_and_columns_are_planned_each_on_its_own():
    """As the published tiled_decode2d: tile starts range(0, h, 56) down and range(0, w, 56) across once either
    side passes 64 (or the clip one chunk); one tile along an axis of 56 or less."""
    plan = tile_plan(72, 160, None, 8)
    assert (plan.starts, plan.column_starts, plan.tile, plan.blend, plan.keep) == ((0, 56), (0, 56, 112), 64, 64, 448)
    assert plan.tiled and decoder_shapes(plan, None, 72, 160) == [(64, 64), (64, 48), (16, 64), (16, 48)]
    assert tile_plan(160, 72, None, 8).starts == (0, 56, 112) and tile_plan(160, 72, None, 8).column_starts == (0, 56)
    plan = tile_plan(40, 96, None, 8)
    assert plan.tiled and plan.starts == (0,) and plan.column_starts == (0, 56)
    assert decoder_shapes(plan, None, 40, 96) == [(40, 64), (40, 40)]
    plan = tile_plan(40, 60, 9, 8)  # tiled for its frames: the 60-wide axis gets the published 4-wide second tile
    assert plan.starts == (0,) and plan.column_starts == (0, 56)
    assert decoder_shapes(plan, ((0, 8), (7, 9)), 40, 60) == [(t, 40, w) for t in (8, 2) for w in (60, 4)]
    # decoded whole: one start, tile = the longer side (slicing [0:tile] keeps both axes whole), keep all of it
    for height, width, frames in ((48, 32, None), (32, 64, None), (40, 48, 9)):
        plan = tile_plan(height, width, frames, 8)
        side = max(height, width)
        assert plan == TilePlan((0,), side, 8, 0, side * 8) and not plan.tiled
        assert decoder_shapes(plan, None, height, width) == [(height, width)]
    assert is_tiled(40, 96) and is_tiled(65, 8) and is_tiled(8, 8, 9) and not is_tiled(48, 32) and not is_tiled(64, 32)


def test_column_starts_are_written_only_where_they_differ():
    plan = tile_plan(72, 160, None, 8)
    data = plan.to_dict()
    assert data == {"starts": [0, 56], "tile": 64, "factor": 8, "blend": 64, "keep": 448, "columns": [0, 56, 112]}
    assert TilePlan.from_dict(data) == plan
    assert "columns" not in tile_plan(40, 32, None, 8).to_dict()
    plan = tile_plan(128, 120, 9, 8)  # the same starts, the last column narrower than the last row
    assert "columns" not in plan.to_dict() and plan.column_starts == (0, 56, 112)
    assert decoder_shapes(plan, None, 128, 120) == [(64, 64), (64, 8), (16, 64), (16, 8)]


@pytest.mark.parametrize("height,width,calls", [(72, 160, 6), (40, 96, 2), (48, 32, 1)])
def test_non_square_tiled_decode_equals_the_pytorch_reference(height, width, calls):
    """decode_tiled with the tiny CausalVAE (fp32) as its tile decoder equals ptdit.vae.published_decode on random
    latents that are not square; with a decoder of no reach beyond its pixel, the crops stitch to the whole
    latent's decode (every pixel placed once, where it belongs)."""
    torch = pytest.importorskip("torch")
    from ptdit.vae import VAE_PRESETS, CausalVAEDecoder, published_decode

    decoder = CausalVAEDecoder(VAE_PRESETS["tiny"]).eval()
    latent = torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(3))
    plan = tile_plan(height, width, None, 8)
    shapes = []

    def decode(tile: np.ndarray) -> np.ndarray:
        shapes.append(tile.shape[-2:])
        return decoder(torch.from_numpy(tile)).numpy()

    with torch.no_grad():
        reference = published_decode(decoder, latent).numpy()
        tiled = decode_tiled(latent.numpy(), plan, decode)
        whole = decoder(latent).numpy()
    assert tiled.shape == reference.shape == (1, 3, 8 * height, 8 * width) and len(shapes) == calls
    assert sorted(set(shapes), reverse=True) == decoder_shapes(plan, None, height, width)
    np.testing.assert_allclose(tiled, reference, rtol=0, atol=1e-5)
    if plan.tiled:
        assert np.abs(reference - whole).max() > 1e-3  # the tiles' borders and blend show: the test can tell
    stitched = decode_tiled(latent.numpy(), plan, upsample)
    np.testing.assert_allclose(stitched, upsample(latent.numpy()), rtol=0, atol=1e-6)


def test_the_runtime_and_the_export_count_and_plan_both_axes():
    from types import SimpleNamespace

    from export.pipeline.folder import decode_plan
    from ptdit.contract.pipeline_manifest import PipelineSize
    from ptdit.contract.sizes import Size
    from runtime.pipeline.text_to_image import PipelineComponents

    plan, chunks, shapes = decode_plan(Size(640, 1280), None)  # latent 80 x 160
    assert plan == tile_plan(80, 160, None, 8) and chunks is None and shapes == decoder_shapes(plan, None, 80, 160)
    assert decode_plan(Size(1024, 1024), None)[0].to_dict() == PUBLISHED_1024

    def count(plan: TilePlan, chunks: tuple[tuple[int, int], ...] | None) -> int:
        size = Size(8, 8)
        components = SimpleNamespace(entries={size: PipelineSize(8, 8, "t.onnx", plan)}, chunks=chunks)
        return PipelineComponents.tiles(components, size)  # type: ignore[arg-type]

    assert count(plan, None) == 6
    assert count(tile_plan(40, 96, 9, 8), ((0, 8), (7, 9))) == 4
    assert count(tile_plan(48, 32, None, 8), None) == 1
