"""The runtime stage: sessions over a plan or an ONNX, the samplers, prompt to image, and the accuracy diff.

One stack, from the commands down to the tensors (docs/ARCHITECTURE.md; tests/test_layering.py keeps it so):
cli/ (ptdit-run, ptdit-diff) > diff/ > pipeline/ (prompt to image) > sampling/ > session.py (open_session)
> backends/ (TensorRT, ONNX Runtime, PyTorch) > artifact.py (an artifact and its manifest).
"""

from typing import TYPE_CHECKING

from ptdit.contract.lazy import lazy_attributes

if TYPE_CHECKING:
    from .diff.api import DiffResult, diff_artifact
    from .pipeline.ptdit_pipeline import PTDiTPipeline, PTDiTPipelineOutput

__all__ = ["PTDiTPipeline", "PTDiTPipelineOutput", "diff_artifact", "DiffResult"]
__getattr__ = lazy_attributes(__name__, {"PTDiTPipeline": ".pipeline.ptdit_pipeline",
                                         "PTDiTPipelineOutput": ".pipeline.ptdit_pipeline",
                                         "diff_artifact": ".diff.api", "DiffResult": ".diff.api"})
