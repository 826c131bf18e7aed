"""One ptdit-build run: check everything that can be checked without a GPU, then build, verify and publish."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ptdit.contract.dtypes import precision_of_element_type
from ptdit.contract.errors import InputError, option
from ptdit.contract.files import file_sha256, write_atomically
from ptdit.contract.graph_check import check_onnx, mismatches
from ptdit.contract.manifests import write_manifest
from ptdit.contract.onnx_manifest import TensorSpec
from ptdit.contract.outputs import Outputs
from ptdit.contract.plan_manifest import (
    BuilderInfo,
    BuildGpu,
    BuildOptions,
    BuildRecord,
    PlanFile,
    PlanManifest,
    PlanSource,
    Targets,
)
from ptdit.contract.progress import Reporter
from ptdit.contract.triton_config import write_model

from .errors import BuildError
from .options import validate
from .plan_files import OnnxArtifact, existing_plan_state, load_onnx, plan_stem, read_plan_manifest

if TYPE_CHECKING:
    import onnx

    from .builder import BuiltPlan, PlanIO
    from .gpu import GpuInfo
    from .tensorrt_api import Flavour



@dataclass
class BuildResult:
    plan: Path
    manifest_path: Path
    up_to_date: bool
    manifest: PlanManifest
    triton_model: Path | None = None

    @property
    def path(self) -> Path:
        return self.plan


def weights_precision(model: onnx.ModelProto, name: str) -> str:
    """The precision the graph's weights really have (the weights are not loaded): the type of the MatMul, Gemm
    and Conv weights, fp32 islands aside (an fp16 graph may keep some weights in fp32, never the reverse); fp8
    when FP8 weights (behind a DequantizeLinear) feed the MatMuls and the others are fp16."""
    initializers = {t.name: t.data_type for t in model.graph.initializer}
    dequantized = {n.output[0]: initializers[n.input[0]] for n in model.graph.node
                   if n.op_type == "DequantizeLinear" and n.input[0] in initializers}
    weights = {**initializers, **dequantized}
    types = {weights[i] for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
             for i in n.input if i in weights}
    precisions = {t: precision_of_element_type(t) for t in types}
    low = {p for p in precisions.values() if p not in (None, "fp32")}
    if low == {"fp8", "fp16"}:
        return "fp8"
    if not types or len(low) > 1 or None in precisions.values():
        raise InputError(f"{name} has weights of types {sorted(types)}; expected one of fp32, fp16, bf16 "
                         f"(with fp32 islands) or fp8 (with fp16) as written by ptdit-export")
    return low.pop() if low else "fp32"


def check_io(io: PlanIO, onnx: OnnxArtifact, mark_blocks: bool) -> None:
    """The plan's I/O must be exactly the manifest's (plus the block tensors for a --mark-blocks plan)."""
    manifest = onnx.manifest
    expected_outputs = list(manifest.outputs)
    if mark_blocks:
        blocks = manifest.block_outputs
        expected_outputs += [TensorSpec(n, tuple(blocks.shape or ()), str(blocks.dtype)) for n in blocks.names]
    problems = mismatches(manifest.inputs, expected_outputs, io.inputs, io.outputs)
    if problems:
        raise BuildError("the plan's I/O does not match the ONNX manifest: " + "; ".join(problems))


def preflight(onnx_path: Path, options: BuildOptions, triton_repo: Path | None = None) -> OnnxArtifact:
    """Everything that needs neither TensorRT nor a GPU."""
    if triton_repo is not None and options.strip_plan:
        strip = option("strip_plan")
        raise InputError(f"{option('triton_repo')} with {strip} would ship a weightless plan that Triton Inference "
                         f"Server cannot refit: drop {strip} for the Triton repository")
    onnx = load_onnx(onnx_path)
    real = weights_precision(check_onnx(onnx.path, onnx.manifest), onnx.path.name)  # before TensorRT sees it
    if real != onnx.precision:
        raise InputError(f"{onnx.path.name}: the manifest says {onnx.precision} but the weights are {real}; re-export")
    validate(options, onnx.precision)
    cache = options.timing_cache
    if cache is not None and ((cache.exists() and not cache.is_file()) or not cache.parent.is_dir()):
        raise InputError(f"{option('timing_cache')} {cache} must be a file in an existing directory")
    return onnx


def build(onnx_path: Path, options: BuildOptions, out_dir: Path | None, force: bool, triton_repo: Path | None,
          report: Reporter, target: str = "auto", compute_capabilities: tuple[str, ...] = ()) -> BuildResult:
    from .builder import build_plan, plan_io
    from .gpu import visible_gpu
    from .targets import parse_compute_capabilities, resolve
    from .tensorrt_api import select

    onnx = preflight(onnx_path, options, triton_repo)
    requested = parse_compute_capabilities(compute_capabilities)
    flavour = select(target)
    gpu = visible_gpu()
    validate(options, onnx.precision, flavour, has_gpu=gpu is not None)
    targets = resolve(flavour.target, requested, gpu, onnx.precision)
    out_dir = out_dir or onnx.path.parent
    stem = plan_stem(onnx.stem, targets.tag, flavour.plan_tag, options.mark_blocks)
    plan_path = out_dir / f"{stem}.plan"
    identity = {"onnx_sha256": onnx.sha256, "builder": flavour.label, "targets": targets.to_dict(),
                "options": options.comparable()}
    existing = existing_plan_state(plan_path, onnx, identity)
    if existing.state == "current" and not force:
        report(f"ptdit-build: {plan_path} is up to date (same ONNX, options, builder and targets); --force rebuilds it")
        manifest = read_plan_manifest(plan_path)
        triton_model = None
        if triton_repo is not None:  # the plan is there: its repository is written all the same
            with Outputs() as outputs:
                model_dir = outputs.claim(triton_repo / stem, folder=True, may_exist=True)
                write_model(model_dir, stem, plan_path, manifest.inputs, manifest.outputs)
                triton_model, = outputs.commit()
        return BuildResult(plan_path, plan_path.with_suffix(".json"), True, manifest, triton_model)
    if not force:
        existing.refuse_if_stale("rebuild it")

    with Outputs(force) as outputs:  # claimed before the build: locked, writable (ptdit.contract.outputs)
        staged_plan = outputs.claim(plan_path)
        staged_manifest = outputs.claim(plan_path.with_suffix(".json"))
        staged_model = outputs.claim(triton_repo / stem, folder=True, may_exist=True) if triton_repo else None
        where = f"on {gpu.name}" if gpu else "without a GPU (ahead of time)"
        report(f"ptdit-build: {onnx.path.name} -> {plan_path} ({flavour.label}, {where}, for compute capability "
               f"{', '.join(targets.compute_capabilities)})")
        built = build_plan(flavour, onnx.path, options, targets, onnx.manifest.block_outputs.names, staged_plan,
                           report)
        report(f"  built in {built.seconds:.1f} s ({built.plan_bytes / 1e6:.1f} MB); checking its I/O against the "
               f"manifest")
        if gpu is not None and gpu.compute_capability in targets.compute_capabilities:
            io, io_source = plan_io(flavour, staged_plan.read_bytes(), options.version_compatible, report), "plan"
        else:
            io, io_source = built.network_io, "network (a plan is deserialized only on a GPU it targets)"
        check_io(io, onnx, options.mark_blocks)
        manifest = plan_manifest(onnx, built, io, io_source, flavour, gpu, targets, options, identity, staged_plan)
        write_manifest(staged_manifest, manifest)
        if staged_model is not None:
            write_model(staged_model, stem, staged_plan, io.inputs, io.outputs)
        outputs.commit()
    if options.timing_cache is not None:  # a cache builds may share: not locked, replaced whole by the last one
        write_atomically(options.timing_cache, lambda tmp: tmp.write_bytes(built.timing_cache))
    triton_model = triton_repo / stem if triton_repo is not None else None
    return BuildResult(plan_path, plan_path.with_suffix(".json"), False, manifest, triton_model)


def plan_manifest(onnx: OnnxArtifact, built: BuiltPlan, io: PlanIO, io_source: str, flavour: Flavour,
                  gpu: GpuInfo | None, targets: Targets, options: BuildOptions, identity: dict[str, object],
                  plan_file: Path) -> PlanManifest:
    export = onnx.manifest
    return PlanManifest(
        plan=PlanFile(plan_file.name, file_sha256(plan_file), plan_file.stat().st_size),
        onnx=PlanSource(onnx.path.name, onnx.sha256, onnx.path.with_suffix(".json").name),
        builder=BuilderInfo(flavour.target, flavour.module.__name__, flavour.version, built.strongly_typed),
        targets=targets,
        build_gpu=BuildGpu(gpu.name, gpu.compute_capability) if gpu else None,
        build=BuildRecord(built.flags, options, built.parse_seconds, built.seconds, built.peak_rss_bytes, built.layers,
                          io_source, dict(identity), device_memory=built.device_memory or None),
        precision=onnx.precision,
        inputs=io.inputs,
        outputs=io.outputs,
        model=export.model,
        export=export.export,
        geometry=export.geometry,
        block_outputs=export.block_outputs,  # named in the graph; outputs of the plan only with --mark-blocks
    )
