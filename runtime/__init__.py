"""The runtime stage: sessions over a plan or an ONNX, the samplers, prompt to image, and the accuracy diff.

One stack, from the commands down to the tensors (docs/ARCHITECTURE.md; tests/test_layering.py keeps it so):
cli/ (ptdit-run, ptdit-diff) > diff/ > pipeline/ (prompt to image) > sampling/ > session.py (open_session)
> backends/ (TensorRT, ONNX Runtime, PyTorch) > artifact.py (an artifact and its manifest).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipeline.ptdit_pipeline import PTDiTPipeline, PTDiTPipelineOutput

__all__ = ["PTDiTPipeline", "PTDiTPipelineOutput"]


def __getattr__(name: str) -> Any:
    """The Python API, imported when first used (the commands start without numpy and the backends)."""
    if name in __all__:
        from .pipeline import ptdit_pipeline

        return getattr(ptdit_pipeline, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
