"""Sizes that are not square (height != width): the `qihoo-t2x` preset's position embedding and the sampler's
timestep shift against the published code (Ascend/MindSpeed-MM: get_3d_sincos_pos_embed of
mindspeed_mm/models/common/embeddings/pos_patch_encoding.py as PTDiTDiffuser calls it, and timestep_transform of
mindspeed_mm/models/diffusion/rflow.py with the bf16 tensors QihooPipeline gives it), each restated here."""

from __future__ import annotations

import math
import random
import struct

import numpy as np
import pytest
import torch

from conftest import model_inputs
from ptdit import InputError, PTDiT, PTDiTConfig, preset
from ptdit.contract.bf16 import round_bf16
from ptdit.contract.schedule import BASE_PIXELS, timestep_shift
from ptdit.contract.vae_decode import decoded_frames
from ptdit.layers import PatchEmbed, sincos_pos_embed_3d
from ptdit.resolution import SUPPORTED_RESOLUTIONS, size_bins

TOKEN_GRIDS = [(1, 8, 16), (1, 16, 8), (4, 8, 16), (4, 16, 8), (2, 8, 24)]  # (frames, rows, columns)


def published_pos_embed(dim: int, size: tuple[int, int], frames: int, scale: float) -> np.ndarray:
    """The published 3D table [frames, size[0] * size[1], dim] for spatial_size=size (the model passes its token
    (rows, columns)), restated: positions along size[0] vary fastest and fill the first half of the spatial
    channels, positions along size[1] the second half; dim / 4 temporal channels come first."""

    def sin_cos(channels: int, positions: np.ndarray) -> np.ndarray:
        freqs = 1.0 / 10000 ** (np.arange(channels // 2, dtype=np.float64) / (channels / 2.0))
        angles = positions.reshape(-1).astype(np.float64)[:, None] * freqs[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    fast = np.arange(size[0], dtype=np.float32) / scale
    slow = np.arange(size[1], dtype=np.float32) / scale
    fast_of, slow_of = np.tile(fast, size[1]), np.repeat(slow, size[0])  # token k = slow index * size[0] + fast
    half = 3 * dim // 4 // 2
    spatial = np.concatenate([sin_cos(half, fast_of), sin_cos(half, slow_of)], axis=1)
    temporal = sin_cos(dim // 4, np.arange(frames, dtype=np.float32))
    tokens = size[0] * size[1]
    return np.concatenate([np.repeat(temporal[:, None], tokens, axis=1), np.repeat(spatial[None], frames, axis=0)],
                          axis=-1)


def embedding_of(cfg: PTDiTConfig, fhw: tuple[int, int, int]) -> torch.Tensor:
    """[F, rows, columns, dim]: what the model's PatchEmbed adds to each token (the patch projection zeroed)."""
    embed = PatchEmbed(cfg.in_channels, cfg.hidden_size, cfg.patch_size, cfg.sample_size, cfg.pe_interpolation_scale,
                       cfg.pos_embed_axes)
    torch.nn.init.zeros_(embed.proj.weight)
    torch.nn.init.zeros_(embed.proj.bias)
    f, h, w = fhw
    p = cfg.patch_size
    with torch.no_grad():
        return embed(torch.zeros(1, cfg.in_channels, f, h * p, w * p))[0]


@pytest.mark.parametrize("fhw", TOKEN_GRIDS)
@pytest.mark.parametrize("sample_size", [32, 128])  # interpolation scale 1 and 2
def test_qihoo_position_embedding_is_the_published_one(fhw, sample_size):
    cfg = preset("qihoo-t2x").replace(sample_size=sample_size)
    f, h, w = fhw
    ours = embedding_of(cfg, fhw).numpy()
    # PTDiTDiffuser hands the embedding (rows, columns); the tokens take its rows in raster order
    published = published_pos_embed(cfg.hidden_size, (h, w), f, cfg.pe_interpolation_scale)
    published = published.astype(np.float32).reshape(f, h, w, cfg.hidden_size)
    np.testing.assert_array_equal(ours, published)
    # which is our (row, column) table of the transposed grid, reshaped straight
    transposed = sincos_pos_embed_3d(cfg.hidden_size, (f, w, h), cfg.pe_interpolation_scale)
    assert torch.equal(torch.from_numpy(ours), transposed.reshape(f, h, w, -1))
    assert PTDiT(cfg.replace(depth=1, num_heads=2, head_dim=32, text_dim=64)).pos_embed.axes == "wh"


@pytest.mark.parametrize("fhw", TOKEN_GRIDS)
def test_xl_keeps_the_papers_rows_and_columns(fhw):
    cfg = preset("xl")
    f, h, w = fhw
    ours = embedding_of(cfg, fhw)
    assert torch.equal(ours, sincos_pos_embed_3d(cfg.hidden_size, fhw).reshape(f, h, w, -1))
    assert not torch.equal(ours, embedding_of(preset("qihoo-t2x"), fhw))
    # token (i, j) is encoded by its column j and its row i
    half = 3 * cfg.hidden_size // 8
    spatial = ours[0, :, :, cfg.hidden_size // 4:]
    assert torch.equal(spatial[1, 0, :half], spatial[0, 0, :half]) and torch.equal(spatial[0, 1, half:],
                                                                                   spatial[0, 0, half:])


@pytest.mark.parametrize("fhw", [(1, 8, 8), (1, 16, 16), (4, 8, 8)])
def test_both_layouts_are_equal_at_square_sizes(fhw):
    qihoo, xl = embedding_of(preset("qihoo-t2x"), fhw), embedding_of(preset("xl"), fhw)
    assert torch.equal(qihoo, xl)
    f, h, w = fhw
    published = published_pos_embed(xl.shape[-1], (h, w), f, 1).astype(np.float32).reshape(f, h, w, -1)
    np.testing.assert_array_equal(xl.numpy(), published)


def small(cfg_name: str, **changes) -> PTDiT:
    cfg = preset(cfg_name).replace(depth=1, num_heads=2, head_dim=32, text_dim=64, **changes)
    return PTDiT(cfg, seed=5).eval()


@pytest.mark.parametrize("latent_fhw", [(1, 16, 32), (1, 32, 16), (4, 16, 32)])
def test_the_preset_runs_at_sizes_that_are_not_square(latent_fhw):
    inputs = model_inputs(2, latent_fhw, text_dim=64)
    with torch.no_grad():
        published_layout = small("qihoo-t2x")(*inputs)
        papers_layout = small("qihoo-t2x", pos_embed_axes="hw")(*inputs)
    f, h, w = latent_fhw
    assert published_layout.shape == ((2, 8, h, w) if f == 1 else (2, 8, f, h, w))
    assert torch.isfinite(published_layout).all()
    assert not torch.allclose(published_layout, papers_layout, atol=1e-3)  # the field is what the model uses


def test_square_latents_give_the_same_output_in_both_layouts():
    inputs = model_inputs(2, (1, 32, 32), text_dim=64)
    with torch.no_grad():
        assert torch.equal(small("qihoo-t2x")(*inputs), small("qihoo-t2x", pos_embed_axes="hw")(*inputs))


def test_the_field_is_left_out_of_the_dict_at_its_default():
    keys = {"name", "depth", "num_heads", "head_dim", "in_channels", "out_channels", "patch_size", "text_dim",
            "mlp_ratio", "norm_eps", "norm_affine", "attention_bias", "attention", "shift_window", "proxy_mode",
            "train_proxy_mode", "proxy_offset", "window", "proxy_window", "mask_value", "size_conditioning",
            "sample_size"}  # the keys of every config's dict before the field existed
    for cfg in (preset("xl"), preset("tiny"), PTDiTConfig(), preset("qihoo-t2x").replace(pos_embed_axes="hw")):
        assert set(cfg.to_dict()) == keys and PTDiTConfig.from_dict(cfg.to_dict()) == cfg
    qihoo = preset("qihoo-t2x").to_dict()
    assert set(qihoo) == keys | {"pos_embed_axes"} and qihoo["pos_embed_axes"] == "wh"
    assert PTDiTConfig.from_dict(qihoo) == preset("qihoo-t2x")
    assert PTDiTConfig.from_dict({**preset("xl").to_dict(), "pos_embed_axes": "hw"}) == preset("xl")
    with pytest.raises(InputError, match="pos_embed_axes must be one of"):
        preset("tiny").replace(pos_embed_axes="xy")


def float32s(count: int, seed: int) -> list[float]:
    """Random float32 values across magnitudes and signs, with bf16 ties (low 16 bits 0x8000) among them."""
    rng = random.Random(seed)
    values = []
    for _ in range(count):
        bits = rng.getrandbits(32) & 0x7FFFFFFF
        bits = min(bits, 0x7F7FFFFF) | (rng.getrandbits(1) << 31)  # finite
        if rng.random() < 0.3:
            bits = (bits & 0xFFFF0000) | 0x8000
        values.append(struct.unpack("<f", struct.pack("<I", bits))[0])
    return values + [0.0, -0.0, 1.0 + 2 ** -8, 1.0 + 3 * 2 ** -8, 3.4028234663852886e38, 1e-45]


def test_round_bf16_is_torchs():
    values = float32s(20000, seed=1)
    theirs = torch.tensor(values, dtype=torch.float32).to(torch.bfloat16).float().tolist()
    assert [round_bf16(v) for v in values] == theirs
    doubles = [random.Random(2).uniform(-1e4, 1e4) for _ in range(2000)] + [1.0 + 2 ** -8 + 2 ** -30, 1e39]
    assert [round_bf16(v) for v in doubles] == torch.tensor(doubles, dtype=torch.bfloat16).float().tolist()


def published_shift(height: int, width: int, pixel_frames: int) -> float:
    """The published timestep_transform's factor (scale 1), restated on the bf16 tensors the published pipeline
    makes of its height, width and pixel frames (its dtype, bf16 in the published image config)."""
    bf16 = torch.bfloat16
    h, w, n = (torch.tensor([v], dtype=bf16) for v in (height, width, pixel_frames))
    space = (h * w / BASE_PIXELS).sqrt()
    per_time = torch.ones_like(n) if n[0] == 1 else n // 17 * 5
    return float((space * (per_time / 1).sqrt() * 1.0).item())


def today(res: int, frames: int | None) -> float:
    """The shift before bf16: one side, float64."""
    pixel_frames = decoded_frames(frames) if frames else 1
    return math.sqrt(res * res / BASE_PIXELS) * (math.sqrt(max(pixel_frames // 17 * 5, 1)) if frames else 1.0)


SIZES = sorted({(s.height, s.width) for res in SUPPORTED_RESOLUTIONS for s in size_bins(res)}
               | {(768, 1344), (1344, 768), (192, 320), (1000, 1000), (1024, 2048)})


@pytest.mark.parametrize("frames", [None, 1, 5, 8, 12, 16, 33, 65])
def test_timestep_shift_is_the_published_one(frames):
    pixel_frames = decoded_frames(frames) if frames else 1
    for height, width in SIZES:
        assert timestep_shift(height, width, frames) == published_shift(height, width, pixel_frames), (height, width)
    assert timestep_shift(768, 1344, frames) == timestep_shift(1344, 768, frames)


def test_timestep_shift_of_a_short_clip_is_the_image_shift():
    """Under 17 pixel frames the published factor is 0 (NaN timesteps); here it is 1."""
    for height, width in SIZES:
        assert timestep_shift(height, width, 4) == timestep_shift(height, width, None)
    assert published_shift(512, 512, 13) == 0.0


@pytest.mark.parametrize("res", [256, 512, 1024, 2048])
@pytest.mark.parametrize("frames", [None, 4, 8, 16])
def test_square_shifts(res, frames):
    shift = timestep_shift(res, res, frames)
    assert shift == round_bf16(today(res, frames))
    if frames in (None, 4):  # powers of two: exactly as before
        assert shift == today(res, frames) == res / 512
    else:  # the frame factor sqrt(5) (29 pixel frames) or sqrt(15) (61), which bf16 rounds
        assert shift != today(res, frames) and shift == pytest.approx(today(res, frames), rel=2 ** -8)
