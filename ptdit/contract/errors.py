"""The two kinds of error every stage raises (how a command turns them into exit codes: ptdit.contract.commands)."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input or environment: an unsupported value, a wrong or foreign file, a missing package, a plan for
    another GPU, an output another run is writing. The message names the problem and the fix. Exit code 2."""


class Failure(RuntimeError):
    """The work itself failed (a check, a build, a backend run). Exit code 1."""


# Import names whose pip package is called otherwise (ModuleNotFoundError names the import).
PIP_NAMES = {"onnxruntime": "onnxruntime-gpu", "onnx_ir": "onnx-ir", "tensorrt_rtx": "tensorrt-rtx-cu13",
             "cuda": "cuda-python", "PIL": "pillow"}
