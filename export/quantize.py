"""FP8 explicit quantization of a traced graph, in standard ONNX: for each quantized Linear (a MatMul whose weight
initializer carries the PyTorch parameter name, export.exporter.clean), its input goes through QuantizeLinear /
DequantizeLinear (FLOAT8E4M3FN, the calibrated per-tensor scale) and its weight is stored as FLOAT8E4M3FN behind a
DequantizeLinear. TensorRT fuses Q/DQ -> MatMul into an FP8 GEMM; ONNX Runtime's CPU provider runs it as written.
The file declares opset FILE_OPSET (21), where Transpose takes FLOAT8E4M3FN: ONNX Runtime's default rewrites move the
input Q of an attention output projection back across the heads' Transpose (ptdit.contract.fp8.FILE_OPSET)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx_ir

    from ptdit.fp8 import LayerScales

ZERO_POINT = "fp8_zero_point"
FILE_IR_VERSION = 10  # what opset 21 needs


def module_path(weight_name: str, prefix: str = "") -> str | None:
    """The module path of a Linear weight initializer ("<prefix><module>.weight"), else None."""
    if not weight_name.startswith(prefix) or not weight_name.endswith(".weight"):
        return None
    return weight_name[len(prefix):].removesuffix(".weight")


def quantize_graph(model: onnx_ir.Model, scales: dict[str, LayerScales], prefix: str = "") -> int:
    """Insert the Q/DQ pairs and store the quantized weights as FP8, in place; returns the number of quantized
    MatMuls. Every layer in `scales` must be found, as a MatMul on an fp16 activation."""
    import numpy as np
    import onnx_ir as ir
    import torch

    from ptdit.contract.fp8 import FILE_OPSET
    from ptdit.fp8 import quantize

    graph = model.graph
    initializers = graph.initializers
    zero = ir.Value(name=ZERO_POINT, const_value=ir.tensor(np.zeros((), np.uint8), dtype=ir.DataType.FLOAT8E4M3FN))
    graph.register_initializer(zero)

    def scale_value(name: str, value: float) -> ir.Value:
        v = ir.Value(name=name, const_value=ir.tensor(np.array(value, np.float16)))
        graph.register_initializer(v)
        return v

    dequantized: dict[tuple[str, float], ir.Value] = {}  # (activation, scale) -> its DQ output, shared by q, k, v
    done = set()
    for node in list(graph):
        if node.op_type != "MatMul" or node.inputs[1] is None:
            continue
        weight = node.inputs[1]
        path = module_path(weight.name or "", prefix)
        if path is None or weight.name not in initializers or path not in scales:
            continue
        x = node.inputs[0]
        if x is None or x.dtype != ir.DataType.FLOAT16 or weight.dtype != ir.DataType.FLOAT16:
            raise ValueError(f"{path}: an FP8 Linear needs an fp16 input and weight, the graph has "
                             f"{x.dtype if x is not None else None} and {weight.dtype}")
        s = scales[path]
        if path not in done:  # the weight: fp16 -> FP8 initializer (the same name) behind a DequantizeLinear
            assert weight.const_value is not None
            w = torch.from_numpy(weight.const_value.numpy().astype(np.float16))
            weight.const_value = ir.tensor(quantize(w, s.weight).view(torch.uint8).numpy(),
                                           dtype=ir.DataType.FLOAT8E4M3FN, name=weight.name)
            weight.dtype = ir.DataType.FLOAT8E4M3FN
            w_scale = scale_value(f"{path}.weight_scale", s.weight)
            w_dq = ir.Node("", "DequantizeLinear", [weight, w_scale], name=f"{path}/weight_dq")
            graph.insert_before(node, w_dq)
            w_dq.outputs[0].name = f"{path}.weight_dequantized"
            weight_dq = w_dq.outputs[0]
            for use, index in list(weight.uses()):
                if use is not w_dq:
                    use.replace_input_with(index, weight_dq)
            done.add(path)
        key = (x.name or "", s.input)
        if key not in dequantized:
            x_scale = scale_value(f"{path}.input_scale", s.input)
            q = ir.Node("", "QuantizeLinear", [x, x_scale, zero], name=f"{path}/input_q")
            dq = ir.Node("", "DequantizeLinear", [q.outputs[0], x_scale], name=f"{path}/input_dq")
            graph.insert_before(node, [q, dq])
            q.outputs[0].name, dq.outputs[0].name = f"{path}.input_quantized", f"{path}.input_dequantized"
            dequantized[key] = dq.outputs[0]
        node.replace_input_with(0, dequantized[key])
    missing = sorted(set(scales) - done)
    if missing:
        raise ValueError(f"the graph has no MatMul for the quantized layer {missing[0]} (and {len(missing) - 1} more)")
    # The traced nodes, declared at the opset whose Transpose takes FLOAT8E4M3FN (ptdit.contract.fp8.FILE_OPSET):
    # ONNX Runtime's default QDQ rewrites move the pairs across the attention's Transposes.
    graph.opset_imports[""] = max(graph.opset_imports.get("", FILE_OPSET), FILE_OPSET)
    model.ir_version = max(model.ir_version or 0, FILE_IR_VERSION)
    return len(done)

