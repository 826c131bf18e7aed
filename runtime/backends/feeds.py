"""What the backends take from callers: numpy arrays of the artifact's tensors (manifest dtype names mapped to
numpy's), checked against the I/O contract before anything runs."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from ptdit.contract.errors import InputError
from ptdit.contract.onnx_manifest import TensorSpec

# The manifests' dtype names are numpy's, but for bfloat16 (ml_dtypes; it only matters for per-block outputs).
NUMPY_DTYPES = ("float32", "float16", "int64", "int32", "int8", "uint8", "bool")


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise InputError("bfloat16 tensors need the ml_dtypes package: pip install ml_dtypes") from None
        return np.dtype(ml_dtypes.bfloat16)
    if name not in NUMPY_DTYPES:
        raise InputError(f"unsupported tensor dtype {name!r} in the manifest")
    return np.dtype(name)


def nbytes(spec: TensorSpec) -> int:
    return int(np.prod(spec.shape, dtype=np.int64)) * numpy_dtype(spec.dtype).itemsize


def as_host_array(value: Any) -> np.ndarray:
    """numpy arrays as they are; other CPU arrays (torch tensors...) through DLPack."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (RuntimeError, BufferError, TypeError) as e:
            raise InputError(f"cannot read a {type(value).__name__} on the host through DLPack ({e})") from None
    return np.asarray(value)


def check_feed(spec: TensorSpec, value: np.ndarray) -> np.ndarray:
    """The value as the artifact wants it; a one-line error when its shape or dtype is wrong. Float inputs
    are not silently converted between precisions, integer masks may come as any integer or bool type."""
    if tuple(value.shape) != spec.shape:
        raise InputError(f"input '{spec.name}' has shape {list(value.shape)}, the artifact needs {list(spec.shape)}")
    want = numpy_dtype(spec.dtype)
    if value.dtype != want:
        integers = np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_
        convertible = np.issubdtype(want, np.integer) and integers
        if not convertible:
            raise InputError(f"input '{spec.name}' is {value.dtype}, the artifact needs {want}")
        value = value.astype(want)
    return np.ascontiguousarray(value)


def check_names(specs: list[TensorSpec], feeds: Mapping[str, Any]) -> None:
    known = {s.name for s in specs}
    unknown = sorted(set(feeds) - known)
    if unknown:
        raise InputError(f"unknown input(s) {unknown}; the artifact's inputs are {sorted(known)}")


class HostFeeds:
    """Input checking shared by the backends that take host arrays."""

    def __init__(self, specs: list[TensorSpec]):
        self.specs = {s.name: s for s in specs}
        self.values: dict[str, np.ndarray] = {}

    def update(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        check_names(list(self.specs.values()), feeds)
        checked = {name: check_feed(self.specs[name], as_host_array(value)) for name, value in feeds.items()}
        self.values.update(checked)
        return checked

    def complete(self) -> dict[str, np.ndarray]:
        missing = sorted(set(self.specs) - set(self.values))
        if missing:
            raise InputError(f"input(s) {missing} were never set")
        return self.values
