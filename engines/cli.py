"""ptdit-build: a fp16 TensorRT engine (plan) from a ptdit-export ONNX, with TensorRT 10.x / 11.x or TensorRT-RTX."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ptdit.contract.cli_types import Console, Number, console_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.plan_manifest import BuildOptions

from .options import OPT_LEVEL, TILING_LEVELS, WORKSPACE_GIB
from .tensorrt_api import TARGETS

DEFAULTS = BuildOptions()
FLAGS = {"compute_capabilities": "--compute-capability", "workspace_gib": "--workspace", "out_dir": "--out"}

EXAMPLES = """\b
Examples:
  ptdit-build artifacts/ptdit-xl-1024-b2-fp16.onnx
      full TensorRT on the GPU it is for -> artifacts/ptdit-xl-1024-b2-fp16-sm90-trt10.13.plan (+ .json)
  ptdit-build artifacts/ptdit-xl-1024-b2-fp16.onnx --target rtx
      TensorRT-RTX, no GPU needed -> ...-portable-rtx1.7.plan (RTX GPUs of compute capability 8.0-12.x)
  ptdit-build model.onnx --target rtx --compute-capability 8.9,12.0     (-> model-sm89-sm120-rtx1.7.plan)
  ptdit-build model.onnx --timing-cache ~/.cache/ptdit.tcache --opt-level 5 --out engines/
  ptdit-build model.onnx --version-compatible --exclude-lean-runtime     (runs on later TensorRT)
  ptdit-build model.onnx --refittable --strip-plan                       (weightless, refit at load)
  ptdit-build model-fp32.onnx --fp16-weak                                (TensorRT 10.x only)
  ptdit-build model.onnx --triton-repo models/                           (+ a Triton model repository)
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("onnx_path", metavar="ONNX", type=click.Path(path_type=Path))
@click.option("--target", type=click.Choice(TARGETS), default="auto", show_default=True,
              help="tensorrt: full TensorRT 10.x/11.x, builds on the GPU the plan is for; rtx: TensorRT-RTX, builds "
                   "without a GPU; auto: full TensorRT when installed, else TensorRT-RTX.")
@click.option("--compute-capability", "compute_capabilities", multiple=True, metavar="CC[,CC...]",
              help="TensorRT-RTX targets, e.g. 8.9 or 8.6,12.0, or 'current' (the visible GPU) [default: RTX's "
                   "portable set 8.0, 8.6, 8.9, 12.x; an FP8 ONNX: 8.9, 12.0, 12.1, as FP8 needs 8.9 or later].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output directory [default: next to the ONNX].")
@click.option("--workspace", "workspace_gib", type=Number(WORKSPACE_GIB),
              default=DEFAULTS.workspace_gib, show_default=True,
              help="Builder workspace limit, GiB.")
@click.option("--opt-level", type=Number(OPT_LEVEL), default=DEFAULTS.opt_level, show_default=True,
              help="Builder optimization level 0-5.")
@click.option("--tiling-level", type=click.Choice(TILING_LEVELS), default=None,
              help="Tiling optimization level [default: the builder's].")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache file, loaded if present and saved after the build.")
@click.option("--version-compatible", is_flag=True, help="Plan that later TensorRT versions can run.")
@click.option("--exclude-lean-runtime", is_flag=True, help="With --version-compatible: leave the lean runtime out.")
@click.option("--refittable", is_flag=True, help="Weights can be refit without a rebuild.")
@click.option("--strip-plan", is_flag=True, help="Weightless plan (refit from the ONNX at load time).")
@click.option("--weight-streaming", is_flag=True, help="Allow streaming weights from host memory.")
@click.option("--fp16-weak", is_flag=True, help="TensorRT 10.x only: weakly typed fp16 from an fp32 ONNX.")
@click.option("--allow-fp32", is_flag=True, help="Build an fp32 ONNX as an fp32 engine instead of refusing it.")
@click.option("--mark-blocks", is_flag=True, help="Also output every block's tensor (diagnostic plan for ptdit-diff).")
@click.option("--triton-repo", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a Triton Inference Server model repository here (its model of this plan is replaced; "
                   "written also when the plan is up to date).")
@click.option("--force", is_flag=True, help="Rebuild even if a plan is there (stale or current).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
@version_option
def main(onnx_path: Path, target: str, compute_capabilities: tuple[str, ...], out_dir: Path | None,
         workspace_gib: float, opt_level: int, tiling_level: str | None, timing_cache: Path | None,
         version_compatible: bool, exclude_lean_runtime: bool, refittable: bool, strip_plan: bool,
         weight_streaming: bool, fp16_weak: bool, allow_fp32: bool, mark_blocks: bool, triton_repo: Path | None,
         force: bool, as_json: bool, debug: bool, console: Console) -> None:
    """Build a TensorRT engine from an ONNX written by ptdit-export.

    Strongly typed: the types come from the ONNX, so an fp16 ONNX gives an fp16 engine on TensorRT 10.x,
    11.x and TensorRT-RTX. Writes <stem>-<targets>-<builder>.plan and its .json manifest (ONNX hash, builder
    and version, target compute capabilities, flags, build time and peak memory, verified I/O). Full TensorRT
    needs cuda-python and the GPU the engine is for; TensorRT-RTX builds on any machine.
    """
    from .build import build

    options = BuildOptions(workspace_gib, opt_level, timing_cache, version_compatible, exclude_lean_runtime,
                           refittable, strip_plan, weight_streaming, fp16_weak, allow_fp32, mark_blocks, tiling_level)
    # TensorRT may still be winding down in its worker thread after Ctrl-C: leave at once, without waiting for it.
    with exit_codes("ptdit-build", debug, leave_at_once=True, flags=FLAGS):
        result = build(onnx_path, options, out_dir, force, triton_repo, console.line, target, compute_capabilities)
    if as_json:
        click.echo(json.dumps({"plan": str(result.plan), "manifest": str(result.manifest_path),
                               "up_to_date": result.up_to_date, "triton_model": str(result.triton_model or "") or None,
                               "build": result.manifest.build.to_dict()}, indent=2))
    elif not result.up_to_date:
        click.echo(f"wrote {result.plan} and {result.manifest_path.name}" +
                   (f"; Triton model {result.triton_model}" if result.triton_model else ""))
