"""ptdit-bench: complexity, export cost, build cost, runtime latency and overhead, and (with a CUDA device) GPU
latency and memory; tables on stdout (--json: the numbers as JSON on stdout instead), --results FILE to keep them.
Every number is measured in the run that prints it; ratios are taken within one run."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from export.spec import FRAMES, PRECISIONS
from ptdit.config import PRESETS
from ptdit.contract.cli_types import Console, JsonFlagCommand, Number, SizeText, console_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError
from ptdit.contract.numbers import CLIENTS, INSTANCES, REQUESTS, ROUNDS, STEPS, Range
from ptdit.contract.tensorrt import BUILD_TARGETS as TARGETS

from . import (
    build_cost,
    cache_cost,
    complexity,
    export_cost,
    fp8_accuracy,
    gpu,
    runtime_cost,
    serve_load,
    sizes_cost,
    traffic,
    video,
)
from .results import publish, report, set_console

RESOLUTION = Range(64, 8192, integer=True)  # pixels; ptdit-export itself takes its supported resolutions only


@click.group(epilog="""\b
Examples:
  ptdit-bench complexity --results bench.json
  ptdit-bench export --preset tiny --res 256 --json
  ptdit-bench sizes --preset xl --size 1024:common --build   (one size against five, weights stored once)
  ptdit-bench build --res 256 --config '' --config '--opt-level 0'     (TensorRT-RTX, no GPU needed)
  ptdit-bench runtime
  ptdit-bench gpu --res 1024 --res 2048          (on a machine with a CUDA device)
  ptdit-bench fp8 --preset xl --res 256 --modelopt      (FP8 error per layer kind, no GPU needed)
  ptdit-bench serve --concurrency 1 --concurrency 4     (the pipeline on a local Triton server, under load)
  ptdit-bench serve --openai --concurrency 1 --concurrency 4 --concurrency 16          (its OpenAI front)
  ptdit-bench all --results bench.json
""", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@console_options
@version_option
def main(console: Console) -> None:
    """Benchmarks of PT-DiT and of this toolkit; tables on stdout (--json: JSON on stdout), --results FILE to
    keep the numbers."""
    set_console(console)


def results_options(command: Any) -> Any:
    """--json and --results, the same on every subcommand."""
    command = click.option("--results", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Also add the results to this JSON file (its other sections are kept).")(command)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the results as JSON on stdout (the table goes to stderr).")(command)


PRESET_OPTION = click.option("--preset", "preset_name", type=click.Choice(sorted(PRESETS)), default="xl",
                             show_default=True, help="Model preset measured.")
PRECISION_OPTION = click.option("--precision", type=click.Choice(PRECISIONS), default="fp16", show_default=True,
                                help="Export precision.")


@main.command("complexity", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also count from the traced ONNX graphs.")
@results_options
def complexity_command(preset_name: str, onnx: bool, as_json: bool, json_path: Path | None) -> None:
    """Multiply-adds of PT-DiT and of the full-attention DiT of the same size, from the model and from the
    ONNX graph, and the paper's analytic attention ratio."""
    rows = complexity.complexity_rows(preset_name, onnx, report)
    publish("complexity", complexity.complexity_table(rows), rows, as_json, json_path)
    if any(r["proxy"].get("agree") is False or r["full"].get("agree") is False for r in rows):
        sys.exit(1)


@main.command("export", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--res", "resolutions", type=Number(RESOLUTION),
              multiple=True, default=[256, 512, 1024], show_default=True, help="Resolutions exported (repeat).")
@PRECISION_OPTION
@click.option("--checks", type=click.Choice(["none", "fast", "full"]), default="none", show_default=True,
              help="Also time ptdit-export's checks at this level.")
@results_options
def export_command(preset_name: str, resolutions: tuple[int, ...], precision: str, checks: str, as_json: bool,
                   json_path: Path | None) -> None:
    """Wall time and peak RSS of ptdit-export, one fresh process per resolution."""
    rows = []
    for res in resolutions:
        report(f"  ptdit-export --preset {preset_name} --res {res} --precision {precision}")
        with tempfile.TemporaryDirectory() as out:
            args = ["--preset", preset_name, "--res", str(res), "--precision", precision, "--out", out]
            measured = export_cost.run_export(args + ["--checks", checks])
        rows.append({"preset": preset_name, "res": res, "precision": precision, "checks": checks, "measured": measured})
    publish("export", f"{export_cost.export_table(rows)}\n{export_cost.TARGETS_LINE}", rows, as_json, json_path)


