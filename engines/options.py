"""The rules of ptdit-build's options (everything here runs without TensorRT). The options themselves are
ptdit.contract.plan_manifest.BuildOptions: the plan manifest records them and the runtime reads them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ptdit.contract.errors import InputError
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
    WORKSPACE_GIB.check("the workspace (GiB)", options.workspace_gib)
    OPT_LEVEL.check("the optimization level", options.opt_level)
    if options.tiling_level is not None and options.tiling_level not in TILING_LEVELS:
        raise InputError(f"--tiling-level must be one of {', '.join(TILING_LEVELS)}, got {options.tiling_level!r}")
    if options.exclude_lean_runtime and not options.version_compatible:
        raise InputError("--exclude-lean-runtime only applies with --version-compatible")
    if flavour is not None and flavour.target == "rtx":
        name = flavour.label
        if options.fp16_weak:
            raise InputError(f"--fp16-weak is not available with {name}: its networks are always strongly typed, so "
                             f"export an fp16 ONNX (ptdit-export --precision fp16) and build it without --fp16-weak")
        if options.version_compatible:
            raise InputError(f"--version-compatible is not available with {name}: it has no lean runtime "
                             f"(libnvinfer_lean) to embed; drop the option, or build with full TensorRT")
        if options.timing_cache is not None:
            raise InputError(f"--timing-cache is not available with {name}: its timing cache operations are no-ops "
                             f"(the JIT work is kept by the runtime cache at run time instead); drop the option")
        if (options.refittable or options.strip_plan) and not has_gpu:
            option = "--refittable" if options.refittable else "--strip-plan"
            raise InputError(f"{option} needs a GPU with {name}: its refittable plans are compiled with CUDA, and "
                             f"no GPU is visible here; build on the GPU or drop {option}")
    weak_typing = None if flavour is None else flavour.weak_typing
    if options.fp16_weak:
        if weak_typing is False:
            raise InputError("--fp16-weak needs TensorRT 10.x: TensorRT 11 networks are always strongly typed, so "
                             "export an fp16 ONNX (ptdit-export --precision fp16) and build it without --fp16-weak")
        if onnx_precision != "fp32":
            raise InputError(f"--fp16-weak lets TensorRT pick fp16 layers in an fp32 ONNX; this ONNX is "
                             f"{onnx_precision}: build it without --fp16-weak")
        if options.weight_streaming:
            raise InputError("--weight-streaming needs a strongly typed network; drop --fp16-weak")
    elif onnx_precision == "fp32" and not options.allow_fp32:
        weak = " or add --fp16-weak (TensorRT 10.x)" if weak_typing is not False else ""
        raise InputError("this ONNX is fp32 and a strongly typed network keeps it fp32, so the engine would be "
                         "fp32: export fp16 (ptdit-export --precision fp16)" + weak + ", or pass --allow-fp32")
