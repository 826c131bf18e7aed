"""The CUDA layer's control flow and the TensorRT session's ordering, with the CUDA runtime replaced by a recorder
(the runtime is outside the unit; tests/test_gpu.py runs the same paths on a real GPU)."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ptdit.contract.onnx_manifest import TensorSpec
from runtime.artifact import Artifact
from runtime.backends.tensorrt import cuda
from runtime.backends.tensorrt.engine import TensorRTEngine
from runtime.backends.tensorrt.session import TensorRTSession
from runtime.backends.transfers import Transfers

SUCCESS, ILLEGAL = "cudaSuccess", "cudaErrorStreamCaptureUnsupported"


class FakeCudart:
    """Records every call as (name, args); returns success and a fresh handle unless told to fail."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=SUCCESS)
    cudaStreamCaptureMode = types.SimpleNamespace(cudaStreamCaptureModeThreadLocal="thread-local")
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyDeviceToDevice="d2d", cudaMemcpyHostToDevice="h2d",
                                           cudaMemcpyDeviceToHost="d2h")
    cudaStreamNonBlocking = "non-blocking"
    cudaEventDisableTiming = "no-timing"

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.failing: set[str] = set()
        self.capturing = False
        self._next = 100

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> tuple[Any, ...]:
            self.calls.append((name, args))
            if name in ("cudaGetErrorName", "cudaGetErrorString"):
                return SUCCESS, str(args[0]).encode()
            if name == "cudaStreamBeginCapture":
                self.capturing = True
            if name == "cudaStreamEndCapture":
                self.capturing = False
                return (ILLEGAL, None) if "capture" in self.failing else (SUCCESS, "graph")
            if name in self.failing or (self.capturing and name == "cudaStreamSynchronize"):
                return (ILLEGAL,)
            self._next += 1
            return SUCCESS, self._next

        return call


