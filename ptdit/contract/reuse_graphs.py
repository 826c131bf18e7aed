"""The two small graphs a device-resident step loop runs for step caching (ptdit.contract.cache), so that a skipped
step stays on the device like a computed one (built here, in memory; a backend runs them beside the step graph):

    velocity: velocity = (latent_next - latent) * inverse_dt[step]
              after a computed step: the guided velocity it applied, recovered from the latent it moved
    reuse:    latent_next = latent + velocity_a * weight_a[step] + velocity_b * weight_b[step]
              step_next = step + 1
              a skipped step: the last computed velocity (a) and the one before (b), weighted by the reuse rule

The tables (inverse_dt, weight_a, weight_b: [K] fp32) go up once with the rest of the loop's inputs; a step index
picks its row on the device, so a skipped step moves nothing between host and device.
"""

from __future__ import annotations

from typing import Any

OPSET = 17


def _graph(name: str, nodes: list[Any], inputs: list[Any], outputs: list[Any]) -> bytes:
    from onnx import helper

    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="ptdit")
    model.ir_version = 8
    return bytes(model.SerializeToString())


def velocity_graph(latent_shape: tuple[int, ...], steps: int) -> bytes:
    from onnx import TensorProto, helper

    f32 = TensorProto.FLOAT
    nodes = [
        helper.make_node("Sub", ["latent_next", "latent"], ["moved"]),
        helper.make_node("Gather", ["inverse_dt", "step"], ["scale"], axis=0),
        helper.make_node("Mul", ["moved", "scale"], ["velocity"]),
    ]
    inputs = [helper.make_tensor_value_info("latent_next", f32, latent_shape),
              helper.make_tensor_value_info("latent", f32, latent_shape),
              helper.make_tensor_value_info("step", TensorProto.INT64, [1]),
              helper.make_tensor_value_info("inverse_dt", f32, [steps])]
    return _graph("ptdit_velocity", nodes, inputs, [helper.make_tensor_value_info("velocity", f32, latent_shape)])


def reuse_graph(latent_shape: tuple[int, ...], steps: int) -> bytes:
    from onnx import TensorProto, helper

    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    nodes = [
        helper.make_node("Gather", ["weight_a", "step"], ["k_a"], axis=0),
        helper.make_node("Gather", ["weight_b", "step"], ["k_b"], axis=0),
        helper.make_node("Mul", ["velocity_a", "k_a"], ["along_a"]),
        helper.make_node("Mul", ["velocity_b", "k_b"], ["along_b"]),
        helper.make_node("Add", ["along_a", "along_b"], ["moved"]),
        helper.make_node("Add", ["latent", "moved"], ["latent_next"]),
        helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", i64, [1], [1])),
        helper.make_node("Add", ["step", "one"], ["step_next"]),
    ]
    inputs = [helper.make_tensor_value_info("latent", f32, latent_shape),
              helper.make_tensor_value_info("step", i64, [1]),
              helper.make_tensor_value_info("velocity_a", f32, latent_shape),
              helper.make_tensor_value_info("velocity_b", f32, latent_shape),
              helper.make_tensor_value_info("weight_a", f32, [steps]),
              helper.make_tensor_value_info("weight_b", f32, [steps])]
    outputs = [helper.make_tensor_value_info("latent_next", f32, latent_shape),
               helper.make_tensor_value_info("step_next", i64, [1])]
    return _graph("ptdit_reuse", nodes, inputs, outputs)
