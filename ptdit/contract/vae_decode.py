"""Where the published VAE decode cuts a latent (Open-Sora-Plan v1.2's CausalVAE `decode` with tiling on, as its
sample_t2v.py sets it up): spatial tiles of 64 x 64 latent pixels overlapping by 1/8 (rows and columns planned
each on its own), blended, and for video causal chunks of 8 latent frames overlapping by one. The export computes
the plan and the decoder shapes it needs and writes them into pipeline.json; the runtime checks them against these
rules and carries them out (runtime/pipeline/tiling.py); ptdit.vae.published_decode is the PyTorch reference of the
whole decode."""

from __future__ import annotations

from .pipeline_manifest import TilePlan

TILE_LATENT, TILE_OVERLAP = 64, 0.125  # latent tile side and overlap
CHUNK_LATENT_FRAMES = 8  # latent frames per causal chunk
TEMPORAL_FACTOR = 4  # pixel frames per latent frame after the first


def decoded_frames(latent_frames: int) -> int:
    """Pixel frames of a latent clip: the first latent frame gives one, every later one four."""
    return 1 + TEMPORAL_FACTOR * (latent_frames - 1)


def is_tiled(height: int, width: int, frames: int | None = None) -> bool:
    """Whether the published decode tiles: a latent taller or wider than one tile, or longer than one chunk."""
    return max(height, width) > TILE_LATENT or (frames or 1) > CHUNK_LATENT_FRAMES


def tile_plan(height: int, width: int, frames: int | None, factor: int) -> TilePlan:
    """Where the spatial tiles of a latent [.., height, width] start, their side and the blend (`factor`: pixels
    per latent pixel). Rows and columns are planned on their own, as published: tiles start every stride along
    each axis, and an axis of one stride or less has one tile (the whole axis: its crop keeps all of it).

    Latents the published decode does not tile are decoded whole (the published code, Qihoo-T2X's, fails on images
    of one tile when tiling is on); so is a tiled latent of one stride or less on both axes (its one tile is the
    whole latent). A whole latent's plan has the one start 0, tile = max(height, width) and keep = tile x factor:
    the slice [0:tile] covers the whole latent on both axes, and the crop keeps all of it. A tiled axis of 64 gets
    a second, 8-wide tile, as published. Square latents give the plans they always did (columns None)."""
    stride = int(TILE_LATENT * (1 - TILE_OVERLAP))
    if not is_tiled(height, width, frames) or max(height, width) <= stride:
        side = max(height, width)
        return TilePlan((0,), side, factor, 0, side * factor)
    blend = int(TILE_LATENT * factor * TILE_OVERLAP)
    rows, columns = tuple(range(0, height, stride)), tuple(range(0, width, stride))
    return TilePlan(rows, TILE_LATENT, factor, blend, TILE_LATENT * factor - blend,
                    None if columns == rows else columns)


def temporal_chunks(frames: int) -> tuple[tuple[int, int], ...]:
    """The latent frame ranges [start, end) of a clip's chunks: 8 frames starting every 7 (each chunk's first frame
    is the last of the one before), the last one cut at the clip's end, or a shorter one added to reach it. Every
    chunk after the first drops its first decoded frame."""
    starts = list(range(0, frames, CHUNK_LATENT_FRAMES - 1))
    if starts == [0]:
        return ((0, frames),)
    chunks = [[starts[i], starts[i + 1] + 1] for i in range(len(starts) - 1)]
    if chunks[-1][1] > frames:
        chunks[-1][1] = frames
    elif chunks[-1][1] < frames:
        chunks.append([starts[-1], frames])
    return tuple((a, b) for a, b in chunks)


def decoder_shapes(plan: TilePlan, chunks: tuple[tuple[int, int], ...] | None, height: int,
                   width: int) -> list[tuple[int, ...]]:
    """The latent shapes the decode of a [.., height, width] latent calls the decoder with, largest first: (h, w)
    tiles (h from the row starts, w from the column starts), or with `chunks` (video) (t, h, w)."""
    def sides(extent: int, starts: tuple[int, ...]) -> list[int]:
        return sorted({min(plan.tile, extent - s) for s in starts} if plan.tiled else {extent}, reverse=True)

    tiles = [(h, w) for h in sides(height, plan.starts) for w in sides(width, plan.column_starts)]
    if chunks is None:
        return list(tiles)
    lengths = sorted({end - start for start, end in chunks}, reverse=True)
    return [(t, h, w) for t in lengths for h, w in tiles]
