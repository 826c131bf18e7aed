"""API-level probe of the engines stage and the runtime session against real TensorRT bindings: full TensorRT
imported with stand-in libraries (see trt_stubs.py), or the real TensorRT-RTX, which imports without a GPU.
Enums, flag selection, the logger and progress-monitor subclasses, and the build and runtime paths up to the
point where a GPU (or, with stand-ins, a real TensorRT library) is needed. Run by test_trt_conformance.py in
a subprocess; prints JSON. It proves API usage, not behaviour: no engine is built.

    python tests/trt_api_probe.py ONNX_PATH [tensorrt|rtx]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from engines import builder
from engines import tensorrt_api as api
from engines.errors import BuildError, InputError
from engines.options import BuildOptions
from engines.targets import Targets, apply_rtx


def main(onnx_path: str, target: str) -> None:
    flavour = api.select(target)
    if TYPE_CHECKING:
        import tensorrt as trt
    else:
        trt = flavour.module
    lines: list[str] = []
    result: dict[str, object] = {"module": flavour.module.__name__, "version": trt.__version__,
                                 "major": flavour.major, "label": flavour.label, "plan_tag": flavour.plan_tag}
    result["weak_typing"] = flavour.weak_typing
    result["network_flags"] = api.network_flags(trt, True)
    result["strongly_typed_bit"] = int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    flags: dict[str, object] = {}
    for option in api.FLAG_NAMES:
        try:
            flag = api.builder_flag(trt, option)
            assert flag == getattr(trt.BuilderFlag, api.FLAG_NAMES[option])
            flags[option] = [api.FLAG_NAMES[option], int(flag)]
        except InputError as e:
            flags[option] = str(e)
    result["flags"] = flags

    monitor, cancel = builder.make_progress_monitor(trt, lines.append)
    result["monitor_is_progress_monitor"] = isinstance(monitor, trt.IProgressMonitor)
    monitor.phase_start("Building engine", None, 3)
    monitor.phase_start("Tactic selection", "Building engine", 10)
    result["step_before_cancel"] = monitor.step_complete("Tactic selection", 0)
    cancel.set()
    result["step_after_cancel"] = monitor.step_complete("Tactic selection", 1)
    monitor.phase_finish("Tactic selection")
    monitor.phase_finish("Building engine")

    logger = builder.make_logger(trt, lines.append)
    result["logger_is_ilogger"] = isinstance(logger, trt.ILogger)
    logger.log(trt.ILogger.Severity.ERROR, "an error")
    logger.log(trt.ILogger.Severity.WARNING, "a warning")
    logger.log(trt.ILogger.Severity.VERBOSE, "verbose detail")
    result["logged_errors"] = list(getattr(logger, "errors"))  # a copy: later builds reuse (and clear) the logger

    result["dtype_names"] = {name: api.dtype_name(member) for name, member in trt.DataType.__members__.items()}
    if flavour.ahead_of_time:
        targets = Targets(("8.6", "8.9"), "--compute-capability")
        result["compute_capabilities"] = rtx_targets(flavour.module, targets)
    else:
        targets = Targets(("9.0",), "build GPU")
    with open(Path(onnx_path).with_name("writer.bin"), "wb") as f:
        writer = builder.make_file_writer(trt, f)
        result["writer_is_stream_writer"] = isinstance(writer, trt.IStreamWriter)
        result["writer_wrote"] = writer.write(b"abc")
    plan_path = Path(onnx_path).with_suffix(".plan")
    try:
        builder.build_plan(flavour, Path(onnx_path), BuildOptions(allow_fp32=True), targets, [], plan_path=plan_path,
                           report=lines.append)
        result["build"] = "built"
    except BuildError as e:
        result["build"] = str(e)
    result["lines"] = lines
    result["runtime"] = runtime_probe(onnx_path, flavour.target)
    print(json.dumps(result))


def rtx_targets(module: ModuleType, targets: Targets) -> list[str]:
    """apply_rtx on a real TensorRT-RTX builder config (its builder needs no GPU): the members it set."""
    config = module.Builder(builder.make_logger(module, lambda _: None)).create_builder_config()
    apply_rtx(config, module, targets)
    return [config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)]


def runtime_probe(onnx_path: str, target: str) -> dict[str, object]:
    """The runtime's TensorRT session with the module each kind of plan selects, up to creating the runtime (full
    TensorRT on stand-ins) or deserializing the plan (TensorRT-RTX)."""
    from runtime.artifact import Artifact
    from runtime.backend_tensorrt import TensorRTSession, logger_for
    from runtime.errors import InputError as RuntimeInputError
    from runtime.errors import RuntimeFailure
    from runtime.tensorrt_flavour import import_runtime_module

    def manifest(vc: bool) -> dict[str, object]:
        return {"builder": {"target": target}, "build": {"options": {"version_compatible": vc}},
                "inputs": [], "outputs": []}

    probe: dict[str, object] = {"full": import_runtime_module(manifest(False)).__name__}
    kinds = ["full", "lean"] if target == "tensorrt" else ["full"]
    for name in kinds:
        module = import_runtime_module(manifest(name == "lean"))
        if name == "lean":
            saved = sys.modules.pop("tensorrt")
            sys.modules["tensorrt"] = None  # type: ignore[assignment]  # as if only tensorrt_lean were installed
            module = import_runtime_module(manifest(True))
            try:
                import_runtime_module(manifest(False))
            except RuntimeInputError as e:
                probe["lean_only_non_vc"] = str(e)
            sys.modules["tensorrt"] = saved
        artifact = Artifact(Path(onnx_path), manifest(name == "lean"))
        session = object.__new__(TensorRTSession)  # past __init__'s device check: there is no GPU here
        session._resources, session._logger, session.backend = [], logger_for(module), ""
        session.runtime_cache_dir, session.runtime_cache = None, None
        try:
            session._open(module, artifact, None, None)
            probe[name] = [module.__name__, "opened"]
        except (RuntimeFailure, RuntimeInputError) as e:
            probe[name] = [module.__name__, str(e)]
    return probe


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tensorrt")
