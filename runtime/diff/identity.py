"""Whether a diff report is up to date: its `identity` holds what its numbers depend on, the sha256 of every file
compared (the artifact's, a plan's diagnostic blocks plan, a pipeline folder's component plans) and every option
of the comparison, with the backend and the device resolved. A report holding the identity of a new run measured
the same, so ptdit-diff reuses it; any other report under that name is stale."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ptdit.contract.files import verify_files
from ptdit.contract.reuse import Existing

from ..artifact import load_artifact
from ..pipeline.folder import load_pipeline
from ..session import resolve_backend
from .artifact_diff import DiffOptions
from .report import has_blocks


def diff_identity(path: Path, options: DiffOptions, prompt: str | None) -> dict[str, Any]:
    """The identity of the diff of `path` with `options` (the sha256 as the manifests record them: a report is
    reused only after its files are checked against them, verify_identity)."""
    also: dict[str, dict[str, str]] = {}  # other files compared: their folder -> {name: sha256}
    if path.is_dir():
        files = load_pipeline(path, verify=False).manifest.files
        backend = "tensorrt" if options.backend == "tensorrt" else "onnxruntime"
        if backend == "tensorrt":
            for plan in sorted(path.glob("*.plan")):
                also.setdefault(str(path), {}).update(load_artifact(plan, verify=False).manifest.files)
    else:
        artifact = load_artifact(path, verify=False)
        files = dict(artifact.manifest.files)
        backend = resolve_backend(artifact, options.backend, options.tensorrt)
        if artifact.kind == "plan" and options.blocks:
            blocks = options.blocks_plan or path.with_name(path.stem + "-blocks.plan")
            if blocks.is_file():
                also[str(blocks.parent)] = dict(load_artifact(blocks, verify=False).manifest.files)
    chosen = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)
              if f.name not in ("verify", "tensorrt", "blocks_plan")}
    chosen["backend"] = backend
    if options.device == "auto":  # where "auto" ran: a report made on a CPU is not the GPU's
        from ..backends.onnxruntime_session import gpu_visible

        chosen["device"] = "auto (a CUDA GPU visible)" if gpu_visible() else "auto (no CUDA GPU)"
    identity = {"artifact": path.name, "files": files, "also": also, "options": chosen, "prompt": prompt}
    if path.is_dir():  # a report of an earlier schema judged by other limits: not this one
        from .pipeline_diff import PIPELINE_REPORT_SCHEMA

        identity["schema"] = PIPELINE_REPORT_SCHEMA
    plain: dict[str, Any] = json.loads(json.dumps(identity, default=dataclasses.asdict))
    return plain


def report_state(report_path: Path, plot_path: Path, identity: dict[str, Any]) -> Existing[dict[str, Any]]:
    """Absent when neither the report nor the plot is there; current (with the report) when the report holds
    `identity` (and its plot is there when it has one); otherwise stale, saying why."""
    if not report_path.exists() and not plot_path.exists():
        return Existing.absent()
    if not report_path.is_file():
        return Existing.stale(f"{plot_path} is there without its report {report_path.name}")
    try:
        report: dict[str, Any] = json.loads(report_path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        return Existing.stale(f"{report_path} is not a readable report ({type(e).__name__})")
    held = report.get("identity") if isinstance(report, dict) else None
    if held != identity:
        return Existing.stale(f"{report_path} was measured {_difference(held, identity)}")
    if ("references" in report and has_blocks(report)) != plot_path.is_file():  # a pipeline report has no plot
        return Existing.stale(f"{report_path} and {plot_path.name} do not belong together")
    return Existing.current(report)


def verify_identity(path: Path, identity: dict[str, Any]) -> None:
    """The files a reused report was measured on must still be the files there (InputError otherwise)."""
    folder = path if path.is_dir() else path.parent
    fix = "the files changed since the report was made: run ptdit-diff with --force, or restore them"
    verify_files(folder, identity["files"], "the report", fix)
    for directory, files in identity["also"].items():
        verify_files(Path(directory), files, "the report", fix)


def _difference(held: Any, identity: dict[str, Any]) -> str:
    if not isinstance(held, dict):
        return "by another version of ptdit-diff (it records no identity)"
    if held.get("files") != identity["files"] or held.get("artifact") != identity["artifact"]:
        return "on other files (the artifact changed)"
    if held.get("also") != identity["also"]:
        return "with other plans (a blocks plan or the component plans changed, appeared or went)"
    before, now = held.get("options") or {}, identity["options"]
    differs = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if held.get("prompt") != identity["prompt"]:
        differs.append("prompt")
    return f"with other options ({', '.join(differs)} differ)" if differs else "with other settings"
