"""Rectified-flow Euler sampling with classifier-free guidance (the published Qihoo-T2X sampler), seeded and
deterministic, on any Session: the host loop of a noise-prediction artifact. The model predicts the velocity from
noise to image in its first `in_channels` output channels; guidance mixes the conditional and unconditional
predictions of each step, which run as one batch of 2 (cond, uncond) when the artifact has batch 2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ptdit.contract.cache import CacheSpec, Calibration, compute_plan
from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import GUIDANCE, SEED, SHIFT, STEPS

from ..backends.interface import Session
from ..backends.transfers import Transfers
from ..errors import RuntimeFailure
from .schedule import euler_update, guided_velocity, initial_noise, schedule, timestep_shift
from .text import TextConditioning, non_finite

OnLatent = Callable[[int, float, np.ndarray], None]  # (step index, timestep, the latent after that step)


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
    transformer_calls: int = 0  # calls of the transformer (or the step graph) made; a cached step makes none

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


def finite(result: SampleResult) -> SampleResult:
    """A latent with NaN or inf is never handed on as if it were an image."""
    bad = non_finite(result.latent)
    if bad:
        raise RuntimeFailure(f"the sampled latent has {bad} NaN or infinite values (the model or its inputs "
                             f"overflowed)")
    return result


class Sampler:
    def __init__(self, session: Session, steps: int = 30, guidance: float = 4.0, seed: int = 0,
                 shift: float | None = None, cache: CacheSpec | None = None, calibration: Calibration | None = None):
        STEPS.check(option("steps"), steps)
        GUIDANCE.check(option("guidance"), guidance)
        SEED.check(option("seed"), seed)
        if shift is not None:
            SHIFT.check(option("shift"), shift)
        export = session.artifact.export
        if export.resolution is None:
            raise InputError(f"{session.artifact.path.name} is a {export.graph} artifact; the sampler drives the "
                             f"transformer of ptdit-export")
        self.session, self.guidance, self.seed = session, guidance, seed
        self.batch = session.artifact.batch
        if self.batch not in (1, 2):
            raise InputError(f"the sampler drives artifacts of batch 2 (a guidance pair) or 1; this one has batch "
                             f"{self.batch}")
        self.latent_spec = session.artifact.spec("latent")
        size = export.image_size
        assert size is not None  # a transformer's (checked above)
        self.shift = shift if shift is not None else timestep_shift(size.height, size.width, export.frames)
        self.timesteps = schedule(steps, self.shift)
        self.cache = cache
        curve, threshold = (calibration.curve, calibration.threshold) if calibration else (None, None)
        self.plan = compute_plan(cache, [float(t) for t in self.timesteps], curve, threshold)

    def sample(self, text: TextConditioning, on_step: Callable[[int, float, StepTiming], None] | None = None,
               on_latent: OnLatent | None = None) -> SampleResult:
        """The latent from seeded noise; `on_step` hears each step's timing, `on_latent` gets the latent after each
        step (a copy: changing it changes nothing)."""
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
        reuse = Reuse(self.cache.reuse if self.cache else "last")
        for i, t in enumerate(self.timesteps):
            start, counted = time.perf_counter(), transfers.snapshot()
            backend = 0.0
            if not self.plan[i]:
                velocity = reuse.velocity(float(t))
            elif self.batch == 2:
                pair[0], pair[1] = x[0], x[0]
                backend_start = time.perf_counter()
                self.session.set_inputs({"latent": pair, "timestep": np.full(2, t, dtype=np.float32)})
                pred = self.session.run()["noise_pred"][:, :channels]
                backend = time.perf_counter() - backend_start
                result.transformer_calls += 1
                velocity = reuse.computed(float(t), guided_velocity(pred[0:1], pred[1:2], self.guidance))
            else:
                cond, uncond, backend = self._single_batch(x, t, text, channels)
                result.transformer_calls += 2
                velocity = reuse.computed(float(t), guided_velocity(cond, uncond, self.guidance))
            t_next = self.timesteps[i + 1] if i + 1 < len(self.timesteps) else 0.0
            x = euler_update(x, velocity, t, t_next)
            timing = StepTiming(time.perf_counter() - start, backend, transfers.since(counted))
            result.steps.append(timing)
            if on_step:
                on_step(i, float(t), timing)
            if on_latent:
                on_latent(i, float(t), x.copy())
        result.latent = x
        result.wall_s = time.perf_counter() - begin
        return finite(result)

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


class Reuse:
    """What a skipped step uses for the guided velocity (ptdit.contract.cache): the last computed one, or its
    first-order extrapolation in the timestep from the last two."""

    def __init__(self, rule: str):
        self.rule = rule
        self.history: list[tuple[float, np.ndarray]] = []  # (timestep, velocity) of the last two computed steps

    def computed(self, t: float, velocity: np.ndarray) -> np.ndarray:
        self.history = [*self.history[-1:], (t, velocity)]
        return velocity

    def velocity(self, t: float) -> np.ndarray:
        (t_a, v_a) = self.history[-1]
        if self.rule == "last" or len(self.history) < 2:
            return v_a
        (t_b, v_b) = self.history[0]
        return v_a + (v_a - v_b) * np.float32((t - t_a) / (t_a - t_b))
