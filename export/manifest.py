"""The ONNX manifest of what ptdit-export writes: the transformer's and each pipeline component's
(ptdit.contract.onnx_manifest is the schema). No timestamps: the same export gives the same bytes."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptdit.contract.dtypes import PRECISION_DTYPES
from ptdit.contract.files import file_sha256
from ptdit.contract.fp8 import FORMAT, LAYER_KINDS, LAYER_SETS, Calibration, Quantization
from ptdit.contract.onnx_manifest import (
    ArtifactFiles,
    BlockOutputs,
    ExportGeometry,
    ExportInfo,
    ModelInfo,
    OnnxManifest,
    StepGraph,
    TensorSpec,
    Weights,
)
from ptdit.resolution import resolution_of

from .spec import STEP_CARRY, STEP_SCHEDULE_LEN, ExportSpec

if TYPE_CHECKING:
    from ptdit import PTDiT, PTDiTConfig
    from ptdit.fp8 import LayerScales
    from ptdit.resolution import Geometry

EXPORTER = "torch.onnx.export(dynamo=True, optimize=False) + constant folding"


def tool_versions() -> dict[str, str]:
    versions = {}
    for dist in ("ptdit-deploy", "torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime-gpu", "onnxruntime"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def artifact_section(files: list[Path]) -> ArtifactFiles:
    """The ONNX (first) and its external data (second, when there is one), with their sha256."""
    return ArtifactFiles(files[0].name, files[1].name if len(files) > 1 else None,
                         {f.name: file_sha256(f) for f in files})


def step_graph(spec: ExportSpec) -> StepGraph | None:
    """How a runtime drives a step graph; None for a noise-prediction graph."""
    if not spec.step:
        return None
    velocity = "v = uncond + g (cond - uncond)" if spec.guided else "v = the conditional prediction"
    return StepGraph(
        carry=dict(STEP_CARRY),
        latent_dtype="float32",  # at every precision: the model casts on entry, the update runs in fp32
        guidance=spec.guided,
        max_steps=STEP_SCHEDULE_LEN - 1,
        schedule="timesteps in [0, 1000], decreasing, then 0, zero-padded",
        update=f"latent + v (t - t_next) / 1000 in fp32, {velocity}",
    )


FP8_SCHEME = ("per-tensor symmetric scales for the input activation and the weight of each quantized Linear "
              "(QuantizeLinear / DequantizeLinear, fp16 scales, weights stored as FLOAT8E4M3FN); attention matmuls "
              "and the other layers in fp16")


def quantization_record(scales: dict[str, LayerScales], calibration: Calibration, layer_set: str) -> Quantization:
    kinds = LAYER_SETS[layer_set]
    return Quantization(format=FORMAT, scheme=FP8_SCHEME, layer_set=layer_set, quantized_kinds=sorted(kinds),
                        kept_kinds=[kind for kind, _ in LAYER_KINDS if kind not in kinds],
                        calibration=calibration, scales={name: [s.input, s.weight] for name, s in scales.items()})


def transformer_manifest(cfg: PTDiTConfig, spec: ExportSpec, geo: Geometry, model: PTDiT, weights: Weights,
                         files: list[Path], inputs: list[TensorSpec], outputs: list[TensorSpec],
                         block_names: list[str], checks: dict[str, Any],
                         quantization: Quantization | None = None) -> OnnxManifest:
    return OnnxManifest(
        artifact=artifact_section(files),
        model=ModelInfo(cfg.to_dict(), model.num_parameters(), weights, preset=cfg.name),
        export=ExportInfo(
            graph=spec.graph, precision=spec.precision, batch=spec.batch,
            opset=spec.opset, frames=spec.frames, step=step_graph(spec), exporter=EXPORTER, tools=tool_versions(),
            resolution=resolution_of(spec.size),
            size=None if spec.size.square else [spec.size.height, spec.size.width], text_len=spec.text_len,
            quantization=quantization),
        geometry=ExportGeometry(
            latent=list(inputs[0].shape[2:]), tokens=list(geo.grid), window=list(geo.window),
            windows=list(geo.windows), shift=list(geo.shift), proxy_mode=cfg.proxy_mode,
            proxy_offset=list(cfg.proxy_offset) if cfg.proxy_offset else None,
            proxy_window=list(cfg.proxy_window) if cfg.proxy_window else None),
        inputs=inputs,
        outputs=outputs,
        block_outputs=BlockOutputs(
            names=block_names, shape=[spec.batch, geo.num_windows, geo.window_size, cfg.hidden_size],
            dtype=PRECISION_DTYPES[spec.precision],
            layout="window-major tokens [batch, windows, tokens per window, channels]"),
        checks=checks,
    )


def component_manifest(model: ModelInfo, graph: str, precision: str, opset: int, files: list[Path],
                       inputs: list[TensorSpec], outputs: list[TensorSpec], checks: dict[str, Any],
                       text_len: int | None = None, latent: list[int] | None = None) -> OnnxManifest:
    """A pipeline component (text encoder, VAE decoder tile): batch 1, no geometry, no block tensors."""
    return OnnxManifest(
        artifact=artifact_section(files),
        model=model,
        export=ExportInfo(graph=graph, precision=precision, batch=1, opset=opset, frames=None, step=None,
                          exporter=EXPORTER, tools=tool_versions(), text_len=text_len, latent=latent),
        geometry=None, inputs=inputs, outputs=outputs, block_outputs=BlockOutputs(names=[]), checks=checks,
    )
