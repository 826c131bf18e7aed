"""The pipeline manifest (pipeline.json, schema ptdit-pipeline/1, or /2 for a folder of sizes): written by
ptdit-export --pipeline, read by the runtime. It ties the folder's components together with the sha256 of every
file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .records import Record, optional
from .sizes import Size

PIPELINE_SCHEMA = "ptdit-pipeline/1"
# A folder with `sizes` (several sizes, or one that is not square): a reader of /1 alone would draw its first size
# with the plan of a square latent, so such a folder is /2, which that reader refuses in one line.
SIZED_SCHEMA = "ptdit-pipeline/2"
# Largest relative L2 error of a component's artifact against its PyTorch fp32 reference (its own weights), per
# component kind and precision: the export's check and ptdit-diff's. fp32 VAE: convolutions summing 4,608 terms at
# 512 x 512 pixels reorder enough to reach 2.6e-5 on the full-size decoder's 64 x 64 image tile (1e-4 leaves ~4x);
# the causal 3D ones of a video chunk (13,824 terms) 7.7e-5 on its 8 x 16 x 16 chunk (3e-4 leaves ~4x; measured).
COMPONENT_MAX_REL_L2 = {"t5": {"fp32": 1e-5, "fp16": 2e-2, "bf16": 1e-1}, "vae": {"fp32": 1e-4, "fp16": 2e-2},
                        "vae_video": {"fp32": 3e-4, "fp16": 2e-2}}


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
    """The published tiled VAE decode of one size (computed by the export, carried out by the runtime). Rows and
    columns are tiled on their own: a tile at (starts[i], column_starts[j]) is the latent [i:i + tile, j:j + tile]
    (cut at the latent's edge); `tile`, `blend` and `keep` hold for both axes."""

    starts: tuple[int, ...]  # latent offsets of the tile rows (and of the columns, unless `columns` says otherwise)
    tile: int  # latent tile side
    factor: int  # pixels per latent pixel
    blend: int  # pixels blended across a tile border
    keep: int  # pixels of each tile kept (the last tile: all of it)
    # latent offsets of the tile columns where they differ from the rows' (latents that are not square); None:
    # the same, so the plans of square latents are written as before
    columns: tuple[int, ...] | None = optional()

    @property
    def column_starts(self) -> tuple[int, ...]:
        return self.columns or self.starts

    @property
    def tiled(self) -> bool:
        return len(self.starts) > 1 or len(self.column_starts) > 1


@dataclass(frozen=True)
class VaeDecoderEntry(Record):
    tiles: dict[str, str]  # "HxW" latent tile shape (video: "TxHxW", T latent frames) -> its ONNX
    plan: TilePlan
    latent_scale: str
    output: str
    # video: the latent frame ranges [start, end) decoded one after the other (vae_decode.temporal_chunks);
    # every chunk after the first drops its first decoded frame
    chunks: tuple[tuple[int, int], ...] | None = optional()


@dataclass(frozen=True)
class PipelineSize(Record):
    """One image size a pipeline folder holds: its transformer graphs and its VAE decode's plan (the decoder tiles
    every size needs are in the folder's vae_decoder.tiles)."""

    height: int
    width: int
    transformer: str
    plan: TilePlan
    step_graph: str | None = optional()

    @property
    def size(self) -> Size:
        return Size(self.height, self.width)

    @property
    def sampler_graph(self) -> str:
        return self.step_graph or self.transformer


@dataclass(frozen=True)
class PipelineManifest(Record):
    SCHEMA: ClassVar[str] = PIPELINE_SCHEMA
    SCHEMAS: ClassVar[tuple[str, ...]] = (PIPELINE_SCHEMA, SIZED_SCHEMA)
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
    frames: int | None = optional()  # video: latent frames (1 + 4 (frames - 1) frames out); None: an image
    step_graph: str | None = optional()  # --step: the step graph's ONNX, which the runtime samples with
    # Every size of a folder of several sizes, or of one that is not square, the first (the default) being the one
    # resolution, transformer, step_graph and vae_decoder.plan name; absent: the one square size those name.
    sizes: tuple[PipelineSize, ...] | None = optional()

    @property
    def sampler_graph(self) -> str:
        """The transformer graph the pipeline samples with: the step graph when there is one."""
        return self.step_graph or self.transformer

    def size_entries(self) -> tuple[PipelineSize, ...]:
        """The folder's sizes, the default first."""
        if self.sizes:
            return self.sizes
        return (PipelineSize(self.resolution, self.resolution, self.transformer, self.vae_decoder.plan,
                             self.step_graph),)

    @property
    def is_video(self) -> bool:
        return self.frames is not None

    @property
    def files(self) -> dict[str, str]:
        return self.sha256
