"""The published sampler's schedule (Qihoo-T2X's mindspeed_mm/models/diffusion/rflow.py): the rectified-flow
timesteps from 1000 down to 0, shifted towards high noise for large images (t' = s t / (1 + (s - 1) t), s =
sqrt(H W / 512^2) for images, computed in bf16). The runtime samples with it, and an FP8 export calibrates on it."""

from __future__ import annotations

import math

from .bf16 import round_bf16
from .vae_decode import decoded_frames

NUM_TRAIN_TIMESTEPS = 1000
BASE_PIXELS = 512 * 512


def timestep_shift(height: int, width: int, frames: int | None) -> float:
    """The published resolution-dependent shift (its timestep_transform with scale 1) for an image of height x width
    pixels: sqrt(H W / 512^2), and for video times sqrt(pixel_frames // 17 * 5). The published pipeline holds H, W
    and the pixel frames as bf16 tensors (its dtype), so every operation rounds to bf16, as here; square sizes of a
    power of two give powers of two, exactly. One deviation: the published factor is 0 for clips under 17 pixel
    frames (4 latent frames, 13 pixel frames, here), which makes every timestep NaN; this takes it as 1 there (the
    image shift). From 17 pixel frames on (5 latent frames and more) it is the published value."""
    b = round_bf16
    area = b(b(height) * b(width))
    # math.sqrt of a float32 value, rounded to float32, is float32's (correctly rounded) sqrt; bf16's rounds that.
    shift = b(math.sqrt(b(area / BASE_PIXELS)))
    pixel_frames = decoded_frames(frames) if frames else 1
    if pixel_frames != 1:
        factor = b(b(b(pixel_frames) // 17) * 5)
        shift = b(shift * b(math.sqrt(factor or 1.0)))
    return shift


def timesteps(steps: int, shift: float) -> list[float]:
    """The `steps` timesteps the model sees, in [0, 1000], decreasing (float64 arithmetic)."""
    t = [1.0 - k / steps for k in range(steps)]
    return [NUM_TRAIN_TIMESTEPS * shift * v / (1 + (shift - 1) * v) for v in t]
