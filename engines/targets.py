"""The GPUs a plan is built for: the build GPU (full TensorRT) or a list of compute capabilities (TensorRT-RTX,
which compiles ahead of time and needs no GPU to build)."""

from __future__ import annotations

import re
from types import ModuleType
from typing import TYPE_CHECKING

from ptdit.contract.errors import InputError, option
from ptdit.contract.fp8 import FP8, MIN_COMPUTE_CAPABILITY, runs_fp8
from ptdit.contract.plan_manifest import (
    BUILD_GPU_SOURCE,
    OPTION_SOURCE,
    RTX_DEFAULT_SOURCE,
    RTX_FP8_DEFAULT_SOURCE,
    Targets,
)

from .gpu import GpuInfo

if TYPE_CHECKING:
    import tensorrt_rtx

RTX_COMPUTE_CAPABILITIES = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")
# What a TensorRT-RTX plan runs on when no compute capability is set (its documented portable default:
# Ampere and later RTX GPUs and A100, not Turing).
RTX_DEFAULT = ("8.0", "8.6", "8.9", "12.0", "12.1")
RTX_FP8_DEFAULT = tuple(cc for cc in RTX_DEFAULT if runs_fp8(cc))  # an FP8 graph's: Ada and Blackwell
_CC = re.compile(r"^\d{1,2}\.\d$")


def parse_compute_capabilities(values: tuple[str, ...]) -> tuple[str, ...]:
    """--compute-capability 8.6,8.9 (or repeated), or 'current'; normalised, sorted, without duplicates."""
    items = [v.strip() for value in values for v in value.split(",") if v.strip()]
    if "current" in items:
        if len(items) > 1:
            raise InputError(f"{option('compute_capabilities', 'current')} names the visible GPU alone; do not "
                             "combine it with others")
        return ("current",)
    bad = [v for v in items if not _CC.match(v)]
    if bad:
        raise InputError(f"{option('compute_capabilities')} {bad[0]!r} is not MAJOR.MINOR (e.g. 8.9): accepted are "
                         f"{', '.join(RTX_COMPUTE_CAPABILITIES)} or current")
    return tuple(sorted(set(items), key=lambda v: tuple(int(p) for p in v.split("."))))


def resolve(target: str, requested: tuple[str, ...], gpu: GpuInfo | None, precision: str = "fp16") -> Targets:
    """What to build for. Full TensorRT: the visible GPU, nothing else. TensorRT-RTX: the requested compute
    capabilities ('current' = the visible GPU's), or its portable default (an FP8 graph: its FP8-capable part).
    An FP8 graph for a GPU without FP8 is refused here, before TensorRT runs."""
    targets = _resolve(target, requested, gpu, precision)
    if precision == FP8:
        old = [cc for cc in targets.compute_capabilities if not runs_fp8(cc)]
        if old:
            need = ".".join(map(str, MIN_COMPUTE_CAPABILITY))
            raise InputError(f"FP8 needs compute capability {need} or later (Ada, Hopper, Blackwell); "
                             f"{', '.join(old)} has no FP8: build an fp16 export for it, or drop {old[0]}")
    return targets


def _resolve(target: str, requested: tuple[str, ...], gpu: GpuInfo | None, precision: str) -> Targets:
    if target == "tensorrt":
        if requested:
            raise InputError(f"{option('compute_capabilities')} chooses TensorRT-RTX targets; full TensorRT builds "
                             f"for the GPU it runs on (build on that GPU, or use {option('target', 'rtx')})")
        if gpu is None:
            raise InputError("no CUDA GPU is visible: full TensorRT builds on the GPU the engine will run on "
                             f"(TensorRT-RTX builds without one: {option('target', 'rtx')})")
        return Targets((gpu.compute_capability,), BUILD_GPU_SOURCE)
    if not requested:
        if precision == FP8:
            return Targets(RTX_FP8_DEFAULT, RTX_FP8_DEFAULT_SOURCE)
        return Targets(RTX_DEFAULT, RTX_DEFAULT_SOURCE)
    if requested == ("current",):
        if gpu is None:
            raise InputError(f"{option('compute_capabilities', 'current')} needs a visible GPU; name the targets "
                             "instead (e.g. 8.9)")
        requested = (gpu.compute_capability,)
    for cc in requested:
        if cc not in RTX_COMPUTE_CAPABILITIES:
            full = option("target", "tensorrt")
            hopper = f" (Hopper: build with full TensorRT on the GPU, {full})" if cc == "9.0" else ""
            raise InputError(f"TensorRT-RTX cannot build for compute capability {cc}{hopper}: it builds for "
                             f"{', '.join(RTX_COMPUTE_CAPABILITIES)}")
    return Targets(requested, OPTION_SOURCE)


def apply_rtx(config: tensorrt_rtx.IBuilderConfig, trt_module: ModuleType, targets: Targets) -> None:
    """Set TensorRT-RTX's target list (left unset for its portable default)."""
    if targets.source == RTX_DEFAULT_SOURCE:
        return
    config.num_compute_capabilities = len(targets.compute_capabilities)
    for index, cc in enumerate(targets.compute_capabilities):
        member = getattr(trt_module.ComputeCapability, "SM" + cc.replace(".", ""))
        if not config.set_compute_capability(member, index):
            raise InputError(f"TensorRT-RTX {trt_module.__version__} refused compute capability {cc}")

