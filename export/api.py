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
from typing import TYPE_CHECKING, Any

from ptdit.contract.arguments import checked
from ptdit.contract.progress import Reporter

from .options import EXPORT, EXPORT_MODEL, export_options, pipeline_options

if TYPE_CHECKING:
    from .pipeline.folder import PipelineExport
    from .run import ExportResult

LOG = logging.getLogger("export")


@checked(options=EXPORT_MODEL)
def export_model(resolution: Any = None, *, progress: Reporter | None = None, **options: Any) -> list[ExportResult]:
    """Export PT-DiT to ONNX with static shapes, as ptdit-export does: one ExportResult per graph (each
    size, and with step=True its step graph after it; size: "1408x768", a ptdit.Size, or a list, after the
    resolutions), with .path (the ONNX), .manifest (the typed
    manifest), .files, .checks, .seconds and .up_to_date. preset: xl (default), tiny, qihoo-t2x; or config: a
    PTDiTConfig or a JSON file of its fields. checks: auto, fast, full or none. precision="fp8": FP8 Linear
    layers (fp8_layers "tcm-mlp" or "all") whose activation scales come from calibration (calibrator "max" or
    "percentile", with percentile: the quantile, default 99.99; refused with "max"), calibration_steps x
    calibration_trajectories sampling passes, calibration_text: a T5 features file; default random text).
    The keywords are ptdit-export's options (export.options.EXPORT: the flag --text-len is text_len=...).
    progress: called with each line of progress (default: the `export` logger, at INFO)."""
    from .run import export_all

    return export_all(export_options({"resolution": resolution, **options}), progress or LOG.info)


@checked(options=EXPORT)
def export_pipeline(resolution: Any = None, *, progress: Reporter | None = None,
                    **options: Any) -> list[PipelineExport]:
    """The pipeline folder of every size asked for (one folder; a list of it), as ptdit-export --pipeline writes
    it (.path, .up_to_date, .manifest):
    the transformer, the T5 text encoder (text_encoder: a Hugging Face T5 folder; default a seeded stand-in),
    the CausalVAE decoder tiles (vae: its checkpoint; default a seeded stand-in), the tokenizer and the
    negative prompt. Run it with runtime.PTDiTPipeline.from_folder(result.path). frames: latent frames of a
    video pipeline (the decoder per causal chunk); step: the step graph too, which the pipeline samples with.
    precision="fp8" as in export_model, and calibration_prompts: a text file of prompts (one per line) encoded
    by the text encoder. The other keywords are export_model's."""
    from .pipeline.folder import export_pipelines

    values = {"resolution": resolution, **options}
    return export_pipelines(export_options(values), pipeline_options(values), progress or LOG.info)
