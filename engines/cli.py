"""ptdit-build: a fp16 TensorRT engine (plan) from a ptdit-export ONNX, with TensorRT 10.x / 11.x or TensorRT-RTX."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cli_types import Console, command_options, declared_options
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError, option

from .options import BUILD, build_options

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
  ptdit-build artifacts/ptdit-xl-1408x768-b2-fp16.onnx artifacts/ptdit-xl-768x1408-b2-fp16.onnx --target rtx
      a plan per size of a multi-size export, one after the other
"""


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.argument("onnx_paths", metavar="ONNX...", type=click.Path(path_type=Path), nargs=-1, required=True)
@declared_options(BUILD)
@command_options()
def main(onnx_paths: tuple[Path, ...], as_json: bool, debug: bool, console: Console, **values: Any) -> None:
    """Build a TensorRT engine from an ONNX written by ptdit-export (several: one after the other, each plan
    published when it is built; a multi-size export's sizes, say).

    Strongly typed: the types come from the ONNX, so an fp16 ONNX gives an fp16 engine on TensorRT 10.x,
    11.x and TensorRT-RTX. Writes <stem>-<targets>-<builder>.plan and its .json manifest (ONNX hash, builder
    and version, target compute capabilities, flags, build time and peak memory, verified I/O). Full TensorRT
    needs cuda-python and the GPU the engine is for; TensorRT-RTX builds on any machine.
    """
    from .build import build

    # TensorRT may still be winding down in its worker thread after Ctrl-C: leave at once, without waiting for it.
    summaries = []
    with exit_codes("ptdit-build", debug, leave_at_once=True, flags=BUILD.flags()):
        check_several(onnx_paths, values["triton_repo"], values["out_dir"])
        for onnx_path in onnx_paths:
            result = build(onnx_path, build_options(values), values["out_dir"], values["force"],
                           values["triton_repo"], console.line, values["target"], values["compute_capabilities"])
            summaries.append({"plan": str(result.plan), "manifest": str(result.manifest_path),
                              "up_to_date": result.up_to_date,
                              "triton_model": str(result.triton_model or "") or None,
                              "build": result.manifest.build.to_dict()})
            if not as_json and not result.up_to_date:
                click.echo(f"wrote {result.plan} and {result.manifest_path.name}" +
                           (f"; Triton model {result.triton_model}" if result.triton_model else ""))
    if as_json:  # one ONNX: its summary, as always; several: the list of them
        click.echo(json.dumps(summaries[0] if len(summaries) == 1 else summaries, indent=2))


def check_several(onnx_paths: tuple[Path, ...], triton_repo: Path | None, out_dir: Path | None) -> None:
    """Several ONNX: each one there and named once, and no Triton repository (one model each would share its name),
    before the first build."""
    if len(onnx_paths) < 2:
        return
    for path in onnx_paths:
        if not path.is_file():
            raise InputError(f"{path} does not exist: pass the ONNX files of ptdit-export")
    if len({path.resolve() for path in onnx_paths}) < len(onnx_paths):
        raise InputError("an ONNX is named twice: pass each once")
    if len({path.name for path in onnx_paths}) < len(onnx_paths) and out_dir is not None:
        raise InputError(f"two ONNX of one name would make one plan in {option('out_dir')} {out_dir}: build them "
                         f"into folders of their own")
    if triton_repo is not None:
        raise InputError(f"{option('triton_repo')} writes the repository of one plan: build the ONNX one at a time "
                         f"with it, or drop it")
