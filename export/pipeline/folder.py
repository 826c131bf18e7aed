"""ptdit-export --pipeline: one pipeline folder for every size asked for (and with --frames, of a video length). The
transformer of each size as a plain export writes it, over one weights file when there are several (with --step, each
size's step graph too, which the runtime then samples with), the T5 text encoder once, the CausalVAE decoder (one
ONNX per latent tile shape the published tiled decodes of the sizes need; for video, per chunk length and tile shape),
tokenizer.json, the negative prompt's embedding, and pipeline.json tying them together with the sha256 of every file.
The folder is made under a temporary name and published when it is complete.

Without --text-encoder / --vae the components are seeded stand-ins of the published architectures at test
size (ptdit.t5 "tiny", ptdit.vae "tiny") and an offline tokenizer, so the pipeline runs with no download.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ptdit.contract.errors import InputError, option
from ptdit.contract.files import file_sha256, verify_files
from ptdit.contract.manifests import read_manifest, write_manifest
from ptdit.contract.onnx_manifest import OnnxManifest
from ptdit.contract.outputs import Outputs
from ptdit.contract.pipeline_manifest import (
    COMPONENT_MAX_REL_L2,
    PIPELINE_SCHEMA,
    SIZED_SCHEMA,
    PipelineManifest,
    PipelineSize,
    TilePlan,
    VaeDecoderEntry,
)
from ptdit.contract.progress import Counter, no_counter
from ptdit.contract.reuse import Existing
from ptdit.contract.sizes import Size
from ptdit.contract.vae_decode import decoder_shapes, temporal_chunks, tile_plan
from ptdit.resolution import VAE_FACTOR, latent_size, resolution_of
from ptdit.vae import LATENT_SCALE

from ..existing import CHECK_ORDER, Wanted, checked_level, existing_state
from ..options import ExportOptions, PipelineOptions, check_export_options, check_level, spec_for
from ..progress import Reporter, Stages
from ..run import export_graphs
from .components import (
    calibration_text,
    export_text_encoder,
    export_vae_tile,
    folder_sha256,
    negative_embedding,
    text_encoder,
    vae_decoder,
)


def pipeline_dir(opts: ExportOptions) -> Path:
    """The one folder of a run: named by its sizes (one square size: ptdit-<preset>-1024-pipeline, as before sizes)."""
    frames = f"-f{opts.frames}" if opts.frames else ""
    return opts.out_dir / f"ptdit-{opts.cfg.name}-{'+'.join(size.name for size in opts.sizes)}{frames}-pipeline"


def decode_plan(size: Size, frames: int | None) -> tuple[TilePlan, tuple[tuple[int, int], ...] | None,
                                                       list[tuple[int, ...]]]:
    """The published VAE decode of a size (and clip length): its tile plan, its causal chunks (video) and the
    latent shapes it calls the decoder with (an ONNX each)."""
    height, width = latent_size(size.height, size.width)
    plan, chunks = tile_plan(height, width, frames, VAE_FACTOR), temporal_chunks(frames) if frames else None
    return plan, chunks, decoder_shapes(plan, chunks, height, width)


def decoder_tiles(opts: ExportOptions) -> list[tuple[int, ...]]:
    """Every latent shape the decode of any of the sizes needs, largest first, each once."""
    shapes = {shape for size in opts.sizes for shape in decode_plan(size, opts.frames)[2]}
    return sorted(shapes, reverse=True)


def shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))  # pipeline.json's key: "64x64", video "8x32x32"


def check_pipeline_options(opts: ExportOptions, pipe: PipelineOptions) -> None:
    if pipe.text_encoder_precision not in COMPONENT_MAX_REL_L2["t5"]:
        raise InputError(f"{option('text_encoder_precision')} must be fp32, fp16 or bf16, got "
                         f"{pipe.text_encoder_precision!r}")
    if pipe.vae_precision not in COMPONENT_MAX_REL_L2["vae"]:
        raise InputError(f"{option('vae_precision')} must be fp32 or fp16 (bf16 convolutions need opset 22), got "
                         f"{pipe.vae_precision!r}")
    if pipe.text_encoder is not None and not (pipe.text_encoder / "config.json").is_file():
        raise InputError(f"{option('text_encoder')} {pipe.text_encoder} is not a Hugging Face T5 folder (no "
                         f"config.json)")
    if pipe.vae is not None and not pipe.vae.is_file():
        raise InputError(f"{option('vae')} {pipe.vae} does not exist")


@dataclasses.dataclass(frozen=True)
class PipelineExport:
    path: Path
    up_to_date: bool  # it was there, exported with the same components, weights and options, and was reused

    @property
    def manifest(self) -> PipelineManifest:
        """pipeline.json as written (read when asked for)."""
        return read_manifest(PipelineManifest, self.path / "pipeline.json", "this folder", f"{self.path} is missing")


def export_pipelines(opts: ExportOptions, pipe: PipelineOptions, report: Reporter,
                     counter: Counter = no_counter) -> list[PipelineExport]:
    """The folder of every size asked for, published at the end (ptdit.contract.outputs). A folder already there
    and up to date (pipeline_state) is reused; a stale one is refused unless `opts.force`."""
    check_pipeline_options(opts, pipe)
    check_export_options(opts)
    folder = pipeline_dir(opts)
    existing = Existing[None].absent() if opts.force else pipeline_state(opts, pipe, Wanted(opts))
    existing.refuse_if_stale("replace it")
    if existing.state == "current":
        report(f"ptdit-export --pipeline: {folder} is up to date (same components, weights and options); it is reused")
        return [PipelineExport(folder, True)]
    with Outputs(opts.force) as outputs:
        staged = outputs.claim(folder, folder=True)
        with counter("exporting", 1, "folder") as advance:
            export_pipeline(opts, pipe, staged, report)
            advance(folder.name)
        outputs.commit()
    return [PipelineExport(folder, False)]


def pipeline_state(opts: ExportOptions, pipe: PipelineOptions, wanted: Wanted) -> Existing[None]:
    """Absent when the folder is not there, current when its files match pipeline.json and every component was
    exported from the weights and with the options asked for now, else stale, saying why."""
    folder = pipeline_dir(opts)
    if not folder.exists():
        return Existing.absent()
    try:
        manifest = read_manifest(PipelineManifest, folder / "pipeline.json", "this folder", "no pipeline.json")
        verify_files(folder, manifest.files, "pipeline.json", "")
    except InputError as e:
        return Existing.stale(f"{folder} cannot be used ({e.template.rstrip('; ')})")
    entries = manifest.size_entries()
    if [entry.size for entry in entries] != opts.sizes:
        return Existing.stale(f"{folder} holds the sizes {', '.join(str(e.size) for e in entries)}, not "
                              f"{', '.join(map(str, opts.sizes))}")
    for size, entry in zip(opts.sizes, entries):
        stale = _transformer_state(opts, folder, size, entry, wanted)
        if stale is not None:
            return stale
    decode, wanted_tiles = manifest.vae_decoder, sorted(shape_name(shape) for shape in decoder_tiles(opts))
    if sorted(decode.tiles) != wanted_tiles or decode.chunks != (temporal_chunks(opts.frames) if opts.frames else None):
        return Existing.stale(f"{folder} holds VAE decoders of {sorted(decode.tiles)}, its decode needs {wanted_tiles}")
    vae_weights = ({"source": "seeded"} if pipe.vae is None
                   else {"source": "checkpoint", "sha256": file_sha256(pipe.vae)})
    encoder_weights = ({"source": "seeded"} if pipe.text_encoder is None
                       else {"source": "checkpoint", "sha256": folder_sha256(pipe.text_encoder)})
    components = [(manifest.text_encoder.manifest, pipe.text_encoder_precision, encoder_weights)]
    components += [(name.removesuffix(".onnx") + ".json", pipe.vae_precision, vae_weights)
                   for name in manifest.vae_decoder.tiles.values()]
    for name, precision, weights in components:
        component = read_manifest(OnnxManifest, folder / name, "this component", f"{folder / name} is missing")
        recorded = component.model.weights.to_dict()
        if component.precision != precision:
            return Existing.stale(f"{folder / name} was exported in {component.precision}, and {precision} is asked "
                                  f"for")
        if any(recorded.get(k) != v for k, v in weights.items()):
            return Existing.stale(f"{folder / name} was exported from other weights")
        if CHECK_ORDER.index(checked_level(component)) < CHECK_ORDER.index(wanted.level):
            return Existing.stale(f"{folder / name} was checked at level {checked_level(component)}, and "
                                  f"{wanted.level} is asked for")
    return Existing.current()


def _transformer_state(opts: ExportOptions, folder: Path, size: Size, entry: PipelineSize,
                       wanted: Wanted) -> Existing[None] | None:
    """None when the size's transformer graphs and decode plan are those asked for, else why they are stale."""
    spec = spec_for(opts, size)
    transformer = existing_state(folder, spec, wanted)
    if transformer.state == "absent":
        return Existing.stale(f"{folder} holds the transformer {entry.transformer}, not {spec.stem}.onnx (another "
                              f"precision, batch or text length)")
    if transformer.state == "stale":
        return Existing.stale(transformer.why)
    if (entry.step_graph is not None) != opts.step:
        return Existing.stale(f"{folder} was exported {'with' if entry.step_graph else 'without'} {option('step')}")
    if opts.step:
        step_spec = spec_for(opts, size, step=True)
        step = existing_state(folder, step_spec, wanted)
        if entry.step_graph != f"{step_spec.stem}.onnx" or step.state == "absent":
            return Existing.stale(f"{folder} holds the step graph {entry.step_graph}, not {step_spec.stem}.onnx")
        if step.state == "stale":
            return Existing.stale(step.why)
    plan, _, _ = decode_plan(size, opts.frames)
    if entry.plan != plan:
        return Existing.stale(f"{folder} decodes {size} with the tile plan {entry.plan.to_dict()}, the published "
                              f"decode's is {plan.to_dict()}")
    return None


