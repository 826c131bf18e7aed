"""The published sampler's schedule (Qihoo-T2X's mindspeed_mm/models/diffusion/rflow.py): the rectified-flow
timesteps from 1000 down to 0, shifted towards high noise for large images (t' = s t / (1 + (s - 1) t), s =
sqrt(H W / 512^2) for images). The runtime samples with it, and an FP8 export calibrates on it."""

from __future__ import annotations

import math

from .vae_decode import decoded_frames

NUM_TRAIN_TIMESTEPS = 1000
BASE_PIXELS = 512 * 512


def timestep_shift(res: int, frames: int | None) -> float:
    """The published resolution-dependent shift (its timestep_transform with scale 1): sqrt(H W) / 512, and for
    video times sqrt(pixel_frames // 17 * 5). One deviation: the published factor is 0 for clips under 17 pixel
    frames (4 latent frames, 13 pixel frames, here), which makes every timestep NaN; this takes it as 1 there
    (the image shift). From 17 pixel frames on (5 latent frames and more) it is the published value."""
    shift = math.sqrt(res * res / BASE_PIXELS)
    if frames:
        pixel_frames = decoded_frames(frames)
        shift *= math.sqrt(max(pixel_frames // 17 * 5, 1))
    return shift


def timesteps(steps: int, shift: float) -> list[float]:
    """The `steps` timesteps the model sees, in [0, 1000], decreasing (float64 arithmetic)."""
    t = [1.0 - k / steps for k in range(steps)]
    return [NUM_TRAIN_TIMESTEPS * shift * v / (1 + (shift - 1) * v) for v in t]
