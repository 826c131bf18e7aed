"""The one place of the runtime that decides which TensorRT runs a plan, and whether it can run it here.

A plan's manifest says what built it: full TensorRT (run with `tensorrt`, or the small `tensorrt_lean` runtime
for version-compatible plans) or TensorRT-RTX (run with `tensorrt_rtx`, which JIT-compiles the plan's kernels
for the GPU at first use and keeps them in a runtime cache). Modules are imported here, lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Mapping

from ptdit.contract.errors import InputError, option
from ptdit.contract.plan_manifest import RTX_DEFAULT_SOURCE, BuilderInfo, BuildOptions, Targets
from ptdit.contract.tensorrt import FLAVOURS, import_flavour

from ...artifact import Artifact
from ...run_options import TENSORRT_RUN


@dataclass(frozen=True)
class TensorRTOptions:
    """What a TensorRT plan may need from the run (the other backends ignore it)."""

    runtime_cache_dir: Path | None = None  # TensorRT-RTX: where the JIT runtime cache is kept (default: by the plan)
    lean_runtime: Path | None = None  # version-compatible plans built with --exclude-lean-runtime need it loaded
    weight_budget: int | None = None  # bytes of weights kept on the GPU, for plans built with --weight-streaming

    def __post_init__(self) -> None:
        TENSORRT_RUN.check({"weight_budget": self.weight_budget})

    @classmethod
    def of(cls, values: Mapping[str, Any]) -> TensorRTOptions:
        """From the declared options' values (run_options.TENSORRT_RUN): paths as str or Path."""
        def path(name: str) -> Path | None:
            return Path(values[name]) if values.get(name) is not None else None

        return cls(path("runtime_cache_dir"), path("lean_runtime"), values.get("weight_budget"))

    def given(self) -> list[str]:
        """What was set, in words (for the refusal of options given to another backend)."""
        words = {"runtime_cache_dir": "a runtime cache directory", "lean_runtime": "a lean runtime",
                 "weight_budget": "a weight budget"}
        return [words[name] for name in words if getattr(self, name) is not None]


def import_runtime_module(target: str, version_compatible: bool) -> ModuleType:
    """tensorrt_rtx for a TensorRT-RTX plan; tensorrt, or for a version-compatible plan the lean runtime
    when the full one is absent."""
    if target == "rtx":
        module = import_flavour("rtx")
        if module is None:
            raise InputError(f"this plan was built with TensorRT-RTX, which is not installed: "
                             f"{FLAVOURS['rtx'].install}")
        return module
    module = import_flavour("tensorrt")
    if module is None and version_compatible:
        module = import_flavour("lean")
    if module is None:
        raise InputError(f"TensorRT is not installed: {FLAVOURS['tensorrt'].install}")
    return module


def onnx_of(artifact: Artifact) -> Path:
    """The ONNX a plan was built from, next to it (a weightless plan takes its weights from there)."""
    path = artifact.path.with_name(artifact.plan.onnx.file)
    if not path.is_file():
        raise InputError(f"{artifact.path.name} is weightless (built with --strip-plan) and is refit from the ONNX it "
                         f"was built from at load, but {path} is missing: keep {path.name} (and its weights file) "
                         f"next to the plan")
    return path


def check_runnable(artifact: Artifact, lean_runtime: Path | None, weight_budget: int | None) -> None:
    """What the plan needs from this run, checked before any TensorRT or CUDA work."""
    plan = artifact.plan
    options = plan.build.options
    excluded_lean = options.version_compatible and options.exclude_lean_runtime
    if excluded_lean and lean_runtime is None:
        built = plan.builder.version
        raise InputError(f"{artifact.path.name} is version-compatible but was built with --exclude-lean-runtime: it "
                         f"runs only with the lean runtime of the TensorRT that built it ({built}) loaded: pass "
                         f"{option('lean_runtime', '/path/to/libnvinfer_lean.so.' + built.split('.')[0])}, or rebuild "
                         f"the plan "
                         f"without --exclude-lean-runtime")
    if lean_runtime is not None:
        if not excluded_lean:
            raise InputError(f"{option('lean_runtime')} is for version-compatible plans built with "
                             f"--exclude-lean-runtime; this plan has what it needs: drop the option")
        if not lean_runtime.is_file():
            raise InputError(f"{option('lean_runtime')} {lean_runtime} does not exist")
    if weight_budget is not None:
        if not options.weight_streaming:
            raise InputError(f"{option('weight_budget')} needs a plan built with --weight-streaming; "
                             f"{artifact.path.name} keeps all its weights on the GPU: rebuild it with ptdit-build "
                             f"--weight-streaming")
        if weight_budget <= 0:
            raise InputError(f"{option('weight_budget')} must be a positive number of bytes, got {weight_budget}")
    if options.strip_plan:
        onnx_of(artifact)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".") if part.isdigit())


def runs_on(targets: Targets, compute_capability: str) -> bool:
    """Whether a plan built for `targets` runs on this compute capability. TensorRT-RTX's portable default also
    covers GPUs newer than those it lists."""
    if compute_capability in targets.compute_capabilities:
        return True
    return targets.source == RTX_DEFAULT_SOURCE and _version(compute_capability) >= (12, 0)


def check_compatible(builder: BuilderInfo, options: BuildOptions, targets: Targets, running_version: str,
                     device_name: str, compute_capability: str) -> None:
    """Refuse, before deserializing, a plan built by another TensorRT version or for other GPUs."""
    built = builder.version
    built_v, running_v = _version(built), _version(running_version)
    vc = options.version_compatible
    # A version-compatible plan runs on the same or a later TensorRT, across one major (10.x -> 11.x).
    ok = (built_v <= running_v and running_v[0] - built_v[0] <= 1) if vc else built_v == running_v
    label = FLAVOURS[builder.target].label
    if not ok:
        kind = "version-compatible plan" if vc else "plan"
        raise InputError(f"this {kind} was built with {label} {built}; this machine runs {label} "
                         f"{running_version}: rebuild it here with ptdit-build")
    if not runs_on(targets, compute_capability):
        built_for = ", ".join(targets.compute_capabilities)
        raise InputError(f"this plan was built for compute capability {built_for}; this GPU is {device_name} "
                         f"({compute_capability}): rebuild it for this GPU with ptdit-build")
