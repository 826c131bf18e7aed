"""The CUDA layer's control flow and the TensorRT session's ordering, with the CUDA runtime replaced by a recorder
(the runtime is outside the unit; tests/test_gpu.py runs the same paths on a real GPU)."""

from __future__ import annotations

import types
from typing import Any

import pytest

from runtime import cuda
from runtime.backend_tensorrt import TensorRTSession
from runtime.tensors import HostFeeds, TensorSpec

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


@pytest.fixture
def fake(monkeypatch) -> FakeCudart:
    recorder = FakeCudart()
    monkeypatch.setattr(cuda, "cudart", lambda: recorder)
    return recorder


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
    session = object.__new__(TensorRTSession)
    session._feeds = HostFeeds([TensorSpec("latent", (2, 3), "float32")])
    session.stream = cuda.Stream()
    session.producer_event = cuda.Event()
    session.device_buffers = {"latent": types.SimpleNamespace(ptr=7000)}  # type: ignore[dict-item]
    fake.calls.clear()
    return session


def test_a_device_input_waits_for_the_stream_that_produced_it(fake):
    session = session_with_one_input(fake)
    session.set_inputs({"latent": FakeCudaArray(stream=42)})
    names = fake.names()
    assert names == ["cudaEventRecord", "cudaStreamWaitEvent", "cudaMemcpyAsync"]
    record, wait, copy = (args for _, args in fake.calls)
    assert record == (session.producer_event.handle, 42)  # recorded on the producer's stream
    assert wait == (session.stream.handle, session.producer_event.handle, 0)  # our stream waits for it
    assert copy[:3] == (7000, 5000, 24) and copy[4] == session.stream.handle


def test_a_device_input_without_a_stream_is_copied_at_once(fake):
    session = session_with_one_input(fake)
    session.set_inputs({"latent": FakeCudaArray(stream=None)})
    assert fake.names() == ["cudaMemcpyAsync"]
    with pytest.raises(cuda.InputError, match="stream 0 in __cuda_array_interface__"):
        session.set_inputs({"latent": FakeCudaArray(stream=0)})


def test_close_releases_in_order_and_twice_is_harmless(fake):
    order: list[str] = []

    class Resource:
        def __init__(self, name: str):
            self.name = name

        def close(self) -> None:
            order.append(self.name)

    class Held:
        """Stands for context / engine / runtime: records when the session lets go of it."""

        def __init__(self, name: str):
            self.name = name

        def __del__(self) -> None:
            order.append(self.name)

    session = object.__new__(TensorRTSession)
    session._resources = [Resource("stream"), Resource("buffer")]
    session.graph = Resource("graph")  # type: ignore[assignment]
    session.runtime_cache = Resource("runtime cache")
    session.runtime, session.engine, session.context = Held("runtime"), Held("engine"), Held("context")
    session.close()
    assert order == ["runtime cache", "graph", "context", "engine", "runtime", "buffer", "stream"]
    order.clear()
    session.close()
    assert order == [] and session.context is None and session.graph is None and session._resources == []
