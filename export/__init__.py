"""The export stage: PT-DiT to ONNX with static shapes per size (ptdit-export), checked before it is
published, the prompt-to-image pipeline folder, and ptdit-bench. The tree and its rules: docs/ARCHITECTURE.md."""

from typing import TYPE_CHECKING

from ptdit.contract.lazy import lazy_attributes

if TYPE_CHECKING:
    from .api import export_model, export_pipeline

__all__ = ["export_model", "export_pipeline"]
__getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, ".api"))
