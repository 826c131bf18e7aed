"""Running a plan: the running half of a TensorRT session (engine.py loads it).

Device buffers and page-locked host staging buffers are allocated once per I/O tensor (sizes and dtypes from the
engine, checked against the manifest) and bound by name; work runs on the session's own stream; after a warm-up
run the engine's enqueue is captured in a CUDA graph and replayed (plain enqueue if capture fails). Inputs set
once (the text) stay on the device. For a step plan, step_loop() keeps the sampler state there.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import numpy as np

from ptdit.contract.errors import InputError

from ...artifact import Artifact
from ...errors import RuntimeFailure
from ..feeds import HostFeeds, nbytes, numpy_dtype
from ..interface import ReuseTables, Session, StepLoop
from ..transfers import Transfers
from . import cuda
from .engine import TensorRTEngine
from .flavour import TensorRTOptions
from .reuse import ReuseEngines


class TensorRTSession(Session):
    def __init__(self, artifact: Artifact, options: TensorRTOptions | None = None,
                 engine: TensorRTEngine | None = None):
        """`engine`: an engine loaded already (default: load the artifact's plan with `options`); the session owns
        it from then on and closes it."""
        self.artifact = artifact
        self.engine = engine or TensorRTEngine(artifact, options or TensorRTOptions())
        self.backend = self.engine.description
        self.transfers = Transfers()
        self.feeds = HostFeeds(artifact.inputs)
        self.output_names = [s.name for s in artifact.outputs]
        self.device_buffers: dict[str, cuda.DeviceBuffer] = {}
        self.host_buffers: dict[str, cuda.PinnedArray] = {}
        self.step_graphs: list[cuda.GraphCapture] = []  # one per step parity, kept across step loops
        self.loop_mode: str | None = None  # how step loops run (graphs, or why not); None before the first
        self.runs = 0
        self.graph_captured = False
        self._reuse: ReuseEngines | None = None  # the step loop's cached-step engines, once a loop asked for them
        self._resources: list[Any] = []  # closed in reverse order: buffers, then the event and the stream
        self.graph: cuda.GraphCapture | None = None
        try:
            self.stream = self._own(cuda.Stream())
            self.stream.transfers = self.transfers
            self.producer_event = self._own(cuda.Event())
            for spec in self.engine.io:
                self.device_buffers[spec.name] = self._own(cuda.DeviceBuffer(nbytes(spec)))
                self.host_buffers[spec.name] = self._own(cuda.PinnedArray(spec.shape, numpy_dtype(spec.dtype)))
                self.bind(spec.name, self.device_buffers[spec.name].ptr)
            self.graph = cuda.GraphCapture(self.stream)  # closed first, by close()
        except BaseException:
            self.close()
            raise

    def _own(self, resource: Any) -> Any:
        self._resources.append(resource)
        return resource

    # --- what the step loop drives ---------------------------------------------------------------------------

    def bind(self, name: str, address: int) -> None:
        """Where the engine reads or writes tensor `name` from the next enqueue on."""
        if not self.engine.context.set_tensor_address(name, address):
            raise RuntimeFailure(f"TensorRT refused the address of {name}")

    def enqueue(self) -> None:
        """One execution of the engine on the session's stream (not waited for)."""
        if not self.try_enqueue():
            raise RuntimeFailure(f"TensorRT execution failed: {self.engine.errors()}")

    def try_enqueue(self) -> bool:
        """enqueue() that answers False instead of raising (what a graph capture records)."""
        return bool(self.engine.context.execute_async_v3(int(self.stream)))

    def copy_out(self, name: str) -> np.ndarray:
        """Tensor `name` on the host, after the work queued before it (a synchronisation)."""
        self.stream.copy_to_host(self.host_buffers[name], self.device_buffers[name].ptr)
        self.stream.synchronize()
        return self.host_buffers[name].array.copy()

    def check_open(self) -> None:
        if self.graph is None:
            raise RuntimeFailure("the TensorRT session is closed")

    def reuse_engines(self, steps: int) -> ReuseEngines:
        """The engines of cached steps for `steps` (built at the first loop that caches, kept for later ones)."""
        if self._reuse is None or self._reuse.steps != steps:
            if self._reuse is not None:
                self._reuse.close()
                self._reuse = None
            self._reuse = ReuseEngines(self.engine.module, self.engine.logger, self.stream,
                                       tuple(self.artifact.spec("latent").shape), steps)
        return self._reuse

    def close_step_graphs(self) -> None:
        graphs, self.step_graphs = self.step_graphs, []
        for graph in graphs:
            with contextlib.suppress(cuda.CudaError):
                graph.close()

    # --- the Session interface -------------------------------------------------------------------------------

    def set_inputs(self, feeds: Mapping[str, Any]) -> None:
        device_feeds = {k: v for k, v in feeds.items() if hasattr(v, "__cuda_array_interface__")}
        host_feeds = {k: v for k, v in feeds.items() if k not in device_feeds}
        for name, value in self.feeds.update(host_feeds).items():
            np.copyto(self.host_buffers[name].array, value)
            self.stream.copy_to_device(self.device_buffers[name].ptr, self.host_buffers[name])
        for name, value in device_feeds.items():
            self._copy_from_device_array(name, value)

    def _copy_from_device_array(self, name: str, value: Any) -> None:
        """A CUDA array of the caller (a torch tensor, say): copied device to device, no host round trip. The copy
        waits for the stream that produced the array (__cuda_array_interface__ v3 "stream"), not for the device."""
        spec = self.feeds.specs.get(name)
        if spec is None:
            raise InputError(f"unknown input '{name}'")
        interface = value.__cuda_array_interface__
        if tuple(interface["shape"]) != spec.shape or np.dtype(interface["typestr"]) != numpy_dtype(spec.dtype):
            raise InputError(f"input '{name}' is {list(interface['shape'])} {np.dtype(interface['typestr'])}, the "
                             f"artifact needs {list(spec.shape)} {numpy_dtype(spec.dtype)}")
        if interface.get("strides") is not None:
            raise InputError(f"input '{name}' must be a contiguous CUDA array")
        producer = interface.get("stream")
        if producer is not None:  # None: the producer promises the data is ready
            self.producer_event.record(cuda.producer_stream(int(producer)))
            self.stream.wait(self.producer_event)
        self.stream.copy_on_device(self.device_buffers[name].ptr, int(interface["data"][0]), nbytes(spec))
        self.feeds.values[name] = np.empty(0)  # marks it as set

    def run(self) -> dict[str, np.ndarray]:
        self.check_open()
        graph = self.graph
        assert graph is not None
        self.feeds.complete()
        if self.graph_captured:
            graph.launch()
        else:
            self.enqueue()
            if self.runs == 0:  # warm-up done (initialisation stays out of the graph); capture the next one
                self.stream.synchronize()
                self.graph_captured = graph.capture(self.try_enqueue)
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

    def close(self) -> None:
        """Release everything, in dependency order: the runtime cache is written, then the CUDA graphs, the
        execution context, the engine and the runtime go, then the buffers and the stream. Idempotent."""
        self.engine.save_runtime_cache()
        graph, self.graph = self.graph, None
        if graph is not None:
            with contextlib.suppress(cuda.CudaError):
                graph.close()
        self.close_step_graphs()
        reuse, self._reuse = self._reuse, None
        if reuse is not None:  # before the stream it runs on
            reuse.close()
        self.engine.close()
        for resource in reversed(self._resources):
            with contextlib.suppress(cuda.CudaError):
                resource.close()
        self._resources.clear()


class TensorRTStepLoop(StepLoop):
    """Ping-pong on the session's own buffers: the input and the output of a carried pair (latent and
    latent_next, step and step_next) are its two buffers. Even steps read the input buffer and write the output
    one, odd steps swap the two addresses. The first step of the session's first loop is a plain enqueue
    (TensorRT's first enqueue initialises, which must stay out of a graph) followed by the only synchronisation
    before finish(); then each parity is captured once as a CUDA graph, kept by the session for later loops, and
    every step is one graph launch: no copies and no waits until finish(). With step caching (ReuseEngines) a
    computed step also launches the small velocity engine, and a skipped step the reuse engine in place of the step
    graph, on the same buffers and stream."""

    def __init__(self, session: TensorRTSession, carry: Mapping[str, str]):
        self.session, self.carry = session, dict(carry)
        self.last = -1
        self.reuse: ReuseEngines | None = None  # with step caching (start's reuse tables)
        self.computed = 0  # steps computed so far: the velocity of the k-th went to slot k % 2

    def _bind(self, parity: int) -> None:
        s = self.session
        for name, output in self.carry.items():
            a, b = s.device_buffers[name].ptr, s.device_buffers[output].ptr
            read, write = (a, b) if parity == 0 else (b, a)
            s.bind(name, read)
            s.bind(output, write)

    def start(self, feeds: Mapping[str, np.ndarray], reuse: ReuseTables | None = None) -> None:
        s = self.session
        s.check_open()
        self.reuse, self.computed = None, 0
        if reuse is not None:  # before any upload: a runtime without a builder is refused first
            self.reuse = s.reuse_engines(reuse.inverse_dt.shape[0])
        s.set_inputs(feeds)
        s.feeds.complete()
        if self.reuse is not None and reuse is not None:
            self.reuse.start(reuse)  # its uploads go through the session's stream, which counts them
        self.last = -1

    def _pairs(self, index: int) -> dict[str, tuple[int, int]]:
        """Each carried input's (read, write) addresses at step `index`."""
        s, pairs = self.session, {}
        for name, output in self.carry.items():
            a, b = s.device_buffers[name].ptr, s.device_buffers[output].ptr
            pairs[name] = (a, b) if index % 2 == 0 else (b, a)
        return pairs

    def step(self, index: int) -> None:
        s, parity = self.session, index % 2
        if s.step_graphs:
            s.step_graphs[parity].launch()
        else:
            self._bind(parity)
            s.enqueue()
            if s.loop_mode is None:  # the warm-up has run: what follows may be captured
                s.stream.synchronize()
                self._capture()
        self.last = index
        if self.reuse is not None:  # keep the velocity this step applied
            pairs = self._pairs(index)
            self.reuse.keep_velocity(pairs["latent"][0], pairs["latent"][1], pairs["step"][0], self.computed % 2)
            self.computed += 1

    def _capture(self) -> None:
        s = self.session
        for parity in (0, 1):
            graph = cuda.GraphCapture(s.stream)
            self._bind(parity)
            if not graph.capture(s.try_enqueue):
                s.close_step_graphs()
                s.loop_mode = f"step loop, plain enqueue (graph capture failed: {graph.failure})"
                return
            s.step_graphs.append(graph)
        s.loop_mode = "step loop, one CUDA graph per step parity"

    def skip(self, index: int) -> None:
        if self.reuse is None or not self.computed:
            raise RuntimeFailure("a skipped step needs the loop started with reuse tables and a computed step first")
        pairs = self._pairs(index)
        self.reuse.skip(pairs["latent"][0], pairs["latent"][1], pairs["step"][0], pairs["step"][1],
                        (self.computed - 1) % 2)
        self.last = index

    def finish(self) -> np.ndarray:
        holder = "latent" if self.last % 2 else self.carry["latent"]  # odd steps write the input buffer (none: -1)
        return self.session.copy_out(holder)

    def close(self) -> None:
        """The session's own addresses (parity 0) are bound again for plain runs; the graphs stay with it."""
        if self.session.graph is not None:
            self._bind(0)
