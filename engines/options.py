"""ptdit-build's options, declared once (`BUILD`: the command's flags, build_engine's keywords and the check of
each value come from it), and the rules between them (everything here runs without TensorRT). What is built with
is ptdit.contract.plan_manifest.BuildOptions: the plan manifest records it and the runtime reads it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ptdit.contract.errors import InputError, option
from ptdit.contract.numbers import Range
from ptdit.contract.options import Option, Options
from ptdit.contract.plan_manifest import BuildOptions
from ptdit.contract.tensorrt import BUILD_TARGETS

if TYPE_CHECKING:
    from .tensorrt_api import Flavour

TILING_LEVELS = ("none", "fast", "moderate", "full")  # TilingOptimizationLevel members, lower case
WORKSPACE_GIB = Range(0, 4096, low_open=True)
OPT_LEVEL = Range(0, 5, integer=True)
DEFAULTS = BuildOptions()
PathLike = str | Path | None

BUILD = Options(
    Option("target", str, "auto", "tensorrt: full TensorRT 10.x/11.x, builds on the GPU the plan is for; rtx: "
           "TensorRT-RTX, builds without a GPU; auto: full TensorRT when installed, else TensorRT-RTX.",
           choices=BUILD_TARGETS, show_default=True),
    Option("compute_capabilities", str | Sequence[str], (), "TensorRT-RTX targets, e.g. 8.9 or 8.6,12.0, or "
           "'current' (the visible GPU) [default: RTX's portable set 8.0, 8.6, 8.9, 12.x; an FP8 ONNX: 8.9, 12.0, "
           "12.1, as FP8 needs 8.9 or later].", flag="--compute-capability", multiple=True, metavar="CC[,CC...]"),
    Option("out_dir", PathLike, None, "Output directory [default: next to the ONNX].", flag="--out", kind="folder"),
    Option("workspace_gib", float, DEFAULTS.workspace_gib, "Builder workspace limit, GiB.", flag="--workspace",
           accepted=WORKSPACE_GIB, show_default=True),
    Option("opt_level", int, DEFAULTS.opt_level, "Builder optimization level 0-5.", accepted=OPT_LEVEL,
           show_default=True),
    Option("tiling_level", str | None, None, "Tiling optimization level [default: the builder's].",
           choices=TILING_LEVELS),
    Option("timing_cache", PathLike, None, "Timing cache file, loaded if present and saved after the build.",
           kind="file"),
    Option("version_compatible", bool, False, "Plan that later TensorRT versions can run."),
    Option("exclude_lean_runtime", bool, False, "With --version-compatible: leave the lean runtime out."),
    Option("refittable", bool, False, "Weights can be refit without a rebuild."),
    Option("strip_plan", bool, False, "Weightless plan (refit from the ONNX at load time)."),
    Option("weight_streaming", bool, False, "Allow streaming weights from host memory."),
    Option("fp16_weak", bool, False, "TensorRT 10.x only: weakly typed fp16 from an fp32 ONNX."),
    Option("allow_fp32", bool, False, "Build an fp32 ONNX as an fp32 engine instead of refusing it."),
    Option("mark_blocks", bool, False, "Also output every block's tensor (diagnostic plan for ptdit-diff)."),
    Option("triton_repo", PathLike, None, "Also write a Triton Inference Server model repository here (its model of "
           "this plan is replaced; written also when the plan is up to date).", kind="folder"),
    Option("force", bool, False, "Rebuild even if a plan is there (stale or current)."),
)


def build_options(values: Mapping[str, Any]) -> BuildOptions:
    """What the plan is built with, from the declared options' values (of build_engine or ptdit-build)."""
    timing_cache = values["timing_cache"]
    return BuildOptions(**{name: values[name] for name in BuildOptions.__dataclass_fields__ if name != "timing_cache"},
                        timing_cache=Path(timing_cache) if timing_cache is not None else None)


def validate(options: BuildOptions, onnx_precision: str, flavour: Flavour | None = None, has_gpu: bool = True) -> None:
    """Option conflicts, and the rules of the TensorRT in use (None: not loaded yet, only what holds for all):
    weakly typed fp16 exists on 10.x alone (BuilderFlag.FP16); TensorRT-RTX has no lean runtime and refits
    only with a GPU."""
    BUILD.check({name: getattr(options, name) for name in ("workspace_gib", "opt_level", "tiling_level")})
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
