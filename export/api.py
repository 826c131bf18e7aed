"""ptdit-export from Python: keyword options, typed results, progress through a callback or `logging`.

    from export import export_model, export_pipeline

    graph = export_model(256, preset="tiny", out_dir="artifacts")[0]      # one result per graph
    graph.path, graph.manifest.export.precision, graph.up_to_date
    folder = export_pipeline(256, preset="tiny")[0].path                 # prompt to image: runtime.PTDiTPipeline

What is already there and up to date is reused (result.up_to_date); a stale output is refused unless
force=True. Errors are InputError (a ValueError) naming these parameters.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ptdit.contract.arguments import checked
from ptdit.contract.errors import InputError, option
from ptdit.contract.fp8 import (
    DEFAULT_CALIBRATION_STEPS,
    DEFAULT_CALIBRATION_TRAJECTORIES,
    DEFAULT_CALIBRATOR,
    DEFAULT_LAYER_SET,
    FP8,
    MIN_OPSET,
)
from ptdit.contract.progress import Reporter

from .calibration import CalibrationOptions
from .options import ExportOptions, PipelineOptions
from .spec import DEFAULT_BATCH, DEFAULT_OPSET, DEFAULT_TEXT_LEN, PRECISIONS

if TYPE_CHECKING:
    from ptdit.config import PTDiTConfig

    from .pipeline.folder import PipelineExport
    from .run import ExportResult

LOG = logging.getLogger("export")


@checked
def export_model(resolution: int | Sequence[int] = 1024, *, preset: str | None = None,
                 config: PTDiTConfig | str | Path | None = None, checkpoint: str | Path | None = None,
                 checkpoint_key: str | None = None, precision: str = "fp16", batch: int = DEFAULT_BATCH,
                 text_len: int = DEFAULT_TEXT_LEN, frames: int | None = None, proxy: str | None = None,
                 proxy_offset: tuple[int, int, int] | None = None, opset: int | None = None, seed: int = 0,
                 out_dir: str | Path = "artifacts", force: bool = False, checks: str = "auto",
                 torch_device: str = "auto", step: bool = False, fp8_layers: str = DEFAULT_LAYER_SET,
                 calibrator: str = DEFAULT_CALIBRATOR,
                 percentile: float | None = None, calibration_steps: int = DEFAULT_CALIBRATION_STEPS,
                 calibration_trajectories: int = DEFAULT_CALIBRATION_TRAJECTORIES,
                 calibration_text: str | Path | None = None,
                 progress: Reporter | None = None) -> list[ExportResult]:
    """Export PT-DiT to ONNX with static shapes, as ptdit-export does: one ExportResult per graph (each
    resolution, and with step=True its step graph after it), with .path (the ONNX), .manifest (the typed
    manifest), .files, .checks, .seconds and .up_to_date. preset: xl (default), tiny, qihoo-t2x; or config: a
    PTDiTConfig or a JSON file of its fields. checks: auto, fast, full or none. precision="fp8": FP8 Linear
    layers (fp8_layers "tcm-mlp" or "all") whose activation scales come from calibration (calibrator "max" or
    "percentile", with percentile: the quantile, default 99.99; refused with "max"), calibration_steps x
    calibration_trajectories sampling passes, calibration_text: a T5 features file; default random text).
    progress: called with each line of progress (default: the `export` logger, at INFO)."""
    from .run import export_all

    calibration = CalibrationOptions(calibrator, percentile, calibration_steps, calibration_trajectories,
                                     Path(calibration_text) if calibration_text is not None else None,
                                     layers=fp8_layers)
    opts = export_options(resolution, preset=preset, config=config, checkpoint=checkpoint,
                          checkpoint_key=checkpoint_key, precision=precision, batch=batch, text_len=text_len,
                          frames=frames, proxy=proxy, proxy_offset=proxy_offset, opset=opset, seed=seed,
                          out_dir=out_dir, force=force, checks=checks, torch_device=torch_device, step=step,
                          calibration=calibration)
    return export_all(opts, progress or LOG.info)


@checked
def export_pipeline(resolution: int | Sequence[int] = 1024, *, text_encoder: str | Path | None = None,
                    vae: str | Path | None = None, text_encoder_precision: str = "fp16", vae_precision: str = "fp32",
                    preset: str | None = None, config: PTDiTConfig | str | Path | None = None,
                    checkpoint: str | Path | None = None, checkpoint_key: str | None = None, precision: str = "fp16",
                    batch: int = DEFAULT_BATCH, text_len: int = DEFAULT_TEXT_LEN, proxy: str | None = None,
                    opset: int | None = None, frames: int | None = None, step: bool = False,
                    seed: int = 0, out_dir: str | Path = "artifacts", force: bool = False, checks: str = "auto",
                    torch_device: str = "auto", fp8_layers: str = DEFAULT_LAYER_SET,
                    calibrator: str = DEFAULT_CALIBRATOR,
                    percentile: float | None = None, calibration_steps: int = DEFAULT_CALIBRATION_STEPS,
                    calibration_trajectories: int = DEFAULT_CALIBRATION_TRAJECTORIES,
                    calibration_text: str | Path | None = None, calibration_prompts: str | Path | None = None,
                    progress: Reporter | None = None) -> list[PipelineExport]:
    """A pipeline folder per resolution, as ptdit-export --pipeline writes it (.path, .up_to_date, .manifest):
    the transformer, the T5 text encoder (text_encoder: a Hugging Face T5 folder; default a seeded stand-in),
    the CausalVAE decoder tiles (vae: its checkpoint; default a seeded stand-in), the tokenizer and the
    negative prompt. Run it with runtime.PTDiTPipeline.from_folder(result.path). frames: latent frames of a
    video pipeline (the decoder per causal chunk); step: the step graph too, which the pipeline samples with.
    precision="fp8" as in export_model, and calibration_prompts: a text file of prompts (one per line) encoded
    by the text encoder."""
    from .pipeline.folder import export_pipelines

    calibration = CalibrationOptions(calibrator, percentile, calibration_steps, calibration_trajectories,
                                     Path(calibration_text) if calibration_text is not None else None,
                                     Path(calibration_prompts) if calibration_prompts is not None else None,
                                     layers=fp8_layers)
    opts = export_options(resolution, preset=preset, config=config, checkpoint=checkpoint,
                          checkpoint_key=checkpoint_key, precision=precision, batch=batch, text_len=text_len,
                          proxy=proxy, opset=opset, seed=seed, out_dir=out_dir, force=force, checks=checks,
                          torch_device=torch_device, calibration=calibration, frames=frames, step=step)
    pipe = PipelineOptions(Path(text_encoder) if text_encoder is not None else None,
                           Path(vae) if vae is not None else None, text_encoder_precision, vae_precision)
    return export_pipelines(opts, pipe, progress or LOG.info)


def export_options(resolution: int | Sequence[int], *, preset: str | None = None,
                   config: PTDiTConfig | str | Path | None = None, checkpoint: str | Path | None = None,
                   checkpoint_key: str | None = None, precision: str = "fp16", batch: int = DEFAULT_BATCH,
                   text_len: int = DEFAULT_TEXT_LEN, frames: int | None = None, proxy: str | None = None,
                   proxy_offset: tuple[int, int, int] | None = None, opset: int | None = None, seed: int = 0,
                   out_dir: str | Path = "artifacts", force: bool = False, checks: str = "auto",
                   torch_device: str = "auto", step: bool = False,
                   calibration: CalibrationOptions | None = None) -> ExportOptions:
    """The options of one export, as export_model and ptdit-export take them (the checks of their values that
    need no work run later, in check_export_options, before anything is written)."""
    from ptdit.config import INFERENCE_PROXY_MODES, PTDiTConfig
    from ptdit.config import preset as get_preset
    from ptdit.resolution import SUPPORTED_RESOLUTIONS

    resolutions = [resolution] if isinstance(resolution, int) else list(resolution)
    for res in resolutions:
        if isinstance(res, bool) or not isinstance(res, int) or res not in SUPPORTED_RESOLUTIONS:
            raise InputError(f"{option('resolution')} {res!r} is not supported: use one of "
                             f"{', '.join(map(str, SUPPORTED_RESOLUTIONS))}")
    if preset is not None and config is not None:
        raise InputError(f"pass {option('preset')} or {option('config')}, not both")
    if isinstance(config, PTDiTConfig):
        cfg = config
    elif config is not None:
        cfg = PTDiTConfig.from_json_file(config)
    else:
        cfg = get_preset(preset or "xl")
    if precision not in PRECISIONS:
        raise InputError(f"{option('precision')} must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if proxy is not None and proxy not in INFERENCE_PROXY_MODES:
        raise InputError(f"{option('proxy')} must be one of {', '.join(INFERENCE_PROXY_MODES)}, got {proxy!r}")
    changes = {key: value for key, value in (("proxy_mode", proxy), ("proxy_offset", proxy_offset)) if value}
    cfg = cfg.replace(**changes) if changes else cfg
    if opset is None:
        opset = MIN_OPSET if precision == FP8 else DEFAULT_OPSET
    return ExportOptions(cfg, resolutions, frames, precision, batch, text_len, opset, Path(out_dir),
                         str(checkpoint) if checkpoint is not None else None, checkpoint_key, seed, force, checks,
                         torch_device, step, calibration or CalibrationOptions())
