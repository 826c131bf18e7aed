"""The checks of one exported file at a --checks level, in order, each timed: the structural checks, the real
TensorRT parse, then ONNX Runtime against PyTorch (the first block at "fast", the whole model at "full").
What each measured goes into the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ptdit.contract.onnx_manifest import TensorSpec

from ..progress import Stages
from . import CheckFailed, parity, structural, tensorrt_parse

if TYPE_CHECKING:
    import numpy as np
    import onnx
    import torch

    from ptdit import PTDiT

    from .parity import ExportedGraph


def run_checks(graph: ExportedGraph, level: str, device_choice: str, fp32_model: Callable[[], PTDiT],
               stages: Stages) -> dict[str, Any]:
    """The transformer's checks at `level` ("fast" or "full")."""
    results, inferred = structural_checks(graph.path, graph.inputs, graph.outputs, stages)
    results = {"level": level, **results}
    if level == "full":
        with stages.run("onnxruntime_parity", "ONNX Runtime (CPU) against PyTorch, whole model"):
            results["onnxruntime_parity"] = parity.whole_model_parity(graph, inferred, device_choice, fp32_model)
    else:
        with stages.run("onnxruntime_parity_first_block", "ONNX Runtime (CPU) against PyTorch, graph cut to block 0"):
            results["onnxruntime_parity_first_block"] = parity.first_block_parity(graph, inferred, device_choice)
    return results


def check_component(stem: str, path: Path, module: torch.nn.Module, cut: torch.nn.Module | None,
                    inputs: list[TensorSpec], outputs: list[TensorSpec], feeds: dict[str, np.ndarray],
                    max_rel_l2: float, opset: int, level: str, stages: Stages) -> dict[str, Any]:
    """A pipeline component's checks at `level`: the transformer's structural ones, then ONNX Runtime against
    PyTorch fp32 on the whole component, or at "fast" with a `cut`, on its first layer (every layer has the same
    operators; ~1/depth of the cost and memory)."""
    structural_results, inferred = structural_checks(path, inputs, outputs, stages)
    cut = cut if level == "fast" else None
    scope = "cut to its first layer" if cut is not None else "whole component"
    with stages.run(f"{stem}:parity", f"ONNX Runtime (CPU) against PyTorch fp32, {scope}"):
        result = parity.component_parity(stem, path, inferred, module, cut, inputs, outputs, feeds, max_rel_l2,
                                         opset)
    return {"level": level, **structural_results,
            "onnxruntime_parity": {**result, "scope": scope, "provider": "CPUExecutionProvider"}}


def structural_checks(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                      stages: Stages) -> tuple[dict[str, Any], onnx.ModelProto]:
    """Every check but the numerical one: onnx checker, static shapes, no random ops, TensorRT's operator table
    and rank limit, and the real parse. Returns the results and the shape-inferred graph."""
    results: dict[str, Any] = {}
    with stages.run("onnx_checker", "onnx checker (full check)"):
        results["onnx_checker"] = {"passed": True, **structural.onnx_checker(path)}
    with stages.run("static_shapes", "shape inference: every dimension static"):
        inferred = structural.infer_shapes(path)
        results["static_shapes"] = {"passed": True, **structural.static_shapes(inferred)}
    with stages.run("no_random_ops", "no Random* operators"):
        results["no_random_ops"] = {"passed": True, **structural.no_random_ops(inferred)}
    with stages.run("tensorrt_ops", "operators, types and ranks supported by TensorRT's ONNX parser"):
        results["tensorrt_ops"] = {"passed": True, **structural.tensorrt_ops(inferred)}
    with stages.run("tensorrt_parse", "parse with TensorRT's ONNX parser"):
        results["tensorrt_parse"] = real_parse(path, inputs, outputs)
    return results, inferred


def real_parse(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> dict[str, Any]:
    """The real parse (when a TensorRT builder is installed); the parsed network's I/O must be the contract's."""
    try:
        result = tensorrt_parse.parse(path)
    except tensorrt_parse.ParseFailed as e:
        raise CheckFailed("tensorrt_parse", str(e)) from None
    if not result["ran"]:
        return {"passed": None, **result}
    expected = [t.to_dict() for t in [*inputs, *outputs]]
    if result["io"] != expected:
        raise CheckFailed("tensorrt_parse", f"the parsed network's I/O {result['io']} is not the export's {expected}")
    return {"passed": True, **result}
