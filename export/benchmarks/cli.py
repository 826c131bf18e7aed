"""ptdit-bench: complexity, export cost, build cost, runtime latency and overhead, and (with a CUDA device) GPU
latency and memory; tables on stdout, --json to keep the numbers. Every number is measured in the run that prints
it; ratios are taken within one run."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cli_types import Number, version_option
from ptdit.contract.files import write_atomically
from ptdit.contract.numbers import ROUNDS, STEPS, Range

from . import build_cost, complexity, export_cost, gpu, runtime_cost

RESOLUTION = Range(64, 8192, integer=True)  # pixels; ptdit-export itself takes its supported resolutions only


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()}
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def add_to_json(path: Path | None, section: str, rows: Any) -> None:
    """Put one section's results (and the machine) into the JSON file at `path`, keeping its other sections."""
    if path is None:
        return
    data = json.loads(path.read_text()) if path.exists() else {}
    data[section] = rows
    data["machine"] = machine()
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))  # never left half written


def report(line: str) -> None:
    click.echo(line, err=True)


@click.group(epilog="""\b
Examples:
  ptdit-bench complexity --json bench.json
  ptdit-bench export --res 256 --res 1024
  ptdit-bench build --res 256 --config '' --config '--opt-level 0'     (TensorRT-RTX, no GPU needed)
  ptdit-bench runtime
  ptdit-bench gpu --res 1024 --res 2048          (on a machine with a CUDA device)
  ptdit-bench all --json bench.json
""", context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@version_option
def main() -> None:
    """Benchmarks of PT-DiT and of this toolkit; tables on stdout, --json to keep the numbers."""


JSON_OPTION = click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                           help="Add the results to this JSON file.")


@main.command("complexity")
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--onnx/--no-onnx", default=True, show_default=True, help="Also count from the traced ONNX graphs.")
@JSON_OPTION
def complexity_command(preset_name: str, onnx: bool, json_path: Path | None) -> None:
    """Multiply-adds of PT-DiT and of the full-attention DiT of the same size, from the model and from the
    ONNX graph, and the paper's analytic attention ratio."""
    rows = complexity.complexity_rows(preset_name, onnx, report)
    click.echo(complexity.complexity_table(rows))
    add_to_json(json_path, "complexity", rows)
    if any(r["proxy"].get("agree") is False or r["full"].get("agree") is False for r in rows):
        sys.exit(1)


@main.command("export")
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--res", "resolutions", type=Number(RESOLUTION),
              multiple=True, default=[256, 512, 1024], show_default=True)
@click.option("--precision", default="fp16", show_default=True)
@click.option("--checks", type=click.Choice(["none", "fast", "full"]), default="none", show_default=True,
              help="Also time ptdit-export's checks at this level.")
@JSON_OPTION
def export_command(preset_name: str, resolutions: tuple[int, ...], precision: str, checks: str,
                   json_path: Path | None) -> None:
    """Wall time and peak RSS of ptdit-export, one fresh process per resolution."""
    rows = []
    for res in resolutions:
        report(f"  ptdit-export --preset {preset_name} --res {res} --precision {precision}")
        with tempfile.TemporaryDirectory() as out:
            args = ["--preset", preset_name, "--res", str(res), "--precision", precision, "--out", out]
            measured = export_cost.run_export(args + ["--checks", checks])
        rows.append({"preset": preset_name, "res": res, "precision": precision, "checks": checks, "measured": measured})
    click.echo(export_cost.export_table(rows))
    click.echo(export_cost.TARGETS_LINE)
    add_to_json(json_path, "export", rows)


@main.command("build")
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--res", "resolutions", type=Number(RESOLUTION), multiple=True, default=[256, 1024], show_default=True)
@click.option("--precision", default="fp16", show_default=True)
@click.option("--target", default="rtx", show_default=True, help="ptdit-build --target (rtx builds on a CPU).")
@click.option("--config", "configs", multiple=True, default=build_cost.DEFAULT_CONFIGS, show_default=True,
              help="ptdit-build options of one measured build, quoted (repeat); '' = the defaults.")
@JSON_OPTION
def build_command(preset_name: str, resolutions: tuple[int, ...], precision: str, target: str,
                  configs: tuple[str, ...], json_path: Path | None) -> None:
    """Ahead-of-time build cost of ptdit-build: parse and build time, plan size and peak RSS, per builder
    configuration (one fresh process each)."""
    rows = build_cost.build_rows(preset_name, resolutions, precision, target, configs, report)
    click.echo(build_cost.build_table(rows))
    click.echo(build_cost.TARGETS_LINE)
    add_to_json(json_path, "build", rows)


@main.command("runtime")
@click.option("--artifact", "artifacts", multiple=True, default=["tiny:256:fp32", "tiny:1024:fp32"],
              show_default=True, help="preset:res:precision to export and time (xl:256:fp32 takes minutes).")
@click.option("--steps", type=Number(STEPS), default=3, show_default=True, help="Sampling steps timed per backend.")
@click.option("--overhead-steps", type=Number(STEPS), default=10, show_default=True)
@click.option("--overhead-rounds", type=Number(ROUNDS), default=10, show_default=True)
@click.option("--loops-backend", type=click.Choice(["onnxruntime", "torch", "tensorrt"]), default="onnxruntime",
              show_default=True, help="Where the host loop and the step loop are compared (tensorrt: plans, on a GPU).")
@click.option("--loop-steps", type=Number(STEPS),
              default=30, show_default=True, help="Steps per sampling run of that comparison.")
@JSON_OPTION
def runtime_command(artifacts: tuple[str, ...], steps: int, overhead_steps: int, overhead_rounds: int,
                    loops_backend: str, loop_steps: int, json_path: Path | None) -> None:
    """Per-step latency of ONNX Runtime (CPU) and PyTorch (CPU) on the same artifact, the runtime's overhead
    around the backend call, and the host loop (noise-prediction graph) against the step loop (--step graph)
    with their host<->device counters."""
    specs = [(a.split(":")[0], int(a.split(":")[1]), a.split(":")[2]) for a in artifacts]
    data = runtime_cost.runtime_rows(specs, steps, report, overhead_steps, overhead_rounds, loops_backend, loop_steps)
    click.echo(runtime_cost.runtime_table(data))
    add_to_json(json_path, "runtime", data)


@main.command("gpu")
@click.option("--preset", "preset_name", default="xl", show_default=True)
@click.option("--res", "resolutions", type=Number(RESOLUTION), multiple=True, default=[1024, 2048], show_default=True)
@click.option("--compile/--no-compile", "compile_model", default=True, show_default=True)
@JSON_OPTION
def gpu_command(preset_name: str, resolutions: tuple[int, ...], compile_model: bool, json_path: Path | None) -> None:
    """PyTorch fp16 latency and peak memory of PT-DiT and the full-attention DiT, eager and compiled, against
    the floor set by the GPU's measured matmul rate. Skipped without a CUDA device."""
    data = gpu.gpu_rows(preset_name, resolutions, compile_model, report)
    click.echo(gpu.gpu_table(data))
    add_to_json(json_path, "gpu", data)


@main.command("all")
@JSON_OPTION
@click.pass_context
def run_all(ctx: click.Context, json_path: Path | None) -> None:
    """complexity, export, build, runtime and gpu with their defaults."""
    for command in (complexity_command, export_command, build_command, runtime_command, gpu_command):
        click.echo(f"\n## {command.name}\n")
        ctx.invoke(command, json_path=json_path)
