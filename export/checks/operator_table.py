"""TensorRT's ONNX operator support table (our copy of TensorRT 10.1's, in data/), and the check of a
graph against it: operator, tensor types, and inputs that TensorRT requires to be initializers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import onnx

TABLE_NAME = "tensorrt-10.1-onnx-operators.tsv"
# ONNX element type -> the type names the table uses.
ONNX_TO_TABLE = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.BFLOAT16: "BF16",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
    onnx.TensorProto.FLOAT8E4M3FN: "FP8",
    onnx.TensorProto.INT4: "INT4",
}
TYPO_FIXES = {"INF64": "INT64"}  # the published table misspells one entry (ConstantOfShape)
# The table's types of the Q/DQ operators are those of their data input (x): the scale, the zero point and the
# output have the other side's types.
TYPED_INPUTS_ONLY = {"QuantizeLinear": 1, "DequantizeLinear": 1}
_CONSTANT_INPUT = re.compile(r"`(\w+)` (?:must be an initializer|must be a constant tensor)")


@dataclass(frozen=True)
class OpSupport:
    supported: bool
    types: frozenset[str]
    constant_inputs: tuple[str, ...]  # ONNX input names that must be initializers / constants
    restrictions: str


@lru_cache(maxsize=None)
def support_table() -> dict[str, OpSupport]:
    text = resources.files("export.checks").joinpath("data", TABLE_NAME).read_text()
    table = {}
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        op, supported, types, *rest = line.split("\t") + [""]
        restrictions = rest[0] if rest else ""
        type_set = frozenset(TYPO_FIXES.get(t, t) for t in types.split(",") if t)
        table[op] = OpSupport(supported == "Y", type_set, tuple(_CONSTANT_INPUT.findall(restrictions)), restrictions)
    return table


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Problems of a shape-inferred model against the table, one line each (empty = all supported)."""
    table = support_table()
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output, *graph.value_info]}
    types.update({t.name: t.data_type for t in graph.initializer})
    constants = {t.name for t in graph.initializer}
    constants.update(o for n in graph.node if n.op_type == "Constant" for o in n.output)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 18)
    problems = []
    for node in graph.node:
        where = f"{node.op_type} node '{node.name}'"
        support = table.get(node.op_type)
        if node.domain not in ("", "ai.onnx") or support is None or not support.supported:
            problems.append(f"{where}: operator not supported by TensorRT's ONNX parser")
            continue
        typed = node.input[:TYPED_INPUTS_ONLY[node.op_type]] if node.op_type in TYPED_INPUTS_ONLY else [
            *node.input, *node.output]
        for name in typed:
            if not name:
                continue
            elem = types.get(name)
            if elem is None:
                problems.append(f"{where}: type of '{name}' unknown after shape inference")
            elif ONNX_TO_TABLE.get(elem) not in support.types:
                type_name = onnx.TensorProto.DataType.Name(elem)
                problems.append(f"{where}: '{name}' is {type_name}, TensorRT supports {sorted(support.types)}")
        if support.constant_inputs:
            schema_inputs = [i.name for i in onnx.defs.get_schema(node.op_type, opset).inputs]
            for required in support.constant_inputs:
                if required in schema_inputs:
                    index = schema_inputs.index(required)
                    if index < len(node.input) and node.input[index] and node.input[index] not in constants:
                        problems.append(f"{where}: input '{required}' must be an initializer ({support.restrictions})")
    return problems
