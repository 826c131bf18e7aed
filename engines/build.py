"""One ptdit-build run: check everything that can be checked without a GPU, then build, verify and publish."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ptdit.contract.dtypes import precision_of_element_type
from ptdit.contract.errors import InputError
from ptdit.contract.files import file_sha256, publish, write_atomically
from ptdit.contract.manifests import write_manifest
from ptdit.contract.onnx_manifest import TensorSpec
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

from .errors import BuildError
from .options import validate
from .plan_files import OnnxArtifact, existing_plan_state, load_onnx, plan_stem, read_plan_manifest

if TYPE_CHECKING:
    from .builder import BuiltPlan, PlanIO
    from .gpu import GpuInfo
    from .tensorrt_api import Flavour

Reporter = Callable[[str], None]


@dataclass
class BuildResult:
    plan: Path
    manifest_path: Path
    up_to_date: bool
    manifest: PlanManifest
    triton_model: Path | None = None


def weights_precision(onnx_path: Path) -> str:
    """The precision the graph's weights really have (the weights are not loaded): the type of the MatMul, Gemm
    and Conv weights, fp32 islands aside (an fp16 graph may keep some weights in fp32, never the reverse)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {t.name: t.data_type for t in model.graph.initializer}
    types = {initializers[i] for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Conv")
             for i in n.input if i in initializers}
    precisions = {t: precision_of_element_type(t) for t in types}
    low = {p for p in precisions.values() if p not in (None, "fp32")}
    if not types or len(low) > 1 or None in precisions.values():
        raise InputError(f"{onnx_path.name} has weights of types {sorted(types)}; expected one of fp32, fp16, bf16 "
                         f"(with fp32 islands) as written by ptdit-export")
    return low.pop() if low else "fp32"


def check_io(io: PlanIO, onnx: OnnxArtifact, mark_blocks: bool) -> None:
    """The plan's I/O must be exactly the manifest's (plus the block tensors for a --mark-blocks plan)."""
    manifest = onnx.manifest
    expected_outputs = list(manifest.outputs)
    if mark_blocks:
        blocks = manifest.block_outputs
        expected_outputs += [TensorSpec(n, tuple(blocks.shape or ()), str(blocks.dtype)) for n in blocks.names]
    got = {t.name: ("input", t) for t in io.inputs} | {t.name: ("output", t) for t in io.outputs}
    want = {t.name: ("input", t) for t in manifest.inputs} | {t.name: ("output", t) for t in expected_outputs}
    problems = [f"{n} missing" for n in want if n not in got] + [f"unexpected {n}" for n in got if n not in want]
    for name in want.keys() & got.keys():
        (got_mode, got_spec), (want_mode, want_spec) = got[name], want[name]
        pairs = {"mode": (got_mode, want_mode), "shape": (list(got_spec.shape), list(want_spec.shape)),
                 "dtype": (got_spec.dtype, want_spec.dtype)}
        problems += [f"{name} {key} is {a}, the manifest says {b}" for key, (a, b) in pairs.items() if a != b]
    if problems:
        raise BuildError("the plan's I/O does not match the ONNX manifest: " + "; ".join(sorted(problems)))


def preflight(onnx_path: Path, options: BuildOptions, triton_repo: Path | None = None) -> OnnxArtifact:
    """Everything that needs neither TensorRT nor a GPU."""
    if triton_repo is not None and options.strip_plan:
        raise InputError("--triton-repo with --strip-plan would ship a weightless plan that Triton Inference Server "
                         "cannot refit: drop --strip-plan for the Triton repository")
    onnx = load_onnx(onnx_path)
    real = weights_precision(onnx.path)
    if real != onnx.precision:
        raise InputError(f"{onnx.path.name}: the manifest says {onnx.precision} but the weights are {real}; re-export")
    validate(options, onnx.precision)
    cache = options.timing_cache
    if cache is not None and ((cache.exists() and not cache.is_file()) or not cache.parent.is_dir()):
        raise InputError(f"--timing-cache {cache} must be a file in an existing directory")
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
    targets = resolve(flavour.target, requested, gpu)
    out_dir = out_dir or onnx.path.parent
    stem = plan_stem(onnx.stem, targets.tag, flavour.plan_tag, options.mark_blocks)
    plan_path = out_dir / f"{stem}.plan"
    identity = {"onnx_sha256": onnx.sha256, "builder": flavour.label, "targets": targets.to_dict(),
                "options": options.comparable()}
    state = existing_plan_state(plan_path, onnx, identity)
    if state == "current" and not force:
        report(f"ptdit-build: {plan_path} is up to date (same ONNX, options, builder and targets); --force rebuilds it")
        return BuildResult(plan_path, plan_path.with_suffix(".json"), True, read_plan_manifest(plan_path))
    if state is not None and not force:
        raise InputError(f"{state}: it is stale and is not reused; pass --force to rebuild it")

    where = f"on {gpu.name}" if gpu else "without a GPU (ahead of time)"
    report(f"ptdit-build: {onnx.path.name} -> {plan_path} ({flavour.label}, {where}, for compute capability "
           f"{', '.join(targets.compute_capabilities)})")
    created = [d for d in [out_dir, *out_dir.parents] if not d.exists()]  # deepest first
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=out_dir, prefix=f".{stem}.partial."))
    published = False
    try:
        built = build_plan(flavour, onnx.path, options, targets, onnx.manifest.block_outputs.names,
                           work / plan_path.name, report)
        report(f"  built in {built.seconds:.1f} s ({built.plan_bytes / 1e6:.1f} MB); checking its I/O against the "
               f"manifest")
        if gpu is not None and gpu.compute_capability in targets.compute_capabilities:
            io, io_source = plan_io(flavour, built.plan.read_bytes(), options.version_compatible, report), "plan"
        else:
            io, io_source = built.network_io, "network (a plan is deserialized only on a GPU it targets)"
        check_io(io, onnx, options.mark_blocks)
        manifest = plan_manifest(onnx, built, io, io_source, flavour, gpu, targets, options, identity,
                                 work / plan_path.name)
        write_manifest(work / f"{stem}.json", manifest)
        if options.timing_cache is not None:  # next to its destination: the rename stays on one file system
            write_atomically(options.timing_cache, lambda tmp: tmp.write_bytes(built.timing_cache))
        publish([work / plan_path.name, work / f"{stem}.json"], out_dir)
        published = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not published:  # nothing on failure: not even the directories this run made
            for directory in created:
                with contextlib.suppress(OSError):
                    directory.rmdir()
    triton_model = None
    if triton_repo is not None:
        from .triton import write_repository

        triton_model = write_repository(triton_repo, stem, plan_path, io.inputs, io.outputs)
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
                          io_source, dict(identity)),
        precision=onnx.precision,
        inputs=io.inputs,
        outputs=io.outputs,
        model=export.model,
        export=export.export,
        geometry=export.geometry,
        block_outputs=export.block_outputs,  # named in the graph; outputs of the plan only with --mark-blocks
    )
