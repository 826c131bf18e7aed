"""ptdit-export: PT-DiT -> ONNX with static shapes per resolution, checked before it is published."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from ptdit.contract.cli_types import Console, command_options, declared_options, given
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError

from .options import EXPORT, PIPELINE_ONLY

if TYPE_CHECKING:
    from .run import ExportResult

EXAMPLES = """\b
Examples:
  ptdit-export --res 1024
      the published xl architecture (seeded weights), fp16, batch 2 -> artifacts/ptdit-xl-1024-b2-fp16.onnx
  ptdit-export --preset qihoo-t2x --res 512 --res 1024 --checkpoint qihoo_t2i.pt
      published weights, with the published model's settings (8 x 8 windows, mean proxies), two resolutions
  ptdit-export --preset tiny --res 256 --precision fp32 --out /tmp/ptdit --json
  ptdit-export --size 1408x768 --size 768x1408
      16:9 and 9:16 of the 1024 class: a graph each, the weights stored once (--size 1024:common: five ratios)
  ptdit-export --res 512 --frames 16
      video: 16 latent frames, window (4, 4, 4)
  ptdit-export --res 1024 --checks full
      compare the whole model with PyTorch (minutes on a CPU; the default on a GPU machine)
  ptdit-export --preset tiny --res 256 --pipeline
      a folder with everything from prompt to PNG (stand-in T5 and VAE): ptdit-run FOLDER --prompt ...
  ptdit-export --preset tiny --res 256 --frames 8 --pipeline --step
      prompt to video: 29 frames, the VAE decoder per causal chunk, sampled with the step graph
  ptdit-export --preset tiny --res 256 --step
      also ptdit-tiny-256-b2-fp16-step.onnx: one whole sampler step (guidance + Euler update) per call
  ptdit-export --res 1024 --precision fp8 --calibration-text prompts-t5.npz
      FP8 Linear layers, activation scales calibrated on those T5 features (ptdit-build --target rtx: 8.9+)
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@declared_options(EXPORT)
@command_options()
def main(pipeline: bool, skip_checks: bool, as_json: bool, debug: bool, console: Console, **values: Any) -> None:
    """Export PT-DiT to ONNX with static shapes for each size.

    Writes <out>/ptdit-<preset>-<res or WxH>[-f<frames>]-b<batch>-<precision>.onnx (+ .onnx.data when large or
    shared by several sizes) and a
    .json manifest, after the onnx checker, a static-shape check, TensorRT operator, type and rank checks, a
    real parse by TensorRT's ONNX parser (TensorRT-RTX works on a CPU) and an ONNX Runtime vs PyTorch
    comparison. Nothing is written under the final name unless every check passes.
    """
    from .options import export_options, pipeline_options
    from .run import export_all

    report = console.line
    with exit_codes("ptdit-export", debug, flags=EXPORT.flags()):
        context = click.get_current_context()
        alone = given(context, [n for n in PIPELINE_ONLY if n != "calibration_prompts"])
        if alone and not pipeline:  # each of them is silently unused without the pipeline's components
            raise InputError(f"{' and '.join(alone)} {'go' if len(alone) > 1 else 'goes'} with --pipeline: add "
                             f"--pipeline, or drop {'them' if len(alone) > 1 else 'it'}")
        if skip_checks and values["checks"] != "none" and given(context, ["checks"]):
            raise InputError(f"--skip-checks is --checks none, and --checks {values['checks']} asks for checks: pass "
                             f"one")
        values["checks"] = "none" if skip_checks else values["checks"]
        opts = export_options(values)
        if pipeline:
            from .pipeline.folder import export_pipelines

            folders = export_pipelines(opts, pipeline_options(values), report, console.counter)
            if as_json:
                click.echo(json.dumps([{"folder": str(f.path), "up_to_date": f.up_to_date} for f in folders], indent=2))
            for f in [] if as_json else folders:
                click.echo(f"up to date: {f.path}; --force re-exports it" if f.up_to_date else f"wrote {f.path}")
            return
        results = export_all(opts, report, console.counter)

    if as_json:
        click.echo(json.dumps([summary(r) for r in results], indent=2))
        return
    for r in results:
        click.echo(describe(r))


def summary(result: ExportResult) -> dict[str, Any]:
    return {
        "onnx": str(result.onnx_path),
        "manifest": str(result.manifest_path),
        "files": [str(f) for f in result.files],
        "bytes": sum(f.stat().st_size for f in result.files),
        "checks": result.checks,
        "seconds": result.seconds,
        "up_to_date": result.up_to_date,
    }


def describe(result: ExportResult) -> str:
    size = sum(f.stat().st_size for f in result.files) / 1e9
    if result.up_to_date:
        level = result.checks.get("level", "none")
        return f"up to date: {result.onnx_path} ({size:.2f} GB, checks {level}); --force re-exports it"
    lines = [f"wrote {result.onnx_path} ({size:.2f} GB in {len(result.files)} files, manifest "
             f"{result.manifest_path.name})"]
    checks = result.checks
    if checks.get("skipped"):
        lines.append("checks: none (--checks none)")
        return "\n".join(lines)
    parse = checks["tensorrt_parse"]
    parsed = (f"{parse['builder']} parse ({parse['layers']} layers)" if parse["ran"]
              else f"TensorRT parse skipped: {parse['reason']}")
    parity_name = "onnxruntime_parity" if checks["level"] == "full" else "onnxruntime_parity_first_block"
    errors = ", ".join(f"{k.removeprefix('vs_')} rel L2 {v['rel_l2']:.2e}" for k, v in checks[parity_name].items()
                       if isinstance(v, dict))
    scope = "whole model" if checks["level"] == "full" else "graph cut to block 0"
    lines.append(
        f"checks passed ({checks['level']}): onnx checker (full), static shapes ({checks['static_shapes']['values']} "
        f"values), no random ops, TensorRT ops and ranks (max rank {checks['tensorrt_ops']['max_rank']}), {parsed}, "
        f"ONNX Runtime vs PyTorch on the {scope} ({errors})"
    )
    return "\n".join(lines)
