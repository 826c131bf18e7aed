"""The export's real TensorRT check: the written file parsed by TensorRT's own ONNX parser.

The flavour is whichever can parse here: full TensorRT (`tensorrt`) when it is installed and can create a
builder (it needs a GPU), else TensorRT-RTX (`tensorrt_rtx`), whose builder works on a CPU-only machine. This is
the one module of export/ that uses TensorRT (ptdit.contract.tensorrt imports it, lazily).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from ptdit.contract.dtypes import tensorrt_dtype_name
from ptdit.contract.tensorrt import FLAVOURS, errors_of, import_flavour, logger_for

if TYPE_CHECKING:  # tensorrt_rtx has the same parser API: typed against tensorrt's
    import tensorrt as trt

PARSERS = ("tensorrt", "rtx")  # in the order they are tried
_SHOWN_ERRORS = 5


class ParseFailed(Exception):
    """TensorRT's parser rejected the file; the message holds the parser's own errors."""


def one_line(message: str) -> str:
    """A parser error on one line, without the CUDA-driver notice TensorRT-RTX appends on a machine with no GPU."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    return " ".join(line for line in lines if "CUDA driver version is insufficient" not in line)


def find_builder() -> tuple[str, ModuleType, trt.Builder, trt.ILogger] | None:
    """(label, module, builder, logger) of the first flavour that can create a builder here, or None."""
    for name in PARSERS:
        module = import_flavour(name)
        if module is None:
            continue
        if TYPE_CHECKING:
            t = trt
        else:
            t = module
        logger = logger_for(module)
        try:
            return FLAVOURS[name].label, module, t.Builder(logger), logger
        except TypeError:  # pybind11's "factory function returned nullptr": full TensorRT without a GPU
            continue
    return None


def parse(path: Path) -> dict[str, Any]:
    """Parse `path` (external data resolved next to it) into a strongly typed network. Returns what ran, or
    {"ran": False, "reason": ...} when no builder is available; raises ParseFailed with the parser's errors."""
    found = find_builder()
    if found is None:
        hint = f"{FLAVOURS['rtx'].install} (parses and builds on a CPU)"
        return {"ran": False, "reason": f"no TensorRT builder is installed ({hint})"}
    label, module, builder, logger = found
    if TYPE_CHECKING:
        t = trt
    else:
        t = module
    network = builder.create_network(1 << int(t.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = t.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = [one_line(str(parser.get_error(i))) for i in range(parser.num_errors)]
        shown = "; ".join(errors[:_SHOWN_ERRORS]) or errors_of(logger, _SHOWN_ERRORS)
        more = f" (and {len(errors) - _SHOWN_ERRORS} more)" if len(errors) > _SHOWN_ERRORS else ""
        raise ParseFailed(f"{label} {module.__version__}'s ONNX parser rejected {path.name}: {shown}{more}")
    tensors = [network.get_input(i) for i in range(network.num_inputs)]
    tensors += [network.get_output(i) for i in range(network.num_outputs)]
    return {
        "ran": True,
        "builder": f"{label} {module.__version__}",
        "layers": int(network.num_layers),
        "io": [{"name": x.name, "shape": [int(x.shape[k]) for k in range(len(x.shape))],
                "dtype": tensorrt_dtype_name(x.dtype.name)} for x in tensors],
    }
