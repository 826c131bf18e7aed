"""An artifact (ONNX or TensorRT plan) and its manifest, as the runtime sees them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptdit.contract.errors import InputError
from ptdit.contract.manifests import read_artifact_manifest
from ptdit.contract.onnx_manifest import BlockOutputs, ExportInfo, ModelInfo, OnnxManifest, TensorSpec
from ptdit.contract.plan_manifest import PlanManifest


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: OnnxManifest | PlanManifest

    @property
    def kind(self) -> str:
        return "plan" if isinstance(self.manifest, PlanManifest) else "onnx"

    @property
    def plan(self) -> PlanManifest:
        """The plan manifest (an InputError for an ONNX: the caller wanted a plan)."""
        if not isinstance(self.manifest, PlanManifest):
            raise InputError(f"{self.path.name} is not a TensorRT plan; build one with ptdit-build")
        return self.manifest

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.manifest.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.manifest.outputs

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def export(self) -> ExportInfo:
        return self.manifest.export

    @property
    def model(self) -> ModelInfo:
        return self.manifest.model

    @property
    def block_outputs(self) -> BlockOutputs:
        return self.manifest.block_outputs or BlockOutputs(names=[])

    @property
    def batch(self) -> int:
        return self.manifest.export.batch

    @property
    def is_step(self) -> bool:
        """A step graph (ptdit-export --step): the whole denoising step, sampler state carried in and out."""
        return self.manifest.export.graph == "step"

    def spec(self, name: str) -> TensorSpec:
        for t in [*self.inputs, *self.outputs]:
            if t.name == name:
                return t
        raise InputError(f"the artifact has no tensor '{name}'")


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """The artifact and its manifest (<stem>.json next to it); with `verify`, the files must match the
    sha256 the manifest records (corrupt or replaced files are refused)."""
    path = Path(path)
    return Artifact(path, read_artifact_manifest(path, verify))
