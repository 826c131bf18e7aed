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

from engines import builder, progress
from engines import tensorrt_api as api
from engines.errors import BuildError
from engines.targets import apply_rtx
from ptdit.contract.dtypes import tensorrt_dtype_name
from ptdit.contract.errors import InputError
from ptdit.contract.onnx_manifest import BlockOutputs, ExportInfo, ModelInfo, Weights
from ptdit.contract.plan_manifest import (
    BuilderInfo,
    BuildOptions,
    BuildRecord,
    PlanFile,
    PlanManifest,
    PlanSource,
    Targets,
)
from ptdit.contract.tensorrt import logger_for


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

    monitor, cancel = progress.make_progress_monitor(trt, lines.append)
    result["monitor_is_progress_monitor"] = isinstance(monitor, trt.IProgressMonitor)
    monitor.phase_start("Building engine", None, 3)
    monitor.phase_start("Tactic selection", "Building engine", 10)
    result["step_before_cancel"] = monitor.step_complete("Tactic selection", 0)
    cancel.set()
    result["step_after_cancel"] = monitor.step_complete("Tactic selection", 1)
    monitor.phase_finish("Tactic selection")
    monitor.phase_finish("Building engine")

    logger = logger_for(trt, lines.append)
    result["logger_is_ilogger"] = isinstance(logger, trt.ILogger)
    logger.log(trt.ILogger.Severity.ERROR, "an error")
    logger.log(trt.ILogger.Severity.WARNING, "a warning")
    logger.log(trt.ILogger.Severity.VERBOSE, "verbose detail")
    result["logged_errors"] = list(logger.errors)  # a copy: later builds reuse (and clear) the logger

    members = trt.DataType.__members__.items()
    result["dtype_names"] = {name: tensorrt_dtype_name(member.name) for name, member in members}
    if flavour.ahead_of_time:
        targets = Targets(("8.6", "8.9"), "--compute-capability")
        result["compute_capabilities"] = rtx_targets(flavour.module, targets)
    else:
        targets = Targets(("9.0",), "build GPU")
    with open(Path(onnx_path).with_name("writer.bin"), "wb") as f:
        writer, _ = progress.make_file_writer(trt, f)
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
    config = module.Builder(logger_for(module, lambda _: None)).create_builder_config()
    apply_rtx(config, module, targets)
    return [config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)]


def runtime_probe(onnx_path: str, target: str) -> dict[str, object]:
    """The runtime's TensorRT loader with the module each kind of plan selects, up to creating the runtime (full
    TensorRT on stand-ins) or deserializing the plan (TensorRT-RTX). The GPU query is stood in for: there is none."""
    from ptdit.contract.errors import InputError as RuntimeInputError
    from runtime.artifact import Artifact
    from runtime.backends.tensorrt import cuda
    from runtime.backends.tensorrt.engine import TensorRTEngine
    from runtime.backends.tensorrt.flavour import TensorRTOptions, import_runtime_module
    from runtime.errors import RuntimeFailure

    cuda.current_device = lambda: cuda.Device(0, "probe GPU", "9.0")  # type: ignore[assignment]
    probe: dict[str, object] = {"full": import_runtime_module(target, False).__name__}
    kinds = ["full", "lean"] if target == "tensorrt" else ["full"]
    for name in kinds:
        saved = sys.modules.get("tensorrt")
        if name == "lean":
            sys.modules.pop("tensorrt")
            sys.modules["tensorrt"] = None  # type: ignore[assignment]  # as if only tensorrt_lean were installed
            try:
                import_runtime_module(target, False)
            except RuntimeInputError as e:
                probe["lean_only_non_vc"] = str(e)
        module = import_runtime_module(target, name == "lean")
        artifact = Artifact(Path(onnx_path), plan_manifest(target, module.__version__, name == "lean"))
        try:
            TensorRTEngine(artifact, TensorRTOptions()).close()
            probe[name] = [module.__name__, "opened"]
        except (RuntimeFailure, RuntimeInputError) as e:
            probe[name] = [module.__name__, str(e)]
        finally:
            if name == "lean":
                sys.modules["tensorrt"] = saved  # type: ignore[assignment]
    return probe


def plan_manifest(target: str, version: str, version_compatible: bool) -> PlanManifest:
    """The manifest of a plan with no I/O, built by `version` of `target`'s TensorRT for compute capability 9.0."""
    return PlanManifest(
        plan=PlanFile("m.onnx", "", 0), onnx=PlanSource("m.onnx", "", ""),
        builder=BuilderInfo(target, "", version, True), targets=Targets(("9.0",), "build GPU"), build_gpu=None,
        build=BuildRecord([], BuildOptions(version_compatible=version_compatible), 0.0, 0.0, 0, 0, "", {}),
        precision="fp16", inputs=[], outputs=[], model=ModelInfo({}, 0, Weights("seeded")),
        export=ExportInfo("fp16", 1, 18, None, "", {}), geometry=None,
        block_outputs=BlockOutputs([]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "tensorrt")