@main.command("cache", cls=JsonFlagCommand)
@click.option("--model", "models", type=click.Choice(sorted(cache_cost.MODELS)), multiple=True,
              default=["tiny-trained", "tiny"], show_default=True,
              help="tiny-trained: the checkpoint of bench/train_tiny.py; tiny, xl: seeded weights (repeat).")
@click.option("--res", "resolution", type=click.Choice(["256", "512", "1024"]), default="256", show_default=True,
              help="The image size drawn.")
@click.option("--steps", type=Number(STEPS), default=30, show_default=True, help="Sampling steps per image.")
@click.option("--prompts", "prompt_count", type=Number(Range(1, len(cache_cost.PROMPTS), integer=True)),
              default=len(cache_cost.PROMPTS), show_default=True,
              help="How many of the six prompts tiny-trained was trained on are drawn.")
@click.option("--seeds", type=Number(Range(1, 16, integer=True)), default=1, show_default=True,
              help="Seeds per prompt.")
@click.option("--method", "methods", multiple=True, default=list(cache_cost.DEFAULT_METHODS), show_default=True,
              help="A cache measured, as ptdit-run --cache takes it (repeat).")
@PRECISION_OPTION
@results_options
def cache_command(models: tuple[str, ...], resolution: str, steps: int, prompt_count: int, seeds: int,
                  methods: tuple[str, ...], precision: str, as_json: bool, json_path: Path | None) -> None:
    """Step caching per model: calibrated (ptdit-cache calibrate), then each method against the uncached run
    (transformer calls, sampling time and their ratios, the latent's relative L2, the image's PSNR and SSIM); the
    prediction's step-to-step change; ptdit-run --cache every:2 on the host loop and on the device step loop."""
    from ptdit.contract.cache import parse_cache

    with exit_codes("ptdit-bench", writes=False):  # a bad method: one line before any export
        for method in methods:
            parse_cache(method, "method")
    result = cache_cost.cache_rows(list(models), int(resolution), steps, prompt_count, seeds, list(methods), precision,
                                   report)
    publish("cache", cache_cost.cache_table(result), result, as_json, json_path)


@main.command("sizes", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--size", "sizes", type=SizeText(), multiple=True, default=["1024:common"], show_default=True,
              help="Sizes exported together (repeat; CLASS:common: that class's five common ratios).")
@PRECISION_OPTION
@click.option("--build/--no-build", default=False, show_default=True,
              help="Also build each size's plan with TensorRT-RTX.")
@results_options
def sizes_command(preset_name: str, sizes: tuple[str, ...], precision: str, build: bool, as_json: bool,
                  json_path: Path | None) -> None:
    """ptdit-export of one size against one export of several (the weights stored once): wall time, peak RSS and
    disk, and their ratios; with --build, each size's plan."""
    from export.options import sizes_of
    from ptdit.resolution import window_for

    with exit_codes("ptdit-bench", writes=False):  # a bad size: one line before any export
        asked = sizes_of(None, list(sizes))
        for size in asked:
            window_for(size.height, size.width)
        if len(asked) < 2:
            raise InputError("pass two sizes or more (--size), or a CLASS:common set")
    result = sizes_cost.sizes_rows(preset_name, [str(size) for size in asked], precision, build, report)
    publish("sizes", sizes_cost.sizes_table(result), result, as_json, json_path)


@main.command("build", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--res", "resolutions", type=Number(RESOLUTION), multiple=True, default=[256, 1024], show_default=True,
              help="Resolutions exported and built (repeat).")
@PRECISION_OPTION
@click.option("--target", type=click.Choice(TARGETS), default="rtx", show_default=True,
              help="ptdit-build --target (rtx builds on a CPU).")
@click.option("--config", "configs", multiple=True, default=build_cost.DEFAULT_CONFIGS, show_default=True,
              help="ptdit-build options of one measured build, quoted (repeat); '' = the defaults.")
@results_options
def build_command(preset_name: str, resolutions: tuple[int, ...], precision: str, target: str,
                  configs: tuple[str, ...], as_json: bool, json_path: Path | None) -> None:
    """Ahead-of-time build cost of ptdit-build: parse and build time, plan size and peak RSS, per builder
    configuration (one fresh process each)."""
    rows = build_cost.build_rows(preset_name, resolutions, precision, target, configs, report)
    publish("build", f"{build_cost.build_table(rows)}\n{build_cost.TARGETS_LINE}", rows, as_json, json_path)


@main.command("runtime", cls=JsonFlagCommand)
@click.option("--model", "artifacts", multiple=True, default=["tiny:256:fp32", "tiny:1024:fp32"],
              show_default=True, metavar="PRESET:RES:PRECISION",
              help="A model to export and time, repeat for several (xl:256:fp32 takes minutes).")
