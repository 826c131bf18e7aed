"""One ptdit-export run: check the options, claim every output (ptdit.contract.outputs), build the model once,
then per graph trace, check and write it under a temporary name; everything is published together at the end,
after every check of every graph passed (each manifest after its files), or nothing is."""

from __future__ import annotations

import dataclasses
import gc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ptdit.checkpoint import state_dict_sha256
from ptdit.contract.errors import InputError, option
from ptdit.contract.files import file_sha256
from ptdit.contract.fp8 import FP8
from ptdit.contract.graph_check import graph_records
from ptdit.contract.manifests import write_manifest
from ptdit.contract.onnx_manifest import ArtifactFiles, OnnxManifest
from ptdit.contract.outputs import Outputs
from ptdit.contract.progress import Advance, Counter, no_counter
from ptdit.contract.sizes import Size

from .calibration import load_calibration_text
from .options import ExportOptions, all_specs, artifact_files, check_export_options, check_level, geometry_for
from .progress import Reporter, Stages
from .shared_weights import SharedWeights, shared_name
from .spec import ExportSpec

if TYPE_CHECKING:
    from ptdit import PTDiT
    from ptdit.contract.fp8 import Calibration
    from ptdit.contract.onnx_manifest import Weights
    from ptdit.fp8 import LayerScales

Place = Callable[[Path], Path]  # an output's final path -> where this run writes it


@dataclass
class ExportResult:
    onnx_path: Path
    manifest_path: Path
    files: list[Path]
    checks: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)
    up_to_date: bool = False  # it was there, exported with the same options and weights, and was reused

    @property
    def path(self) -> Path:
        return self.onnx_path

    @property
    def manifest(self) -> OnnxManifest:
        """The manifest as written (read when asked for)."""
        from ptdit.contract.manifests import read_manifest

        return read_manifest(OnnxManifest, self.manifest_path, "this export", f"{self.manifest_path} is missing")


def export_all(opts: ExportOptions, report: Reporter, counter: Counter = no_counter) -> list[ExportResult]:
    """Every graph the options ask for. Graphs already there and up to date are reused (export.existing); stale
    ones are refused unless `opts.force`; the rest are exported and published together."""
    from ptdit.contract.onnx_manifest import OnnxManifest
    from ptdit.contract.reuse import Existing

    from .existing import Wanted, existing_state

    check_export_options(opts)
    if opts.calibration.prompts_file is not None:
        raise InputError(f"{option('calibration_prompts')} encodes prompts with the pipeline's text encoder: add "
                         f"{option('pipeline', True)}, or pass T5 features with {option('calibration_text')}")
    wanted = Wanted(opts)
    specs = all_specs(opts)
    reused: dict[str, ExportResult] = {}
    for spec in specs:
        existing = Existing[OnnxManifest].absent() if opts.force else existing_state(opts.out_dir, spec, wanted)
        existing.refuse_if_stale("replace it")
        if existing.state == "absent":
            continue
        manifest = existing.found
        assert manifest is not None  # a current export is read from its manifest
        data = manifest.artifact.external_data
        names = [manifest.artifact.onnx, *([data] if data else [])]
        files = [opts.out_dir / name for name in [*names, f"{spec.stem}.json"]]
        reused[spec.stem] = ExportResult(files[0], files[-1], files, manifest.checks, up_to_date=True)
        report(f"ptdit-export: {files[0]} is up to date (same model, weights and options); it is reused")
    todo = [spec for spec in specs if spec.stem not in reused]
    results: dict[str, ExportResult] = {}
    if todo:
        with Outputs(opts.force) as outputs:
            shared = shared_weights_path(opts, todo)  # published before every graph and manifest
            staged = {shared: outputs.claim(shared)} if shared is not None else {}
            staged.update({p: outputs.claim(p) for spec in todo for p in artifact_files(opts.out_dir, spec.stem)})
            with counter("exporting", len(todo), "graph") as advance:
                exported = export_graphs(opts, report, staged.__getitem__, todo, advance)
            outputs.commit()
        results = {spec.stem: result for spec, result in zip(todo, exported)}
    return [reused.get(spec.stem) or results[spec.stem] for spec in specs]


def shared_weights_path(opts: ExportOptions, specs: list[ExportSpec]) -> Path | None:
    """The weights file the graphs of several sizes share (export.shared_weights); None for one size."""
    if len({spec.size for spec in specs}) < 2:
        return None
    first = specs[0]
    frames = f"-f{first.frames}" if first.frames else ""
    return opts.out_dir / shared_name([s.stem for s in specs], f"ptdit-{first.preset}{frames}-b{first.batch}-"
                                                                  f"{first.precision}")


def export_graphs(opts: ExportOptions, report: Reporter, place: Place, specs: list[ExportSpec] | None = None,
                  advance: Advance | None = None) -> list[ExportResult]:
    """The graphs `specs` name (default: every graph the options ask for), written where `place` says (`advance`
    after each); the results name the final paths."""
    from .exporter import build_model

    stages = Stages(report)
    source = f"checkpoint {opts.checkpoint}" if opts.checkpoint else f"seeded weights, seed {opts.seed}"
    with stages.run("build_model", f"build {opts.cfg.name} in {opts.precision} ({source})"):
        model, weights = build_model(opts.cfg, opts.precision, opts.checkpoint, opts.checkpoint_key, opts.seed)
        weights = dataclasses.replace(weights, state_dict_sha256=state_dict_sha256(model))
    reference = Fp32Reference(opts)
    specs = specs if specs is not None else all_specs(opts)
    shared_path = shared_weights_path(opts, specs)
    shared = SharedWeights(place(shared_path)) if shared_path is not None else None
    results, manifests = [], []
    for spec in specs:
        result, manifest = export_one(opts, spec, model, weights, report, place, reference, shared)
        result.seconds = {**stages.seconds, **result.seconds}
        results.append(result)
        manifests.append(manifest)
        if advance:
            advance(spec.stem)
    if shared is not None:  # the weights file is complete only now: its sha256 goes into every manifest
        shared_sha = file_sha256(shared.path)
        manifests = [dataclasses.replace(m, artifact=ArtifactFiles(m.artifact.onnx, shared.path.name, {
            m.artifact.onnx: m.artifact.sha256[m.artifact.onnx], shared.path.name: shared_sha})) for m in manifests]
    for result, manifest in zip(results, manifests):
        write_manifest(place(result.manifest_path), manifest)
    return results


