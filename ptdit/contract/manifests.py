"""Reading and writing the manifests (ptdit.contract.onnx_manifest, plan_manifest, pipeline_manifest): one way
for every stage. A manifest of another schema, or one that lacks a field or holds a value of the wrong kind, is
refused in one line that names it and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar, Union

from .errors import InputError
from .files import read_json, verify_files, write_json
from .onnx_manifest import OnnxManifest
from .pipeline_manifest import PipelineManifest
from .plan_manifest import PlanManifest
from .records import RecordError, from_json, to_json

Manifest = Union[OnnxManifest, PlanManifest, PipelineManifest]
M = TypeVar("M", OnnxManifest, PlanManifest, PipelineManifest)


def read_manifest(cls: type[M], path: Path, of: str, missing: str) -> M:
    """The manifest at `path` (the manifest of `of`: "this .onnx", "this folder"...); `missing` is the error
    when there is no file. A foreign schema or a missing field is a one-line InputError with the fix."""
    data = read_json(path, missing)
    schemas = getattr(cls, "SCHEMAS", (cls.SCHEMA,))  # every schema this version reads
    if data.get("schema") not in schemas:
        raise InputError(f"{path} is not the manifest of {of}: it is not a {cls.WRITER} manifest (schema "
                         f"{data.get('schema')!r}, expected {' or '.join(map(repr, schemas))}); {cls.FIX}")
    try:
        return from_json(cls, data)
    except RecordError as e:
        raise InputError(f"manifest {path} is not valid: {e}; {cls.FIX}") from None


def read_artifact_manifest(path: Path, verify: bool = True) -> OnnxManifest | PlanManifest:
    """The manifest of an .onnx or a .plan (<stem>.json next to it); with `verify`, the files must match the
    sha256 it records."""
    if path.suffix not in (".onnx", ".plan"):
        raise InputError(f"{path} is neither an .onnx nor a .plan file: pass an artifact of ptdit-export or "
                         f"ptdit-build")
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    json_path = path.with_suffix(".json")
    of, missing = f"this {path.suffix}", (f"{path} has no manifest ({json_path.name}): keep the files ptdit-export "
                                          f"and ptdit-build wrote together")
    manifest: OnnxManifest | PlanManifest
    if path.suffix == ".onnx":
        manifest = read_manifest(OnnxManifest, json_path, of, missing)
    else:
        manifest = read_manifest(PlanManifest, json_path, of, missing)
    if verify:
        verify_files(path.parent, manifest.files, "its manifest", manifest.FIX)
    return manifest


def write_manifest(path: Path, manifest: Manifest) -> None:
    """Sorted keys: the same manifest gives the same bytes."""
    write_json(path, to_json(manifest))
