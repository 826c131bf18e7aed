"""The pipeline manifest (pipeline.json, schema ptdit-pipeline/1): written by ptdit-export --pipeline, read by
the runtime. It ties the folder's components together with the sha256 of every file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .records import Record

PIPELINE_SCHEMA = "ptdit-pipeline/1"


@dataclass(frozen=True)
class TextEncoderEntry(Record):
    onnx: str
    manifest: str
    precision: str
    rel_l2: float | None  # measured by the export's parity check (None: checks off)


@dataclass(frozen=True)
class NegativePrompt(Record):
    text: str
    file: str  # an .npz of text_embeds [L, D] and text_mask [L]
    tokens: int
    encoded_in: str


@dataclass(frozen=True)
class TilePlan(Record):
    """The published tiled VAE decode of one resolution (computed by the export, carried out by the runtime)."""

    starts: tuple[int, ...]  # latent offsets of the tile rows (and columns: square latents)
    tile: int  # latent tile side
    factor: int  # pixels per latent pixel
    blend: int  # pixels blended across a tile border
    keep: int  # pixels of each tile kept (the last tile: all of it)

    @property
    def tiled(self) -> bool:
        return len(self.starts) > 1


@dataclass(frozen=True)
class VaeDecoderEntry(Record):
    tiles: dict[str, str]  # "HxW" latent tile shape -> its ONNX
    plan: TilePlan
    latent_scale: str
    output: str


@dataclass(frozen=True)
class PipelineManifest(Record):
    SCHEMA: ClassVar[str] = PIPELINE_SCHEMA
    WRITER: ClassVar[str] = "ptdit-export --pipeline"
    FIX: ClassVar[str] = "re-export the pipeline with ptdit-export --pipeline"

    resolution: int
    transformer: str  # the transformer's ONNX
    text_encoder: TextEncoderEntry
    tokenizer: str
    negative_prompt: NegativePrompt
    vae_decoder: VaeDecoderEntry
    sha256: dict[str, str]  # every file of the folder but pipeline.json
    schema: str = PIPELINE_SCHEMA

    @property
    def files(self) -> dict[str, str]:
        return self.sha256
