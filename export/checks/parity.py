"""ONNX Runtime (CPU) against PyTorch on the same seeded inputs: the export's numerical checks.

- first_block_parity (--checks fast): the graph cut to its first block against the same cut of the model in fp32;
- whole_model_parity (--checks full): the whole graph against PyTorch fp32 and, for fp16 / bf16, against PyTorch
  running the same precision policy;
- component_parity: a pipeline component (text encoder, VAE tile), whole or cut to its first layer.
Each returns what the manifest records, or raises CheckFailed.
"""

from __future__ import annotations

import copy
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import onnx

from ptdit.contract.bf16 import has_bf16
from ptdit.contract.onnx_manifest import TensorSpec

from ..options import torch_device
from ..spec import ExportSpec
from . import CheckFailed
from .first_block import first_block_graph, first_block_model
from .runs import against_references, compared_output, parity_inputs, run_onnxruntime, run_torch

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ptdit import PTDiT
    from ptdit.fp8 import LayerScales

PARITY_SEED = 0
# Largest accepted relative L2 error of ONNX Runtime against the PyTorch fp32 model, per export precision.
# fp32: 1e-5, an exact export up to summation order; fp16 and bf16 leave ~10x and ~5x headroom over what xl
# measured (docs/benchmarks.md, "Export accuracy").
# fp8: FP8_MAX_REL_L2 (below).
MAX_REL_L2 = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 1e-1, "fp8": 0.15}
# ... and against PyTorch running the same precision policy (the exporter must not add error of its own
# beyond kernel rounding differences; for fp8, PyTorch's fake-quantized twin at the same scales).
MAX_REL_L2_SAME_PRECISION = {"fp16": 2e-2, "bf16": 1e-1, "fp8": 0.1}


@dataclass
class ExportedGraph:
    """What the checks look at: the written file, its spec and I/O, and the PyTorch model it was traced from."""

    path: Path
    spec: ExportSpec
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    model: PTDiT
    block_names: list[str]
    scales: dict[str, LayerScales] | None = None  # an FP8 export's

    def same_precision_output(self, check: str, feeds: dict[str, np.ndarray], device: str) -> np.ndarray:
        """PyTorch computing as the graph does: the exported model, fake-quantized at the FP8 scales if any."""
        from ptdit.fp8 import fake_quantized

        if self.scales is None:
            return self.torch_output(check, self.model, feeds, device)
        with fake_quantized(self.model, self.scales):
            return self.torch_output(check, self.model, feeds, device)

    @property
    def compared(self) -> str:
        return "latent_next - latent (dt = 1: the guided velocity)" if self.spec.step else "noise_pred"

    def torch_output(self, check: str, model: PTDiT, feeds: dict[str, np.ndarray], device: str) -> np.ndarray:
        """The compared output of a PyTorch model, wrapped in the denoising step for a step graph."""
        from ptdit.step import DenoisingStep

        module = DenoisingStep(model) if self.spec.step else model
        return _compared(check, run_torch(module, feeds, self.inputs, self.outputs, device), feeds)


def first_block_parity(graph: ExportedGraph, inferred: onnx.ModelProto, device_choice: str) -> dict[str, Any]:
    """ONNX Runtime on the graph cut to its first block (embeddings, block 0, final layer) against the same cut
    of the PyTorch model in fp32 with the exported weights: every operator of the graph, ~1/depth of the cost."""
    name = "onnxruntime_parity_first_block"
    feeds = parity_inputs(graph.inputs, PARITY_SEED)
    cut = graph.path.with_name(graph.path.stem + ".first-block.onnx")
    try:
        first_block_graph(graph.path, graph.block_names, cut)
        cut_inferred = onnx.shape_inference.infer_shapes(onnx.load(str(cut), load_external_data=False))
        onnx_out = _compared(name, run_onnxruntime(cut, feeds, cut_inferred), feeds)
    finally:
        cut.unlink(missing_ok=True)
    device = torch_device(device_choice)
    reference = first_block_model(graph.model)
    expected = graph.torch_output(name, reference, feeds, device)
    del reference
    result = against_references(onnx_out, {"fp32": expected}, {"fp32": MAX_REL_L2[graph.spec.precision]})
    result.update(provider="CPUExecutionProvider", torch_device=device, seed=PARITY_SEED, blocks=1,
                  reference="PyTorch fp32, the exported weights", bf16_emulated=has_bf16(inferred),
                  compared=graph.compared)
    if not result["passed"]:
        error = result["vs_torch_fp32"]
        raise CheckFailed(name, f"ONNX Runtime output of the first-block graph differs from PyTorch (rel L2 "
                                f"{error['rel_l2']:.3g}, max {error['max_rel_l2']:.3g})")
    return result


