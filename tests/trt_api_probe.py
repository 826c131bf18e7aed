"""API-level probe of the engines stage against real TensorRT bindings imported with stand-in libraries
(see trt_stubs.py): enums, flag selection, the logger and progress-monitor subclasses, and the build path up
to the point where a real TensorRT library is needed. Run by test_trt_conformance.py in a subprocess;
prints JSON. It proves API usage, not behaviour: no engine is built.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import tensorrt as trt

from engines import builder
from engines import tensorrt_api as api
from engines.errors import BuildError, InputError
from engines.options import BuildOptions


def main(onnx_path: str) -> None:
    lines: list[str] = []
    result: dict[str, object] = {"version": trt.__version__, "major": api.major()}
    result["weak_typing"] = api.has_weak_typing()
    result["network_flags"] = api.network_flags(True)
    result["strongly_typed_bit"] = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    flags: dict[str, object] = {}
    for option in api.FLAG_NAMES:
        try:
            flag = api.builder_flag(option)
            assert flag == getattr(trt.BuilderFlag, api.FLAG_NAMES[option])
            flags[option] = [api.FLAG_NAMES[option], int(flag)]
        except InputError as e:
            flags[option] = str(e)
    result["flags"] = flags

    monitor, cancel = builder.make_progress_monitor(lines.append)
    result["monitor_is_progress_monitor"] = isinstance(monitor, trt.IProgressMonitor)
    monitor.phase_start("Building engine", None, 3)
    monitor.phase_start("Tactic selection", "Building engine", 10)
    result["step_before_cancel"] = monitor.step_complete("Tactic selection", 0)
    cancel.set()
    result["step_after_cancel"] = monitor.step_complete("Tactic selection", 1)
    monitor.phase_finish("Tactic selection")
    monitor.phase_finish("Building engine")

    logger = builder.make_logger(lines.append)
    result["logger_is_ilogger"] = isinstance(logger, trt.ILogger)
    logger.log(trt.ILogger.Severity.ERROR, "an error")
    logger.log(trt.ILogger.Severity.WARNING, "a warning")
    logger.log(trt.ILogger.Severity.VERBOSE, "verbose detail")
    result["logged_errors"] = getattr(logger, "errors")

    result["dtype_names"] = {name: api.dtype_name(member) for name, member in trt.DataType.__members__.items()}
    try:
        builder.build_plan(Path(onnx_path), BuildOptions(allow_fp32=True), [], lines.append)
        result["build"] = "built"
    except BuildError as e:
        result["build"] = str(e)
    result["lines"] = lines
    result["runtime"] = runtime_probe(onnx_path)
    print(json.dumps(result))


def runtime_probe(onnx_path: str) -> dict[str, object]:
    """The runtime's TensorRT session with the full and the lean bindings, up to creating trt.Runtime."""
    from runtime.artifact import Artifact
    from runtime.backend_tensorrt import TensorRTSession, import_runtime_module
    from runtime.errors import InputError as RuntimeInputError
    from runtime.errors import RuntimeFailure

    probe: dict[str, object] = {"full": import_runtime_module(False).__name__}
    artifact = Artifact(Path(onnx_path), {"inputs": [], "outputs": []})
    for name in ("full", "lean"):
        module = import_runtime_module(name == "lean")
        if name == "lean":
            saved = sys.modules.pop("tensorrt")
            sys.modules["tensorrt"] = None  # type: ignore[assignment]  # as if only tensorrt_lean were installed
            module = import_runtime_module(True)
            try:
                import_runtime_module(False)
            except RuntimeInputError as e:
                probe["lean_only_non_vc"] = str(e)
            sys.modules["tensorrt"] = saved
        session = object.__new__(TensorRTSession)
        session._resources = []
        try:
            session._open(module, artifact, vc=name == "lean")
        except RuntimeFailure as e:
            probe[name] = [module.__name__, str(e)]
    return probe


if __name__ == "__main__":
    main(sys.argv[1])
