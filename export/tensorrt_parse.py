"""The export's real TensorRT check: the written file parsed by TensorRT's own ONNX parser.

This module alone decides which TensorRT flavour the export stage uses: full TensorRT (`tensorrt`) when
it is importable and can create a builder (it needs a GPU), else TensorRT-RTX (`tensorrt_rtx`), whose
builder works on a CPU-only machine. Both are imported here, lazily, and nowhere else in export/.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

FLAVOURS = (("tensorrt", "TensorRT"), ("tensorrt_rtx", "TensorRT-RTX"))
INSTALL_HINT = "pip install tensorrt-rtx-cu13 (parses and builds on a CPU)"
# TensorRT DataType member names -> the manifest's dtype names.
DTYPES = {"FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}
_SHOWN_ERRORS = 5


class ParseFailed(Exception):
    """TensorRT's parser rejected the file; the message holds the parser's own errors."""


_LOGGERS: dict[str, Any] = {}


def _builder(module: ModuleType) -> tuple[Any, Any] | None:
    """(builder, logger), or None when this flavour cannot create a builder here (full TensorRT without a GPU).
    One logger per TensorRT module, reused: TensorRT keeps the first one it is given for the whole process."""
    if TYPE_CHECKING:  # tensorrt_rtx has the same builder API: type-check against tensorrt's
        import tensorrt as trt
    else:
        trt = module

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: trt.ILogger.Severity, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)

    if module.__name__ not in _LOGGERS:
        _LOGGERS[module.__name__] = Logger()
    logger = _LOGGERS[module.__name__]
    logger.errors.clear()
    try:
        return trt.Builder(logger), logger
    except TypeError:  # pybind11's "factory function returned nullptr"
        return None


def one_line(message: str) -> str:
    """A parser error on one line, without the CUDA-driver notice TensorRT-RTX appends on a machine with no GPU."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(line for line in lines if "CUDA driver version is insufficient" not in line)


def _import(name: str) -> ModuleType | None:
    try:
        if name == "tensorrt":
            import tensorrt

            return tensorrt
        import tensorrt_rtx

        return tensorrt_rtx
    except ImportError:
        return None


def find_builder() -> tuple[str, ModuleType, Any, Any] | None:
    """(label, module, builder, logger) of the first flavour that works here, or None."""
    for name, label in FLAVOURS:
        module = _import(name)
        if module is None:
            continue
        made = _builder(module)
        if made is not None:
            return label, module, *made
    return None


def parse(path: Path) -> dict[str, Any]:
    """Parse `path` (external data resolved next to it) into a strongly typed network. Returns what ran, or
    {"ran": False, "reason": ...} when no builder is available; raises ParseFailed with the parser's errors."""
    found = find_builder()
    if found is None:
        return {"ran": False, "reason": f"no TensorRT builder is installed ({INSTALL_HINT})"}
    label, trt, builder, logger = found
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [one_line(str(parser.get_error(i))) for i in range(parser.num_errors)]
        shown = "; ".join(errors[:_SHOWN_ERRORS]) or "; ".join(logger.errors[-_SHOWN_ERRORS:]) or "no error reported"
        more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        raise ParseFailed(f"{label} {trt.__version__}'s ONNX parser rejected {path.name}: {shown}{more}")
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    return {
        "ran": True,
        "builder": f"{label} {trt.__version__}",
        "layers": int(network.num_layers),
        "io": [{"name": t.name, "shape": [int(d) for d in t.shape], "dtype": DTYPES.get(t.dtype.name, t.dtype.name)}
               for t in tensors],
    }
