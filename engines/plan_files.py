"""Files in and out of ptdit-build: the ONNX with its manifest, and where a plan goes and whether one is there."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptdit.contract.errors import InputError
from ptdit.contract.files import file_sha256
from ptdit.contract.manifests import read_artifact_manifest, read_manifest
from ptdit.contract.onnx_manifest import OnnxManifest
from ptdit.contract.plan_manifest import PlanManifest
from ptdit.contract.reuse import Existing


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    manifest: OnnxManifest

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(".onnx")

    @property
    def precision(self) -> str:
        return self.manifest.precision

    @property
    def sha256(self) -> str:
        return self.manifest.artifact.sha256[self.path.name]


def load_onnx(path: Path, verify: bool = True) -> OnnxArtifact:
    """The ONNX and its manifest (<stem>.json next to it), checked against each other."""
    if path.suffix != ".onnx":
        raise InputError(f"{path} is not an .onnx file: pass an ONNX written by ptdit-export")
    manifest = read_artifact_manifest(path, verify)
    assert isinstance(manifest, OnnxManifest)
    return OnnxArtifact(path, manifest)


def plan_stem(onnx_stem: str, targets_tag: str, builder_tag: str, mark_blocks: bool) -> str:
    """Plans are specific to the GPUs they target and to a TensorRT version, and their names say so
    ('-sm90-trt10.13', '-sm86-sm89-rtx1.7', '-portable-rtx1.7'), so that plans for several GPUs can sit
    next to one ONNX (and never overwrite its manifest)."""
    blocks = "-blocks" if mark_blocks else ""
    return f"{onnx_stem}-{targets_tag}-{builder_tag}{blocks}"


def read_plan_manifest(plan_path: Path) -> PlanManifest:
    """The manifest next to a plan this stage wrote (<plan stem>.json)."""
    manifest_path = plan_path.with_suffix(".json")
    return read_manifest(PlanManifest, manifest_path, "this plan",
                         f"{plan_path} has no manifest ({manifest_path.name})")


def existing_plan_state(plan_path: Path, onnx: OnnxArtifact, build_identity: dict[str, Any]) -> Existing[None]:
    """Absent if nothing is there; current if the plan was built from this ONNX with the same options; otherwise
    stale, saying why."""
    manifest_path = plan_path.with_suffix(".json")
    if not plan_path.exists() and not manifest_path.exists():
        return Existing.absent()
    if not manifest_path.exists():
        return Existing.stale(f"{plan_path.name} has no manifest, so its origin is unknown")
    try:
        manifest = read_plan_manifest(plan_path)
    except InputError as e:  # unreadable, foreign or incomplete: the plan cannot be shown to be current
        return Existing.stale(f"{plan_path.name}'s manifest cannot be used ({e})")
    if manifest.onnx.sha256 != onnx.sha256:
        return Existing.stale(f"{plan_path.name} was built from a different ONNX (sha256 {manifest.onnx.sha256[:12]}, "
                              f"now {onnx.sha256[:12]})")
    if manifest.build.identity != build_identity:
        return Existing.stale(f"{plan_path.name} was built with different options, another builder or other targets")
    if not plan_path.exists() or file_sha256(plan_path) != manifest.plan.sha256:
        return Existing.stale(f"{plan_path.name} does not match its manifest")
    return Existing.current()
