"""The checks every exported file passes before it is published under its final name (docs/ARCHITECTURE.md):
structural ones (onnx checker, static shapes, no random ops, TensorRT's operator table and rank limit), a real
parse by TensorRT's own parser, and ONNX Runtime against PyTorch. suite.py runs them at a --checks level."""

from ptdit.contract.errors import Failure


class CheckFailed(Failure):
    """A check rejected the export: exit code 1, nothing published."""

    def __init__(self, check: str, message: str):
        super().__init__(f"check '{check}' failed: {message}")
        self.check = check