@click.option("--artifact", "old_artifacts", multiple=True, metavar="PRESET:RES:PRECISION",
              help="Deprecated spelling of --model (it names a model to export, not an artifact).")
@click.option("--steps", type=Number(STEPS), default=3, show_default=True, help="Sampling steps timed per backend.")
@click.option("--overhead-steps", type=Number(STEPS), default=10, show_default=True,
              help="Sampling steps per run of the overhead measurement.")
@click.option("--overhead-rounds", type=Number(ROUNDS), default=10, show_default=True,
              help="Sampling runs and bare blocks of the overhead measurement, alternated.")
@click.option("--loops-backend", type=click.Choice(["onnxruntime", "torch", "tensorrt"]), default="onnxruntime",
              show_default=True, help="Where the host loop and the step loop are compared (tensorrt: plans, on a GPU).")
@click.option("--loop-steps", type=Number(STEPS),
              default=30, show_default=True, help="Steps per sampling run of that comparison.")
@results_options
def runtime_command(artifacts: tuple[str, ...], old_artifacts: tuple[str, ...], steps: int, overhead_steps: int,
                    overhead_rounds: int,
                    loops_backend: str, loop_steps: int, as_json: bool, json_path: Path | None) -> None:
    """Per-step latency of ONNX Runtime (CPU) and PyTorch (CPU) on the same artifact, the runtime's overhead
    around the backend call, and the host loop (noise-prediction graph) against the step loop (--step graph)
    with their host<->device counters."""
    if old_artifacts:
        report("note: --artifact is deprecated here; name the models with --model PRESET:RES:PRECISION")
        artifacts = old_artifacts
    specs = [parse_model(a) for a in artifacts]
    data = runtime_cost.runtime_rows(specs, steps, report, overhead_steps, overhead_rounds, loops_backend, loop_steps)
    publish("runtime", runtime_cost.runtime_table(data), data, as_json, json_path)


def parse_model(text: str) -> tuple[str, int, str]:
    """preset:res:precision, e.g. tiny:256:fp32."""
    parts = text.split(":")
    if len(parts) != 3 or parts[0] not in PRESETS or not parts[1].isdigit() or parts[2] not in PRECISIONS:
        raise click.BadParameter(f"{text!r} is not PRESET:RES:PRECISION (e.g. tiny:256:fp32; presets "
                                 f"{', '.join(sorted(PRESETS))}, precisions {', '.join(PRECISIONS)})")
    return parts[0], int(parts[1]), parts[2]


@main.command("gpu", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--res", "resolutions", type=Number(RESOLUTION), multiple=True, default=[1024, 2048], show_default=True,
              help="Resolutions timed (repeat).")
@click.option("--compile/--no-compile", "compile_model", default=False, show_default=True,
              help="Also time the torch.compile'd fp16 models (minutes more).")
@results_options
def gpu_command(preset_name: str, resolutions: tuple[int, ...], compile_model: bool, as_json: bool,
                json_path: Path | None) -> None:
    """PyTorch fp16 and bf16 latency and peak memory of PT-DiT and the full-attention DiT against the floor set
    by the GPU's measured matmul rate, and FP8 (torch._scaled_mm) against fp16 on PT-DiT's Linear shapes.
    Skipped without a CUDA device."""
    data = gpu.gpu_rows(preset_name, resolutions, compile_model, report)
    publish("gpu", gpu.gpu_table(data), data, as_json, json_path)


@main.command("traffic", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--res", "resolutions", type=Number(RESOLUTION), multiple=True, default=[1024, 2048], show_default=True,
              help="Resolutions traced (repeat).")
@PRECISION_OPTION
@results_options
def traffic_command(preset_name: str, resolutions: tuple[int, ...], precision: str, as_json: bool,
                    json_path: Path | None) -> None:
    """The graph's data movement: per block and per step, the operators that copy without computing and the
    bytes they move, with the time at each GPU's published bandwidth (an estimate)."""
    rows = traffic.traffic_rows(preset_name, resolutions, precision, report)
    publish("traffic", traffic.traffic_table(rows), rows, as_json, json_path)


@main.command("fp8", cls=JsonFlagCommand)
@PRESET_OPTION
@click.option("--res", type=click.Choice(["256", "512", "1024"]), default="256", show_default=True,
              help="Resolution of the calibration and the held-out inputs.")
@click.option("--modelopt", "with_modelopt", is_flag=True,
              help="Also calibrate with NVIDIA ModelOpt (pip install nvidia-modelopt) on the same layers and passes.")
