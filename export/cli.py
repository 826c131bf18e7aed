"""ptdit-export: PT-DiT -> ONNX with static shapes per resolution, checked before it is published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ptdit.config import INFERENCE_PROXY_MODES, PRESETS
from ptdit.contract.cli_types import Console, Number, console_options, version_option
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import InputError
from ptdit.contract.fp8 import (
    CALIBRATORS,
    DEFAULT_CALIBRATION_STEPS,
    DEFAULT_CALIBRATION_TRAJECTORIES,
    DEFAULT_CALIBRATOR,
    DEFAULT_LAYER_SET,
    DEFAULT_PERCENTILE,
    LAYER_SETS,
    MIN_OPSET,
)
from ptdit.contract.numbers import SEED
from ptdit.resolution import SUPPORTED_RESOLUTIONS

from .calibration import CALIBRATION_STEPS, CALIBRATION_TRAJECTORIES, PERCENTILE
from .spec import (
    BATCH,
    CHECK_LEVELS,
    DEFAULT_BATCH,
    DEFAULT_OPSET,
    DEFAULT_TEXT_LEN,
    FLOAT_PRECISIONS,
    FRAMES,
    OPSETS,
    PRECISIONS,
    TEXT_LEN,
)

if TYPE_CHECKING:

    from .run import ExportResult

EXAMPLES = """\b
Examples:
  ptdit-export --res 1024
      the published xl architecture (seeded weights), fp16, batch 2 -> artifacts/ptdit-xl-1024-b2-fp16.onnx
  ptdit-export --preset qihoo-t2x --res 512 --res 1024 --checkpoint qihoo_t2i.pt
      published weights, with the published model's settings (8 x 8 windows, mean proxies), two resolutions
  ptdit-export --preset tiny --res 256 --precision fp32 --out /tmp/ptdit --json
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