def whole_model_parity(graph: ExportedGraph, inferred: onnx.ModelProto, device_choice: str,
                       fp32_model: Callable[[], PTDiT]) -> dict[str, Any]:
    """The whole graph against PyTorch fp32 (`fp32_model` builds it) and, for fp16 / bf16 / fp8, against the
    exported model itself, which runs the same precision policy (fp8: fake-quantized, and unquantized too)."""
    name = "onnxruntime_parity"
    feeds = parity_inputs(graph.inputs, PARITY_SEED)
    onnx_out = _compared(name, run_onnxruntime(graph.path, feeds, inferred), feeds)
    device = torch_device(device_choice)
    precision = graph.spec.precision
    thresholds = {"fp32": MAX_REL_L2[precision]}
    if precision == "fp32":
        references = {"fp32": graph.torch_output(name, graph.model, feeds, device)}
    else:
        references = {"same_precision": graph.same_precision_output(name, feeds, device)}
        thresholds["same_precision"] = MAX_REL_L2_SAME_PRECISION[precision]
        if graph.scales is not None:  # the unquantized fp16 model: what FP8 costs over fp16
            references["fp16"] = graph.torch_output(name, graph.model, feeds, device)
            thresholds["fp16"] = MAX_REL_L2[precision]
        references["fp32"] = graph.torch_output(name, fp32_model(), feeds, device)
        gc.collect()
    result = against_references(onnx_out, references, thresholds)
    result.update(provider="CPUExecutionProvider", torch_device=device, seed=PARITY_SEED,
                  bf16_emulated=has_bf16(inferred), compared=graph.compared)
    if not result["passed"]:
        worst = ", ".join(f"{k}: rel L2 {v['rel_l2']:.3g} (max {v['max_rel_l2']:.3g})"
                          for k, v in result.items() if isinstance(v, dict) and "max_rel_l2" in v)
        raise CheckFailed(name, f"ONNX Runtime output differs from PyTorch ({worst})")
    return result


def component_parity(stem: str, path: Path, inferred: onnx.ModelProto, module: torch.nn.Module,
                     cut: torch.nn.Module | None, inputs: list[TensorSpec], outputs: list[TensorSpec],
                     feeds: dict[str, np.ndarray], max_rel_l2: float, opset: int) -> dict[str, Any]:
    """ONNX Runtime on the written file, or with a `cut` of the module (its first layer) on that cut exported
    next to it for the purpose, against the same module in PyTorch fp32 (its own weights, upcast)."""
    from ..exporter import save, trace_component

    name, target, files, reference = outputs[0].name, path, [], module
    if cut is not None:
        reference = cut
        target = path.with_name(f"{stem}.first-layer.onnx")  # no leading dot: onnx refuses ".." in data locations
        files = save(trace_component(cut, inputs, outputs, opset), target, {})
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(target), load_external_data=False))
    try:
        got = run_onnxruntime(target, feeds, inferred)[name]
    finally:
        for f in files:
            f.unlink(missing_ok=True)
    expected = run_torch(copy.deepcopy(reference).float(), feeds, inputs, outputs)[name]
    parity = against_references(got, {"fp32": expected}, {"fp32": max_rel_l2})
    if not parity["passed"]:
        error = parity["vs_torch_fp32"]["rel_l2"]
        raise CheckFailed("onnxruntime_parity", f"{stem}: ONNX Runtime differs from PyTorch (rel L2 {error:.3g}, "
                                                f"max {max_rel_l2:.3g})")
    return parity


def _compared(check: str, outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
    try:
        return compared_output(outputs, feeds)
    except ValueError as e:
        raise CheckFailed(check, str(e)) from None
