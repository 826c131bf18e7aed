"""The one place of the engines stage that decides which TensorRT is in use and knows how the flavours differ.

Flavours: full TensorRT 10.x / 11.x (`tensorrt`: builds on, and for, the GPU it runs on) and TensorRT-RTX
(`tensorrt_rtx`: builds ahead of time on any machine, a GPU is optional, for a list of compute
capabilities). Features are detected by name, never by enum integers (values moved between 10.x and 11.x),
and TensorRT is imported only when needed.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from ptdit.contract.errors import InputError, option
from ptdit.contract.tensorrt import BUILD_TARGETS, FLAVOURS, import_flavour

if TYPE_CHECKING:
    import tensorrt as trt

TARGETS = BUILD_TARGETS
SUPPORTED_MAJORS = {"tensorrt": (10, 11), "rtx": (1,)}

# Build options -> BuilderFlag member names.
FLAG_NAMES = {
    "version_compatible": "VERSION_COMPATIBLE",
    "exclude_lean_runtime": "EXCLUDE_LEAN_RUNTIME",
    "refittable": "REFIT",
    "strip_plan": "STRIP_PLAN",
    "weight_streaming": "WEIGHT_STREAMING",
    "fp16_weak": "FP16",
}


@dataclass(frozen=True)
class Flavour:
    target: str  # "tensorrt" or "rtx"
    module: ModuleType

    @property
    def version(self) -> str:
        return str(self.module.__version__)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])

    @property
    def label(self) -> str:
        return f"{FLAVOURS[self.target].label} {self.version}"

    @property
    def plan_tag(self) -> str:
        """'trt10.13' / 'rtx1.7': plans are specific to a TensorRT version and their names say which."""
        return ("trt" if self.target == "tensorrt" else "rtx") + ".".join(self.version.split(".")[:2])

    @property
    def ahead_of_time(self) -> bool:
        """TensorRT-RTX compiles without a GPU for chosen compute capabilities; full TensorRT times kernels
        on the GPU it builds on."""
        return self.target == "rtx"

    @property
    def weak_typing(self) -> bool:
        """True on TensorRT 10.x, where BuilderFlag.FP16 (weakly typed fp16) still exists."""
        return hasattr(self.module.BuilderFlag, "FP16")


def select(target: str = "auto") -> Flavour:
    """The flavour for --target (auto: full TensorRT when importable, else TensorRT-RTX), or a one-line
    InputError saying what to install."""
    if target not in TARGETS:
        raise InputError(f"unknown {option('target')} {target!r}: use {', '.join(TARGETS)}")
    candidates = ["tensorrt", "rtx"] if target == "auto" else [target]
    for name in candidates:
        module = import_flavour(name)
        if module is None:
            continue
        flavour = Flavour(name, module)
        if flavour.major not in SUPPORTED_MAJORS[name]:
            supported = " or ".join(f"{m}.x" for m in SUPPORTED_MAJORS[name])
            raise InputError(f"{flavour.label} is not supported: use {supported} ({FLAVOURS[name].install})")
        return flavour
    if target == "auto":
        raise InputError(f"no TensorRT is installed: {FLAVOURS['rtx'].install}; or full TensorRT on the GPU machine: "
                         f"{FLAVOURS['tensorrt'].install}")
    raise InputError(f"{FLAVOURS[target].label} is not installed: {FLAVOURS[target].install}")


def network_flags(trt_module: ModuleType, strongly_typed: bool) -> int:
    """STRONGLY_TYPED is required on 10.x and accepted (ignored) on 11.x and TensorRT-RTX."""
    if not strongly_typed:
        return 0
    return 1 << int(trt_module.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def builder_flag(trt_module: ModuleType, option: str) -> trt.BuilderFlag:
    name = FLAG_NAMES[option]
    flag: trt.BuilderFlag | None = getattr(trt_module.BuilderFlag, name, None)
    if flag is None:
        raise InputError(f"--{option.replace('_', '-')} needs BuilderFlag.{name}, which TensorRT "
                         f"{trt_module.__version__} does not have")
    return flag
