"""Loading a plan: the loading half of a TensorRT session, as Polygraphy splits a loader from its runner.

Before anything is deserialized the plan's manifest is checked against what this run gives it (lean runtime,
weight budget, the ONNX a weightless plan is refit from) and against the running TensorRT and GPU. Then the
runtime (or the lean runtime it loads), the engine (refit from its ONNX when weightless, with a weight-streaming
budget when asked), and the execution context (with a runtime cache for a TensorRT-RTX plan). The engine's I/O
must be the manifest's.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ptdit.contract.dtypes import tensorrt_dtype_name
from ptdit.contract.errors import InputError
from ptdit.contract.onnx_manifest import TensorSpec
from ptdit.contract.tensorrt import errors_of, logger_for

from ...artifact import Artifact
from ...errors import RuntimeFailure
from . import cuda
from .flavour import TensorRTOptions, check_compatible, check_runnable, import_runtime_module, onnx_of
from .rtx_cache import RuntimeCache, cache_path


class TensorRTEngine:
    """A plan deserialized and ready to run on this GPU. close() releases it in dependency order (the runtime
    cache is written, then the context, the engine and the runtimes go), also when loading failed half-way."""

    def __init__(self, artifact: Artifact, options: TensorRTOptions):
        plan = artifact.plan
        check_runnable(artifact, options.lean_runtime, options.weight_budget)
        self.module: ModuleType = import_runtime_module(plan.builder.target, plan.build.options.version_compatible)
        self.device = cuda.current_device()
        check_compatible(plan.builder, plan.build.options, plan.targets, self.module.__version__, self.device.name,
                         self.device.compute_capability)
        self.artifact = artifact
        self.logger = logger_for(self.module)
        self.description = f"{self.module.__name__} {self.module.__version__} ({self.device.name})"
        self.runtime_cache: RuntimeCache | None = None
        self.context: Any = None
        self.engine: Any = None
        self.runtime: Any = None
        self.base_runtime: Any = None  # outlives the lean runtime it loaded
        try:
            self._create_runtime(options.lean_runtime)
            self._deserialize(options.weight_budget)
            self._create_context(options.runtime_cache_dir)
            self.io = self._checked_io()
        except BaseException:
            self.close()
            raise

    def errors(self) -> str:
        """TensorRT's last errors, on one line."""
        return errors_of(self.logger)

    def _create_runtime(self, lean_runtime: Path | None) -> None:
        if TYPE_CHECKING:  # tensorrt_lean and tensorrt_rtx have the same runtime API: typed against tensorrt's
            import tensorrt as t
        else:
            t = self.module
        try:
            runtime = t.Runtime(self.logger)
        except TypeError:
            raise RuntimeFailure(f"TensorRT could not create a runtime ({errors_of(self.logger, none='')})") from None
        if self.artifact.plan.build.options.version_compatible:
            runtime.engine_host_code_allowed = True
        if lean_runtime is not None:  # a version-compatible plan built without its lean runtime
            self.base_runtime = runtime
            runtime = runtime.load_runtime(str(lean_runtime))
            if runtime is None:
                raise InputError(f"TensorRT could not load the lean runtime {lean_runtime} ({self.errors()})")
            runtime.engine_host_code_allowed = True
        self.runtime = runtime

    def _deserialize(self, weight_budget: int | None) -> None:
        path = self.artifact.path
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise InputError(f"TensorRT could not load {path.name} ({self.errors()}): rebuild it with ptdit-build")
        if self.artifact.plan.build.options.strip_plan:
            self._refit_from_onnx()
        if weight_budget is not None:
            self.engine.weight_streaming_budget_v2 = weight_budget
            self.description += f", weight streaming budget {weight_budget / 1e6:.0f} MB"

    def _refit_from_onnx(self) -> None:
        """A weightless (--strip-plan) plan gets its weights from the ONNX it was built from, before any use."""
        if TYPE_CHECKING:
            import tensorrt as t
        else:
            t = self.module
        name, onnx_path = self.artifact.path.name, onnx_of(self.artifact)
        if not hasattr(t, "OnnxParserRefitter"):
            raise InputError(f"{name} is weightless and must be refit from {onnx_path.name}, which needs the full "
                             f"tensorrt package (the lean runtime has no refitter): pip install tensorrt")
        refitter = t.Refitter(self.engine, self.logger)
        parser_refitter = t.OnnxParserRefitter(refitter, self.logger)
        if not parser_refitter.refit_from_file(str(onnx_path)) or not refitter.refit_cuda_engine():
            raise RuntimeFailure(f"TensorRT could not refit the weightless plan {name} from {onnx_path.name} "
                                 f"({self.errors()})")
        self.description += f", refit from {onnx_path.name}"

    def _create_context(self, runtime_cache_dir: Path | None) -> None:
        if self.artifact.plan.builder.target == "rtx":
            path = cache_path(self.artifact.path, self.device.compute_capability, runtime_cache_dir)
            self.runtime_cache = RuntimeCache(self.engine, path)
            self.context = self.runtime_cache.create_context()
            self.description += f", runtime cache {path.name} ({'loaded' if self.runtime_cache.loaded else 'new'})"
        else:
            self.context = self.engine.create_execution_context()
        if self.context is None:
            raise RuntimeFailure(f"TensorRT could not create an execution context ({self.errors()}); the GPU may be "
                                 f"out of memory")

    def _checked_io(self) -> list[TensorSpec]:
        """The engine's I/O tensors (buffers are sized and typed by them); the manifest must say the same."""
        expected = {s.name: s for s in [*self.artifact.inputs, *self.artifact.outputs]}
        io = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            shape = self.engine.get_tensor_shape(name)
            spec = TensorSpec(name, tuple(int(shape[k]) for k in range(len(shape))),
                              tensorrt_dtype_name(self.engine.get_tensor_dtype(name).name))
            if expected.get(name) != spec:
                raise InputError(f"{self.artifact.path.name} does not match its manifest (tensor {name}: engine "
                                 f"{list(spec.shape)} {spec.dtype}): rebuild it with ptdit-build")
            io.append(spec)
        return io

    def save_runtime_cache(self) -> None:
        """Write the TensorRT-RTX runtime cache (what the JIT compiled so far) and let it go."""
        if self.runtime_cache is not None:
            self.runtime_cache.close()
            self.runtime_cache = None

    def close(self) -> None:
        """Idempotent."""
        self.save_runtime_cache()
        self.context = None
        self.engine = None
        self.runtime = None
        self.base_runtime = None
