"""ptdit-export --pipeline: everything between a prompt and a PNG in one folder. The transformer artifact as a
plain export writes it, the T5 text encoder, the CausalVAE decoder (one ONNX per latent tile shape the
resolution's tiled decode needs), tokenizer.json, the negative prompt's embedding, and pipeline.json tying them
together with the sha256 of every file. Each component gets the transformer's checks: onnx checker, static
shapes, no random ops, TensorRT's operator table and rank limit, the real parse, ONNX Runtime against PyTorch.

Without --text-encoder / --vae the components are seeded stand-ins of the published architectures at test
size (ptdit.t5 "tiny", ptdit.vae "tiny") and an offline tokenizer, so the pipeline runs with no download.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptdit.checkpoint import file_sha256
from ptdit.errors import InputError
from ptdit.resolution import latent_hw

from .pipeline import (
    MANIFEST_SCHEMA,
    ExportOptions,
    Reporter,
    Stages,
    check_level,
    export_all,
    structural_checks,
    tool_versions,
)
from .spec import TensorSpec

if TYPE_CHECKING:
    import torch

PIPELINE_SCHEMA = "ptdit-pipeline/1"
VAE_TILE, VAE_OVERLAP = 64, 0.125  # latent tile side and overlap of the published tiled decode
# Largest relative L2 error of ONNX Runtime against the component's PyTorch fp32 reference (its own weights),
# per component and precision. fp32 VAE: convolutions summing 4,608 terms at 512 x 512 pixels reorder enough to
# reach 2.6e-5 on the full-size decoder's 64 x 64 tile (measured); 1e-4 leaves ~4x.
COMPONENT_MAX_REL_L2 = {"t5": {"fp32": 1e-5, "fp16": 2e-2, "bf16": 1e-1}, "vae": {"fp32": 1e-4, "fp16": 2e-2}}


@dataclass
class PipelineOptions:
    text_encoder: Path | None = None  # a Hugging Face T5 encoder folder (config.json, weights, tokenizer.json)
    vae: Path | None = None  # CausalVAE weights
    text_encoder_precision: str = "fp16"
    vae_precision: str = "fp32"


def pipeline_dir(opts: ExportOptions, res: int) -> Path:
    frames = f"-f{opts.frames}" if opts.frames else ""
    return opts.out_dir / f"ptdit-{opts.cfg.name}-{res}{frames}-pipeline"


def vae_tile_plan(latent_side: int, factor: int = 8) -> dict[str, Any]:
    """Where the tiles of the published tiled decode start, their side and the blend: latents up to one tile
    are decoded whole (the published code, Qihoo-T2X's, fails on those when tiling is on)."""
    if latent_side <= VAE_TILE:
        return {"starts": [0], "tile": latent_side, "factor": factor, "blend": 0, "keep": latent_side * factor}
    stride = int(VAE_TILE * (1 - VAE_OVERLAP))
    blend = int(VAE_TILE * factor * VAE_OVERLAP)
    return {"starts": list(range(0, latent_side, stride)), "tile": VAE_TILE, "factor": factor, "blend": blend,
            "keep": VAE_TILE * factor - blend}


def tile_sides(plan: dict[str, Any], latent_side: int) -> list[int]:
    return sorted({min(plan["tile"], latent_side - s) for s in plan["starts"]}, reverse=True)


def validate(opts: ExportOptions, pipe: PipelineOptions) -> None:
    if opts.frames:
        raise InputError("--pipeline makes images: drop --frames (the video decoder is not exported yet)")
    if opts.step:
        raise InputError("--pipeline exports the noise-prediction transformer; drop --step")
    if pipe.text_encoder_precision not in COMPONENT_MAX_REL_L2["t5"]:
        raise InputError(f"--text-encoder-precision must be fp32, fp16 or bf16, got {pipe.text_encoder_precision!r}")
    if pipe.vae_precision not in ("fp32", "fp16"):
        raise InputError(f"--vae-precision must be fp32 or fp16 (bf16 convolutions need opset 22), got "
                         f"{pipe.vae_precision!r}")
    if pipe.text_encoder is not None and not (pipe.text_encoder / "config.json").is_file():
        raise InputError(f"--text-encoder {pipe.text_encoder} is not a Hugging Face T5 folder (no config.json)")
    if pipe.vae is not None and not pipe.vae.is_file():
        raise InputError(f"--vae {pipe.vae} does not exist")
    if not opts.force:
        for res in opts.resolutions:
            if pipeline_dir(opts, res).exists():
                raise InputError(f"{pipeline_dir(opts, res)} already exists; pass --force to overwrite it")


def export_pipelines(opts: ExportOptions, pipe: PipelineOptions, report: Reporter) -> list[Path]:
    validate(opts, pipe)
    created = [d for d in [opts.out_dir, *opts.out_dir.parents] if not d.exists()]  # deepest first
    opts.out_dir.mkdir(parents=True, exist_ok=True)
    try:
        return [export_pipeline(opts, pipe, res, report) for res in opts.resolutions]
    except BaseException:
        for directory in created:  # nothing on failure: not even the directories this run made
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def export_pipeline(opts: ExportOptions, pipe: PipelineOptions, res: int, report: Reporter) -> Path:
    target = pipeline_dir(opts, res)
    work = Path(tempfile.mkdtemp(dir=opts.out_dir, prefix=f".{target.name}.partial."))
    try:
        report(f"ptdit-export --pipeline: {target}")
        transformer = export_all(dataclasses.replace(opts, resolutions=[res], out_dir=work, force=True), report)[0]
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
        manifest: dict[str, Any] = {
            "schema": PIPELINE_SCHEMA,
            "resolution": res,
            "transformer": transformer.onnx_path.name,
            "text_encoder": text,
            "tokenizer": "tokenizer.json",
            "negative_prompt": negative,
            "vae_decoder": {"tiles": tiles, "plan": plan, "latent_scale": "applied inside the decoder (1 / 0.18215)",
                            "output": "[-1, 1], clamped, (x + 1) / 2 * 255 rounded to uint8"},
            "sha256": {f.name: file_sha256(f) for f in sorted(work.iterdir()) if f.is_file()},
        }
        (work / "pipeline.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(f"wrote {target} (pipeline.json, {len(manifest['sha256'])} files)")
    return target


def text_encoder(pipe: PipelineOptions) -> tuple[Any, Any, dict[str, Any]]:
    """The T5 encoder (fp32), its tokenizer and where the weights came from."""
    from ptdit.t5 import T5_PRESETS, T5Config, T5Encoder, load_hf_t5

    from .tokenizer import load_tokenizer, standin_tokenizer

    if pipe.text_encoder is None:
        cfg = T5_PRESETS["tiny"]
        return T5Encoder(cfg).eval(), standin_tokenizer(cfg.vocab_size), {"source": "seeded", "seed": 0}
    tokenizer = load_tokenizer(pipe.text_encoder, T5Config.from_hf_dir(pipe.text_encoder).vocab_size)  # before the weights
    return load_hf_t5(pipe.text_encoder), tokenizer, {"source": "checkpoint", "path": str(pipe.text_encoder)}


def vae_decoder(pipe: PipelineOptions) -> tuple[Any, dict[str, Any]]:
    from ptdit.checkpoint import state_dict_sha256
    from ptdit.vae import VAE_PRESETS, CausalVAEDecoder, load_vae

    if pipe.vae is None:
        return CausalVAEDecoder(VAE_PRESETS["tiny"]).eval(), {"source": "seeded", "seed": 0}
    decoder = load_vae(pipe.vae)
    return decoder, {"source": "checkpoint", "path": str(pipe.vae), "sha256": file_sha256(pipe.vae),
                     "state_dict_sha256": state_dict_sha256(decoder)}


def in_precision(module: Any, precision: str) -> Any:
    """The module in the export precision: itself when it already is (a large encoder loaded in fp16 is never
    copied), else a converted copy."""
    import copy

    from .exporter import torch_dtype

    dtype = torch_dtype(precision)
    return module if next(module.parameters()).dtype == dtype else copy.deepcopy(module).to(dtype)


def export_text_encoder(encoder: Any, weights: dict[str, Any], opts: ExportOptions, pipe: PipelineOptions,
                        work: Path, stages: Stages) -> tuple[dict[str, Any], Any]:
    """The text encoder's entry of pipeline.json, and the encoder in the export precision."""
    from ptdit.t5 import first_layer

    cfg, length = encoder.cfg, opts.text_len
    inputs = [TensorSpec("input_ids", (1, length), "int64"), TensorSpec("attention_mask", (1, length), "int64")]
    outputs = [TensorSpec("text_embeds", (1, length, cfg.d_model), "float32")]
    rng = np.random.default_rng(0)
    mask = (np.arange(length) < max(1, length // 3)).astype(np.int64)[None]
    feeds = {"input_ids": rng.integers(3, cfg.vocab_size, (1, length)).astype(np.int64) * mask, "attention_mask": mask}
    model = {"kind": "t5", "config": cfg.to_dict(), "parameters": encoder.num_parameters(), "weights": weights}
    stem = f"text-encoder-{cfg.name}-L{length}-{pipe.text_encoder_precision}"
    exported = in_precision(encoder, pipe.text_encoder_precision)
    entry = export_component(stem, exported, inputs, outputs, feeds, pipe.text_encoder_precision, model,
                             {"graph": "text_encoder", "text_len": length}, opts.opset, work, stages,
                             check_level(opts.checks), cut=first_layer)
    return entry, exported


def export_vae_tile(decoder: Any, weights: dict[str, Any], side: tuple[int, int], pipe: PipelineOptions,
                    work: Path, stages: Stages, level: str) -> str:
    h, w = side
    cfg = decoder.cfg
    inputs = [TensorSpec("latent", (1, cfg.z_channels, h, w), "float32")]
    outputs = [TensorSpec("image", (1, cfg.out_channels, 8 * h, 8 * w), "float32")]
    feeds = {"latent": np.random.default_rng(0).standard_normal((1, cfg.z_channels, h, w)).astype(np.float32)}
    model = {"kind": "vae", "config": cfg.to_dict(), "parameters": sum(p.numel() for p in decoder.parameters()),
             "weights": weights}
    stem = f"vae-decoder-{cfg.name}-{h}x{w}-{pipe.vae_precision}"
    result = export_component(stem, in_precision(decoder, pipe.vae_precision), inputs, outputs, feeds,
                              pipe.vae_precision, model, {"graph": "vae_decoder", "latent": [h, w]}, 18, work, stages,
                              level)
    return str(result["onnx"])


def export_component(stem: str, module: Any, inputs: list[TensorSpec], outputs: list[TensorSpec],
                     feeds: dict[str, np.ndarray], precision: str, model: dict[str, Any], export: dict[str, Any],
                     opset: int, work: Path, stages: Stages, level: str, cut: Any = None) -> dict[str, Any]:
    """Trace, clean, write and check one component; its manifest next to it. Returns the pipeline's entry.
    The checks are the transformer's (level none / fast / full): the numerical one compares ONNX Runtime with
    PyTorch fp32 (the module's own weights, upcast) on the whole component, or with level fast and a `cut`, on
    the component cut to its first layer (every layer has the same operators; ~1/depth of the cost and memory)."""
    from .exporter import save

    stages.report(f"  {stem}")
    path = work / f"{stem}.onnx"
    with stages.run(f"{stem}:trace", "trace to ONNX (torch.export, static shapes) and write"):
        files = save(traced(module, inputs, outputs, opset), path)
    checks: dict[str, Any] = {"skipped": True}
    rel_l2 = None
    if level != "none":
        structural, inferred = structural_checks(path, inputs, outputs, stages)
        scope = "cut to its first layer" if level == "fast" and cut is not None else "whole component"
        whole = scope == "whole component"
        with stages.run(f"{stem}:parity", f"ONNX Runtime (CPU) against PyTorch fp32, {scope}"):
            parity = component_parity(stem, path, inferred, module if whole else cut(module), whole, inputs, outputs,
                                      feeds, COMPONENT_MAX_REL_L2[model["kind"]][precision], opset)
        rel_l2 = parity["vs_torch_fp32"]["rel_l2"]
        checks = {"level": level, **structural, "onnxruntime_parity": {**parity, "scope": scope,
                                                                       "provider": "CPUExecutionProvider"}}
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "artifact": {"onnx": files[0].name, "external_data": files[1].name if len(files) > 1 else None,
                     "sha256": {f.name: file_sha256(f) for f in files}},
        "model": model,
        "export": {"precision": precision, "batch": 1, "opset": opset, "frames": None, "step": None, **export,
                   "exporter": "torch.onnx.export(dynamo=True, optimize=False) + constant folding",
                   "tools": tool_versions()},
        "geometry": None,
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "block_outputs": {"names": []},
        "checks": checks,
    }
    (work / f"{stem}.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return {"onnx": files[0].name, "manifest": f"{stem}.json", "precision": precision, "rel_l2": rel_l2}


def traced(module: Any, inputs: list[TensorSpec], outputs: list[TensorSpec], opset: int) -> Any:
    from .exporter import clean, trace_module

    graph = trace_module(module, inputs, [t.name for t in outputs], opset)
    clean(graph, set(module.state_dict()))
    return graph


def component_parity(stem: str, path: Path, inferred: Any, module: Any, whole: bool, inputs: list[TensorSpec],
                     outputs: list[TensorSpec], feeds: dict[str, np.ndarray], max_rel_l2: float,
                     opset: int) -> dict[str, Any]:
    """ONNX Runtime on the written file (whole) or on `module` (a cut of it) exported next to it for the
    purpose, against `module` in PyTorch fp32 (its own weights, upcast)."""
    import copy

    import onnx

    from .checks import CheckFailed
    from .exporter import save
    from .parity import compare, run_onnxruntime, run_torch

    name, target, files = outputs[0].name, path, []
    if not whole:
        target = path.with_name(f"{stem}.first-layer.onnx")  # no leading dot: onnx refuses ".." in data locations
        files = save(traced(module, inputs, outputs, opset), target)
        inferred = onnx.shape_inference.infer_shapes(onnx.load(str(target), load_external_data=False))
    try:
        got = run_onnxruntime(target, feeds, inferred)[name]
    finally:
        for f in files:
            f.unlink(missing_ok=True)
    expected = run_torch(copy.deepcopy(module).float(), feeds, inputs, outputs)[name]
    parity = compare(got, {"fp32": expected}, {"fp32": max_rel_l2})
    if not parity["passed"]:
        error = parity["vs_torch_fp32"]["rel_l2"]
        raise CheckFailed("onnxruntime_parity", f"{stem}: ONNX Runtime differs from PyTorch (rel L2 {error:.3g}, "
                                                f"max {max_rel_l2:.3g})")
    return parity


def negative_embedding(encoder: Any, tokenizer: Any, length: int, path: Path) -> dict[str, Any]:
    """The empty negative prompt ("</s>" alone) through the encoder in fp32 (one layer upcast at a time, so a
    large fp16 encoder is never copied whole), stored once."""
    import torch

    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="<pad>")
    encoding = tokenizer.encode("")
    ids = torch.tensor([encoding.ids], dtype=torch.int64)
    mask = torch.tensor([encoding.attention_mask], dtype=torch.int64)
    with torch.no_grad():
        embeds = encoder(ids, mask, upcast_layers=True)[0].numpy()
    np.savez(path, text_embeds=embeds, text_mask=mask[0].numpy())
    return {"text": "", "file": path.name, "tokens": int(mask.sum()), "encoded_in": "float32"}
