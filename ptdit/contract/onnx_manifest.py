"""The ONNX manifest (<stem>.json next to an ONNX, schema ptdit-onnx/1): written by ptdit-export for the
transformer and for each pipeline component, read by ptdit-build and the runtime. Its I/O, model, export,
geometry and block sections travel on in the plan manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .fp8 import Quantization
from .records import Record, optional
from .sizes import Size

ONNX_SCHEMA = "ptdit-onnx/1"


@dataclass(frozen=True)
class TensorSpec(Record):
    """One tensor of an artifact's I/O contract."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # a dtype name (ptdit.contract.dtypes): float32, float16, bfloat16, int64...


@dataclass(frozen=True)
class ArtifactFiles(Record):
    onnx: str
    external_data: str | None
    sha256: dict[str, str]  # every file of the artifact


@dataclass(frozen=True)
class Weights(Record):
    """Where the weights came from: seeded, or a checkpoint (path and sha256)."""

    source: str  # "seeded" or "checkpoint"
    seed: int | None = optional()
    path: str | None = optional()
    sha256: str | None = optional()  # of the checkpoint file (a weights folder: of its files' sha256, weights_sha256)
    key: str | None = optional()  # the state dict's key inside a nested checkpoint (--checkpoint-key)
    state_dict_sha256: str | None = optional()  # of the weights as exported (ptdit.checkpoint.state_dict_sha256)


@dataclass(frozen=True)
class ModelInfo(Record):
    config: dict[str, Any]  # PTDiTConfig.to_dict(), or the component's config
    parameters: int
    weights: Weights
    preset: str | None = optional()  # the transformer's preset
    kind: str = optional("ptdit")  # "ptdit", or a pipeline component: "t5", "vae"


@dataclass(frozen=True)
class StepGraph(Record):
    """How a runtime drives a step graph (ptdit-export --step)."""

    carry: dict[str, str]  # input -> its twin output, swapped after every step
    latent_dtype: str
    guidance: bool
    max_steps: int
    schedule: str
    update: str


@dataclass(frozen=True)
class ExportInfo(Record):
    precision: str  # fp32, fp16, bf16, fp8
    batch: int
    opset: int
    frames: int | None
    exporter: str
    tools: dict[str, str]
    # Exports made before step graphs (2026-11-25) lack the next two: they read as noise-prediction graphs.
    graph: str = "noise_prediction"  # "noise_prediction", "step", "text_encoder", "vae_decoder"
    step: StepGraph | None = None
    resolution: int | None = optional()  # the transformer's: its square side, or the class of a size that is not square
    size: list[int] | None = optional()  # the transformer's [height, width], where it is not square
    text_len: int | None = optional()  # the transformer's and the text encoder's
    latent: list[int] | None = optional()  # a VAE decoder tile's latent [h, w], or [t, h, w] (video)
    quantization: Quantization | None = optional()  # an FP8 export's (ptdit.contract.fp8)


    @property
    def image_size(self) -> Size | None:
        """The transformer's image size (None: a component's export)."""
        if self.size is not None:
            return Size(*self.size)
        return Size(self.resolution, self.resolution) if self.resolution is not None else None


@dataclass(frozen=True)
class ExportGeometry(Record):
    latent: list[int]
    tokens: list[int]
    window: list[int]
    windows: list[int]
    shift: list[int]
    proxy_mode: str
    proxy_offset: list[int] | None
    proxy_window: list[int] | None


@dataclass(frozen=True)
class BlockOutputs(Record):
    """The per-block tensors, named inside the graph (outputs of a plan only with ptdit-build --mark-blocks)."""

    names: list[str]
    shape: list[int] | None = optional()
    dtype: str | None = optional()
    layout: str | None = optional()


@dataclass(frozen=True)
class OnnxManifest(Record):
    SCHEMA: ClassVar[str] = ONNX_SCHEMA
    WRITER: ClassVar[str] = "ptdit-export"
    FIX: ClassVar[str] = "re-export it with ptdit-export"

    artifact: ArtifactFiles
    model: ModelInfo
    export: ExportInfo
    geometry: ExportGeometry | None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    block_outputs: BlockOutputs
    checks: dict[str, Any]
    schema: str = ONNX_SCHEMA

    @property
    def precision(self) -> str:
        return self.export.precision

    @property
    def files(self) -> dict[str, str]:
        return self.artifact.sha256
