"""ONNX Runtime (CPU) against PyTorch on the same seeded inputs.

ONNX Runtime has no CPU kernels for bf16 arithmetic, so a bf16 graph is run as an equivalent fp32 graph in
which every bf16 tensor is rounded to bf16 right after it is produced (Cast to bf16 and back): bf16 storage
with fp32 arithmetic, which is what bf16 GPU kernels do too.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .spec import TensorSpec

if TYPE_CHECKING:
    import torch

    from ptdit import PTDiT

SIGNIFICANT_DIGITS = 4  # errors are recorded rounded, so that the manifest is reproducible byte for byte


def parity_inputs(inputs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs: Gaussian latent and text features, a timestep per sample, and a text mask whose
    length differs per sample (the rest is padding). A step graph gets step 1 of a schedule going from
    t = 700 to t = -300: dt = 1, so its update latent_next - latent is the (guided) velocity itself."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for t in inputs:
        if t.name == "timestep":
            feeds[t.name] = rng.uniform(0, 1000, size=t.shape).astype(np.float32)
        elif t.name == "text_mask":
            batch, length = t.shape
            mask = np.zeros(t.shape, dtype=np.int64)
            for i in range(batch):
                mask[i, : max(1, length * (batch + 1 - i) // (batch + 2))] = 1
            feeds[t.name] = mask
        elif t.name == "step":
            feeds[t.name] = np.ones(t.shape, dtype=np.int64)
        elif t.name == "schedule":
            feeds[t.name] = np.zeros(t.shape, dtype=np.float32)
            feeds[t.name][:3] = (1000.0, 700.0, -300.0)
        elif t.name == "guidance":
            feeds[t.name] = np.full(t.shape, 4.0, dtype=np.float32)
        else:
            feeds[t.name] = rng.standard_normal(t.shape, dtype=np.float32)
    return feeds


def compared_output(outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
    """What the parity check compares: noise_pred; for a step graph the update latent_next - latent (the
    carried latent would hide the model's error under its own magnitude), after checking that the step
    counter advanced by exactly one."""
    if "noise_pred" in outputs:
        return outputs["noise_pred"]
    if not np.array_equal(outputs["step_next"], feeds["step"] + 1):
        raise ValueError(f"step_next is {outputs['step_next'].tolist()}, expected {(feeds['step'] + 1).tolist()}")
    return outputs["latent_next"].astype(np.float64) - feeds["latent"]


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def error_metrics(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    a, e = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    diff = a - e
    norm_a, norm_e = float(np.linalg.norm(a)), float(np.linalg.norm(e))
    return {
        "max_abs": _round(float(np.abs(diff).max())),
        "mean_abs": _round(float(np.abs(diff).mean())),
        "rel_l2": _round(float(np.linalg.norm(diff)) / max(norm_e, 1e-300)),
        "cosine": _round(float(a @ e) / max(norm_a * norm_e, 1e-300)),
    }


def emulate_bf16(model: onnx.ModelProto) -> onnx.ModelProto:
    """fp32 twin of a shape-inferred bf16 graph (weights loaded) that rounds every bf16 tensor to bf16."""
    graph = model.graph
    for i, init in enumerate(graph.initializer):
        if init.data_type == TensorProto.BFLOAT16:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float32), init.name))
    bf16_values = set()
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.type.tensor_type.elem_type == TensorProto.BFLOAT16:
            value.type.tensor_type.elem_type = TensorProto.FLOAT
            bf16_values.add(value.name)
    nodes = []
    for node in graph.node:
        for attr in node.attribute:
            if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.BFLOAT16:
                attr.i = TensorProto.FLOAT
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == TensorProto.BFLOAT16:
                attr.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float32), attr.t.name))
        nodes.append(node)
        for k, out in enumerate(node.output):
            if out in bf16_values:
                raw, rounded = f"{out}__fp32", f"{out}__bf16"
                node.output[k] = raw
                nodes.append(onnx.helper.make_node("Cast", [raw], [rounded], to=TensorProto.BFLOAT16))
                nodes.append(onnx.helper.make_node("Cast", [rounded], [out], to=TensorProto.FLOAT))
    del graph.node[:]
    graph.node.extend(nodes)
    return model


def has_bf16(model: onnx.ModelProto) -> bool:
    return any(i.data_type == TensorProto.BFLOAT16 for i in model.graph.initializer) or any(
        a.name == "to" and a.i == TensorProto.BFLOAT16 for n in model.graph.node for a in n.attribute
    )


def run_onnxruntime(path: Path, feeds: dict[str, np.ndarray], inferred: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Run the file on ONNX Runtime's CPU provider (`inferred`: its shape-inferred graph, for bf16)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    target = path
    if has_bf16(inferred):
        target = path.with_name(path.stem + ".bf16-emulated.onnx")
        model = onnx.load(str(path))  # with weights
        model.graph.ClearField("value_info")
        model.graph.value_info.extend(inferred.graph.value_info)
        # onnx checks whether `location` exists relative to the working directory: a unique name.
        location = f"{target.parent.name}.{target.name}.data"
        onnx.save(emulate_bf16(model), str(target), save_as_external_data=True, location=location, size_threshold=1024)
        del model
    try:
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    finally:
        if target != path:
            target.unlink(missing_ok=True)
            target.with_name(f"{target.parent.name}.{target.name}.data").unlink(missing_ok=True)


def run_torch(module: torch.nn.Module, feeds: dict[str, np.ndarray], inputs: list[TensorSpec],
              outputs: list[TensorSpec], device: str = "cpu") -> dict[str, np.ndarray]:
    """One forward of the PyTorch module (a PTDiT, or a DenoisingStep for a step graph) on `device` (moved
    there and back); the outputs by the contract's names."""
    import torch

    args = [torch.from_numpy(feeds[t.name]).to(device) for t in inputs]
    module.to(device)
    try:
        with torch.no_grad():
            out = module(*args)
    finally:
        module.to("cpu")
    values = out if isinstance(out, tuple) else (out,)
    return {t.name: v.cpu().numpy() for t, v in zip(outputs, values)}


def compare(onnx_out: np.ndarray, references: dict[str, np.ndarray], thresholds: dict[str, float]) -> dict[str, Any]:
    """Metrics against each reference ("fp32", "same_precision"); `passed` when each rel L2 is within its
    threshold (a reference without a threshold is measured and recorded only)."""
    result: dict[str, Any] = {}
    passed = True
    for name, ref in references.items():
        metrics: dict[str, Any] = error_metrics(onnx_out, ref)
        if name in thresholds:
            metrics["max_rel_l2"] = thresholds[name]
            passed = passed and metrics["rel_l2"] <= thresholds[name]
        result[f"vs_torch_{name}"] = metrics
    result["passed"] = passed
    return result


def first_block_graph(path: Path, block_names: list[str], target: Path) -> None:
    """Write to `target` (in the same directory as `path`, so external weights stay reachable) the exported
    graph with every block after the first cut out: the last block's output tensor is replaced by the first
    block's, so the input embeddings, block 0 and the final layer run. Every block has the same operators,
    so this checks all of them at a fraction of the cost of the whole model."""
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    first, last = block_names[0], block_names[-1]
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == last:
                node.input[i] = first
    live = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):  # nodes are topologically sorted: one backward sweep finds the live ones
        if any(o in live for o in node.output):
            kept.append(node)
            live.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    initializers = [t for t in graph.initializer if t.name in live]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    value_info = [v for v in graph.value_info if v.name in live]
    del graph.value_info[:]
    graph.value_info.extend(value_info)
    onnx.save(model, str(target))


def first_block_model(model: PTDiT) -> PTDiT:
    """The fp32 PyTorch twin of first_block_graph: a depth-1 model holding the exported model's weights
    (block 0 and everything outside the blocks), upcast to fp32."""
    from ptdit import PTDiT

    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("transformer_blocks.") or k.startswith("transformer_blocks.0.")}
    reference = PTDiT(model.cfg.replace(depth=1), seed=model.seed).eval()
    reference.load_state_dict(state)  # copies with a cast to the reference's fp32
    return reference
