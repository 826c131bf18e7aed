"""A pipeline folder (ptdit-export --pipeline) as the runtime sees it: its manifest, checked against its files, and
where each component's artifact is (its ONNX, or the plan ptdit-build made of it in the folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptdit.contract.errors import InputError
from ptdit.contract.files import verify_files
from ptdit.contract.manifests import read_manifest
from ptdit.contract.pipeline_manifest import PipelineManifest


@dataclass(frozen=True)
class PipelineFolder:
    path: Path
    manifest: PipelineManifest

    def file(self, name: str) -> Path:
        return self.path / name


def load_pipeline(path: str | Path, verify: bool = True) -> PipelineFolder:
    path = Path(path)
    manifest = read_manifest(PipelineManifest, path / "pipeline.json", "this folder",
                             f"{path} is a folder without pipeline.json: pass a folder written by ptdit-export "
                             f"--pipeline, or an .onnx / .plan")
    if verify:
        verify_files(path, manifest.files, "pipeline.json", PipelineManifest.FIX)
    return PipelineFolder(path, manifest)


def component_path(folder: PipelineFolder, onnx_name: str, backend: str) -> Path:
    """The component's ONNX, or for the TensorRT backend the plan ptdit-build made of it in the folder."""
    onnx_path = folder.file(onnx_name)
    if backend != "tensorrt":
        return onnx_path
    stem = onnx_name.removesuffix(".onnx")
    plans = sorted(p for p in folder.path.glob(f"{stem}-*.plan") if not p.name.endswith("-blocks.plan")
                   and not p.name.startswith(f"{stem}-step-"))  # the step graph's plans: another component
    if not plans:
        raise InputError(f"no plan of {onnx_name} in {folder.path}: build one with ptdit-build {onnx_path}")
    return plans[0]
