"""The engines stage: a TensorRT plan from a ptdit-export ONNX (ptdit-build), with TensorRT 10.x / 11.x or
TensorRT-RTX. The tree and its rules: docs/ARCHITECTURE.md."""

from typing import TYPE_CHECKING

from ptdit.contract.lazy import lazy_attributes

if TYPE_CHECKING:
    from .api import build_engine

__all__ = ["build_engine"]
__getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, ".api"))
