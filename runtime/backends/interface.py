"""The interface every backend implements: a Session runs the artifact's graph on staged inputs; for a step graph
its StepLoop keeps the sampler state on the device between steps. The samplers and the CLIs never know which
backend they drive. Both are context managers: `with open_session(path) as session: ...` closes it."""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any, Mapping, Protocol, TypeVar

import numpy as np

from ..artifact import Artifact
from .transfers import Transfers

S = TypeVar("S", bound="Session")
L = TypeVar("L", bound="StepLoop")


@dataclass(frozen=True)
class ReuseTables:
    """What a step loop's skipped steps need, per step index (ptdit.contract.reuse_graphs), fp32 [steps]."""

    inverse_dt: np.ndarray  # 1 / ((t - t_next) / 1000): a computed step's velocity from the latent it moved
    weight_a: np.ndarray  # a skipped step's weights of the last computed velocity
    weight_b: np.ndarray  # ... and of the one before it

    def arrays(self) -> dict[str, np.ndarray]:
        return {"inverse_dt": self.inverse_dt, "weight_a": self.weight_a, "weight_b": self.weight_b}


class StepLoop(Protocol):
    """A backend's device-resident loop over a step graph: two buffers per carried tensor, swapped after every step
    (ping-pong), so that a step moves no data between host and device. With step caching, a skipped step runs the
    small reuse graph in place of the step graph, on the same buffers: it moves no data either."""

    def start(self, feeds: Mapping[str, np.ndarray], reuse: ReuseTables | None = None) -> None:
        """Upload every input once (the carried ones are the initial state); with `reuse` (step caching) its tables
        too, and from then on each step also keeps the velocity it applied (the velocity graph), for skip()."""

    def step(self, index: int) -> None:
        """Run step `index` on the state the previous step left; may return before the work is done."""

    def skip(self, index: int) -> None:
        """Step `index` without the transformer (start had `reuse`): the reuse graph moves the latent along the kept
        velocities and advances the step index; may return before the work is done."""

    def finish(self) -> np.ndarray:
        """Wait for the last step and copy the carried latent to the host (after any step, not only the last)."""

    def close(self) -> None: ...

    def __enter__(self: L) -> L:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


class Session(Protocol):
    backend: str  # "tensorrt_rtx 1.7.1.116 (NVIDIA L4), CUDA graph", "onnxruntime (CPUExecutionProvider)"...
    artifact: Artifact
    transfers: Transfers  # host<->device bytes and host synchronisations so far

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        """Check and stage inputs; those not given keep their last value."""

    def run(self) -> dict[str, np.ndarray]:
        """Run on the staged inputs; every output, on the host."""

    def step_loop(self, carry: Mapping[str, str]) -> StepLoop:
        """For a step artifact: a loop that keeps the carried inputs (input name -> output name) on the
        device between steps."""

    def close(self) -> None:
        """Release what the session holds; a second close() does nothing."""

    def __enter__(self: S) -> S:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
