"""Files in and out of ptdit-build: the ONNX and its manifest, the plan and its manifest."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError

ONNX_SCHEMA = "ptdit-onnx/1"
PLAN_SCHEMA = "ptdit-plan/2"  # 2: builder target (tensorrt / rtx) and compute-capability targets


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{what} {path} is not readable JSON ({e})") from None
    if not isinstance(data, dict):
        raise InputError(f"{what} {path} is not a JSON object")
    return data


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


@dataclass(frozen=True)
class OnnxArtifact:
    path: Path
    manifest: dict[str, Any]

    @property
    def stem(self) -> str:
        return self.path.name.removesuffix(".onnx")

    @property
    def precision(self) -> str:
        return str(self.manifest["export"]["precision"])

    @property
    def sha256(self) -> str:
        return str(self.manifest["artifact"]["sha256"][self.path.name])


def load_onnx(path: Path, verify: bool = True) -> OnnxArtifact:
    """The ONNX and its manifest (<stem>.json next to it), checked against each other."""
    if path.suffix != ".onnx":
        raise InputError(f"{path} is not an .onnx file: pass an ONNX written by ptdit-export")
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    manifest_path = path.with_suffix(".json")
    if not manifest_path.is_file():
        raise InputError(f"{path} has no manifest ({manifest_path.name}): export it with ptdit-export, which "
                         f"writes the two together")
    manifest = read_json(manifest_path, "ONNX manifest")
    if manifest.get("schema") != ONNX_SCHEMA:
        raise InputError(f"{manifest_path} is not a ptdit-export manifest (schema {manifest.get('schema')!r}, "
                         f"expected {ONNX_SCHEMA!r})")
    artifact = OnnxArtifact(path, manifest)
    if verify:
        for name, expected in manifest["artifact"]["sha256"].items():
            f = path.with_name(name)
            if not f.is_file():
                raise InputError(f"{f} is missing: the manifest lists it as part of the artifact; re-export")
            if file_sha256(f) != expected:
                raise InputError(f"{f} does not match its manifest (sha256 differs): the files were changed "
                                 f"after export; re-export with ptdit-export")
    return artifact


def plan_stem(onnx_stem: str, targets_tag: str, builder_tag: str, mark_blocks: bool) -> str:
    """Plans are specific to the GPUs they target and to a TensorRT version, and their names say so
    ('-sm90-trt10.13', '-sm86-sm89-rtx1.7', '-portable-rtx1.7'), so that plans for several GPUs can sit
    next to one ONNX (and never overwrite its manifest)."""
    blocks = "-blocks" if mark_blocks else ""
    return f"{onnx_stem}-{targets_tag}-{builder_tag}{blocks}"


def existing_plan_state(plan_path: Path, onnx: OnnxArtifact, build_identity: dict[str, Any]) -> str | None:
    """None if nothing is there; "current" if the plan was built from this ONNX with the same options;
    otherwise a sentence saying why it is stale."""
    manifest_path = plan_path.with_suffix(".json")
    if not plan_path.exists() and not manifest_path.exists():
        return None
    if not manifest_path.exists():
        return f"{plan_path.name} has no manifest, so its origin is unknown"
    manifest = read_json(manifest_path, "plan manifest")
    recorded = manifest.get("onnx", {}).get("sha256")
    if recorded != onnx.sha256:
        return f"{plan_path.name} was built from a different ONNX (sha256 {str(recorded)[:12]}, now {onnx.sha256[:12]})"
    if manifest.get("build", {}).get("identity") != build_identity:
        return f"{plan_path.name} was built with different options, another builder or other targets"
    if not plan_path.exists() or file_sha256(plan_path) != manifest.get("plan", {}).get("sha256"):
        return f"{plan_path.name} does not match its manifest"
    return "current"


def publish(files: list[Path], out_dir: Path) -> list[Path]:
    """Move finished files into place in order (the manifest last)."""
    placed = []
    for f in files:
        target = out_dir / f.name
        os.replace(f, target)
        placed.append(target)
    return placed
