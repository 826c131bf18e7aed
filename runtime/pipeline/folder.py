"""A pipeline folder (ptdit-export --pipeline) as the runtime sees it: its manifest, checked against its files, and
where each component's artifact is (its ONNX, or the plan ptdit-build made of it in the folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ptdit.contract.errors import InputError
from ptdit.contract.files import verify_files
from ptdit.contract.manifests import read_manifest
from ptdit.contract.pipeline_manifest import SIZED_SCHEMA, PipelineManifest


@dataclass(frozen=True)
class PipelineFolder:
    path: Path
    manifest: PipelineManifest

    def file(self, name: str) -> Path:
        return self.path / name


FOLDER_FIX = "pass a folder written by ptdit-export --pipeline (the folder that holds pipeline.json)"
_GRAPHS = {"noise_prediction": "transformer", "step": "transformer step", "text_encoder": "text encoder",
           "vae_decoder": "VAE decoder"}


def check_pipeline_path(path: Path) -> None:
    """A pipeline folder is a folder: a path that is missing or a file is refused in one line naming what it is
    (before anything reads path/pipeline.json, which a file makes "Not a directory")."""
    if not path.exists():
        raise InputError(f"{path} does not exist: {FOLDER_FIX}")
    if path.is_dir():
        return
    suffix = path.suffix.lower()
    kind = {".onnx": "an ONNX", ".plan": "a TensorRT plan", ".json": "a JSON file"}.get(suffix, "a file")
    if suffix in (".onnx", ".plan"):
        from ptdit.contract.manifests import read_artifact_manifest

        try:
            graph = read_artifact_manifest(path, verify=False).export.graph
        except InputError:  # no manifest beside it, or not one of ours: still a file, not a folder
            pass
        else:
            kind = f"a {_GRAPHS.get(graph, graph)} {'ONNX' if suffix == '.onnx' else 'TensorRT plan'}"
    raise InputError(f"{path} is {kind}, not a pipeline folder: {FOLDER_FIX}")


def load_pipeline(path: str | Path, verify: bool = True) -> PipelineFolder:
    path = Path(path)
    check_pipeline_path(path)
    manifest = read_manifest(PipelineManifest, path / "pipeline.json", "this folder",
                             f"{path} is a folder without pipeline.json: pass a folder written by ptdit-export "
                             f"--pipeline, or an .onnx / .plan")
    first = manifest.size_entries()[0]
    if (manifest.schema == SIZED_SCHEMA) != (manifest.sizes is not None) or (
            first.transformer, first.step_graph, first.plan) != (
            manifest.transformer, manifest.step_graph, manifest.vae_decoder.plan):
        raise InputError(f"{path / 'pipeline.json'} does not agree with itself: its first size ({first.transformer}) "
                         f"is not the one its top names ({manifest.transformer}), or its schema is not that of its "
                         f"sizes; {PipelineManifest.FIX}")
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
