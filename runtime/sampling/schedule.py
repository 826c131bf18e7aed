"""The published sampler's arithmetic (Qihoo-T2X's mindspeed_mm/models/diffusion/rflow.py): its schedule
(ptdit.contract.schedule), classifier-free guidance and the Euler update, in fp32 and in the order of the step
graph's ptdit.step, operation for operation; and the seeded initial noise."""

from __future__ import annotations

import numpy as np

from ptdit.contract.schedule import NUM_TRAIN_TIMESTEPS, timestep_shift, timesteps

__all__ = ["NUM_TRAIN_TIMESTEPS", "euler_update", "guided_velocity", "initial_noise", "schedule", "timestep_shift"]


def schedule(steps: int, shift: float) -> np.ndarray:
    """The `steps` timesteps the model sees, in [0, 1000], decreasing (ptdit.contract.schedule)."""
    return np.array(timesteps(steps, shift), dtype=np.float64)


def guided_velocity(cond: np.ndarray, uncond: np.ndarray, guidance: float) -> np.ndarray:
    """uncond + g (cond - uncond), in fp32 (the step graph's ptdit.step.guided_velocity, operation for operation)."""
    return uncond + np.float32(guidance) * (cond - uncond)


def euler_update(x: np.ndarray, velocity: np.ndarray, t: float, t_next: float) -> np.ndarray:
    """x + v (t - t_next) / 1000 with fp32 timesteps and fp32 arithmetic, in the step graph's order."""
    dt = (np.float32(t) - np.float32(t_next)) / np.float32(NUM_TRAIN_TIMESTEPS)
    return x + velocity * dt


def initial_noise(latent_shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(latent_shape, dtype=np.float32)
