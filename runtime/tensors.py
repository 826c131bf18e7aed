"""Tensor specs from manifests, the dtype-name map, and checking what callers feed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import InputError

# Manifest dtype names -> numpy. bfloat16 needs ml_dtypes and only matters for per-block outputs.
NUMPY_DTYPES: dict[str, Any] = {
    "float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32, "int8": np.int8,
    "uint8": np.uint8, "bool": np.bool_,
}


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise InputError("bfloat16 tensors need the ml_dtypes package: pip install ml_dtypes") from None
        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(NUMPY_DTYPES[name])
    except KeyError:
        raise InputError(f"unsupported tensor dtype {name!r} in the manifest") from None


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TensorSpec:
        return cls(str(d["name"]), tuple(int(x) for x in d["shape"]), str(d["dtype"]))

    @property
    def numpy_dtype(self) -> np.dtype:
        return numpy_dtype(self.dtype)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.numpy_dtype.itemsize


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
    want = spec.numpy_dtype
    if value.dtype != want:
        convertible = np.issubdtype(want, np.integer) and (np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_)
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
