"""Step caching in a TensorRT step loop: the velocity and reuse graphs (ptdit.contract.reuse_graphs) as two small
engines, built once per session and step count with the builder of the TensorRT that runs the plan (elementwise
work: a second or so), their tables and the two velocity slots in device memory of their own. They run on the
session's stream, after the step graph's launches, with no copy and no wait: a skipped step moves nothing between
host and device. The lean runtime has no builder; such a plan caches with the host loop only."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import numpy as np

from ptdit.contract.errors import InputError, option
from ptdit.contract.reuse_graphs import reuse_graph, velocity_graph
from ptdit.contract.tensorrt import errors_of

from ...errors import RuntimeFailure
from ..interface import ReuseTables
from . import cuda

TABLES = ("inverse_dt", "weight_a", "weight_b")


class ReuseEngines:
    def __init__(self, module: Any, logger: Any, stream: cuda.Stream, shape: tuple[int, ...], steps: int):
        if not hasattr(module, "Builder"):
            raise InputError(f"step caching on a step plan builds two small engines, and {module.__name__} has no "
                             f"builder: install the full tensorrt package, or cache with a noise-prediction plan (the "
                             f"host loop), or pass {option('cache', 'off')}")
        self.module, self.logger, self.stream, self.steps = module, logger, stream, steps
        self.latent_bytes = int(np.prod(shape)) * 4
        self._resources: list[Any] = []
        self.contexts: dict[str, Any] = {}
        try:
            for name, graph in (("velocity", velocity_graph(shape, steps)), ("reuse", reuse_graph(shape, steps))):
                self.contexts[name] = self._build(name, graph)
            self.tables = {name: self._own(cuda.DeviceBuffer(steps * 4)) for name in TABLES}
            self.slots = [self._own(cuda.DeviceBuffer(self.latent_bytes)) for _ in range(2)]
            self.staging = {name: self._own(cuda.PinnedArray((steps,), np.dtype(np.float32))) for name in TABLES}
        except BaseException:
            self.close()
            raise

    def _own(self, resource: Any) -> Any:
        self._resources.append(resource)
        return resource

    def _build(self, name: str, graph: bytes) -> Any:
        if TYPE_CHECKING:
            import tensorrt as t
        else:
            t = self.module
        builder = t.Builder(self.logger)
        network = builder.create_network(0)
        parser = t.OnnxParser(network, self.logger)
        if not parser.parse(graph):
            problems = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeFailure(f"TensorRT could not parse the step loop's {name} graph ({problems})")
        plan = builder.build_serialized_network(network, builder.create_builder_config())
        if plan is None:
            raise RuntimeFailure(f"TensorRT could not build the step loop's {name} graph ({errors_of(self.logger)})")
        runtime = self._own_plain(t.Runtime(self.logger))
        engine = self._own_plain(runtime.deserialize_cuda_engine(plan))
        context = engine.create_execution_context() if engine is not None else None
        if context is None:
            raise RuntimeFailure(f"TensorRT could not load the step loop's {name} graph ({errors_of(self.logger)})")
        return self._own_plain(context)

    def _own_plain(self, obj: Any) -> Any:
        """A TensorRT object kept alive (the context needs its engine, the engine its runtime) until close()."""
        self._resources.append(_Held(obj))
        return obj

    def start(self, tables: ReuseTables) -> None:
        """Upload the tables and zero both velocity slots (a slot not yet written is weighted 0 and must not be NaN)."""
        for name, value in tables.arrays().items():
            self.staging[name].array[:] = value
            self.stream.copy_to_device(self.tables[name].ptr, self.staging[name])
        for slot in self.slots:
            cuda.call("cudaMemsetAsync", slot.ptr, 0, self.latent_bytes, self.stream.handle)

    def _run(self, name: str, addresses: dict[str, int]) -> None:
        context = self.contexts[name]
        for tensor, address in addresses.items():
            if not context.set_tensor_address(tensor, address):
                raise RuntimeFailure(f"TensorRT refused the address of {tensor} in the step loop's {name} graph")
        if not context.execute_async_v3(int(self.stream)):
            raise RuntimeFailure(f"TensorRT failed the step loop's {name} graph ({errors_of(self.logger)})")

    def keep_velocity(self, latent: int, latent_next: int, step: int, slot: int) -> None:
        self._run("velocity", {"latent": latent, "latent_next": latent_next, "step": step,
                               "inverse_dt": self.tables["inverse_dt"].ptr, "velocity": self.slots[slot].ptr})

    def skip(self, latent: int, latent_next: int, step: int, step_next: int, slot_a: int) -> None:
        self._run("reuse", {"latent": latent, "step": step, "velocity_a": self.slots[slot_a].ptr,
                            "velocity_b": self.slots[1 - slot_a].ptr, "weight_a": self.tables["weight_a"].ptr,
                            "weight_b": self.tables["weight_b"].ptr, "latent_next": latent_next,
                            "step_next": step_next})

    def close(self) -> None:
        """What was made last goes first: the memory, then each context before its engine and the engine before its
        runtime (the contexts are dropped here first: nothing else holds them)."""
        self.contexts.clear()
        for resource in reversed(self._resources):
            with contextlib.suppress(cuda.CudaError):
                resource.close()
        self._resources.clear()


class _Held:
    def __init__(self, obj: Any):
        self.obj = obj

    def close(self) -> None:
        self.obj = None
