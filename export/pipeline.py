"""One `ptdit-export` run: validate everything, then per resolution export, check, and publish atomically."""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

from ptdit.checkpoint import file_sha256, state_dict_sha256
from ptdit.config import PTDiTConfig
from ptdit.errors import InputError
from ptdit.resolution import Geometry, geometry, latent_hw, window_for
from ptdit.windows import strided_offset

from .spec import CHECK_LEVELS, DEFAULT_OPSET, STEP_CARRY, STEP_SCHEDULE_LEN, SUPPORTED_OPSETS, ExportSpec

if TYPE_CHECKING:
    import onnx

    from ptdit import PTDiT

    from .exporter import Weights
    from .spec import TensorSpec

MANIFEST_SCHEMA = "ptdit-onnx/1"
PARITY_SEED = 0
# Largest accepted relative L2 error of ONNX Runtime against the PyTorch fp32 model, per export precision.
# fp32: 1e-5, an exact export up to summation order; fp16 and bf16 leave ~10x and ~5x headroom over what xl
# measured (README, "Export accuracy").
MAX_REL_L2 = {"fp32": 1e-5, "fp16": 2e-2, "bf16": 1e-1}
# ... and against PyTorch running the same precision policy (the exporter must not add error of its own
# beyond kernel rounding differences).
MAX_REL_L2_SAME_PRECISION = {"fp16": 2e-2, "bf16": 1e-1}


@dataclass
class ExportOptions:
    cfg: PTDiTConfig
    resolutions: list[int]
    frames: int | None = None
    precision: str = "fp16"
    batch: int = 2
    text_len: int = 200
    opset: int = DEFAULT_OPSET
    out_dir: Path = Path("artifacts")
    checkpoint: str | None = None
    checkpoint_key: str | None = None
    seed: int = 0
    force: bool = False
    checks: str = "auto"  # one of CHECK_LEVELS
    torch_device: str = "auto"  # where the PyTorch references of the parity check run
    step: bool = False  # also export the whole denoising step (guidance and Euler update in the graph)


@dataclass
class ExportResult:
    onnx_path: Path
    manifest_path: Path
    files: list[Path]
    checks: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)


Reporter = Callable[[str], None]


class Stages:
    """Reports each stage with its duration and keeps the timings."""

    def __init__(self, report: Reporter):
        self.report = report
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def run(self, name: str, label: str) -> Iterator[None]:
        self.report(f"  {label} ...")
        start = time.perf_counter()
        yield
        elapsed = time.perf_counter() - start
        self.seconds[name] = round(elapsed, 2)
        self.report(f"  {label}: done in {elapsed:.1f} s")


def spec_for(opts: ExportOptions, res: int, step: bool = False) -> ExportSpec:
    return ExportSpec(opts.cfg.name, res, opts.frames, opts.batch, opts.text_len, opts.precision, opts.opset, step)


def specs_for(opts: ExportOptions, res: int) -> list[ExportSpec]:
    """The graphs one resolution gets: the noise prediction, and with --step the denoising step next to it."""
    return [spec_for(opts, res), *([spec_for(opts, res, step=True)] if opts.step else [])]


def geometry_for(opts: ExportOptions, res: int) -> Geometry:
    side = latent_hw(res)
    return geometry((opts.frames or 1, side, side), opts.cfg.patch_size, opts.cfg.window)


def artifact_files(out_dir: Path, stem: str) -> list[Path]:
    return [out_dir / f"{stem}.onnx", out_dir / f"{stem}.onnx.data", out_dir / f"{stem}.json"]


def validate(opts: ExportOptions) -> None:
    """Every bad input is reported before any work starts."""
    if not opts.resolutions:
        raise InputError("no resolution given: pass --res (e.g. --res 1024)")
    for res in opts.resolutions:
        window_for(res, opts.frames)
        strided_offset(geometry_for(opts, res), opts.cfg.proxy_window, opts.cfg.proxy_offset)
    if opts.opset not in SUPPORTED_OPSETS:
        raise InputError(f"opset {opts.opset} is not supported: the exporter writes opsets "
                         f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} (LayerNormalization needs >= 17)")
    if opts.batch < 1 or opts.text_len < 1:
        raise InputError(f"--batch and --text-len must be positive, got {opts.batch} and {opts.text_len}")
    if opts.step and opts.batch not in (1, 2):
        raise InputError(f"--step needs --batch 2 (the guidance pair) or 1 (unguided), got {opts.batch}")
    if opts.torch_device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--torch-device must be auto, cpu or cuda, got {opts.torch_device!r}")
    if opts.checks not in CHECK_LEVELS:
        raise InputError(f"--checks must be one of {', '.join(CHECK_LEVELS)}, got {opts.checks!r}")
    if opts.checks != "none":
        torch_device(opts.torch_device)
    if opts.checkpoint is not None and not Path(opts.checkpoint).is_file():
        raise InputError(f"checkpoint {opts.checkpoint} does not exist")
    existing_dir = next(p for p in [opts.out_dir, *opts.out_dir.parents] if p.exists())  # created only after checks
    if not existing_dir.is_dir() or not os.access(existing_dir, os.W_OK | os.X_OK):
        raise InputError(f"output directory {opts.out_dir} is not writable ({existing_dir} is not a writable "
                         f"directory); choose another with --out")
    if not opts.force:
        existing = [str(p) for res in opts.resolutions for spec in specs_for(opts, res)
                    for p in artifact_files(opts.out_dir, spec.stem) if p.exists()]
        if existing:
            raise InputError(f"{existing[0]} already exists; pass --force to overwrite it")


