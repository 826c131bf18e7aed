"""One ptdit-export run: check the options, build the model once, then per graph trace, check, and publish
atomically (in a temporary directory next to the destination; moved into place only after every check passed,
the manifest last)."""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptdit.checkpoint import state_dict_sha256
from ptdit.contract.files import publish
from ptdit.contract.manifests import write_manifest
from ptdit.resolution import latent_hw

from .options import ExportOptions, artifact_files, check_export_options, check_level, geometry_for, specs_for
from .progress import Reporter, Stages
from .spec import ExportSpec

if TYPE_CHECKING:
    from ptdit import PTDiT
    from ptdit.contract.onnx_manifest import Weights


@dataclass
class ExportResult:
    onnx_path: Path
    manifest_path: Path
    files: list[Path]
    checks: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


def export_all(opts: ExportOptions, report: Reporter) -> list[ExportResult]:
    from .exporter import build_model

    check_export_options(opts)
    created = [d for d in [opts.out_dir, *opts.out_dir.parents] if not d.exists()]  # deepest first
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        stages = Stages(report)
        source = f"checkpoint {opts.checkpoint}" if opts.checkpoint else f"seeded weights, seed {opts.seed}"
        with stages.run("build_model", f"build {opts.cfg.name} in {opts.precision} ({source})"):
            model, weights = build_model(opts.cfg, opts.precision, opts.checkpoint, opts.checkpoint_key, opts.seed)
            weights = dataclasses.replace(weights, state_dict_sha256=state_dict_sha256(model))
        results = []
        for res in opts.resolutions:
            for spec in specs_for(opts, res):
                result = export_one(opts, spec, model, weights, report)
                result.seconds = {**stages.seconds, **result.seconds}
                results.append(result)
        return results
    except BaseException:
        for directory in created:  # nothing on failure: not even the directories this run made
            with contextlib.suppress(OSError):
                directory.rmdir()  # only if empty: an artifact published before the failure stays
        raise


def export_one(opts: ExportOptions, spec: ExportSpec, model: PTDiT, weights: Weights,
               report: Reporter) -> ExportResult:
    from .checks.parity import ExportedGraph
    from .checks.suite import run_checks
    from .exporter import build_model, clean, save, strip_block_outputs, trace
    from .manifest import transformer_manifest

    cfg, res, geo = opts.cfg, spec.res, geometry_for(opts, spec.res)
    side = latent_hw(res)
    inputs = spec.inputs(cfg.in_channels, cfg.text_dim, side)
    outputs = spec.outputs(cfg.out_channels, side, cfg.in_channels)
    video = f", {opts.frames} frames" if opts.frames else ""
    what = (f"the denoising step ({'guidance pair' if spec.guided else 'unguided'})" if spec.step
            else f"batch {opts.batch}")
    report(f"ptdit-export: {cfg.name} at {res} px{video}, {opts.precision}, {what} -> {opts.out_dir / spec.stem}.onnx")
    stages = Stages(report)
    work = Path(tempfile.mkdtemp(dir=opts.out_dir, prefix=f".{spec.stem}.partial."))
    try:
        with stages.run("trace", "trace to ONNX (torch.export, static shapes)"):
            graph = trace(model, spec, inputs, outputs)
        with stages.run("clean", "fold constants and clean up the graph"):
            clean(graph, set(model.state_dict()))
            block_names = strip_block_outputs(graph, len(outputs))
        onnx_path = work / f"{spec.stem}.onnx"
        with stages.run("write", "write ONNX"):
            files = save(graph, onnx_path)
        del graph
        gc.collect()
        checks: dict[str, Any] = {"skipped": True}
        level = check_level(opts.checks)
        if level != "none":
            exported = ExportedGraph(onnx_path, spec, inputs, outputs, model, block_names)

            def fp32_model() -> PTDiT:  # the fp32 reference of a low-precision export
                return build_model(cfg, "fp32", opts.checkpoint, opts.checkpoint_key, opts.seed)[0]

            checks = run_checks(exported, level, opts.torch_device, fp32_model, stages)
        manifest = transformer_manifest(cfg, spec, geo, model, weights, files, inputs, outputs, block_names, checks)
        manifest_path = work / f"{spec.stem}.json"
        write_manifest(manifest_path, manifest)
        published = publish([*files[1:], files[0], manifest_path], opts.out_dir,  # weights first, manifest last
                             replaces=tuple(artifact_files(opts.out_dir, spec.stem)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(opts.out_dir / onnx_path.name, opts.out_dir / manifest_path.name, published, checks,
                        dict(stages.seconds))
