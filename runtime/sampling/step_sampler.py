"""The sampler for step artifacts (ptdit-export --step): the whole denoising step is one call of the backend.

The loop state (the fp32 latent and the step index) lives in the backend: each backend's StepLoop holds two
buffers per carried tensor and swaps their roles after every step (ping-pong), so a step moves no data
between host and device. The schedule, the text and the guidance scale go up once, the final latent comes
back once. On TensorRT each parity is one CUDA graph, replayed; nothing waits for the GPU until the end.

Same seed, text and options -> the latent of the host loop (host_loop.Sampler) on a noise-prediction artifact:
the graph evaluates ptdit.step.DenoisingStep, whose guidance and Euler update are schedule.guided_velocity and
schedule.euler_update, operation for operation.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from ptdit.contract.cache import CacheSpec, Calibration
from ptdit.contract.errors import InputError, option

from ..backends.interface import ReuseTables, Session
from .host_loop import OnLatent, Sampler, SampleResult, StepTiming, finite
from .schedule import initial_noise
from .text import TextConditioning


def make_sampler(session: Session, steps: int = 30, guidance: float = 4.0, seed: int = 0,
                 shift: float | None = None, cache: CacheSpec | None = None,
                 calibration: Calibration | None = None) -> Sampler:
    """The step loop for a step artifact, the host loop for a noise-prediction artifact."""
    cls = StepSampler if session.artifact.is_step else Sampler
    return cls(session, steps, guidance, seed, shift, cache, calibration)


class StepSampler(Sampler):
    def __init__(self, session: Session, steps: int = 30, guidance: float = 4.0, seed: int = 0,
                 shift: float | None = None, cache: CacheSpec | None = None, calibration: Calibration | None = None):
        super().__init__(session, steps, guidance, seed, shift, cache, calibration)
        info = session.artifact.export.step
        if info is None:
            raise InputError(f"{session.artifact.path.name} is not a step artifact (ptdit-export --step)")
        self.carry = dict(info.carry)
        self.guided = info.guidance
        schedule_len = session.artifact.spec("schedule").shape[0]
        if steps > schedule_len - 1:
            raise InputError(f"{option('steps', steps)} is more than this step artifact's schedule holds "
                             f"({schedule_len - 1})")
        if not self.guided and guidance != 1.0:
            raise InputError(f"this step artifact is unguided (exported with --batch 1): pass {option('guidance', 1)}, "
                             f"not {guidance:g}, or export with --batch 2 --step for classifier-free guidance")
        self.schedule = np.zeros(schedule_len, dtype=np.float32)
        self.schedule[:steps] = self.timesteps  # then 0: the end of the last step

    def feeds(self, text: TextConditioning) -> dict[str, np.ndarray]:
        batch = self.session.artifact.spec("text_embeds").shape[0]
        feeds = {"latent": initial_noise(self.latent_spec.shape, self.seed), "step": np.zeros(1, dtype=np.int64),
                 "schedule": self.schedule, "text_embeds": text.embeds[:batch], "text_mask": text.mask[:batch]}
        if self.guided:
            feeds["guidance"] = np.full(1, self.guidance, dtype=np.float32)
        return feeds

    def sample(self, text: TextConditioning, on_step: Callable[[int, float, StepTiming], None] | None = None,
               on_latent: OnLatent | None = None) -> SampleResult:
        """As the host loop's; `on_latent` costs one copy of the latent to the host per step (the state stays on the
        device otherwise)."""
        result = SampleResult(latent=np.empty(0), timesteps=self.timesteps)
        transfers = self.session.transfers
        with self.session.step_loop(self.carry) as loop:
            begin, counted = time.perf_counter(), transfers.snapshot()
            loop.start(self.feeds(text), None if all(self.plan) else self.reuse_tables())
            result.setup = transfers.since(counted)
            for i, t in enumerate(self.timesteps):
                start, counted = time.perf_counter(), transfers.snapshot()
                if self.plan[i]:
                    loop.step(i)
                    result.transformer_calls += 1
                else:
                    loop.skip(i)
                elapsed = time.perf_counter() - start
                timing = StepTiming(elapsed, elapsed, transfers.since(counted))
                result.steps.append(timing)
                if on_step:
                    on_step(i, float(t), timing)
                if on_latent:
                    on_latent(i, float(t), np.array(loop.finish(), copy=True))
            counted = transfers.snapshot()
            result.latent = loop.finish()
            result.finish = transfers.since(counted)
            result.wall_s = time.perf_counter() - begin
        return finite(result)

    def reuse_tables(self) -> ReuseTables:
        """The reuse graphs' tables for this schedule and plan: a skipped step j moves the latent by dt_j times the
        rule's velocity (host_loop.Reuse): weight_a dt_j (1 + r) on the last computed one (a), weight_b -dt_j r
        on the one before (b), r = (t_j - t_a) / (t_a - t_b) for taylor and 0 for last."""
        ts = [np.float32(t) for t in self.timesteps] + [np.float32(0.0)]
        dt = [(ts[j] - ts[j + 1]) / np.float32(1000.0) for j in range(len(self.plan))]
        rows = len(self.schedule)  # the step graph's schedule length, whatever the steps: one reuse build per session
        weight_a = np.zeros(rows, dtype=np.float32)
        weight_b = np.zeros(rows, dtype=np.float32)
        inverse_dt = np.zeros(rows, dtype=np.float32)
        inverse_dt[:len(dt)] = [1 / d for d in dt]
        computed: list[int] = []
        for j, compute in enumerate(self.plan):
            if compute:
                computed.append(j)
                continue
            r = 0.0
            if self.cache is not None and self.cache.reuse == "taylor" and len(computed) >= 2:
                a, b = computed[-1], computed[-2]
                r = (float(self.timesteps[j]) - float(self.timesteps[a])) / (float(self.timesteps[a]) -
                                                                             float(self.timesteps[b]))
            weight_a[j], weight_b[j] = dt[j] * np.float32(1 + r), dt[j] * np.float32(-r)
        return ReuseTables(inverse_dt, weight_a, weight_b)
