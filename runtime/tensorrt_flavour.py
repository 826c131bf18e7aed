"""The one place of the runtime that decides which TensorRT runs a plan, and whether it can run it here.

A plan's manifest says what built it: full TensorRT (run with `tensorrt`, or the small `tensorrt_lean` runtime
for version-compatible plans) or TensorRT-RTX (run with `tensorrt_rtx`, which JIT-compiles the plan's kernels
for the GPU at first use and keeps them in a runtime cache). Modules are imported here, lazily.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from .errors import InputError

TRT_INSTALL_HINT = ("pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13 (or tensorrt-lean-cu13 "
                    "for version-compatible plans; tensorrt-cu12 for TensorRT 10.x)")
RTX_INSTALL_HINT = "pip install tensorrt-rtx-cu13"
RTX_DEFAULT_SOURCE = "TensorRT-RTX default"


@dataclass(frozen=True)
class TensorRTOptions:
    """What a TensorRT plan may need from the run (the other backends ignore it)."""

    runtime_cache_dir: Path | None = None  # TensorRT-RTX: where the JIT runtime cache is kept (default: next to the plan)
    lean_runtime: Path | None = None  # version-compatible plans built with --exclude-lean-runtime need it loaded
    weight_budget: int | None = None  # bytes of weights kept on the GPU, for plans built with --weight-streaming


def target_of(manifest: dict[str, Any]) -> str:
    return str(manifest["builder"]["target"])


def is_version_compatible(manifest: dict[str, Any]) -> bool:
    return bool(manifest["build"]["options"].get("version_compatible"))


def _try(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def import_runtime_module(manifest: dict[str, Any]) -> ModuleType:
    """tensorrt_rtx for a TensorRT-RTX plan; tensorrt, or for a version-compatible plan the lean runtime
    when the full one is absent."""
    if target_of(manifest) == "rtx":
        module = _try("tensorrt_rtx")
        if module is None:
            raise InputError(f"this plan was built with TensorRT-RTX, which is not installed: {RTX_INSTALL_HINT}")
        return module
    module = _try("tensorrt")
    if module is None and is_version_compatible(manifest):
        module = _try("tensorrt_lean")
    if module is None:
        raise InputError(f"TensorRT is not installed: {TRT_INSTALL_HINT}")
    return module


def onnx_of(artifact: Any) -> Path:
    """The ONNX a plan was built from, next to it (a weightless plan takes its weights from there)."""
    path = artifact.path.with_name(artifact.manifest["onnx"]["file"])
    if not path.is_file():
        raise InputError(f"{artifact.path.name} is weightless (built with --strip-plan) and is refit from the ONNX it "
                         f"was built from at load, but {path} is missing: keep {path.name} (and its .data) next to "
                         f"the plan")
    return path


def check_runnable(artifact: Any, lean_runtime: Path | None, weight_budget: int | None) -> None:
    """What the plan needs from this run, checked before any TensorRT or CUDA work."""
    manifest = artifact.manifest
    options = manifest["build"]["options"]
    excluded_lean = bool(options.get("version_compatible")) and bool(options.get("exclude_lean_runtime"))
    if excluded_lean and lean_runtime is None:
        built = str(manifest["builder"]["version"])
        raise InputError(f"{artifact.path.name} is version-compatible but was built with --exclude-lean-runtime: it "
                         f"runs only with the lean runtime of the TensorRT that built it ({built}) loaded: pass "
                         f"--lean-runtime /path/to/libnvinfer_lean.so.{built.split('.')[0]}, or rebuild the plan "
                         f"without --exclude-lean-runtime")
    if lean_runtime is not None:
        if not excluded_lean:
            raise InputError("--lean-runtime is for version-compatible plans built with --exclude-lean-runtime; this "
                             "plan has what it needs: drop the option")
        if not lean_runtime.is_file():
            raise InputError(f"--lean-runtime {lean_runtime} does not exist")
    if weight_budget is not None:
        if not options.get("weight_streaming"):
            raise InputError(f"--weight-budget needs a plan built with --weight-streaming; {artifact.path.name} keeps "
                             f"all its weights on the GPU: rebuild it with ptdit-build --weight-streaming")
        if weight_budget <= 0:
            raise InputError(f"--weight-budget must be a positive number of bytes, got {weight_budget}")
    if options.get("strip_plan"):
        onnx_of(artifact)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def runs_on(targets: dict[str, Any], compute_capability: str) -> bool:
    """Whether a plan built for `targets` (the manifest's section) runs on this compute capability.
    TensorRT-RTX's portable default also covers GPUs newer than those it lists."""
    if compute_capability in targets["compute_capabilities"]:
        return True
    return targets["source"] == RTX_DEFAULT_SOURCE and _version(compute_capability) >= (12, 0)


def check_compatible(manifest: dict[str, Any], running_version: str, device_name: str,
                     compute_capability: str) -> None:
    """Refuse, before deserializing, a plan built by another TensorRT version or for other GPUs."""
    built = manifest["builder"]["version"]
    built_v, running_v = _version(built), _version(running_version)
    vc = is_version_compatible(manifest)
    # A version-compatible plan runs on the same or a later TensorRT, across one major (10.x -> 11.x).
    ok = (built_v <= running_v and running_v[0] - built_v[0] <= 1) if vc else built_v == running_v
    builder = "TensorRT-RTX" if target_of(manifest) == "rtx" else "TensorRT"
    if not ok:
        kind = "version-compatible plan" if vc else "plan"
        raise InputError(f"this {kind} was built with {builder} {built}; this machine runs {builder} "
                         f"{running_version}: rebuild it here with ptdit-build")
    targets = manifest["targets"]
    if not runs_on(targets, compute_capability):
        built_for = ", ".join(targets["compute_capabilities"])
        raise InputError(f"this plan was built for compute capability {built_for}; this GPU is {device_name} "
                         f"({compute_capability}): rebuild it for this GPU with ptdit-build")
