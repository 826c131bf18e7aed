"""The published sampler's arithmetic (Qihoo-T2X's mindspeed_mm/models/diffusion/rflow.py): the rectified-flow
schedule from 1000 down to 0, shifted towards high noise for large images (t' = s t / (1 + (s - 1) t), s =
sqrt(H W / 512^2) for images), classifier-free guidance and the Euler update, in fp32 and in the order of the step
graph's ptdit.step, operation for operation; and the seeded initial noise."""

from __future__ import annotations

import math

import numpy as np

NUM_TRAIN_TIMESTEPS = 1000
BASE_PIXELS = 512 * 512
VAE_TEMPORAL_FACTOR = 4  # latent frame f covers pixel frames 4(f-1)+1 (the published causal VAE)


def timestep_shift(res: int, frames: int | None) -> float:
    """The published resolution-dependent shift (its timestep_transform with scale 1)."""
    shift = math.sqrt(res * res / BASE_PIXELS)
    if frames:
        pixel_frames = (frames - 1) * VAE_TEMPORAL_FACTOR + 1
        shift *= math.sqrt(max(pixel_frames // 17 * 5, 1))
    return shift


def schedule(steps: int, shift: float) -> np.ndarray:
    """The `steps` timesteps the model sees, in [0, 1000], decreasing."""
    t = 1.0 - np.arange(steps, dtype=np.float64) / steps
    return NUM_TRAIN_TIMESTEPS * shift * t / (1 + (shift - 1) * t)


def guided_velocity(cond: np.ndarray, uncond: np.ndarray, guidance: float) -> np.ndarray:
    """uncond + g (cond - uncond), in fp32 (the step graph's ptdit.step.guided_velocity, operation for operation)."""
    return uncond + np.float32(guidance) * (cond - uncond)


def euler_update(x: np.ndarray, velocity: np.ndarray, t: float, t_next: float) -> np.ndarray:
    """x + v (t - t_next) / 1000 with fp32 timesteps and fp32 arithmetic, in the step graph's order."""
    dt = (np.float32(t) - np.float32(t_next)) / np.float32(NUM_TRAIN_TIMESTEPS)
    return x + velocity * dt


def initial_noise(latent_shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(latent_shape, dtype=np.float32)
