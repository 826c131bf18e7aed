"""An artifact (ONNX or TensorRT plan) and its manifest, as the runtime sees them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import InputError
from .tensors import TensorSpec

SCHEMAS = {".onnx": "ptdit-onnx/1", ".plan": "ptdit-plan/2"}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Artifact:
    path: Path
    manifest: dict[str, Any]

    @property
    def kind(self) -> str:
        return "plan" if self.path.suffix == ".plan" else "onnx"

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(t) for t in self.manifest["inputs"]]

    @property
    def outputs(self) -> list[TensorSpec]:
        return [TensorSpec.from_dict(t) for t in self.manifest["outputs"]]

    @property
    def precision(self) -> str:
        return str(self.manifest["precision"] if self.kind == "plan" else self.manifest["export"]["precision"])

    @property
    def export(self) -> dict[str, Any]:
        return dict(self.manifest["export"])

    @property
    def batch(self) -> int:
        return int(self.manifest["export"]["batch"])

    @property
    def is_step(self) -> bool:
        """A step graph (ptdit-export --step): the whole denoising step, sampler state carried in and out."""
        return self.manifest["export"].get("graph") == "step"

    def spec(self, name: str) -> TensorSpec:
        for t in [*self.inputs, *self.outputs]:
            if t.name == name:
                return t
        raise InputError(f"the artifact has no tensor '{name}'")


def load_artifact(path: str | Path, verify: bool = True) -> Artifact:
    """The artifact and its manifest (<stem>.json next to it); with `verify`, the files must match the
    sha256 the manifest records (corrupt or replaced files are refused)."""
    path = Path(path)
    if path.suffix not in SCHEMAS:
        raise InputError(f"{path} is neither an .onnx nor a .plan file: pass an artifact of ptdit-export or ptdit-build")
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    manifest_path = path.with_suffix(".json")
    manifest = read_manifest(manifest_path, f"{path} has no manifest ({manifest_path.name}); the runtime reads the I/O "
                                            f"contract from it: keep the files ptdit-export / ptdit-build wrote together")
    if not isinstance(manifest, dict) or manifest.get("schema") != SCHEMAS[path.suffix]:
        found = manifest.get("schema") if isinstance(manifest, dict) else None
        rebuild = "; rebuild the plan with ptdit-build" if path.suffix == ".plan" else ""
        raise InputError(f"{manifest_path} is not the manifest of this {path.suffix} (schema {found!r}, "
                         f"expected {SCHEMAS[path.suffix]!r}){rebuild}")
    if verify:
        files = ({manifest["plan"]["file"]: manifest["plan"]["sha256"]} if path.suffix == ".plan"
                 else manifest["artifact"]["sha256"])
        verify_files(path.parent, files, "its manifest", "rebuild it")
    return Artifact(path, manifest)


def read_manifest(path: Path, missing: str) -> Any:
    """The JSON at `path`; `missing` is the one-line error when there is none."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(missing) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"manifest {path} is not readable JSON ({e})") from None


def verify_files(directory: Path, recorded: dict[str, str], manifest: str, fix: str) -> None:
    """Every file `manifest` lists must be in `directory` with the sha256 recorded there."""
    for name, sha256 in recorded.items():
        f = directory / name
        if not f.is_file():
            raise InputError(f"{f} is missing: {manifest} lists it as part of the artifact")
        if file_sha256(f) != sha256:
            raise InputError(f"{f} does not match {manifest} (sha256 differs): the file is corrupt or was replaced; "
                             f"{fix}")