def export_pipeline(opts: ExportOptions, pipe: PipelineOptions, work: Path, report: Reporter) -> None:
    """The folder of every size, made at `work`."""
    work.mkdir()
    report(f"ptdit-export --pipeline: {pipeline_dir(opts)}")
    stages = Stages(report)
    encoder, tokenizer, encoder_weights = text_encoder(pipe)
    prompts = opts.calibration.prompts_file
    if prompts is not None:  # an FP8 transformer calibrated on these prompts, through this text encoder
        with stages.run("calibration_prompts", f"encode the calibration prompts of {prompts.name} in fp32"):
            features = calibration_text(encoder, tokenizer, opts.text_len, prompts)
        opts = dataclasses.replace(opts, calibration=dataclasses.replace(opts.calibration, text=features))
    tokenizer.save(str(work / "tokenizer.json"))
    text, exported_encoder = export_text_encoder(encoder, encoder_weights, opts, pipe, work, stages)
    del encoder
    with stages.run("negative_prompt", "encode the negative prompt \"\" in fp32, one layer at a time"):
        negative = negative_embedding(exported_encoder, tokenizer, opts.text_len, work / "negative.npz")
    del exported_encoder  # T5 is out of memory before the transformer (and its fp32 calibration model) is built
    graphs = export_graphs(dataclasses.replace(opts, out_dir=work), report, lambda p: p)
    per_size = 2 if opts.step else 1  # export_graphs gives each size's noise prediction, then its step graph
    decoder, vae_weights = vae_decoder(pipe)
    level = check_level(opts.checks)
    tiles = {shape_name(shape): export_vae_tile(decoder, vae_weights, shape, pipe, work, stages, level)
             for shape in decoder_tiles(opts)}
    entries = []
    for i, size in enumerate(opts.sizes):
        plan, _, _ = decode_plan(size, opts.frames)
        own = graphs[i * per_size:(i + 1) * per_size]
        entries.append(PipelineSize(size.height, size.width, own[0].onnx_path.name, plan,
                                    own[1].onnx_path.name if opts.step else None))
    first, chunks = entries[0], temporal_chunks(opts.frames) if opts.frames else None
    decoder_entry = VaeDecoderEntry(tiles, first.plan, latent_scale=f"applied inside the decoder (1 / {LATENT_SCALE})",
                                    output="[-1, 1], clamped, (x + 1) / 2 * 255 rounded to uint8", chunks=chunks)
    one_square = len(entries) == 1 and first.height == first.width  # written as before sizes
    manifest = PipelineManifest(
        resolution=resolution_of(opts.sizes[0]), transformer=first.transformer, text_encoder=text,
        tokenizer="tokenizer.json", negative_prompt=negative, vae_decoder=decoder_entry, frames=opts.frames,
        step_graph=first.step_graph, sizes=None if one_square else tuple(entries),
        schema=PIPELINE_SCHEMA if one_square else SIZED_SCHEMA,
        sha256={f.name: file_sha256(f) for f in sorted(work.iterdir()) if f.is_file()})
    write_manifest(work / "pipeline.json", manifest)
