"""The TensorRT part of ptdit-build: parse, configure, build, and read back the plan's I/O.

Written against the bindings of TensorRT 10.x, 11.x and TensorRT-RTX 1.x (the module comes from
tensorrt_api.select) and type-checked against stubs of all three (tests/engines/test_trt_conformance.py). Full
TensorRT builds only where a GPU exists; TensorRT-RTX builds anywhere.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, cast

from ptdit.contract.dtypes import tensorrt_dtype_name
from ptdit.contract.onnx_manifest import TensorSpec
from ptdit.contract.plan_manifest import BuildOptions, Targets
from ptdit.contract.progress import Reporter
from ptdit.contract.tensorrt import errors_of, logger_for

from .errors import BuildError
from .progress import make_file_writer, make_progress_monitor, run_interruptibly
from .targets import apply_rtx
from .tensorrt_api import FLAG_NAMES, Flavour, builder_flag, network_flags

if TYPE_CHECKING:
    import tensorrt as trt
    import tensorrt_rtx  # noqa: F401  (named in a cast)



class PlanIO(NamedTuple):
    """The I/O tensors of a network or a plan, as TensorRT sees them."""

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


@dataclass
class BuiltPlan:
    plan: Path
    plan_bytes: int
    timing_cache: bytes
    seconds: float
    flags: list[str]
    strongly_typed: bool
    parse_seconds: float
    network_io: PlanIO  # the parsed network's I/O: what the plan must have
    layers: int
    peak_rss_bytes: int  # of this process, so far
    device_memory: dict[str, int]  # the builder's figures: weights, activation, device_persistent (bytes)


def tensor_spec(tensor: trt.ITensor) -> TensorSpec:
    shape = tensor.shape
    dims = tuple(int(shape[k]) for k in range(len(shape)))
    return TensorSpec(tensor.name, dims, tensorrt_dtype_name(tensor.dtype.name))


def network_io(network: trt.INetworkDefinition) -> PlanIO:
    return PlanIO([tensor_spec(network.get_input(i)) for i in range(network.num_inputs)],
                  [tensor_spec(network.get_output(i)) for i in range(network.num_outputs)])


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def host_bytes(memory: trt.IHostMemory) -> bytes:
    # IHostMemory implements the buffer protocol; the generated stubs do not declare it.
    return bytes(memoryview(cast(Any, memory)))


def mark_block_outputs(network: trt.INetworkDefinition, names: list[str]) -> None:
    """Make the named per-block tensors network outputs (a diagnostic plan for the accuracy diff)."""
    wanted = set(names)
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for k in range(layer.num_outputs):
            tensor = layer.get_output(k)
            if tensor.name in wanted:
                network.mark_output(tensor)
                wanted.discard(tensor.name)
    if wanted:
        raise BuildError(f"block tensors not found in the parsed network: {sorted(wanted)[:3]}")


def build_plan(flavour: Flavour, onnx_path: Path, options: BuildOptions, targets: Targets, block_names: list[str],
               plan_path: Path, report: Reporter) -> BuiltPlan:
    """Parse, configure and build; the plan is written to `plan_path` as it is serialized."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = flavour.module

    logger = logger_for(trt, report)  # no plugin library: the graph holds standard ONNX operators only
    try:
        builder = trt.Builder(logger)
    except TypeError:
        raise BuildError(f"{flavour.label} could not create a builder ({errors_of(logger, 3)}); check the driver and "
                         f"GPU") from None
    strongly_typed = not options.fp16_weak
    network = builder.create_network(network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    report(f"  parse {onnx_path.name} ({'strongly typed' if strongly_typed else 'weakly typed, fp16 allowed'})")
    parse_start = time.perf_counter()
    if not parser.parse_from_file(str(onnx_path)):
        problems = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise BuildError(f"{flavour.label}'s ONNX parser rejected {onnx_path.name}: {problems or errors_of(logger, 3)}")
    if options.mark_blocks:
        mark_block_outputs(network, block_names)
    parse_seconds = round(time.perf_counter() - parse_start, 1)
    report(f"  parsed: {network.num_layers} layers in {parse_seconds:.1f} s")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    config.builder_optimization_level = options.opt_level
    if options.tiling_level is not None:
        config.tiling_optimization_level = getattr(trt.TilingOptimizationLevel, options.tiling_level.upper())
    if flavour.target == "rtx":
        apply_rtx(cast("tensorrt_rtx.IBuilderConfig", config), trt, targets)
    if flavour.target == "tensorrt":  # TensorRT-RTX has no timing cache (its operations are no-ops there)
        cache = options.timing_cache
        cache_bytes = cache.read_bytes() if cache and cache.exists() else b""
        if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):
            report(f"  the timing cache {options.timing_cache} was rejected (made by another TensorRT or GPU, or "
                   f"corrupt): building with a new one, which replaces it")
            if not config.set_timing_cache(config.create_timing_cache(b""), False):
                raise BuildError(f"{flavour.label} refused a new timing cache: {errors_of(logger, 3)}")
    # Recorded by the names we asked for: on 10.x STRIP_PLAN is an alias whose .name reads WEIGHTLESS.
    flags = {FLAG_NAMES[option]: builder_flag(trt, option) for option in options.flag_options}
    if options.strip_plan and not options.refittable:
        # A stripped plan must be refittable; 11.x implies REFIT_IDENTICAL, 10.x needs it set.
        flags["REFIT_IDENTICAL"] = trt.BuilderFlag.REFIT_IDENTICAL
    for flag in flags.values():
        config.set_flag(flag)
    monitor, cancel = make_progress_monitor(trt, report)
    config.progress_monitor = monitor

    start = time.perf_counter()
    with open(plan_path, "wb") as f:
        writer, write_errors = make_file_writer(trt, f)
        built = run_interruptibly(lambda: builder.build_serialized_network_to_stream(network, config, writer), cancel)
    if write_errors:
        raise write_errors[0]
    if not built:
        raise BuildError(f"{flavour.label} could not build the engine: {errors_of(logger, 3)}")
    return BuiltPlan(
        plan=plan_path,
        plan_bytes=plan_path.stat().st_size,
        timing_cache=host_bytes(config.get_timing_cache().serialize()) if flavour.target == "tensorrt" else b"",
        seconds=round(time.perf_counter() - start, 1),
        flags=list(flags),
        strongly_typed=strongly_typed,
        parse_seconds=parse_seconds,
        network_io=network_io(network),
        layers=int(network.num_layers),
        peak_rss_bytes=peak_rss_bytes(),
        device_memory=dict(getattr(logger, "device_memory", {})),
    )


def plan_io(flavour: Flavour, plan: bytes, version_compatible: bool, report: Reporter) -> PlanIO:
    """Name, direction, shape and dtype of every I/O tensor of a serialized plan (needs the GPU it is for)."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = flavour.module

    logger = logger_for(trt, report)
    try:
        runtime = trt.Runtime(logger)
    except TypeError:
        raise BuildError(f"{flavour.label} could not create a runtime ({errors_of(logger, 3)})") from None
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError(f"the new plan does not deserialize: {errors_of(logger, 3)}")
    io = PlanIO([], [])
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = engine.get_tensor_shape(name)
        spec = TensorSpec(name, tuple(int(shape[k]) for k in range(len(shape))),
                          tensorrt_dtype_name(engine.get_tensor_dtype(name).name))
        (io.inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else io.outputs).append(spec)
    return io
