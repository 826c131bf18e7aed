"""ptdit-export --pipeline: the pipeline folder of a resolution. The transformer artifact as a plain export writes
it, the T5 text encoder, the CausalVAE decoder (one ONNX per latent tile shape the resolution's tiled decode
needs), tokenizer.json, the negative prompt's embedding, and pipeline.json tying them together with the sha256 of
every file. The folders are made under temporary names and published together when all are complete.

Without --text-encoder / --vae the components are seeded stand-ins of the published architectures at test
size (ptdit.t5 "tiny", ptdit.vae "tiny") and an offline tokenizer, so the pipeline runs with no download.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ptdit.contract.errors import InputError
from ptdit.contract.files import file_sha256
from ptdit.contract.manifests import write_manifest
from ptdit.contract.outputs import Outputs
from ptdit.contract.pipeline_manifest import PipelineManifest, TilePlan, VaeDecoderEntry
from ptdit.resolution import latent_hw

from ..options import ExportOptions, PipelineOptions, check_export_options, check_level
from ..progress import Reporter, Stages
from ..run import export_graphs
from .components import (
    COMPONENT_MAX_REL_L2,
    export_text_encoder,
    export_vae_tile,
    negative_embedding,
    text_encoder,
    vae_decoder,
)

VAE_TILE, VAE_OVERLAP = 64, 0.125  # latent tile side and overlap of the published tiled decode


def pipeline_dir(opts: ExportOptions, res: int) -> Path:
    frames = f"-f{opts.frames}" if opts.frames else ""
    return opts.out_dir / f"ptdit-{opts.cfg.name}-{res}{frames}-pipeline"


def vae_tile_plan(latent_side: int, factor: int = 8) -> TilePlan:
    """Where the tiles of the published tiled decode start, their side and the blend: latents up to one tile
    are decoded whole (the published code, Qihoo-T2X's, fails on those when tiling is on)."""
    if latent_side <= VAE_TILE:
        return TilePlan((0,), latent_side, factor, 0, latent_side * factor)
    stride = int(VAE_TILE * (1 - VAE_OVERLAP))
    blend = int(VAE_TILE * factor * VAE_OVERLAP)
    return TilePlan(tuple(range(0, latent_side, stride)), VAE_TILE, factor, blend, VAE_TILE * factor - blend)


def tile_sides(plan: TilePlan, latent_side: int) -> list[int]:
    return sorted({min(plan.tile, latent_side - s) for s in plan.starts}, reverse=True)


def check_pipeline_options(opts: ExportOptions, pipe: PipelineOptions) -> None:
    if opts.frames:
        raise InputError("--pipeline makes images: drop --frames (the video decoder is not exported yet)")
    if opts.step:
        raise InputError("--pipeline exports the noise-prediction transformer; drop --step")
    if pipe.text_encoder_precision not in COMPONENT_MAX_REL_L2["t5"]:
        raise InputError(f"--text-encoder-precision must be fp32, fp16 or bf16, got {pipe.text_encoder_precision!r}")
    if pipe.vae_precision not in COMPONENT_MAX_REL_L2["vae"]:
        raise InputError(f"--vae-precision must be fp32 or fp16 (bf16 convolutions need opset 22), got "
                         f"{pipe.vae_precision!r}")
    if pipe.text_encoder is not None and not (pipe.text_encoder / "config.json").is_file():
        raise InputError(f"--text-encoder {pipe.text_encoder} is not a Hugging Face T5 folder (no config.json)")
    if pipe.vae is not None and not pipe.vae.is_file():
        raise InputError(f"--vae {pipe.vae} does not exist")


def export_pipelines(opts: ExportOptions, pipe: PipelineOptions, report: Reporter) -> list[Path]:
    """One folder per resolution, all published together at the end (ptdit.contract.outputs)."""
    check_pipeline_options(opts, pipe)
    check_export_options(opts)
    with Outputs(opts.force) as outputs:
        staged = {res: outputs.claim(pipeline_dir(opts, res), folder=True) for res in opts.resolutions}
        for res in opts.resolutions:
            export_pipeline(opts, pipe, res, staged[res], report)
        outputs.commit()
    return [pipeline_dir(opts, res) for res in opts.resolutions]


def export_pipeline(opts: ExportOptions, pipe: PipelineOptions, res: int, work: Path, report: Reporter) -> None:
    """The folder of one resolution, made at `work`."""
    work.mkdir()
    report(f"ptdit-export --pipeline: {pipeline_dir(opts, res)}")
    transformer = export_graphs(dataclasses.replace(opts, resolutions=[res], out_dir=work), report, lambda p: p)[0]
    stages = Stages(report)
    encoder, tokenizer, encoder_weights = text_encoder(pipe)
    tokenizer.save(str(work / "tokenizer.json"))
    text, exported_encoder = export_text_encoder(encoder, encoder_weights, opts, pipe, work, stages)
    del encoder
    with stages.run("negative_prompt", "encode the negative prompt \"\" in fp32, one layer at a time"):
        negative = negative_embedding(exported_encoder, tokenizer, opts.text_len, work / "negative.npz")
    del exported_encoder
    decoder, vae_weights = vae_decoder(pipe)
    side = latent_hw(res)
    plan = vae_tile_plan(side)
    level = check_level(opts.checks)
    tiles = {f"{a}x{b}": export_vae_tile(decoder, vae_weights, (a, b), pipe, work, stages, level)
             for a in tile_sides(plan, side) for b in tile_sides(plan, side)}
    manifest = PipelineManifest(
        resolution=res, transformer=transformer.onnx_path.name, text_encoder=text, tokenizer="tokenizer.json",
        negative_prompt=negative,
        vae_decoder=VaeDecoderEntry(tiles, plan, latent_scale="applied inside the decoder (1 / 0.18215)",
                                    output="[-1, 1], clamped, (x + 1) / 2 * 255 rounded to uint8"),
        sha256={f.name: file_sha256(f) for f in sorted(work.iterdir()) if f.is_file()})
    write_manifest(work / "pipeline.json", manifest)