def tool_versions() -> dict[str, str]:
    versions = {}
    for dist in ("ptdit-deploy", "torch", "onnx", "onnxscript", "onnx-ir", "onnxruntime-gpu", "onnxruntime"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def export_all(opts: ExportOptions, report: Reporter) -> list[ExportResult]:
    from .exporter import build_model

    validate(opts)
    created = [d for d in [opts.out_dir, *opts.out_dir.parents] if not d.exists()]  # deepest first
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        stages = Stages(report)
        source = f"checkpoint {opts.checkpoint}" if opts.checkpoint else f"seeded weights, seed {opts.seed}"
        with stages.run("build_model", f"build {opts.cfg.name} in {opts.precision} ({source})"):
            model, weights = build_model(opts.cfg, opts.precision, opts.checkpoint, opts.checkpoint_key, opts.seed)
            weights.state_dict_sha256 = state_dict_sha256(model)
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
    from .exporter import clean, save, strip_block_outputs, trace

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
            checks = run_checks(onnx_path, opts, spec, inputs, outputs, model, block_names, level, stages)
        manifest = build_manifest(opts, spec, geo, model, weights, files, inputs, outputs, block_names, checks)
        manifest_path = work / f"{spec.stem}.json"
        write_json(manifest_path, manifest)
        published = publish([*files[1:], files[0], manifest_path], opts.out_dir)  # weights first, manifest last
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(opts.out_dir / onnx_path.name, opts.out_dir / manifest_path.name, published, checks,
                        dict(stages.seconds))


def check_level(choice: str) -> str:
    if choice != "auto":
        return choice
    import torch

    return "full" if torch.cuda.is_available() else "fast"


def run_checks(path: Path, opts: ExportOptions, spec: ExportSpec, inputs: list[TensorSpec],
               outputs: list[TensorSpec], model: PTDiT, block_names: list[str], level: str,
               stages: Stages) -> dict[str, Any]:
    results, inferred = structural_checks(path, inputs, outputs, stages)
    results = {"level": level, **results}
    if level == "full":
        with stages.run("onnxruntime_parity", "ONNX Runtime (CPU) against PyTorch, whole model"):
            results["onnxruntime_parity"] = onnxruntime_parity(path, inferred, opts, spec, inputs, outputs, model)
    else:
        with stages.run("onnxruntime_parity_first_block", "ONNX Runtime (CPU) against PyTorch, graph cut to block 0"):
            results["onnxruntime_parity_first_block"] = first_block_parity(path, inferred, opts, spec, inputs, outputs,
                                                                           model, block_names)
    return results


def structural_checks(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec],
                      stages: Stages) -> tuple[dict[str, Any], onnx.ModelProto]:
    """Every check but the numerical one: onnx checker, static shapes, no random ops, TensorRT's operator table
    and rank limit, and the real parse. Returns the results and the shape-inferred graph."""
    from . import checks as c

    results: dict[str, Any] = {}
    with stages.run("onnx_checker", "onnx checker (full check)"):
        results["onnx_checker"] = {"passed": True, **c.onnx_checker(path)}
    with stages.run("static_shapes", "shape inference: every dimension static"):
        inferred = c.infer_shapes(path)
        results["static_shapes"] = {"passed": True, **c.static_shapes(inferred)}
    with stages.run("no_random_ops", "no Random* operators"):
        results["no_random_ops"] = {"passed": True, **c.no_random_ops(inferred)}
    with stages.run("tensorrt_ops", "operators, types and ranks supported by TensorRT's ONNX parser"):
        results["tensorrt_ops"] = {"passed": True, **c.tensorrt_ops(inferred)}
    with stages.run("tensorrt_parse", "parse with TensorRT's ONNX parser"):
        results["tensorrt_parse"] = tensorrt_parse(path, inputs, outputs)
    return results, inferred


