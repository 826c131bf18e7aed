"""bf16 graphs on ONNX Runtime's CPU provider, which has no bf16 arithmetic kernels: the export's parity check and
the runtime's ONNX Runtime backend run the same fp32 twin, so that the two measure the same thing.

The twin rounds every bf16 tensor to bf16 as soon as it is produced (a Cast to bf16 and back): bf16 storage with
fp32 arithmetic, which is what bf16 GPU kernels do. onnx and numpy are imported when a twin is made.
`round_bf16` rounds one Python float the same way (the standard library alone), for arithmetic that the published
code does on bf16 tensors.
"""

from __future__ import annotations

import math
import struct
from typing import Any

from .dtypes import ONNX_ELEMENT_TYPES

BF16, FLOAT = ONNX_ELEMENT_TYPES["bfloat16"], ONNX_ELEMENT_TYPES["float32"]


def round_bf16(x: float) -> float:
    """x rounded to float32, then to bf16 to nearest even: what torch does to a Python float stored as bf16, and to
    the float32 result of each of its bf16 operations."""
    if not math.isfinite(x):
        return x
    try:
        (bits,) = struct.unpack("<I", struct.pack("<f", x))
    except OverflowError:  # beyond float32's range
        return math.copysign(math.inf, x)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return float(struct.unpack("<f", struct.pack("<I", bits))[0])


def has_bf16(model: Any) -> bool:
    """Whether an onnx.ModelProto holds bf16 weights or casts to bf16."""
    return any(i.data_type == BF16 for i in model.graph.initializer) or any(
        a.name == "to" and a.i == BF16 for n in model.graph.node for a in n.attribute)


def emulate_bf16(model: Any) -> Any:
    """The fp32 twin of a shape-inferred bf16 onnx.ModelProto (its value_info must hold the inferred types),
    in place: weights and constants upcast to fp32, every bf16 value rounded to bf16 where it is produced."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    def upcast(tensor: Any) -> Any:
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    graph = model.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == BF16:
            graph.initializer[i].CopyFrom(upcast(init))
    bf16_values = set()
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == BF16:
            value.type.tensor_type.elem_type = FLOAT
            bf16_values.add(value.name)
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == BF16:
                attr.i = FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == BF16:
                attr.t.CopyFrom(upcast(attr.t))
        nodes.append(node)
        for k, out in enumerate(node.output):
            if out in bf16_values:
                raw, rounded = f"{out}__fp32", f"{out}__bf16"
                node.output[k] = raw
                nodes.append(onnx.helper.make_node("Cast", [raw], [rounded], to=BF16))
                nodes.append(onnx.helper.make_node("Cast", [rounded], [out], to=FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    return model
