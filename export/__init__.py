"""The export stage: PT-DiT to ONNX with static shapes per resolution (ptdit-export), checked before it is
published, the prompt-to-image pipeline folder, and ptdit-bench. The tree and its rules: docs/ARCHITECTURE.md."""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .api import export_model, export_pipeline

__all__ = ["export_model", "export_pipeline"]


def __getattr__(name: str) -> Any:
    """The Python API, imported when first used (the commands start without torch and onnx)."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
