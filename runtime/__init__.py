"""The runtime stage: sessions over a plan or an ONNX, the samplers, prompt to image, and the accuracy diff.

One stack, from the commands down to the tensors (docs/ARCHITECTURE.md; tests/test_layering.py keeps it so):
cli/ (ptdit-run, ptdit-diff) > diff/ > pipeline/ (prompt to image) > sampling/ > session.py (open_session)
> backends/ (TensorRT, ONNX Runtime, PyTorch) > artifact.py (an artifact and its manifest).
"""

from typing import TYPE_CHECKING

from ptdit.contract.lazy import lazy_attributes

if TYPE_CHECKING:
    from .pipeline.ptdit_pipeline import PTDiTPipeline, PTDiTPipelineOutput

__all__ = ["PTDiTPipeline", "PTDiTPipelineOutput"]
__getattr__ = lazy_attributes(__name__, dict.fromkeys(__all__, ".pipeline.ptdit_pipeline"))
