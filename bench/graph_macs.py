"""Multiply-adds counted from an exported graph: MatMul, Gemm and Conv with their (static) shapes.

A MatMul with a weight (an initializer) operand is a linear layer; a MatMul of two activations is one of
the attention products (Q K^T or A V). This is independent of ptdit.complexity.count_macs, which counts
from the model's definition; the benchmark checks that the two agree.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir


def _dims(value: onnx_ir.Value) -> list[int]:
    shape = value.shape
    dims = [d for d in shape] if shape is not None else []
    if shape is None or not all(isinstance(d, int) for d in dims):
        raise ValueError(f"value {value.name} has no static shape")
    return [d for d in dims if isinstance(d, int)]


def _is_weight(value: onnx_ir.Value) -> bool:
    return value.const_value is not None or value.is_initializer()


def graph_macs(model: onnx_ir.Model) -> dict[str, int]:
    """{"linear": ..., "attention": ...} multiply-adds of one run of the graph."""
    counts = {"linear": 0, "attention": 0}
    for node in model.graph:
        if node.op_type == "MatMul":
            a, b = node.inputs[0], node.inputs[1]
            assert a is not None and b is not None
            da, db = _dims(a), _dims(b)
            if len(da) == 1:
                da = [1, *da]
            if len(db) == 1:
                db = [*db, 1]
            batch = [max(x, y) for x, y in zip(reversed(da[:-2]), reversed(db[:-2]))]
            batch += da[:-2][: max(len(da) - len(db), 0)] + db[:-2][: max(len(db) - len(da), 0)]
            macs = math.prod(batch) * da[-2] * da[-1] * db[-1]
            counts["linear" if _is_weight(a) or _is_weight(b) else "attention"] += macs
        elif node.op_type == "Gemm":
            a = node.inputs[0]
            assert a is not None and node.outputs[0] is not None
            m, n = _dims(node.outputs[0])
            k = _dims(a)[0 if node.attributes.get_int("transA", 0) else 1]
            counts["linear"] += m * n * k
        elif node.op_type == "Conv":
            w = node.inputs[1]
            assert w is not None and node.outputs[0] is not None
            cin_per_group_times_kernel = math.prod(_dims(w)[1:])
            counts["linear"] += math.prod(_dims(node.outputs[0])) * cin_per_group_times_kernel
    return counts
