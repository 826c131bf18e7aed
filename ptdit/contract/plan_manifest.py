"""The plan manifest (<plan stem>.json, schema ptdit-plan/2): written by ptdit-build, read by the runtime. It
carries the ONNX manifest's model, export, geometry and block sections, so that the runtime needs nothing else."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from .onnx_manifest import BlockOutputs, ExportGeometry, ExportInfo, ModelInfo, TensorSpec
from .records import Record, optional

PLAN_SCHEMA = "ptdit-plan/2"
# Where a plan's target compute capabilities came from (Targets.source).
BUILD_GPU_SOURCE, OPTION_SOURCE, RTX_DEFAULT_SOURCE = "build GPU", "--compute-capability", "TensorRT-RTX default"
RTX_FP8_DEFAULT_SOURCE = "TensorRT-RTX default, FP8-capable"  # an FP8 graph's default: the targets with FP8


@dataclass(frozen=True)
class BuildOptions(Record):
    """How ptdit-build was asked to build (its options; the plan manifest records them)."""

    workspace_gib: float = 8.0
    opt_level: int = 3  # TensorRT's own default; 5 searches longer for faster kernels
    timing_cache: Path | None = None
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    refittable: bool = False
    strip_plan: bool = False
    weight_streaming: bool = False
    fp16_weak: bool = False
    allow_fp32: bool = False
    mark_blocks: bool = False
    tiling_level: str | None = None  # None: the builder's default

    @property
    def flag_options(self) -> list[str]:
        """The boolean options that map to BuilderFlags, in a fixed order."""
        names = ["version_compatible", "exclude_lean_runtime", "refittable", "strip_plan", "weight_streaming",
                 "fp16_weak"]
        return [n for n in names if getattr(self, n)]

    def comparable(self) -> dict[str, Any]:
        """What makes two builds of the same ONNX interchangeable (the timing cache only speeds a build up)."""
        d = dict(self.to_dict())
        d.pop("timing_cache")
        return d


@dataclass(frozen=True)
class PlanFile(Record):
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class PlanSource(Record):
    file: str  # the ONNX, next to the plan where it was built
    sha256: str
    manifest: str


@dataclass(frozen=True)
class BuilderInfo(Record):
    target: str  # "tensorrt" or "rtx"
    module: str
    version: str
    strongly_typed: bool


@dataclass(frozen=True)
class Targets(Record):
    compute_capabilities: tuple[str, ...]
    source: str  # BUILD_GPU_SOURCE, OPTION_SOURCE, RTX_DEFAULT_SOURCE or RTX_FP8_DEFAULT_SOURCE

    @property
    def tag(self) -> str:
        """Part of the plan's name: 'sm90', 'sm86-sm89', or 'portable' for TensorRT-RTX's default set."""
        if self.source == RTX_DEFAULT_SOURCE:
            return "portable"
        return "-".join("sm" + cc.replace(".", "") for cc in self.compute_capabilities)


@dataclass(frozen=True)
class BuildGpu(Record):
    name: str
    compute_capability: str


@dataclass(frozen=True)
class BuildRecord(Record):
    flags: list[str]
    options: BuildOptions
    parse_seconds: float
    seconds: float
    peak_rss_bytes: int
    layers: int
    io_checked_from: str
    identity: dict[str, Any]  # what makes a rebuild unnecessary: ONNX, builder, targets, options
    # the engine's device memory in bytes as the builder logged it: weights, activation, device_persistent
    device_memory: dict[str, int] | None = optional()


@dataclass(frozen=True)
class PlanManifest(Record):
    SCHEMA: ClassVar[str] = PLAN_SCHEMA
    WRITER: ClassVar[str] = "ptdit-build"
    FIX: ClassVar[str] = "rebuild the plan with ptdit-build"

    plan: PlanFile
    onnx: PlanSource
    builder: BuilderInfo
    targets: Targets
    build_gpu: BuildGpu | None
    build: BuildRecord
    precision: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    model: ModelInfo
    export: ExportInfo
    geometry: ExportGeometry | None
    block_outputs: BlockOutputs | None  # None in plans built before 2026-11-25 without --mark-blocks
    schema: str = PLAN_SCHEMA

    @property
    def files(self) -> dict[str, str]:
        return {self.plan.file: self.plan.sha256}