def tensorrt_parse(path: Path, inputs: list[TensorSpec], outputs: list[TensorSpec]) -> dict[str, Any]:
    """The real parse (when a TensorRT builder is installed); the parsed network's I/O must be the contract's."""
    from .checks import CheckFailed
    from .tensorrt_parse import ParseFailed, parse

    try:
        result = parse(path)
    except ParseFailed as e:
        raise CheckFailed("tensorrt_parse", str(e)) from None
    if not result["ran"]:
        return {"passed": None, **result}
    expected = [t.to_dict() for t in [*inputs, *outputs]]
    if result["io"] != expected:
        raise CheckFailed("tensorrt_parse", f"the parsed network's I/O {result['io']} is not the export's {expected}")
    return {"passed": True, **result}


def first_block_parity(path: Path, inferred: onnx.ModelProto, opts: ExportOptions, spec: ExportSpec,
                       inputs: list[TensorSpec], outputs: list[TensorSpec], model: PTDiT,
                       block_names: list[str]) -> dict[str, Any]:
    """ONNX Runtime on the graph cut to its first block (embeddings, block 0, final layer) against the same cut
    of the PyTorch model in fp32 with the exported weights: every operator of the graph, ~1/depth of the cost."""
    import onnx

    from .checks import CheckFailed
    from .parity import compare, first_block_graph, first_block_model, has_bf16, parity_inputs, run_onnxruntime

    name = "onnxruntime_parity_first_block"
    feeds = parity_inputs(inputs, PARITY_SEED)
    cut = path.with_name(path.stem + ".first-block.onnx")
    try:
        first_block_graph(path, block_names, cut)
        cut_inferred = onnx.shape_inference.infer_shapes(onnx.load(str(cut), load_external_data=False))
        onnx_out = checked_output(name, run_onnxruntime(cut, feeds, cut_inferred), feeds)
    finally:
        cut.unlink(missing_ok=True)
    device = torch_device(opts.torch_device)
    reference = first_block_model(model)
    expected = torch_output(name, reference, spec, feeds, inputs, outputs, device)
    result = compare(onnx_out, {"fp32": expected}, {"fp32": MAX_REL_L2[spec.precision]})
    del reference
    result.update(provider="CPUExecutionProvider", torch_device=device, seed=PARITY_SEED, blocks=1,
                  reference="PyTorch fp32, the exported weights", bf16_emulated=has_bf16(inferred),
                  compared=compared_name(spec))
    if not result["passed"]:
        error = result["vs_torch_fp32"]
        raise CheckFailed(name, f"ONNX Runtime output of the first-block graph differs from PyTorch (rel L2 "
                                f"{error['rel_l2']:.3g}, max {error['max_rel_l2']:.3g})")
    return result


def onnxruntime_parity(path: Path, inferred: onnx.ModelProto, opts: ExportOptions, spec: ExportSpec,
                       inputs: list[TensorSpec], outputs: list[TensorSpec], model: PTDiT) -> dict[str, Any]:
    from .checks import CheckFailed
    from .exporter import build_model
    from .parity import compare, has_bf16, parity_inputs, run_onnxruntime

    name = "onnxruntime_parity"
    feeds = parity_inputs(inputs, PARITY_SEED)
    onnx_out = checked_output(name, run_onnxruntime(path, feeds, inferred), feeds)
    device = torch_device(opts.torch_device)
    thresholds = {"fp32": MAX_REL_L2[spec.precision]}
    if spec.precision == "fp32":
        references = {"fp32": torch_output(name, model, spec, feeds, inputs, outputs, device)}
    else:
        # The model being exported runs the same precision policy; a fresh fp32 build is the reference.
        references = {"same_precision": torch_output(name, model, spec, feeds, inputs, outputs, device)}
        thresholds["same_precision"] = MAX_REL_L2_SAME_PRECISION[spec.precision]
        reference, _ = build_model(opts.cfg, "fp32", opts.checkpoint, opts.checkpoint_key, opts.seed)
        references["fp32"] = torch_output(name, reference, spec, feeds, inputs, outputs, device)
        del reference
        gc.collect()
    result = compare(onnx_out, references, thresholds)
    result.update(provider="CPUExecutionProvider", torch_device=device, seed=PARITY_SEED,
                  bf16_emulated=has_bf16(inferred), compared=compared_name(spec))
    if not result["passed"]:
        worst = ", ".join(f"{k}: rel L2 {v['rel_l2']:.3g} (max {v['max_rel_l2']:.3g})"
                          for k, v in result.items() if isinstance(v, dict) and "max_rel_l2" in v)
        raise CheckFailed(name, f"ONNX Runtime output differs from PyTorch ({worst})")
    return result