class Fp32Reference:
    """The fp32 model with the exported weights: built when first needed. An FP8 export keeps it (it calibrates
    each size and checks each graph against it) with each size's scales; other precisions build it
    for each full check and let it go."""

    def __init__(self, opts: ExportOptions):
        self.opts, self.kept = opts, opts.precision == FP8
        self._model: PTDiT | None = None
        self._scales: dict[Size, tuple[dict[str, LayerScales], Calibration]] = {}
        if opts.calibration.text_file is not None:
            text = load_calibration_text(opts.calibration.text_file, opts.text_len, opts.cfg.text_dim)
            self.opts = dataclasses.replace(opts, calibration=dataclasses.replace(opts.calibration, text=text))

    def model(self) -> PTDiT:
        from .exporter import build_model

        if self._model is not None:
            return self._model
        opts = self.opts
        model = build_model(opts.cfg, "fp32", opts.checkpoint, opts.checkpoint_key, opts.seed)[0]
        if self.kept:
            self._model = model
        return model

    def scales(self, spec: ExportSpec, stages: Stages) -> tuple[dict[str, LayerScales], Calibration]:
        """The FP8 scales of the spec's size (the step graph shares its noise prediction's)."""
        from .calibration import calibrate

        if spec.size not in self._scales:
            c = self.opts.calibration
            what = f"{c.calibrator}{f' {c.quantile}' if c.quantile is not None else ''}"
            with stages.run("calibrate", f"calibrate FP8 scales: {c.trajectories} trajectories x {c.steps} steps, "
                                         f"{what} (PyTorch fp32)"):
                shape = spec.latent_shape(self.opts.cfg.in_channels)
                self._scales[spec.size] = calibrate(self.model(), c, shape, spec.text_len, spec.frames)
        return self._scales[spec.size]


def export_one(opts: ExportOptions, spec: ExportSpec, model: PTDiT, weights: Weights, report: Reporter,
               place: Place, reference: Fp32Reference, shared: SharedWeights | None = None,
               ) -> tuple[ExportResult, OnnxManifest]:
    """One graph written and checked, and its manifest (written by the caller, last); with `shared`, its weights
    are moved into the shared weights file after its checks."""
    from .checks.parity import ExportedGraph
    from .checks.suite import run_checks
    from .exporter import clean, save, strip_block_outputs, trace
    from .manifest import quantization_record, transformer_manifest
    from .quantize import quantize_graph

    cfg, geo = opts.cfg, geometry_for(opts, spec.size)
    inputs = spec.inputs(cfg.in_channels, cfg.text_dim)
    outputs = spec.outputs(cfg.out_channels, cfg.in_channels)
    video = f", {opts.frames} frames" if opts.frames else ""
    what = (f"the denoising step ({'guidance pair' if spec.guided else 'unguided'})" if spec.step
            else f"batch {opts.batch}")
    report(f"ptdit-export: {cfg.name} at {spec.size} px{video}, {opts.precision}, {what} -> "
           f"{opts.out_dir / spec.stem}.onnx")
    stages = Stages(report)
    scales, calibration = reference.scales(spec, stages) if spec.precision == FP8 else (None, None)
    prefix = "model." if spec.step else ""  # the step graph's module holds the model as .model
    with stages.run("trace", "trace to ONNX (torch.export, static shapes)"):
        graph = trace(model, spec, inputs, outputs)
    with stages.run("clean", "fold constants and clean up the graph"):
        clean(graph, {prefix + name for name in model.state_dict()})
        block_names = strip_block_outputs(graph, len(outputs))
    if scales is not None:
        with stages.run("quantize", f"FP8 Q/DQ on {len(scales)} Linear layers (FLOAT8E4M3FN weights)"):
            quantize_graph(graph, scales, prefix)
    onnx_path = place(opts.out_dir / f"{spec.stem}.onnx")
    with stages.run("write", "write ONNX"):
        files = save(graph, onnx_path, graph_records(cfg.to_dict(), spec.precision, spec.graph),
                     external=shared is not None)
    del graph
    gc.collect()
    checks: dict[str, Any] = {"skipped": True}
    level = check_level(opts.checks)
    if level != "none":
        exported = ExportedGraph(onnx_path, spec, inputs, outputs, model, block_names, scales)
        checks = run_checks(exported, level, opts.torch_device, reference.model, stages)
    quantization = (quantization_record(scales, calibration, opts.calibration.layers)
                    if scales is not None and calibration else None)
    if shared is not None:  # its sha256 is taken once it is complete (export_graphs): the manifest hashes the graph
        with stages.run("share", "store the weights once, in the weights file all sizes share"):
            files = [onnx_path]
            shared.absorb(onnx_path)
    manifest = transformer_manifest(cfg, spec, geo, model, weights, files, inputs, outputs, block_names, checks,
                                    quantization)
    if shared is not None:
        files = [onnx_path, shared.path]
    final = [opts.out_dir / f.name for f in [*files, Path(f"{spec.stem}.json")]]
    return ExportResult(final[0], final[-1], final, checks, dict(stages.seconds)), manifest