def parse_triple(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int, int] | None:
    if value is None:
        return None
    try:
        parts = tuple(int(v) for v in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise click.BadParameter(f"expected three integers T,H,W (e.g. 0,4,4), got {value!r}")
    return parts[0], parts[1], parts[2]


@click.command(epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("--res", "resolutions", type=click.Choice([str(r) for r in SUPPORTED_RESOLUTIONS]), multiple=True,
              default=["1024"], show_default=True, help="Image resolution in pixels; repeat for several artifacts.")
@click.option("--frames", type=Number(FRAMES), default=None, help="Video: latent frame count (a multiple of 4).")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
              help="Model preset [default: xl]; qihoo-t2x for the published weights.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Model config JSON (PTDiTConfig fields) instead of a preset.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="Weights (.safetensors/.pt/.pth); default: seeded synthetic weights.")
@click.option("--checkpoint-key", default=None, help="Key of the state dict inside a nested checkpoint (a.b).")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp16", show_default=True,
              help="Weights and activations; LayerNorm and the timestep sinusoids stay fp32. fp8: the blocks' Linear "
                   "layers in FP8 (E4M3, scales calibrated: see --calibrator), the rest fp16.")
@click.option("--batch", type=Number(BATCH),
              default=DEFAULT_BATCH, show_default=True, help="Static batch (2 = CFG pair).")
@click.option("--text-len", type=Number(TEXT_LEN),
              default=DEFAULT_TEXT_LEN, show_default=True, help="Static text length.")
@click.option("--proxy", type=click.Choice(INFERENCE_PROXY_MODES), default=None,
              help="Proxy tokens [default: the preset's: strided, mean for qihoo-t2x].")
@click.option("--proxy-offset", default=None, metavar="T,H,W", callback=parse_triple,
              help="Strided proxy offset inside each window.")
@click.option("--opset", type=Number(OPSETS), default=None,
              help=f"ONNX opset written [default: {DEFAULT_OPSET}; {MIN_OPSET} with --precision fp8].")
@click.option("--seed", type=Number(SEED), default=0, show_default=True, help="Seed of the synthetic weights.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("artifacts"),
              show_default=True, help="Output directory.")
@click.option("--force", is_flag=True, help="Overwrite existing artifacts.")
@click.option("--checks", "check_choice", type=click.Choice(CHECK_LEVELS), default="auto", show_default=True,
              help="fast: structural checks, TensorRT's parser, ONNX Runtime vs PyTorch on the graph cut to block 0; "
                   "full: ONNX Runtime vs PyTorch on the whole model (fp32 and the export precision); auto: full "
                   "when torch sees a CUDA GPU, else fast; none: no checks.")
@click.option("--skip-checks", is_flag=True, help="Same as --checks none.")
@click.option("--step", is_flag=True,
              help="Also export the whole denoising step (<stem>-step.onnx): guidance and the Euler update inside the "
                   "graph, the latent carried in fp32, so a runtime keeps the sampler state on the device.")
@click.option("--pipeline", is_flag=True,
              help="Write a pipeline folder: the transformer, the T5 text encoder, the CausalVAE decoder tiles (with "
                   "--frames: per causal chunk), the tokenizer and the negative prompt's embedding (ptdit-run FOLDER "
                   "--prompt ...).")
@click.option("--text-encoder", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="With --pipeline: a Hugging Face T5 encoder folder [default: a seeded tiny stand-in].")
@click.option("--vae", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --pipeline: the CausalVAE weights [default: a seeded tiny stand-in].")
@click.option("--fp8-layers", type=click.Choice(list(LAYER_SETS)), default=DEFAULT_LAYER_SET, show_default=True,
              help="fp8: the Linear kinds quantized. tcm-mlp: window and shifted-window attention and the MLP (the "
                   "lowest FP8 error, 16 of a block's 22 token-sized GEMMs); all: every Linear of the blocks and the "
                   "caption projection.")
@click.option("--calibrator", type=click.Choice(CALIBRATORS), default=DEFAULT_CALIBRATOR, show_default=True,
              help="fp8: each activation scale from the largest |x| seen (max), or from the largest per-pass "
                   "percentile of |x| (percentile, see --percentile).")
@click.option("--percentile", type=Number(PERCENTILE), default=None,
              help=f"fp8 with --calibrator percentile: the percentile of |x| that maps to E4M3's largest value "
                   f"[default: {DEFAULT_PERCENTILE}].")
@click.option("--calibration-steps", type=Number(CALIBRATION_STEPS), default=DEFAULT_CALIBRATION_STEPS,
              show_default=True, help="fp8: denoising steps of each calibration trajectory (the published schedule).")
@click.option("--calibration-trajectories", type=Number(CALIBRATION_TRAJECTORIES),
              default=DEFAULT_CALIBRATION_TRAJECTORIES, show_default=True,
              help="fp8: sampling trajectories observed (each a guidance pair, one text each).")
@click.option("--calibration-text", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="fp8: T5 features to calibrate on (.npy [N, L, D], or .npz / .safetensors with text_embeds "
                   "and text_mask) [default: random features].")
@click.option("--calibration-prompts", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="fp8 with --pipeline: prompts to calibrate on (one per line), encoded by the text encoder.")
@click.option("--text-encoder-precision", type=click.Choice(FLOAT_PRECISIONS), default="fp16", show_default=True,
              help="With --pipeline: the text encoder's precision (fp16 keeps fp32 islands where T5 overflows).")
@click.option("--vae-precision", type=click.Choice(["fp32", "fp16"]), default="fp32", show_default=True,
              help="fp16 keeps GroupNorm in fp32 (bf16 convolutions need opset 22: not offered).")
@click.option("--torch-device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
              help="Where the PyTorch references of the parity check run (auto: cuda when available).")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary on stdout.")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@console_options
@version_option
def main(resolutions: tuple[str, ...], frames: int | None, preset: str | None, config_file: Path | None,
         checkpoint: str | None, checkpoint_key: str | None, precision: str, batch: int, text_len: int,
         proxy: str | None, proxy_offset: tuple[int, int, int] | None, opset: int | None, seed: int, out_dir: Path,
         force: bool, check_choice: str, skip_checks: bool, step: bool, pipeline: bool, text_encoder: Path | None,
         vae: Path | None,
         fp8_layers: str, calibrator: str, percentile: float | None, calibration_steps: int,
         calibration_trajectories: int, calibration_text: Path | None, calibration_prompts: Path | None,
         text_encoder_precision: str,
         vae_precision: str, torch_device: str, as_json: bool, debug: bool, console: Console) -> None:
    """Export PT-DiT to ONNX with static shapes for each resolution.

    Writes <out>/ptdit-<preset>-<res>[-f<frames>]-b<batch>-<precision>.onnx (+ .onnx.data when large) and a
    .json manifest, after the onnx checker, a static-shape check, TensorRT operator, type and rank checks, a
    real parse by TensorRT's ONNX parser (TensorRT-RTX works on a CPU) and an ONNX Runtime vs PyTorch
    comparison. Nothing is written under the final name unless every check passes.
    """
    from .api import export_options
    from .calibration import CalibrationOptions
    from .options import PipelineOptions
    from .run import export_all

    report = console.line
    with exit_codes("ptdit-export", debug, flags={"resolution": "--res", "out_dir": "--out", "config": "--config"}):
        context = click.get_current_context()
        given = [param.opts[0] for param in context.command.params
                 if param.name in ("text_encoder", "vae", "text_encoder_precision", "vae_precision")
                 and context.get_parameter_source(param.name) != click.core.ParameterSource.DEFAULT]
        if given and not pipeline:  # each of them is silently unused without the pipeline's components
            raise InputError(f"{' and '.join(given)} {'go' if len(given) > 1 else 'goes'} with --pipeline: add "
                             f"--pipeline, or drop {'them' if len(given) > 1 else 'it'}")
        if skip_checks and check_choice != "none" and \
                context.get_parameter_source("check_choice") != click.core.ParameterSource.DEFAULT:
            raise InputError(f"--skip-checks is --checks none, and --checks {check_choice} asks for checks: pass one")
        opts = export_options([int(r) for r in resolutions], preset=preset, config=config_file, checkpoint=checkpoint,
                              checkpoint_key=checkpoint_key, precision=precision, batch=batch, text_len=text_len,
                              frames=frames, proxy=proxy, proxy_offset=proxy_offset, opset=opset, seed=seed,
                              out_dir=out_dir, force=force, checks="none" if skip_checks else check_choice,
                              torch_device=torch_device, step=step,
                              calibration=CalibrationOptions(calibrator, percentile, calibration_steps,
                                                             calibration_trajectories, calibration_text,
                                                             calibration_prompts, layers=fp8_layers))
        if pipeline:
            from .pipeline.folder import export_pipelines

            folders = export_pipelines(opts, PipelineOptions(text_encoder, vae, text_encoder_precision, vae_precision),
                                       report, console.counter)
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