@click.option("--checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Weights of the preset [default: seeded], e.g. bench/data/tiny-trained.safetensors.")
@results_options
def fp8_command(preset_name: str, res: str, with_modelopt: bool, checkpoint: Path | None, as_json: bool,
                json_path: Path | None) -> None:
    """FP8 error per Linear kind and per --fp8-layers set: the fake-quantized model (the export's E4M3 rounding)
    against fp32, max and percentile calibration, and ModelOpt's with --modelopt. On the CPU; writes nothing."""
    with exit_codes("ptdit-bench", writes=False):
        rows = fp8_accuracy.fp8_accuracy_rows(preset_name, int(res), with_modelopt, report, checkpoint=checkpoint)
    publish("fp8", fp8_accuracy.fp8_accuracy_table(rows), rows, as_json, json_path)


@main.command("serve", cls=JsonFlagCommand)
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A pipeline folder [default: the tiny pipeline at --res, exported for the run].")
@click.option("--res", type=click.Choice(["256", "512", "1024"]), default="256", show_default=True,
              help="Resolution of the exported tiny pipeline.")
@click.option("--concurrency", type=Number(CLIENTS), multiple=True, default=[1, 2, 4, 8],
              show_default=True, help="Concurrent clients (repeat).")
@click.option("--requests", type=Number(REQUESTS), default=16, show_default=True,
              help="Requests per concurrency, and images in-process.")
@click.option("--steps", type=Number(STEPS), default=30, show_default=True, help="Sampling steps per request.")
@click.option("--instances", type=Number(INSTANCES), default=1, show_default=True,
              help="Pipeline instances in the server.")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime", show_default=True,
              help="What runs the pipeline, in-process and in the server (tensorrt: the folder's plans).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where it runs.")
@click.option("--layout", type=click.Choice(["pipeline", "components"]), default=None,
              help="The repository's layout (ptdit-serve repository --layout) [default: its default].")
@click.option("--openai", is_flag=True, help="Measure the OpenAI front instead: its overhead at 1 client against "
                                             "the gRPC client, and its throughput at each --concurrency.")
@results_options
def serve_command(folder: Path | None, res: str, concurrency: tuple[int, ...], requests: int, steps: int,
                  instances: int, backend: str, device: str, layout: str | None, openai: bool, as_json: bool,
                  json_path: Path | None) -> None:
    """Requests per second and p50 / p95 latency at each concurrency against a local tritonserver (ptdit-serve
    setup's), and the server's overhead against the same pipeline in-process, in one run (--openai: the front's
    against the gRPC client)."""
    with exit_codes("ptdit-bench", writes=False):
        data = serve_load.serve_rows(folder, "tiny", int(res), sorted(set(concurrency)), requests, steps, instances,
                                     backend, device, report, layout, openai)
    publish("serve-openai" if openai else "serve",
            (serve_load.front_table if openai else serve_load.serve_table)(data), data, as_json, json_path)


@main.command("video", cls=JsonFlagCommand)
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A video pipeline folder [default: the tiny one at --res and --frames, exported for the run].")
@click.option("--res", type=click.Choice(["256", "512"]), default=None,
              help="Resolution of the exported tiny pipeline [default: 256].")
@click.option("--frames", type=Number(FRAMES), default=None,
              help="Latent frames of the exported tiny pipeline [default: 8].")
@click.option("--steps", type=Number(STEPS), default=30, show_default=True, help="Sampling steps of the run.")
@results_options
def video_command(folder: Path | None, res: str | None, frames: int | None, steps: int, as_json: bool,
                  json_path: Path | None) -> None:
    """A video pipeline, measured: its export, one ptdit-run to an .mp4 (per-stage times) and each VAE decoder
    chunk shape decoded once in a fresh process (peak RSS), each in a child process."""
    with exit_codes("ptdit-bench", writes=False):
        if folder is not None and (res or frames):
            raise InputError("--res and --frames choose the exported pipeline; --folder brings its own: drop them")
        data = video.video_rows(folder, "tiny", int(res or 256), frames or 8, steps, report)
    publish("video", video.video_table(data), data, as_json, json_path)


@main.command("all")
@click.option("--results", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also add every section's results to this JSON file.")
@click.pass_context
def run_all(ctx: click.Context, json_path: Path | None) -> None:
    """complexity, export, build, runtime and gpu with their defaults (tables on stdout)."""
    for command in (complexity_command, export_command, build_command, runtime_command, gpu_command):
        click.echo(f"\n## {command.name}\n")
        ctx.invoke(command, as_json=False, json_path=json_path)
