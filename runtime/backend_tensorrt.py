"""TensorRT backend, C-free: tensorrt (or the lean tensorrt_lean runtime for version-compatible plans, or
tensorrt_rtx for TensorRT-RTX plans; tensorrt_flavour decides), cuda-python and numpy. No torch on this path.

One session per plan: the manifest is checked against the running TensorRT and GPU before anything is
deserialized; device buffers and pinned host staging buffers are allocated once and bound by name; work
runs on the session's own stream; after a warm-up run the engine's enqueue is captured in a CUDA graph and
replayed (plain enqueue if capture fails). Inputs set once (the text) stay on the device.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from . import cuda
from .artifact import Artifact
from .errors import InputError, RuntimeFailure
from .tensorrt_flavour import (
    TensorRTOptions,
    check_compatible,
    check_runnable,
    import_runtime_module,
    is_version_compatible,
    onnx_of,
    target_of,
)
from .tensors import HostFeeds, TensorSpec
from .transfers import Transfers

# TensorRT DataType member names -> the manifests' dtype names (engines/ keeps its own copy: no shared imports).
TRT_DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32",
              "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


_LOGGERS: dict[str, Any] = {}


def logger_for(trt_module: ModuleType) -> Any:
    """The one logger of this process for a TensorRT module: TensorRT keeps the first logger it is given for
    the whole process, so every session must hand it the same one. It keeps errors for one-line reports."""
    if TYPE_CHECKING:  # tensorrt_lean and tensorrt_rtx have the same runtime API: type-check against tensorrt's
        import tensorrt as t
    else:
        t = trt_module
    if trt_module.__name__ not in _LOGGERS:

        class Logger(t.ILogger):
            def __init__(self) -> None:
                t.ILogger.__init__(self)
                self.errors: list[str] = []

            def log(self, severity: t.ILogger.Severity, msg: str) -> None:
                if severity in (t.ILogger.Severity.INTERNAL_ERROR, t.ILogger.Severity.ERROR):
                    self.errors.append(msg)
                    del self.errors[:-20]

        _LOGGERS[trt_module.__name__] = Logger()
    return _LOGGERS[trt_module.__name__]


class TensorRTSession:
    def __init__(self, artifact: Artifact, options: TensorRTOptions | None = None):
        options = options or TensorRTOptions()
        manifest = artifact.manifest
        check_runnable(artifact, options.lean_runtime, options.weight_budget)
        trt_module = import_runtime_module(manifest)
        self.device = cuda.current_device()
        check_compatible(manifest, trt_module.__version__, self.device.name, self.device.compute_capability)
        self.artifact = artifact
        self.backend = f"{trt_module.__name__} {trt_module.__version__} ({self.device.name})"
        self.runtime_cache_dir = options.runtime_cache_dir
        self._feeds = HostFeeds(artifact.inputs)
        self.transfers = Transfers()
        self.loop_mode: str | None = None  # how step loops run (graphs, or why not); None before the first
        self.step_graphs: list[cuda.GraphCapture] = []  # one per step parity, kept across step loops
        self._resources: list[Any] = []
        self.runtime: Any = None
        self._base_runtime: Any = None
        self.engine: Any = None
        self.context: Any = None
        self.runtime_cache: Any = None
        self._logger = logger_for(trt_module)
        try:
            self._open(trt_module, artifact, options.lean_runtime, options.weight_budget)
        except BaseException:
            self.close()
            raise

    def _errors(self) -> str:
        return "; ".join(self._logger.errors[-2:]) or "no error was logged"

    def _open(self, trt_module: ModuleType, artifact: Artifact, lean_runtime: Path | None,
              weight_budget: int | None) -> None:
        if TYPE_CHECKING:
            import tensorrt as t
        else:
            t = trt_module
        manifest = artifact.manifest
        self._logger.errors.clear()
        try:
            runtime = t.Runtime(self._logger)
        except TypeError:
            raise RuntimeFailure(f"TensorRT could not create a runtime ({'; '.join(self._logger.errors[-2:])})") from None
        if is_version_compatible(manifest):
            runtime.engine_host_code_allowed = True
        if lean_runtime is not None:  # a version-compatible plan built without its lean runtime
            self._base_runtime = runtime  # outlives the runtime it loads
            runtime = runtime.load_runtime(str(lean_runtime))
            if runtime is None:
                raise InputError(f"TensorRT could not load the lean runtime {lean_runtime} ({self._errors()})")
            runtime.engine_host_code_allowed = True
        self.runtime = runtime
        self.engine = runtime.deserialize_cuda_engine(artifact.path.read_bytes())
        if self.engine is None:
            raise InputError(f"TensorRT could not load {artifact.path.name} ({self._errors()}): rebuild it with "
                             f"ptdit-build")
        if manifest["build"]["options"].get("strip_plan"):
            self._refit_from_onnx(t, artifact)
        if weight_budget is not None:
            self.engine.weight_streaming_budget_v2 = weight_budget
            self.backend += f", weight streaming budget {weight_budget / 1e6:.0f} MB"
        if target_of(manifest) == "rtx":
            from .rtx_cache import RuntimeCache, cache_path

            path = cache_path(artifact.path, self.device.compute_capability, self.runtime_cache_dir)
            self.runtime_cache = RuntimeCache(self.engine, path)
            self.context = self.runtime_cache.create_context()
            self.backend += f", runtime cache {path.name} ({'loaded' if self.runtime_cache.loaded else 'new'})"
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure(f"TensorRT could not create an execution context ({self._errors()}); the GPU may be "
                                 f"out of memory")
        self.stream = self._own(cuda.Stream())
        self.stream.transfers = self.transfers
        self.device_buffers: dict[str, cuda.DeviceBuffer] = {}
        self.host_buffers: dict[str, cuda.PinnedArray] = {}
        expected = {s.name: s for s in [*artifact.inputs, *artifact.outputs]}
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = self.engine.get_tensor_shape(name)
            dims = tuple(int(shape[k]) for k in range(len(shape)))
            dtype_name = self.engine.get_tensor_dtype(name).name
            # Buffers are sized and typed by the engine; the manifest must say the same.
            spec = TensorSpec(name, dims, TRT_DTYPES.get(dtype_name, dtype_name.lower()))
            if expected.get(name) != spec:
                raise InputError(f"{artifact.path.name} does not match its manifest (tensor {name}: engine "
                                 f"{list(dims)} {spec.dtype}): rebuild it with ptdit-build")
            self.device_buffers[name] = self._own(cuda.DeviceBuffer(spec.nbytes))
            self.host_buffers[name] = self._own(cuda.PinnedArray(spec.shape, spec.numpy_dtype))
            if not self.context.set_tensor_address(name, self.device_buffers[name].ptr):
                raise RuntimeFailure(f"TensorRT refused the address of {name}")
        self.output_names = [s.name for s in artifact.outputs]
        self.graph: cuda.GraphCapture | None = cuda.GraphCapture(self.stream)  # closed first, by close()
        self.producer_event = self._own(cuda.Event())
        self.runs = 0
        self.graph_captured = False

    def _refit_from_onnx(self, t: Any, artifact: Artifact) -> None:
        """A weightless (--strip-plan) plan gets its weights from the ONNX it was built from, before any use."""
        onnx_path = onnx_of(artifact)
        if not hasattr(t, "OnnxParserRefitter"):
            raise InputError(f"{artifact.path.name} is weightless and must be refit from {onnx_path.name}, which needs "
                             f"the full tensorrt package (the lean runtime has no refitter): pip install tensorrt")
        refitter = t.Refitter(self.engine, self._logger)
        parser_refitter = t.OnnxParserRefitter(refitter, self._logger)
        if not parser_refitter.refit_from_file(str(onnx_path)) or not refitter.refit_cuda_engine():
            raise RuntimeFailure(f"TensorRT could not refit the weightless plan {artifact.path.name} from "
                                 f"{onnx_path.name} ({self._errors()})")
        self.backend += f", refit from {onnx_path.name}"

    def _own(self, resource: Any) -> Any:
        self._resources.append(resource)
        return resource

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        device_feeds = {k: v for k, v in feeds.items() if hasattr(v, "__cuda_array_interface__")}
        host_feeds = {k: v for k, v in feeds.items() if k not in device_feeds}
        for name, value in self._feeds.update(host_feeds).items():
            np.copyto(self.host_buffers[name].array, value)
            self.stream.copy_to_device(self.device_buffers[name].ptr, self.host_buffers[name])
        for name, value in device_feeds.items():
            self._copy_from_device_array(name, value)

    def _copy_from_device_array(self, name: str, value: Any) -> None:
        """A CUDA array of the caller (a torch tensor, say): copied device to device, no host round trip. The copy
        waits for the stream that produced the array (__cuda_array_interface__ v3 "stream"), not for the device."""
        spec = self._feeds.specs.get(name)
        if spec is None:
            raise InputError(f"unknown input '{name}'")
        interface = value.__cuda_array_interface__
        if tuple(interface["shape"]) != spec.shape or np.dtype(interface["typestr"]) != spec.numpy_dtype:
            raise InputError(f"input '{name}' is {list(interface['shape'])} {np.dtype(interface['typestr'])}, the "
                             f"artifact needs {list(spec.shape)} {spec.numpy_dtype}")
        if interface.get("strides") is not None:
            raise InputError(f"input '{name}' must be a contiguous CUDA array")
        producer = interface.get("stream")
        if producer is not None:  # None: the producer promises the data is ready
            self.producer_event.record(cuda.producer_stream(int(producer)))
            self.stream.wait(self.producer_event)
        self.stream.copy_on_device(self.device_buffers[name].ptr, int(interface["data"][0]), spec.nbytes)
        self._feeds.values[name] = np.empty(0)  # marks it as set

    def _enqueue(self) -> bool:
        return bool(self.context.execute_async_v3(int(self.stream)))

    def run(self) -> dict[str, np.ndarray]:
        graph = self.graph
        if graph is None:
            raise RuntimeFailure("the TensorRT session is closed")
        self._feeds.complete()
        if self.graph_captured:
            graph.launch()
        else:
            if not self._enqueue():
                raise RuntimeFailure(f"TensorRT execution failed: {self._errors()}")
            if self.runs == 0:  # warm-up done (initialisation stays out of the graph); capture the next one
                self.stream.synchronize()
                self.graph_captured = graph.capture(self._enqueue)
                if self.graph_captured:  # the captured work has not run yet
                    graph.launch()
                self.backend += (", CUDA graph" if self.graph_captured
                                 else f", plain enqueue (graph capture failed: {graph.failure})")
        for name in self.output_names:
            self.stream.copy_to_host(self.host_buffers[name], self.device_buffers[name].ptr)
        self.stream.synchronize()
        self.runs += 1
        return {name: self.host_buffers[name].array.copy() for name in self.output_names}

    def step_loop(self, carry: Mapping[str, str]) -> TensorRTStepLoop:
        return TensorRTStepLoop(self, carry)

    def close_step_graphs(self) -> None:
        graphs, self.step_graphs = getattr(self, "step_graphs", []), []
        for graph in graphs:
            with contextlib.suppress(cuda.CudaError):
                graph.close()

    def close(self) -> None:
        """Release everything, in dependency order: the runtime cache is written, then the CUDA graphs, the
        execution context, the engine and the runtime go, then the buffers and the stream. Idempotent."""
        if self.runtime_cache is not None:
            self.runtime_cache.close()
            self.runtime_cache = None
        graph, self.graph = getattr(self, "graph", None), None
        if graph is not None:
            with contextlib.suppress(cuda.CudaError):
                graph.close()
        self.close_step_graphs()
        self.context = None
        self.engine = None
        self.runtime = None
        self._base_runtime = None
        for resource in reversed(self._resources):
            with contextlib.suppress(cuda.CudaError):
                resource.close()
        self._resources.clear()


class TensorRTStepLoop:
    """Ping-pong on the session's own buffers: the input and the output of a carried pair (latent and
    latent_next, step and step_next) are its two buffers. Even steps read the input buffer and write the output
    one, odd steps swap the two addresses. The first step of the session's first loop is a plain enqueue
    (TensorRT's first enqueue initialises, which must stay out of a graph) followed by the only synchronisation
    before finish(); then each parity is captured once as a CUDA graph, kept by the session for later loops, and
    every step is one graph launch: no copies and no waits until finish()."""

    def __init__(self, session: TensorRTSession, carry: Mapping[str, str]):
        self.session, self.carry = session, dict(carry)
        self.last = -1

    def _bind(self, parity: int) -> None:
        s = self.session
        for name, output in self.carry.items():
            a, b = s.device_buffers[name].ptr, s.device_buffers[output].ptr
            read, write = (a, b) if parity == 0 else (b, a)
            if not (s.context.set_tensor_address(name, read) and s.context.set_tensor_address(output, write)):
                raise RuntimeFailure(f"TensorRT refused the addresses of {name} / {output}")

    def start(self, feeds: Mapping[str, np.ndarray]) -> None:
        if self.session.graph is None:
            raise RuntimeFailure("the TensorRT session is closed")
        self.session.set_inputs(feeds)
        self.session._feeds.complete()
        self.last = -1

    def step(self, index: int) -> None:
        s, parity = self.session, index % 2
        if s.step_graphs:
            s.step_graphs[parity].launch()
        else:
            self._bind(parity)
            if not s._enqueue():
                raise RuntimeFailure(f"TensorRT execution failed: {s._errors()}")
            if s.loop_mode is None:  # the warm-up has run: what follows may be captured
                s.stream.synchronize()
                self._capture()
        self.last = index

    def _capture(self) -> None:
        s = self.session
        for parity in (0, 1):
            graph = cuda.GraphCapture(s.stream)
            self._bind(parity)
            if not graph.capture(s._enqueue):
                s.close_step_graphs()
                s.loop_mode = f"step loop, plain enqueue (graph capture failed: {graph.failure})"
                return
            s.step_graphs.append(graph)
        s.loop_mode = "step loop, one CUDA graph per step parity"

    def finish(self) -> np.ndarray:
        s = self.session
        holder = "latent" if self.last % 2 else self.carry["latent"]  # odd steps write the input buffer (none: -1)
        s.stream.copy_to_host(s.host_buffers[holder], s.device_buffers[holder].ptr)
        s.stream.synchronize()
        return s.host_buffers[holder].array.copy()

    def close(self) -> None:
        """The session's own addresses (parity 0) are bound again for plain runs; the graphs stay with it."""
        if self.session.context is not None:
            self._bind(0)
