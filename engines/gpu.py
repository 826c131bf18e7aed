"""The GPU a plan is built for, through cuda-python's runtime API (installed with the [trt] extra)."""

from __future__ import annotations

from dataclasses import dataclass

from ptdit.contract.errors import InputError


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"
    index: int = 0


def visible_gpu(index: int = 0) -> GpuInfo | None:
    """The GPU, or None without cuda-python, a driver or a device (TensorRT-RTX builds without one)."""
    try:
        return current_gpu(index)
    except InputError:
        return None


def current_gpu(index: int = 0) -> GpuInfo:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        raise InputError("cuda-python is not installed: pip install cuda-python (it reports the GPU the engine "
                         "is built for)") from None
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or not count:
        reason = cudart.cudaGetErrorName(err)[1].decode() if err != cudart.cudaError_t.cudaSuccess else "0 devices"
        raise InputError(f"no CUDA GPU is visible ({reason}): a TensorRT engine is built on the GPU it will run on")
    if index >= count:
        raise InputError(f"GPU {index} does not exist ({count} visible)")
    err, props = cudart.cudaGetDeviceProperties(index)
    if err != cudart.cudaError_t.cudaSuccess:
        raise InputError(f"cannot read the properties of GPU {index} ({cudart.cudaGetErrorName(err)[1].decode()})")
    name = props.name.split(b"\0", 1)[0].decode() if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name=name, compute_capability=f"{props.major}.{props.minor}", index=index)
