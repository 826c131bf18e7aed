"""The engines stage: a TensorRT plan from a ptdit-export ONNX (ptdit-build), with TensorRT 10.x / 11.x or
TensorRT-RTX. The tree and its rules: docs/ARCHITECTURE.md."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import build_engine

__all__ = ["build_engine"]


def __getattr__(name: str) -> Any:
    """The Python API, imported when first used (the commands start without torch and onnx)."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
