"""Rectified-flow Euler sampling with classifier-free guidance: the published Qihoo-T2X sampler
(mindspeed_mm/models/diffusion/rflow.py), seeded and deterministic, on any Session.

t runs from 1000 down to 0 in `steps` Euler steps, shifted towards high noise for large images
(t' = s t / (1 + (s - 1) t), s = sqrt(H W / 512^2) for images); the model predicts the velocity from noise to
image in its first `in_channels` output channels; guidance mixes the conditional and unconditional
predictions of each step, which run as one batch of 2 (cond, uncond) when the artifact has batch 2.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import InputError
from .session import Session
from .transfers import Transfers

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


@dataclass(frozen=True)
class TextConditioning:
    """Text features for the conditional and unconditional branches: embeds [2, L, D], mask [2, L]."""

    embeds: np.ndarray
    mask: np.ndarray
    source: str


def load_text(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Features [L, D], [1, L, D] or a guidance pair [2, L, D] (cond, uncond) -> ([n, L, D], mask [n, L]):
    .npy holds the features (mask all ones), .npz or .safetensors the keys text_embeds and optionally
    text_mask."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"text features file {path} does not exist")
    try:
        if path.suffix == ".npy":
            embeds, mask = np.load(path), None
        elif path.suffix in (".npz", ".safetensors"):
            if path.suffix == ".npz":
                data = dict(np.load(path))
            else:
                from safetensors.numpy import load_file

                data = load_file(str(path))
            if "text_embeds" not in data:
                raise InputError(f"{path} has no 'text_embeds' entry (found {sorted(data)})")
            embeds, mask = data["text_embeds"], data.get("text_mask")
        else:
            raise InputError(f"text features must be .npy, .npz or .safetensors, got {path.name}")
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read text features from {path} ({e})") from None
    check_finite(embeds, f"text features in {path}")
    if embeds.ndim == 2:
        embeds = embeds[None]
    if embeds.ndim != 3 or embeds.shape[0] not in (1, 2):
        raise InputError(f"text features in {path} must be [L, D], [1, L, D] or [2, L, D] (cond, uncond), "
                         f"got {list(embeds.shape)}")
    n, length = embeds.shape[:2]
    mask = np.ones((n, length), dtype=np.int64) if mask is None else np.asarray(mask)
    if mask.size != n * length:
        raise InputError(f"text mask in {path} has shape {list(mask.shape)}, the features need {[n, length]}")
    return embeds.astype(np.float32), mask.reshape(n, length).astype(np.int64)


def check_finite(values: np.ndarray, what: str) -> None:
    """NaN or inf in the conditioning would run the whole sampler and fail at the end: refuse it up front."""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(values.size - np.isfinite(values).sum())
        raise InputError(f"{what} hold {bad} NaN or infinite values; the model needs finite features")


def make_conditioning(text_len: int, text_dim: int, cond: tuple[np.ndarray, np.ndarray] | None = None,
                      uncond: tuple[np.ndarray, np.ndarray] | None = None, random_seed: int | None = None,
                      source: str = "") -> TextConditioning:
    """The (cond, uncond) pair from load_text results. Without a negative, the unconditional branch gets zero
    features with one unmasked token (this toolkit has no text encoder to encode the empty prompt)."""
    if random_seed is not None:
        rng = np.random.default_rng(random_seed)
        embeds = rng.standard_normal((2, text_len, text_dim), dtype=np.float32)
        mask = np.ones((2, text_len), dtype=np.int64)
        return TextConditioning(embeds, mask, f"random (seed {random_seed})")
    if cond is None:
        raise InputError("no text features: pass --text FILE (this toolkit has no text encoder) or --random-text")
    if cond[0].shape[0] == 2:
        if uncond is not None:
            raise InputError("the text file already holds the (cond, uncond) pair; drop --negative-text")
        pairs = [(cond[0][0], cond[1][0]), (cond[0][1], cond[1][1])]
    else:
        default_uncond = (np.zeros((text_len, text_dim), np.float32), np.eye(1, text_len, dtype=np.int64)[0])
        pairs = [(cond[0][0], cond[1][0]), (uncond[0][0], uncond[1][0]) if uncond else default_uncond]
    for which, (embeds, _) in zip(("text", "negative text"), pairs):
        check_finite(embeds, f"{which} features")
        if embeds.shape != (text_len, text_dim):
            raise InputError(f"{which} features are {list(embeds.shape)}; the artifact needs [{text_len}, {text_dim}] "
                             f"(export with --text-len {embeds.shape[0]} for this length)")
    return TextConditioning(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), source)


@dataclass
class StepTiming:
    total_s: float  # host time of the step (a device-resident loop only launches it: see SampleResult.seconds)
    backend_s: float
    transfers: Transfers = field(default_factory=Transfers)  # host<->device traffic of this step


@dataclass
class SampleResult:
    latent: np.ndarray
    timesteps: np.ndarray
    steps: list[StepTiming] = field(default_factory=list)
    wall_s: float = 0.0  # first step to the final latent on the host, every wait included
    setup: Transfers = field(default_factory=Transfers)  # before the first step (the text, the schedule...)
    finish: Transfers = field(default_factory=Transfers)  # after the last step (the final latent)

    @property
    def seconds(self) -> float:
        return self.wall_s or sum(s.total_s for s in self.steps)

    def transfers(self) -> dict[str, object]:
        """The counters in the form ptdit-run --json and the benchmark report them."""
        per_step = [s.transfers for s in self.steps]
        after_first = per_step[1:]
        return {
            "setup": self.setup.to_dict(),
            "first_step": per_step[0].to_dict() if per_step else None,
            "per_step_after_first_max": {
                k: max((getattr(t, k) for t in after_first), default=0) for k in Transfers().to_dict()},
            "finish": self.finish.to_dict(),
        }


def guided_velocity(cond: np.ndarray, uncond: np.ndarray, guidance: float) -> np.ndarray:
    """uncond + g (cond - uncond), in fp32 (the step graph's ptdit.step.guided_velocity, operation for operation)."""
    return uncond + np.float32(guidance) * (cond - uncond)


def euler_update(x: np.ndarray, velocity: np.ndarray, t: float, t_next: float) -> np.ndarray:
    """x + v (t - t_next) / 1000 with fp32 timesteps and fp32 arithmetic, in the step graph's order."""
    dt = (np.float32(t) - np.float32(t_next)) / np.float32(NUM_TRAIN_TIMESTEPS)
    return x + velocity * dt


def initial_noise(latent_shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(latent_shape, dtype=np.float32)


class Sampler:
    def __init__(self, session: Session, steps: int = 30, guidance: float = 4.0, seed: int = 0,
                 shift: float | None = None):
        if steps < 1:
            raise InputError(f"--steps must be at least 1, got {steps}")
        export = session.artifact.export
        self.session, self.guidance, self.seed = session, guidance, seed
        self.batch = session.artifact.batch
        if self.batch not in (1, 2):
            raise InputError(f"the sampler drives artifacts of batch 2 (a guidance pair) or 1; this one has batch "
                             f"{self.batch}")
        self.latent_spec = session.artifact.spec("latent")
        self.shift = shift if shift is not None else timestep_shift(int(export["resolution"]), export["frames"])
        self.timesteps = schedule(steps, self.shift)

    def sample(self, text: TextConditioning,
               on_step: Callable[[int, float, StepTiming], None] | None = None) -> SampleResult:
        shape = (1, *self.latent_spec.shape[1:])
        x = initial_noise(shape, self.seed)
        channels = shape[1]
        result = SampleResult(latent=x, timesteps=self.timesteps)
        transfers = self.session.transfers
        begin, counted = time.perf_counter(), transfers.snapshot()
        if self.batch == 2:
            self.session.set_inputs({"text_embeds": text.embeds, "text_mask": text.mask})
            pair = np.empty((2, *shape[1:]), dtype=np.float32)
        result.setup = transfers.since(counted)
        for i, t in enumerate(self.timesteps):
            start, counted = time.perf_counter(), transfers.snapshot()
            if self.batch == 2:
                pair[0], pair[1] = x[0], x[0]
                backend_start = time.perf_counter()
                self.session.set_inputs({"latent": pair, "timestep": np.full(2, t, dtype=np.float32)})
                pred = self.session.run()["noise_pred"][:, :channels]
                backend = time.perf_counter() - backend_start
                cond, uncond = pred[0:1], pred[1:2]
            else:
                cond, uncond, backend = self._single_batch(x, t, text, channels)
            t_next = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else 0.0
            x = euler_update(x, guided_velocity(cond, uncond, self.guidance), t, t_next)
            timing = StepTiming(time.perf_counter() - start, backend, transfers.since(counted))
            result.steps.append(timing)
            if on_step:
                on_step(i, float(t), timing)
        result.latent = x
        result.wall_s = time.perf_counter() - begin
        return result

    def _single_batch(self, x: np.ndarray, t: float, text: TextConditioning,
                      channels: int) -> tuple[np.ndarray, np.ndarray, float]:
        preds, backend = [], 0.0
        for k in range(2):
            backend_start = time.perf_counter()
            self.session.set_inputs({"latent": x, "timestep": np.full(1, t, dtype=np.float32),
                                     "text_embeds": text.embeds[k:k + 1], "text_mask": text.mask[k:k + 1]})
            preds.append(self.session.run()["noise_pred"][:, :channels])
            backend += time.perf_counter() - backend_start
        return preds[0], preds[1], backend


def save_latents(path: Path, latent: np.ndarray, metadata: dict[str, Any]) -> None:
    """.npy, or .safetensors with the run's settings as metadata; written to a temporary name first."""
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if path.suffix == ".safetensors":
            from safetensors.numpy import save_file

            save_file({"latent": np.ascontiguousarray(latent)}, str(tmp), metadata={k: str(v) for k, v in metadata.items()})
        else:
            with open(tmp, "wb") as f:
                np.save(f, latent)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