def compared_name(spec: ExportSpec) -> str:
    return "latent_next - latent (dt = 1: the guided velocity)" if spec.step else "noise_pred"


def checked_output(check: str, outputs: dict[str, Any], feeds: dict[str, Any]) -> Any:
    from .checks import CheckFailed
    from .parity import compared_output

    try:
        return compared_output(outputs, feeds)
    except ValueError as e:
        raise CheckFailed(check, str(e)) from None


def torch_output(check: str, model: PTDiT, spec: ExportSpec, feeds: dict[str, Any], inputs: list[TensorSpec],
                 outputs: list[TensorSpec], device: str) -> Any:
    """The compared output of the PyTorch model, wrapped in the denoising step for a step graph."""
    from ptdit.step import DenoisingStep

    from .parity import run_torch

    module = DenoisingStep(model) if spec.step else model
    return checked_output(check, run_torch(module, feeds, inputs, outputs, device), feeds)


def torch_device(choice: str) -> str:
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError("--torch-device cuda needs a CUDA build of torch and a GPU; use --torch-device cpu")
    return choice


def build_manifest(opts: ExportOptions, spec: ExportSpec, geo: Geometry, model: PTDiT, weights: Weights,
                   files: list[Path], inputs: list[TensorSpec], outputs: list[TensorSpec], block_names: list[str],
                   checks: dict[str, Any]) -> dict[str, Any]:
    cfg = opts.cfg
    compute_dtype = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[spec.precision]
    return {
        "schema": MANIFEST_SCHEMA,
        "artifact": {
            "onnx": files[0].name,
            "external_data": files[1].name if len(files) > 1 else None,
            "sha256": {f.name: file_sha256(f) for f in files},
        },
        "model": {
            "preset": cfg.name,
            "config": cfg.to_dict(),
            "parameters": model.num_parameters(),
            "weights": weights.to_dict(),
        },
        "export": {
            "resolution": spec.res,
            "frames": spec.frames,
            "batch": spec.batch,
            "text_len": spec.text_len,
            "precision": spec.precision,
            "opset": spec.opset,
            "exporter": "torch.onnx.export(dynamo=True, optimize=False) + constant folding",
            "tools": tool_versions(),
            "graph": "step" if spec.step else "noise_prediction",
            "step": step_manifest(spec),
        },
        "geometry": {
            "latent": list(inputs[0].shape[2:]),
            "tokens": list(geo.grid),
            "window": list(geo.window),
            "windows": list(geo.windows),
            "shift": list(geo.shift),
            "proxy_mode": cfg.proxy_mode,
            "proxy_offset": list(cfg.proxy_offset) if cfg.proxy_offset else None,
            "proxy_window": list(cfg.proxy_window) if cfg.proxy_window else None,
        },
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "block_outputs": {
            "names": block_names,
            "shape": [spec.batch, geo.num_windows, geo.window_size, cfg.hidden_size],
            "dtype": compute_dtype,
            "layout": "window-major tokens [batch, windows, tokens per window, channels]",
        },
        "checks": checks,
    }


def step_manifest(spec: ExportSpec) -> dict[str, Any] | None:
    """How a runtime drives a step graph; None for a noise-prediction graph."""
    if not spec.step:
        return None
    return {
        "carry": dict(STEP_CARRY),
        "latent_dtype": "float32",  # at every precision: the model casts on entry, the update runs in fp32
        "guidance": spec.guided,
        "max_steps": STEP_SCHEDULE_LEN - 1,
        "schedule": "timesteps in [0, 1000], decreasing, then 0, zero-padded",
        "update": "latent + v (t - t_next) / 1000 in fp32, v = uncond + g (cond - uncond)" if spec.guided
                  else "latent + v (t - t_next) / 1000 in fp32, v = the conditional prediction",
    }


def publish(files: list[Path], out_dir: Path) -> list[Path]:
    """Move finished files into place, manifest last; a stale external-data file of an older export of the
    same name is removed."""
    published = []
    names = {f.name for f in files}
    stem = next(f.name.removesuffix(".json") for f in files if f.suffix == ".json")
    for stale in artifact_files(out_dir, stem):
        if stale.name not in names:
            stale.unlink(missing_ok=True)
    for f in files:
        target = out_dir / f.name
        os.replace(f, target)
        published.append(target)
    return published
