"""Whether an export is already there: a graph whose manifest records the same model, weights and export options
(and checks at least as thorough) and whose files match it is up to date and reused, as ptdit-build reuses a plan;
anything else under its name is stale and is replaced only when the caller forces it."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

from ptdit.contract.errors import InputError
from ptdit.contract.files import file_sha256, verify_files
from ptdit.contract.fp8 import FP8
from ptdit.contract.manifests import read_manifest
from ptdit.contract.onnx_manifest import OnnxManifest
from ptdit.contract.reuse import Existing

from .calibration import recorded_calibration
from .options import ExportOptions, artifact_files
from .spec import ExportSpec

CHECK_ORDER = ("none", "fast", "full")  # each level runs what the one before it runs, and more


class Wanted:
    """What the options ask of each graph, in the terms its manifest records."""

    def __init__(self, opts: ExportOptions):
        # --checks auto asks for the default, fast: an export checked fast on a CPU is current on a GPU machine too,
        # where auto would run the full checks for a new export
        self.opts, self.level = opts, "fast" if opts.checks == "auto" else opts.checks

    @cached_property
    def weights(self) -> dict[str, Any]:
        if self.opts.checkpoint is None:
            return {"source": "seeded", "seed": self.opts.seed}
        return {"source": "checkpoint", "sha256": file_sha256(self.opts.checkpoint), "key": self.opts.checkpoint_key}

    def of(self, spec: ExportSpec) -> dict[str, Any]:
        return {"model config": self.opts.cfg.to_dict(), "weights": self.weights, "graph": spec.graph,
                "precision": spec.precision, "batch": spec.batch, "opset": spec.opset, "frames": spec.frames,
                "size": str(spec.size), "text length": spec.text_len, "calibration": self.calibration}

    @cached_property
    def calibration(self) -> dict[str, Any] | None:
        return self.opts.calibration.wanted() if self.opts.precision == FP8 else None


def recorded(manifest: OnnxManifest) -> dict[str, Any]:
    weights = manifest.model.weights
    export = manifest.export
    quantization = export.quantization
    return {"model config": manifest.model.config,
            "weights": ({"source": "seeded", "seed": weights.seed} if weights.source == "seeded"
                        else {"source": weights.source, "sha256": weights.sha256, "key": weights.key}),
            "graph": export.graph, "precision": export.precision, "batch": export.batch, "opset": export.opset,
            "frames": export.frames, "size": str(export.image_size), "text length": export.text_len,
            "calibration": recorded_calibration(quantization) if quantization else None}


def checked_level(manifest: OnnxManifest) -> str:
    checks = manifest.checks
    return "none" if checks.get("skipped") else str(checks.get("level", "none"))


def existing_state(out_dir: Path, spec: ExportSpec, wanted: Wanted) -> Existing[OnnxManifest]:
    """Absent when nothing of the graph is there; current (with its manifest) when it is up to date; otherwise stale,
    saying why."""
    onnx_path, data_path, manifest_path = artifact_files(out_dir, spec.stem)
    there = [p for p in (onnx_path, data_path, manifest_path) if p.exists() or p.is_symlink()]
    if not there:
        return Existing.absent()
    if manifest_path not in there:
        return Existing.stale(f"{there[0]} has no manifest ({manifest_path.name}), so what it holds is unknown")
    try:
        manifest = read_manifest(OnnxManifest, manifest_path, "this export", "")
        verify_files(out_dir, manifest.files, manifest_path.name, "")
    except InputError as e:
        return Existing.stale(f"{manifest_path} cannot be used ({e.template.rstrip('; ')})")
    extra = [p.name for p in there if p.name not in manifest.files and p != manifest_path]
    if extra:
        verb = "is" if len(extra) == 1 else "are"
        return Existing.stale(f"{', '.join(extra)} in {out_dir} {verb} not in its manifest")
    have, want = _plain(recorded(manifest)), _plain(wanted.of(spec))
    differs = [key for key in want if have.get(key) != want[key]]
    if differs:
        return Existing.stale(f"{onnx_path} was exported with other settings ({', '.join(differs)} differ)")
    done = checked_level(manifest)
    if CHECK_ORDER.index(done) < CHECK_ORDER.index(wanted.level):
        return Existing.stale(f"{onnx_path} was checked at level {done}, and {wanted.level} is asked for")
    return Existing.current(manifest)


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """As JSON holds them (tuples as lists), so that options and a manifest compare."""
    plain: dict[str, Any] = json.loads(json.dumps(values))
    return plain