class HostArray:
    """Host staging memory without page-locked pages (the recorder hands out handles, not memory)."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.array = np.zeros(shape, dtype)
        self.nbytes = self.array.nbytes
        self.ptr = 0

    def close(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch) -> FakeCudart:
    recorder = FakeCudart()
    monkeypatch.setattr(cuda, "cudart", lambda: recorder)
    monkeypatch.setattr(cuda, "PinnedArray", HostArray)
    return recorder


class RecordingContext:
    """Stands for a TensorRT execution context: keeps the bound addresses and records them at each enqueue."""

    def __init__(self) -> None:
        self.addresses: dict[str, int] = {}
        self.enqueued: list[dict[str, int]] = []

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        self.enqueued.append(dict(self.addresses))
        return True


class LoadedPlan:
    """Stands for a loaded plan (TensorRTEngine: loading needs TensorRT and a GPU): its I/O and a context."""

    def __init__(self, io: list[TensorSpec]):
        self.io, self.context, self.description = io, RecordingContext(), "recorded"

    def errors(self) -> str:
        return "no error was logged"

    def save_runtime_cache(self) -> None:
        pass

    def close(self) -> None:
        self.context = None


def session_of(inputs: list[TensorSpec], outputs: list[TensorSpec], fake: FakeCudart) -> TensorRTSession:
    """A TensorRT session over the recorder, made the way open_session makes one, with the plan's loading
    stood in for; the calls it made while opening are cleared."""
    artifact = Artifact(Path("m.plan"), types.SimpleNamespace(inputs=inputs, outputs=outputs))  # type: ignore[arg-type]
    session = TensorRTSession(artifact, engine=LoadedPlan([*inputs, *outputs]))  # type: ignore[arg-type]
    fake.calls.clear()
    return session


def test_a_failing_call_inside_a_capture_ends_it_and_falls_back(fake):
    """A CUDA call that is illegal while capturing raises inside enqueue: the capture is still ended, the sticky
    error cleared, and capture() answers False with the reason instead of raising."""
    stream = cuda.Stream()
    graph = cuda.GraphCapture(stream)
    assert graph.capture(stream.synchronize) is False
    assert graph.failure and "cudaStreamSynchronize failed" in graph.failure
    names = fake.names()
    assert names.index("cudaStreamEndCapture") > names.index("cudaStreamBeginCapture")
    assert names[-1] == "cudaGetLastError" and "cudaGraphInstantiate" not in names
    stream.synchronize()  # out of capture mode: plain work goes on


def test_a_capture_the_driver_refuses_is_discarded(fake):
    fake.failing.add("capture")
    graph = cuda.GraphCapture(cuda.Stream())
    assert graph.capture(lambda: True) is False and graph.failure == ILLEGAL


def test_a_good_capture_is_instantiated(fake):
    graph = cuda.GraphCapture(cuda.Stream())
    assert graph.capture(lambda: True) is True and graph.exec is not None
    assert fake.names()[-2:] == ["cudaGraphInstantiate", "cudaGraphDestroy"]


class FakeCudaArray:
    def __init__(self, stream: int | None):
        self.__cuda_array_interface__ = {"shape": (2, 3), "typestr": "<f4", "data": (5000, False), "version": 3,
                                         "strides": None, "stream": stream}


def session_with_one_input(fake: FakeCudart) -> TensorRTSession:
    return session_of([TensorSpec("latent", (2, 3), "float32")], [], fake)


def test_a_device_input_waits_for_the_stream_that_produced_it(fake):
    session = session_with_one_input(fake)
    session.set_inputs({"latent": FakeCudaArray(stream=42)})
    names = fake.names()
    assert names == ["cudaEventRecord", "cudaStreamWaitEvent", "cudaMemcpyAsync"]
    record, wait, copy = (args for _, args in fake.calls)
    assert record == (session.producer_event.handle, 42)  # recorded on the producer's stream
    assert wait == (session.stream.handle, session.producer_event.handle, 0)  # our stream waits for it
    assert copy[:3] == (session.device_buffers["latent"].ptr, 5000, 24) and copy[4] == session.stream.handle


def test_a_device_input_without_a_stream_is_copied_at_once(fake):
    session = session_with_one_input(fake)
    session.set_inputs({"latent": FakeCudaArray(stream=None)})
    assert fake.names() == ["cudaMemcpyAsync"]
    with pytest.raises(cuda.InputError, match="stream 0 in __cuda_array_interface__"):
        session.set_inputs({"latent": FakeCudaArray(stream=0)})


def test_close_releases_in_order_and_twice_is_harmless(fake, monkeypatch):
    order: list[str] = []

    class Resource:
        def __init__(self, name: str):
            self.name, self.ptr = name, 0

        def close(self) -> None:
            order.append(self.name)

    class Held:
        """Stands for context / engine / runtime: records when the session lets go of it."""

        def __init__(self, name: str):
            self.name = name

        def __del__(self) -> None:
            order.append(self.name)

    monkeypatch.setattr(cuda, "Stream", lambda: Resource("stream"))
    monkeypatch.setattr(cuda, "Event", lambda: Resource("event"))
    monkeypatch.setattr(cuda, "DeviceBuffer", lambda nbytes: Resource("buffer"))
    monkeypatch.setattr(cuda, "GraphCapture", lambda stream: Resource("graph"))
    engine = object.__new__(TensorRTEngine)  # loaded as a plan would be (that needs TensorRT and a GPU)
    engine.runtime_cache = Resource("runtime cache")  # type: ignore[assignment]
    engine.runtime, engine.engine, engine.context = Held("runtime"), Held("engine"), Held("context")
    engine.base_runtime, engine.io, engine.description = None, [TensorSpec("latent", (2, 3), "float32")], "held"
    engine.context.set_tensor_address = lambda name, ptr: True
    artifact = Artifact(Path("m.plan"), types.SimpleNamespace(inputs=engine.io, outputs=[]))  # type: ignore[arg-type]
    session = TensorRTSession(artifact, engine=engine)
    session.close()
    assert order == ["runtime cache", "graph", "context", "engine", "runtime", "buffer", "event", "stream"]
    order.clear()
    session.close()
    assert order == [] and engine.context is None and session.graph is None and session._resources == []


STEP_SPECS = [TensorSpec("latent", (1, 4, 2, 2), "float32"), TensorSpec("step", (1,), "int64"),
              TensorSpec("schedule", (5,), "float32"), TensorSpec("latent_next", (1, 4, 2, 2), "float32"),
              TensorSpec("step_next", (1,), "int64")]
CARRY = {"latent": "latent_next", "step": "step_next"}


def step_session(fake: FakeCudart) -> tuple[TensorRTSession, RecordingContext, dict[str, int]]:
    """The session, its recording context, and the device address of each tensor's buffer."""
    session = session_of(STEP_SPECS[:3], STEP_SPECS[3:], fake)
    buffers = {name: buffer.ptr for name, buffer in session.device_buffers.items()}
    return session, session.engine.context, buffers


def step_feeds() -> dict:
    import numpy as np

    return {"latent": np.ones((1, 4, 2, 2), np.float32), "step": np.zeros(1, np.int64),
            "schedule": np.linspace(1000, 0, 5).astype(np.float32)}


