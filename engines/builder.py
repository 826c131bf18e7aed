"""The TensorRT part of ptdit-build: parse, configure, build, and read back the plan's I/O.

Written against the bindings of TensorRT 10.x, 11.x and TensorRT-RTX 1.x (the module comes from
tensorrt_api.select) and type-checked against stubs of all three (tests/test_trt_conformance.py). Full
TensorRT builds only where a GPU exists; TensorRT-RTX builds anywhere.
"""

from __future__ import annotations

import resource
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, SupportsInt, cast

from .errors import BuildError
from .options import BuildOptions
from .targets import Targets, apply_rtx
from .tensorrt_api import FLAG_NAMES, Flavour, builder_flag, dtype_name, network_flags

if TYPE_CHECKING:
    import tensorrt as trt
    import tensorrt_rtx  # noqa: F401  (named in a cast)

Reporter = Callable[[str], None]
SHOWN_DEPTH = 2  # build phases nested deeper than this are not printed (TensorRT-RTX nests many small ones)


class Interrupted(Exception):
    """Ctrl-C during a build: the progress monitor cancelled it."""


_LOGGERS: dict[str, Any] = {}


def make_logger(trt_module: ModuleType, report: Reporter, verbose: bool = False) -> trt.ILogger:
    """The logger of this process for a TensorRT module, now reporting to `report` with no errors kept yet.
    TensorRT keeps the first logger it is given for the whole process, so there is one per module, reused: it
    keeps the errors and shows warnings."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = trt_module

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []
            self.report: Reporter = report
            self.verbose = verbose

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.Severity.WARNING or self.verbose:
                self.report(f"    [TensorRT] {msg}")

    if trt_module.__name__ not in _LOGGERS:
        _LOGGERS[trt_module.__name__] = Logger()
    logger = _LOGGERS[trt_module.__name__]
    logger.errors.clear()
    logger.report, logger.verbose = report, verbose
    return logger


def run_interruptibly(work: Callable[[], Any], cancel: threading.Event) -> Any:
    """work() in a worker thread, so that Ctrl-C is seen at once while TensorRT builds: Python runs signal
    handlers in the main thread only, and not while it is inside a long native call, so the main thread waits
    in short joins instead. SIGINT sets `cancel`, which also makes the progress monitor stop the build, and
    Interrupted is raised within a poll interval, without waiting for TensorRT to wind down."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as e:  # handed to the waiting thread
            outcome["error"] = e

    worker = threading.Thread(target=target, name="tensorrt-build", daemon=True)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda *_: cancel.set()) if in_main else None
    try:
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            if cancel.is_set():
                raise Interrupted()
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    if cancel.is_set():
        raise Interrupted()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def make_progress_monitor(trt_module: ModuleType, report: Reporter) -> tuple[trt.IProgressMonitor, threading.Event]:
    """TensorRT's build phases as indented lines with their step counts; setting the returned event (Ctrl-C)
    makes the next step report cancel the build."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = trt_module

    cancel = threading.Event()

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[int, int, float]] = {}  # name -> (depth, steps, start)
            self._last_step_report = 0.0

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: SupportsInt) -> None:
            with self._lock:
                depth = self._phases[parent_phase][0] + 1 if parent_phase in self._phases else 0
                self._phases[phase_name] = (depth, int(num_steps), time.perf_counter())
                if depth <= SHOWN_DEPTH:
                    report(f"    {'  ' * depth}{phase_name} ({num_steps} steps)")

        def step_complete(self, phase_name: str, step: SupportsInt) -> bool:
            with self._lock:
                now = time.perf_counter()
                if phase_name in self._phases and now - self._last_step_report > 5.0:
                    depth, steps, _ = self._phases[phase_name]
                    report(f"    {'  ' * depth}  {phase_name}: {int(step) + 1}/{steps}")
                    self._last_step_report = now
            return not cancel.is_set()

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                depth, _, start = self._phases.pop(phase_name, (0, 0, time.perf_counter()))
                if depth <= SHOWN_DEPTH:
                    report(f"    {'  ' * depth}{phase_name}: done in {time.perf_counter() - start:.1f} s")

    return Monitor(), cancel


@dataclass
class BuiltPlan:
    plan: Path
    plan_bytes: int
    timing_cache: bytes
    seconds: float
    flags: list[str]
    strongly_typed: bool
    parse_seconds: float
    network_io: list[dict[str, Any]]  # the parsed network's I/O: what the plan must have
    layers: int
    peak_rss_bytes: int  # of this process, so far


def tensor_io(tensor: trt.ITensor, mode: str) -> dict[str, Any]:
    shape = tensor.shape
    return {"name": tensor.name, "mode": mode, "shape": [int(shape[k]) for k in range(len(shape))],
            "dtype": dtype_name(tensor.dtype)}


def network_io(network: trt.INetworkDefinition) -> list[dict[str, Any]]:
    return ([tensor_io(network.get_input(i), "input") for i in range(network.num_inputs)] +
            [tensor_io(network.get_output(i), "output") for i in range(network.num_outputs)])


def peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def _errors(logger: trt.ILogger) -> str:
    errors: list[str] = getattr(logger, "errors", [])
    return "; ".join(errors[-3:]) or "no error was logged"


def make_file_writer(trt_module: ModuleType, f: BinaryIO) -> trt.IStreamWriter:
    """Streams the serialized plan into `f` as TensorRT produces it: the plan is never held in memory."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = trt_module

    class FileWriter(trt.IStreamWriter):
        def __init__(self) -> None:
            trt.IStreamWriter.__init__(self)

        def write(self, data: Any, size: Any = None) -> int:
            try:
                return f.write(data)
            except (ValueError, OSError):  # closed after Ctrl-C, or the disk is full: a short write stops TensorRT
                return 0

    return FileWriter()


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

    logger = make_logger(trt, report)  # no plugin library: the graph holds standard ONNX operators only
    try:
        builder = trt.Builder(logger)
    except TypeError:
        raise BuildError(f"{flavour.label} could not create a builder ({_errors(logger)}); check the driver and "
                         f"GPU") from None
    strongly_typed = not options.fp16_weak
    network = builder.create_network(network_flags(trt, strongly_typed))
    parser = trt.OnnxParser(network, logger)
    report(f"  parse {onnx_path.name} ({'strongly typed' if strongly_typed else 'weakly typed, fp16 allowed'})")
    parse_start = time.perf_counter()
    if not parser.parse_from_file(str(onnx_path)):
        problems = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise BuildError(f"{flavour.label}'s ONNX parser rejected {onnx_path.name}: {problems or _errors(logger)}")
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
        cache_bytes = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.exists() else b""
        if not config.set_timing_cache(config.create_timing_cache(cache_bytes), False):
            report(f"  the timing cache {options.timing_cache} was rejected (made by another TensorRT or GPU, or "
                   f"corrupt): building with a new one, which replaces it")
            if not config.set_timing_cache(config.create_timing_cache(b""), False):
                raise BuildError(f"{flavour.label} refused a new timing cache: {_errors(logger)}")
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
        writer = make_file_writer(trt, f)
        built = run_interruptibly(lambda: builder.build_serialized_network_to_stream(network, config, writer), cancel)
    if not built:
        raise BuildError(f"{flavour.label} could not build the engine: {_errors(logger)}")
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
    )


def plan_io(flavour: Flavour, plan: bytes, version_compatible: bool, report: Reporter) -> list[dict[str, Any]]:
    """Name, direction, shape and dtype of every I/O tensor of a serialized plan (needs the GPU it is for)."""
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = flavour.module

    logger = make_logger(trt, report)
    try:
        runtime = trt.Runtime(logger)
    except TypeError:
        raise BuildError(f"{flavour.label} could not create a runtime ({_errors(logger)})") from None
    if version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BuildError(f"the new plan does not deserialize: {_errors(logger)}")
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        shape = engine.get_tensor_shape(name)
        io.append({"name": name, "mode": "input" if is_input else "output",
                   "shape": [int(shape[k]) for k in range(len(shape))],
                   "dtype": dtype_name(engine.get_tensor_dtype(name))})
    return io
