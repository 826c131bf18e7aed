"""The one place that knows how TensorRT 10.x and 11.x differ. Features are detected by name, never by
enum integers (values moved between the two majors), and TensorRT is imported only when needed."""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import tensorrt as trt

INSTALL_HINT = (
    "pip install --extra-index-url https://pypi.nvidia.com tensorrt-cu13  (TensorRT 11.x, CUDA 13 drivers) "
    "or  'tensorrt-cu12>=10,<11'  (TensorRT 10.x, CUDA 12 drivers)"
)
SUPPORTED_MAJORS = (10, 11)

# Build options -> BuilderFlag member names.
FLAG_NAMES = {
    "version_compatible": "VERSION_COMPATIBLE",
    "exclude_lean_runtime": "EXCLUDE_LEAN_RUNTIME",
    "refittable": "REFIT",
    "strip_plan": "STRIP_PLAN",
    "weight_streaming": "WEIGHT_STREAMING",
    "fp16_weak": "FP16",
}
# TensorRT DataType member names -> the dtype names of the manifests.
DTYPE_NAMES = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
    "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3fn",
}


def import_tensorrt() -> ModuleType:
    """The tensorrt module, or a one-line InputError saying how to install it."""
    try:
        import tensorrt
    except ImportError as e:
        raise InputError(f"TensorRT is not installed ({e}): {INSTALL_HINT}") from None
    if major() not in SUPPORTED_MAJORS:
        raise InputError(f"TensorRT {tensorrt.__version__} is not supported: use 10.x or 11.x ({INSTALL_HINT})")
    return tensorrt


def major() -> int:
    import tensorrt as trt

    return int(trt.__version__.split(".")[0])


def has_weak_typing() -> bool:
    """True on 10.x, where BuilderFlag.FP16 (weakly typed fp16) still exists."""
    import tensorrt as trt

    return hasattr(trt.BuilderFlag, "FP16")


def network_flags(strongly_typed: bool) -> int:
    """STRONGLY_TYPED is required on 10.x and accepted (ignored) on 11.x."""
    import tensorrt as trt

    if not strongly_typed:
        return 0
    return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def builder_flag(option: str) -> trt.BuilderFlag:
    import tensorrt as trt

    name = FLAG_NAMES[option]
    flag: trt.BuilderFlag | None = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise InputError(f"--{option.replace('_', '-')} needs BuilderFlag.{name}, which TensorRT "
                         f"{trt.__version__} does not have")
    return flag


def dtype_name(dtype: trt.DataType) -> str:
    return DTYPE_NAMES.get(dtype.name, dtype.name.lower())
