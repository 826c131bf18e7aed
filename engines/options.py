"""The rules of ptdit-build's options (everything here runs without TensorRT). The options themselves are
ptdit.contract.plan_manifest.BuildOptions: the plan manifest records them and the runtime reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import Range
from ptdit.contract.plan_manifest import BuildOptions

if TYPE_CHECKING:
    from .tensorrt_api import Flavour

TILING_LEVELS = ("none", "fast", "moderate", "full")  # TilingOptimizationLevel members, lower case
WORKSPACE_GIB = Range(0, 4096, low_open=True)
OPT_LEVEL = Range(0, 5, integer=True)


def validate(options: BuildOptions, onnx_precision: str, flavour: Flavour | None = None, has_gpu: bool = True) -> None:
    """Option conflicts, and the rules of the TensorRT in use (None: not loaded yet, only what holds for all):
    weakly typed fp16 exists on 10.x alone (BuilderFlag.FP16); TensorRT-RTX has no lean runtime and refits
    only with a GPU."""
    WORKSPACE_GIB.check(option("workspace_gib"), options.workspace_gib)
    OPT_LEVEL.check(option("opt_level"), options.opt_level)
    if options.tiling_level is not None and options.tiling_level not in TILING_LEVELS:
        raise InputError(f"{option('tiling_level')} must be one of {', '.join(TILING_LEVELS)}, got "
                         f"{options.tiling_level!r}")
    if options.exclude_lean_runtime and not options.version_compatible:
        raise InputError(f"{option('exclude_lean_runtime')} only applies with {option('version_compatible')}")
    weak = option("fp16_weak")
    if flavour is not None and flavour.target == "rtx":
        name = flavour.label
        if options.fp16_weak:
            raise InputError(f"{weak} is not available with {name}: its networks are always strongly typed, so export "
                             f"an fp16 ONNX (ptdit-export --precision fp16) and build it without {weak}")
        if options.version_compatible:
            raise InputError(f"{option('version_compatible')} is not available with {name}: it has no lean runtime "
                             f"(libnvinfer_lean) to embed; drop the option, or build with full TensorRT")
        if options.timing_cache is not None:
            raise InputError(f"{option('timing_cache')} is not available with {name}: its timing cache operations "
                             f"are no-ops (the JIT work is kept by the runtime cache at run time instead); drop the "
                             f"option")
        if (options.refittable or options.strip_plan) and not has_gpu:
            flag = option("refittable" if options.refittable else "strip_plan")
            raise InputError(f"{flag} needs a GPU with {name}: its refittable plans are compiled with CUDA, and "
                             f"no GPU is visible here; build on the GPU or drop {flag}")
    weak_typing = None if flavour is None else flavour.weak_typing
    if options.fp16_weak:
        if weak_typing is False:
            raise InputError(f"{weak} needs TensorRT 10.x: TensorRT 11 networks are always strongly typed, so export "
                             f"an fp16 ONNX (ptdit-export --precision fp16) and build it without {weak}")
        if onnx_precision != "fp32":
            raise InputError(f"{weak} lets TensorRT pick fp16 layers in an fp32 ONNX; this ONNX is {onnx_precision}: "
                             f"build it without {weak}")
        if options.weight_streaming:
            raise InputError(f"{option('weight_streaming')} needs a strongly typed network; drop {weak}")
    elif onnx_precision == "fp32" and not options.allow_fp32:
        add_weak = f" or add {option('fp16_weak', True)} (TensorRT 10.x)" if weak_typing is not False else ""
        raise InputError(f"this ONNX is fp32 and a strongly typed network keeps it fp32, so the engine would be fp32: "
                         f"export fp16 (ptdit-export --precision fp16){add_weak}, or pass {option('allow_fp32', True)}")
