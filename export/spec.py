"""What one export is: the model, the static geometry, the precision and the I/O contract.

The I/O names, shapes and dtypes are decided here and written into the manifest; every later stage reads
them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from ptdit.contract.dtypes import PRECISION_DTYPES
from ptdit.contract.numbers import Range
from ptdit.contract.onnx_manifest import TensorSpec
from ptdit.contract.sizes import Size
from ptdit.resolution import VAE_FACTOR

PRECISIONS = tuple(PRECISION_DTYPES)
FLOAT_PRECISIONS = ("fp32", "fp16", "bf16")  # what the pipeline's text encoder offers
DEFAULT_OPSET = 18  # fp8: ptdit.contract.fp8.MIN_OPSET (QuantizeLinear / DequantizeLinear of FLOAT8E4M3FN)
SUPPORTED_OPSETS = range(18, 24)  # what torch.onnx's exporter emits; LayerNormalization needs >= 17
DEFAULT_BATCH = 2  # the classifier-free guidance pair
DEFAULT_TEXT_LEN = 200  # model_max_length of the published Qihoo-T2X config
OPSETS = Range(SUPPORTED_OPSETS.start, SUPPORTED_OPSETS.stop - 1, integer=True)
BATCH = Range(1, 64, integer=True)
TEXT_LEN = Range(1, 4096, integer=True)
FRAMES = Range(4, 1024, integer=True)  # latent frames, a multiple of 4 (ptdit.resolution)
BLOCK_OUTPUT_PREFIX = "block_"
# --checks: "fast" runs every structural check, TensorRT's own parser and ONNX Runtime against PyTorch on the
# graph cut to its first block (cheap on a CPU); "full" compares the whole model, in the export precision too;
# "auto" is full where torch sees a CUDA GPU, fast elsewhere.
CHECK_LEVELS = ("auto", "fast", "full", "none")
# A step graph (--step) takes the whole sampling schedule once, as a static [STEP_SCHEDULE_LEN] input: the
# timesteps of up to STEP_SCHEDULE_LEN - 1 steps followed by 0, zero-padded.
STEP_SCHEDULE_LEN = 1001
# The sampler state a step graph carries from one step to the next: input -> its twin output.
STEP_CARRY = {"latent": "latent_next", "step": "step_next"}


@dataclass(frozen=True)
class ExportSpec:
    """Everything that determines the bytes of one artifact (besides the weights)."""

    preset: str
    size: Size
    frames: int | None
    batch: int
    text_len: int
    precision: str
    opset: int
    step: bool = False  # the whole denoising step (ptdit.step.DenoisingStep) instead of the noise prediction

    @property
    def stem(self) -> str:
        frames = f"-f{self.frames}" if self.frames else ""
        step = "-step" if self.step else ""
        return f"ptdit-{self.preset}-{self.size.name}{frames}-b{self.batch}-{self.precision}{step}"

    @property
    def graph(self) -> str:
        """The manifest's name of this kind of graph."""
        return "step" if self.step else "noise_prediction"

    @property
    def guided(self) -> bool:
        """A step graph mixes a (cond, uncond) batch with classifier-free guidance; batch 1 is unguided."""
        return self.step and self.batch == 2

    @property
    def latent(self) -> tuple[int, int]:
        """The latent's (height, width)."""
        return self.size.height // VAE_FACTOR, self.size.width // VAE_FACTOR

    def latent_shape(self, in_channels: int, batch: int | None = None) -> tuple[int, ...]:
        b = self.batch if batch is None else batch
        return (b, in_channels, *([self.frames] if self.frames else []), *self.latent)

    def inputs(self, in_channels: int, text_dim: int) -> list[TensorSpec]:
        # Float I/O stays fp32 at every precision: the graph casts on entry and exit, so callers and the
        # sampler never convert, and the fp32 timestep feeds the fp32 sinusoid island.
        b, length = self.batch, self.text_len
        text = [TensorSpec("text_embeds", (b, length, text_dim), "float32"),
                TensorSpec("text_mask", (b, length), "int64")]
        if self.step:  # one latent: the guidance pair is formed inside the graph
            return [
                TensorSpec("latent", self.latent_shape(in_channels, batch=1), "float32"),
                TensorSpec("step", (1,), "int64"),
                TensorSpec("schedule", (STEP_SCHEDULE_LEN,), "float32"),
                *text,
                *([TensorSpec("guidance", (1,), "float32")] if self.guided else []),
            ]
        return [TensorSpec("latent", self.latent_shape(in_channels), "float32"),
                TensorSpec("timestep", (b,), "float32"), *text]

    def outputs(self, out_channels: int, in_channels: int) -> list[TensorSpec]:
        if self.step:
            return [TensorSpec("latent_next", self.latent_shape(in_channels, batch=1), "float32"),
                    TensorSpec("step_next", (1,), "int64")]
        return [TensorSpec("noise_pred", self.latent_shape(out_channels), "float32")]


def block_output_name(index: int) -> str:
    return f"{BLOCK_OUTPUT_PREFIX}{index:02d}"
