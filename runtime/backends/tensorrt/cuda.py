"""The CUDA layer of the TensorRT backend, through cuda-python's runtime API (cuda.bindings.runtime).

No pycuda and no compiled code of ours. Every call's status is checked and a failure names the call and
the CUDA error. cuda-python is imported on first use.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptdit.contract.errors import InputError, option

from ...errors import RuntimeFailure
from ..transfers import Transfers

INSTALL_HINT = "pip install cuda-python (cuda-bindings 12.x for CUDA 12 drivers, 13.x for CUDA 13)"


def cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        raise InputError(f"cuda-python is not installed: {INSTALL_HINT}") from None
    return runtime


class CudaError(RuntimeFailure):
    def __init__(self, call: str, code: Any):
        rt = cudart()
        name = rt.cudaGetErrorName(code)[1].decode()
        text = rt.cudaGetErrorString(code)[1].decode()
        super().__init__(f"{call} failed: {name} ({text})")
        self.call, self.code, self.error_name = call, code, name


def call(name: str, *args: Any) -> Any:
    """Run cudart.<name>(*args) and return its outputs (none, one, or a tuple); raise CudaError on failure."""
    rt = cudart()
    err, *outputs = getattr(rt, name)(*args)
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(name, err)
    if not outputs:
        return None
    return outputs[0] if len(outputs) == 1 else tuple(outputs)


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    compute_capability: str  # "9.0"


def current_device() -> Device:
    """The device this process uses (device 0 unless set). InputError when there is none."""
    rt = cudart()
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess or not count:
        reason = rt.cudaGetErrorName(err)[1].decode() if err != rt.cudaError_t.cudaSuccess else "no device"
        raise InputError(f"no CUDA GPU is visible ({reason}): the TensorRT backend needs one; use "
                         f"{option('backend', 'onnxruntime')} or {option('backend', 'torch')} on this machine")
    index = call("cudaGetDevice")
    props = call("cudaGetDeviceProperties", index)
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return Device(int(index), name, f"{props.major}.{props.minor}")


class DeviceBuffer:
    """cudaMalloc'd memory, freed on close()."""

    def __init__(self, nbytes: int):
        self.nbytes = nbytes
        self.ptr: int = int(call("cudaMalloc", max(nbytes, 1)))

    def close(self) -> None:
        if self.ptr:
            call("cudaFree", self.ptr)
            self.ptr = 0


class PinnedArray:
    """A numpy array in page-locked host memory (cudaMallocHost), so async copies really are async."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        self.nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        self.ptr: int = int(call("cudaMallocHost", max(self.nbytes, 1)))
        raw = np.ctypeslib.as_array((ctypes.c_ubyte * max(self.nbytes, 1)).from_address(self.ptr))
        self.array = raw[: self.nbytes].view(dtype).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self.array = np.empty(0)
            call("cudaFreeHost", self.ptr)
            self.ptr = 0


class Stream:
    """A non-blocking stream (never the legacy default stream, which TensorRT and graph capture avoid). Every
    host<->device copy and every synchronisation through it is counted in `transfers`."""

    def __init__(self) -> None:
        rt = cudart()
        self.handle = call("cudaStreamCreateWithFlags", rt.cudaStreamNonBlocking)
        self.transfers = Transfers()

    def __int__(self) -> int:
        return int(self.handle)

    def copy_to_device(self, dst: int, src: PinnedArray) -> None:
        call("cudaMemcpyAsync", dst, src.ptr, src.nbytes, cudart().cudaMemcpyKind.cudaMemcpyHostToDevice, self.handle)
        self.transfers.to_device_bytes += src.nbytes

    def copy_to_host(self, dst: PinnedArray, src: int) -> None:
        call("cudaMemcpyAsync", dst.ptr, src, dst.nbytes, cudart().cudaMemcpyKind.cudaMemcpyDeviceToHost, self.handle)
        self.transfers.from_device_bytes += dst.nbytes

    def copy_on_device(self, dst: int, src: int, nbytes: int) -> None:
        call("cudaMemcpyAsync", dst, src, nbytes, cudart().cudaMemcpyKind.cudaMemcpyDeviceToDevice, self.handle)

    def synchronize(self) -> None:
        call("cudaStreamSynchronize", self.handle)
        self.transfers.syncs += 1

    def wait(self, event: Event) -> None:
        """Later work on this stream waits for `event` (no host synchronisation)."""
        call("cudaStreamWaitEvent", self.handle, event.handle, 0)

    def close(self) -> None:
        if self.handle is not None:
            call("cudaStreamDestroy", self.handle)
            self.handle = None


class Event:
    """A CUDA event without timing, to order work across streams."""

    def __init__(self) -> None:
        self.handle: Any = call("cudaEventCreateWithFlags", cudart().cudaEventDisableTiming)

    def record(self, stream: int) -> None:
        call("cudaEventRecord", self.handle, stream)

    def close(self) -> None:
        if self.handle is not None:
            call("cudaEventDestroy", self.handle)
            self.handle = None


def producer_stream(value: int) -> int:
    """The stream named by a __cuda_array_interface__ (v3) "stream" entry: 1 and 2 are the legacy and per-thread
    default streams, anything else a stream handle; 0 is forbidden by the protocol as ambiguous."""
    if value == 0:
        raise InputError("a CUDA array gave stream 0 in __cuda_array_interface__, which the protocol forbids as "
                         "ambiguous; give its stream handle, 1 (legacy default stream) or 2 (per-thread)")
    return value


class GraphCapture:
    """Capture what `enqueue` puts on the stream into a CUDA graph and replay it; None from capture() when
    the work cannot be captured (then the caller keeps enqueueing directly)."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.exec: Any = None
        self.failure: str | None = None

    def capture(self, enqueue: Any) -> bool:
        """False (with the reason in .failure) when the work cannot be captured, whatever goes wrong: the capture
        is always ended, so the stream leaves capture mode and plain launches work again."""
        rt = cudart()
        call("cudaStreamBeginCapture", self.stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        ok, raised = False, None
        try:
            ok = bool(enqueue())
        except RuntimeFailure as e:  # a CUDA call that is illegal while capturing, say
            raised = str(e)
        finally:
            err, graph = rt.cudaStreamEndCapture(self.stream.handle)
        if not ok or err != rt.cudaError_t.cudaSuccess or graph is None:
            if raised is not None:
                self.failure = raised
            elif not ok:
                self.failure = "the enqueue failed during capture"
            else:
                self.failure = rt.cudaGetErrorName(err)[1].decode()
            if graph is not None and err == rt.cudaError_t.cudaSuccess:
                call("cudaGraphDestroy", graph)
            rt.cudaGetLastError()  # clear the sticky capture error before falling back
            return False
        try:
            self.exec = call("cudaGraphInstantiate", graph, 0)
        except CudaError as e:
            self.failure = e.error_name
            rt.cudaGetLastError()
            return False
        finally:
            call("cudaGraphDestroy", graph)
        return True

    def launch(self) -> None:
        call("cudaGraphLaunch", self.exec, self.stream.handle)

    def close(self) -> None:
        if self.exec is not None:
            call("cudaGraphExecDestroy", self.exec)
            self.exec = None
