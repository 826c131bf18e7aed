"""The pipeline's components besides the transformer: the T5 text encoder, the CausalVAE decoder per latent tile shape
(for video, per chunk length too), and the negative prompt's embedding. Each component gets the transformer's checks
(onnx checker, static shapes, no random ops, TensorRT's operator table and rank limit, the real parse, ONNX Runtime
against PyTorch) and a manifest of its own next to it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ptdit.contract.files import file_sha256
from ptdit.contract.graph_check import graph_records
from ptdit.contract.manifests import write_manifest
from ptdit.contract.onnx_manifest import ModelInfo, TensorSpec, Weights
from ptdit.contract.pipeline_manifest import COMPONENT_MAX_REL_L2, NegativePrompt, TextEncoderEntry

from ..options import ExportOptions, PipelineOptions, check_level
from ..progress import Stages

if TYPE_CHECKING:
    import torch

    from ..calibration import CalibrationText


def text_encoder(pipe: PipelineOptions) -> tuple[Any, Any, Weights]:
    """The T5 encoder (fp32), its tokenizer and where the weights came from."""
    from ptdit.t5 import T5_PRESETS, T5Config, T5Encoder, load_hf_t5

    from .tokenizer import load_tokenizer, standin_tokenizer

    if pipe.text_encoder is None:
        cfg = T5_PRESETS["tiny"]
        return T5Encoder(cfg).eval(), standin_tokenizer(cfg.vocab_size), Weights("seeded", seed=0)
    vocab_size = T5Config.from_hf_dir(pipe.text_encoder).vocab_size
    tokenizer = load_tokenizer(pipe.text_encoder, vocab_size)  # before the weights
    return load_hf_t5(pipe.text_encoder), tokenizer, Weights("checkpoint", path=str(pipe.text_encoder),
                                                             sha256=folder_sha256(pipe.text_encoder))


def folder_sha256(folder: Path) -> str:
    """One sha256 of a Hugging Face model folder: of each file's name and sha256 (config, weights, tokenizer), so a
    folder whose weights changed in place is another folder."""
    import hashlib

    digest = hashlib.sha256()
    for f in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors", ".bin")):
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def vae_decoder(pipe: PipelineOptions) -> tuple[Any, Weights]:
    from ptdit.checkpoint import state_dict_sha256
    from ptdit.vae import VAE_PRESETS, CausalVAEDecoder, load_vae

    if pipe.vae is None:
        return CausalVAEDecoder(VAE_PRESETS["tiny"]).eval(), Weights("seeded", seed=0)
    decoder = load_vae(pipe.vae)
    return decoder, Weights("checkpoint", path=str(pipe.vae), sha256=file_sha256(pipe.vae),
                            state_dict_sha256=state_dict_sha256(decoder))


def in_precision(module: Any, precision: str) -> Any:
    """The module in the export precision: itself when it already is (a large encoder loaded in fp16 is never
    copied), else a converted copy."""
    from ..exporter import torch_dtype

    dtype = torch_dtype(precision)
    return module if next(module.parameters()).dtype == dtype else copy.deepcopy(module).to(dtype)


def export_text_encoder(encoder: Any, weights: Weights, opts: ExportOptions, pipe: PipelineOptions,
                        work: Path, stages: Stages) -> tuple[TextEncoderEntry, Any]:
    """The text encoder's entry of pipeline.json, and the encoder in the export precision."""
    from ptdit.t5 import first_layer

    cfg, length, precision = encoder.cfg, opts.text_len, pipe.text_encoder_precision
    inputs = [TensorSpec("input_ids", (1, length), "int64"), TensorSpec("attention_mask", (1, length), "int64")]
    outputs = [TensorSpec("text_embeds", (1, length, cfg.d_model), "float32")]
    rng = np.random.default_rng(0)
    mask = (np.arange(length) < max(1, length // 3)).astype(np.int64)[None]
    feeds = {"input_ids": rng.integers(3, cfg.vocab_size, (1, length)).astype(np.int64) * mask, "attention_mask": mask}
    model = ModelInfo(cfg.to_dict(), encoder.num_parameters(), weights, kind="t5")
    stem = f"text-encoder-{cfg.name}-L{length}-{precision}"
    exported = in_precision(encoder, precision)
    onnx_name, rel_l2 = export_component(stem, exported, first_layer(exported), inputs, outputs, feeds, model,
                                         "text_encoder", precision, opts.opset, work, stages, check_level(opts.checks),
                                         text_len=length)
    return TextEncoderEntry(onnx_name, f"{stem}.json", precision, rel_l2), exported


def export_vae_tile(decoder: Any, weights: Weights, shape: tuple[int, ...], pipe: PipelineOptions,
                    work: Path, stages: Stages, level: str) -> str:
    """One VAE decoder tile shape, (h, w) or for video (t, h, w) latent frames; its ONNX file name."""
    from ptdit.contract.vae_decode import decoded_frames
    from ptdit.resolution import VAE_FACTOR

    *frames, h, w = shape
    cfg, precision = decoder.cfg, pipe.vae_precision
    pixel_frames = [decoded_frames(t) for t in frames]
    inputs = [TensorSpec("latent", (1, cfg.z_channels, *shape), "float32")]
    outputs = [TensorSpec("image", (1, cfg.out_channels, *pixel_frames, VAE_FACTOR * h, VAE_FACTOR * w), "float32")]
    feeds = {"latent": np.random.default_rng(0).standard_normal((1, cfg.z_channels, *shape)).astype(np.float32)}
    model = ModelInfo(cfg.to_dict(), sum(p.numel() for p in decoder.parameters()), weights, kind="vae")
    stem = f"vae-decoder-{cfg.name}-{'x'.join(map(str, shape))}-{precision}"
    onnx_name, _ = export_component(stem, in_precision(decoder, precision), None, inputs, outputs, feeds, model,
                                    "vae_decoder", precision, 18, work, stages, level, latent=list(shape),
                                    limit_kind="vae_video" if frames else "vae")
    return onnx_name


def export_component(stem: str, module: torch.nn.Module, cut: torch.nn.Module | None, inputs: list[TensorSpec],
                     outputs: list[TensorSpec], feeds: dict[str, np.ndarray], model: ModelInfo, graph: str,
                     precision: str, opset: int, work: Path, stages: Stages, level: str, text_len: int | None = None,
                     latent: list[int] | None = None, limit_kind: str | None = None) -> tuple[str, float | None]:
    """Trace, clean, write and check one component (at `level`: none / fast / full, `cut` its first layer for
    the fast numerical check; judged by COMPONENT_MAX_REL_L2[limit_kind or the model's kind]); its manifest next to
    it. Returns the ONNX file name and the measured error."""
    from ..checks.suite import check_component
    from ..exporter import save, trace_component
    from ..manifest import component_manifest

    stages.report(f"  {stem}")
    path = work / f"{stem}.onnx"
    with stages.run(f"{stem}:trace", "trace to ONNX (torch.export, static shapes) and write"):
        graph_file = trace_component(module, inputs, outputs, opset)
        files = save(graph_file, path, graph_records(model.config, precision, graph))
    checks: dict[str, Any] = {"skipped": True}
    rel_l2 = None
    if level != "none":
        checks = check_component(stem, path, module, cut, inputs, outputs, feeds,
                                 COMPONENT_MAX_REL_L2[limit_kind or model.kind][precision], opset, level, stages)
        rel_l2 = checks["onnxruntime_parity"]["vs_torch_fp32"]["rel_l2"]
    manifest = component_manifest(model, graph, precision, opset, files, inputs, outputs, checks, text_len, latent)
    write_manifest(work / f"{stem}.json", manifest)
    return files[0].name, rel_l2


def encode_prompts(encoder: Any, tokenizer: Any, length: int, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Prompts through the encoder in fp32 (one layer upcast at a time, so a large fp16 encoder is never copied
    whole): features [N, length, D] and masks [N, length]."""
    import torch

    tokenizer.enable_truncation(max_length=length)
    tokenizer.enable_padding(length=length, pad_id=0, pad_token="<pad>")
    embeds, masks = [], []
    for prompt in prompts:
        encoding = tokenizer.encode(prompt)
        ids = torch.tensor([encoding.ids], dtype=torch.int64)
        mask = torch.tensor([encoding.attention_mask], dtype=torch.int64)
        with torch.no_grad():
            embeds.append(encoder(ids, mask, upcast_layers=True)[0].numpy())
        masks.append(mask[0].numpy())
    return np.stack(embeds), np.stack(masks)


def negative_embedding(encoder: Any, tokenizer: Any, length: int, path: Path) -> NegativePrompt:
    """The empty negative prompt ("</s>" alone) through the encoder in fp32, stored once."""
    embeds, mask = encode_prompts(encoder, tokenizer, length, [""])
    np.savez(path, text_embeds=embeds[0], text_mask=mask[0])
    return NegativePrompt(text="", file=path.name, tokens=int(mask.sum()), encoded_in="float32")


def calibration_text(encoder: Any, tokenizer: Any, length: int, path: Path) -> CalibrationText:
    """--calibration-prompts: the file's prompts through the encoder, as an FP8 export calibrates on them."""
    from ..calibration import CalibrationText, read_prompts

    prompts = read_prompts(path)
    embeds, mask = encode_prompts(encoder, tokenizer, length, prompts)
    sha = file_sha256(path)
    return CalibrationText(embeds.astype(np.float32), mask.astype(np.int64),
                           f"{path.name} ({len(prompts)} prompts through the text encoder, sha256 {sha})", sha)
