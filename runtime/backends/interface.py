"""The interface every backend implements: a Session runs the artifact's graph on staged inputs; for a step graph
its StepLoop keeps the sampler state on the device between steps. The samplers and the CLIs never know which
backend they drive. Both are context managers: `with open_session(path) as session: ...` closes it."""

from __future__ import annotations

from types import TracebackType
from typing import Any, Mapping, Protocol, TypeVar

import numpy as np

from ..artifact import Artifact
from .transfers import Transfers

S = TypeVar("S", bound="Session")
L = TypeVar("L", bound="StepLoop")


class StepLoop(Protocol):
    """A backend's device-resident loop over a step graph: two buffers per carried tensor, swapped after every step
    (ping-pong), so that a step moves no data between host and device."""

    def start(self, feeds: Mapping[str, np.ndarray]) -> None:
        """Upload every input once (the carried ones are the initial state)."""

    def step(self, index: int) -> None:
        """Run step `index` on the state the previous step left; may return before the work is done."""

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