def test_the_step_loop_ping_pongs_and_replays_one_graph_per_parity(fake):
    """Step 0 runs plainly on the session's own addresses and is the loop's one synchronisation; each parity is then
    captured once with its addresses; later steps are graph launches alone: no copy, no wait until finish(). A
    second loop on the same session starts from the kept graphs: not even step 0 waits."""
    session, context, buffers = step_session(fake)
    loop = session.step_loop(CARRY)
    loop.start(step_feeds())
    uploads = [args for name, args in fake.calls if name == "cudaMemcpyAsync"]
    assert [a[0] for a in uploads] == [buffers["latent"], buffers["step"], buffers["schedule"]]
    assert session.transfers.to_device_bytes == 64 + 8 + 20 and session.transfers.syncs == 0
    fake.calls.clear()

    loop.step(0)
    even = {name: buffers[name] for name in ("latent", "latent_next", "step", "step_next")}
    odd = {"latent": buffers["latent_next"], "latent_next": buffers["latent"], "step": buffers["step_next"],
           "step_next": buffers["step"]}
    assert [{k: e[k] for k in even} for e in context.enqueued] == [even, even, odd]  # step 0, then the two captures
    names = fake.names()
    assert names.count("cudaStreamSynchronize") == 1 and names.count("cudaStreamBeginCapture") == 2
    assert names.index("cudaStreamSynchronize") < names.index("cudaStreamBeginCapture")
    assert "cudaGraphLaunch" not in names  # a capture does not run the work: step 0 ran exactly once
    graph_execs = [g.exec for g in session.step_graphs]
    assert len(set(graph_execs)) == 2 and session.loop_mode == "step loop, one CUDA graph per step parity"

    before = session.transfers.snapshot()
    fake.calls.clear()
    for i in range(1, 6):
        loop.step(i)
    assert fake.names() == ["cudaGraphLaunch"] * 5
    assert [args[0] for _, args in fake.calls] == [graph_execs[i % 2] for i in range(1, 6)]
    assert session.transfers.since(before) == Transfers() and len(context.enqueued) == 3

    fake.calls.clear()
    loop.finish()  # after step 5 (odd): the result is in the input buffer
    (copy,) = [args for name, args in fake.calls if name == "cudaMemcpyAsync"]
    assert copy[1] == buffers["latent"] and copy[2] == 64
    assert fake.names()[-1] == "cudaStreamSynchronize"
    loop.close()
    assert {k: context.addresses[k] for k in even} == even  # plain runs see the session's own buffers again

    second = session.step_loop(CARRY)
    second.start(step_feeds())
    fake.calls.clear()
    for i in range(4):
        second.step(i)
    assert fake.names() == ["cudaGraphLaunch"] * 4 and len(context.enqueued) == 3
    fake.calls.clear()
    second.finish()  # after step 3 (odd)
    assert [args[1] for name, args in fake.calls if name == "cudaMemcpyAsync"] == [buffers["latent"]]
    second.close()
    session.close_step_graphs()
    assert session.step_graphs == [] and fake.names().count("cudaGraphExecDestroy") == 2


def test_the_step_loop_falls_back_to_plain_launches_when_capture_fails(fake):
    fake.failing.add("capture")
    session, context, buffers = step_session(fake)
    loop = session.step_loop(CARRY)
    loop.start(step_feeds())
    for i in range(4):
        loop.step(i)
    assert session.step_graphs == [] and session.loop_mode.endswith(f"(graph capture failed: {ILLEGAL})")
    plain = context.enqueued
    # step 0, the failed capture of parity 0, then steps 1-3 with alternating addresses
    a, b = buffers["latent"], buffers["latent_next"]
    assert [e["latent"] for e in plain] == [a, a, b, a, b]
    assert [e["latent_next"] for e in plain][-3:] == [a, b, a]
    assert fake.names().count("cudaStreamSynchronize") == 1 and fake.names().count("cudaStreamBeginCapture") == 1
    fake.calls.clear()
    loop.finish()  # after step 3 (odd): the input buffer
    assert [args[1] for name, args in fake.calls if name == "cudaMemcpyAsync"] == [buffers["latent"]]
    second = session.step_loop(CARRY)  # no new capture attempt, no warm-up wait
    second.start(step_feeds())
    fake.calls.clear()
    second.step(0)
    assert "cudaStreamSynchronize" not in fake.names() and "cudaStreamBeginCapture" not in fake.names()
