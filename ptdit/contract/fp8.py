"""The facts of FP8 exports every stage shares: the format, the layer kinds and which of them are quantized, the
calibrators, the GPUs that run FP8, and the manifest record of a quantization (ptdit.fp8 does the arithmetic)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .dtypes import ONNX_ELEMENT_TYPES
from .records import Record, optional

FP8 = "fp8"  # the --precision
FORMAT = "float8_e4m3fn"  # ONNX FLOAT8E4M3FN: QuantizeLinear / DequantizeLinear of opset >= 19
FP8_ELEMENT_TYPE = ONNX_ELEMENT_TYPES[FORMAT]
E4M3_MAX = 448.0
MIN_OPSET = 19
BASE_PRECISION = "fp16"  # what an FP8 graph computes in outside its quantized Linear layers
MIN_COMPUTE_CAPABILITY = (8, 9)  # Ada; Hopper 9.0 and Blackwell 10.0 / 12.x too (TensorRT-RTX refuses 8.6)

CALIBRATORS = ("max", "percentile")
DEFAULT_CALIBRATOR = "max"
DEFAULT_PERCENTILE = 99.99
DEFAULT_CALIBRATION_STEPS = 4
DEFAULT_CALIBRATION_TRAJECTORIES = 2

# The Linear layers by kind, matched on the module path (first match wins).
LAYER_KINDS = (
    ("timestep_embedder", "adaln_single.emb."),
    ("adaln", "adaln_single.linear"),
    ("caption_projection", "caption_projection."),
    ("proxy_attention", ".proxy_attn1."),
    ("proxy_cross_attention", ".pvisual_attn2."),
    ("window_attention", ".attn1."),
    ("shifted_window_attention", ".attn3."),
    ("text_cross_attention", ".attn2."),
    ("mlp", ".ff."),
    ("block_projection", ".linear_"),
    ("final_layer", "proj_out"),
)
# Which kinds an FP8 export quantizes (--fp8-layers). Never: the timestep embedder (fp32 sinusoid input, 2 rows),
# adaLN-single (2 rows: no compute to gain, and its error reaches every block's modulation) and the final layer
# (its error goes straight into the prediction). "tcm-mlp", the default: the window and shifted-window attention
# projections (PT-DiT's TCM) and the MLP, 16 of the 22 token-sized GEMMs of a block and the kinds whose FP8 error
# measured lowest (0.4-0.6 % each on xl at 256 against 3.9-8.5 % for the others; docs/fp8.md). "all": every
# Linear of the blocks and the caption projection.
LAYER_SETS = {
    "tcm-mlp": frozenset({"window_attention", "shifted_window_attention", "mlp"}),
    "all": frozenset({"caption_projection", "proxy_attention", "proxy_cross_attention", "window_attention",
                      "shifted_window_attention", "text_cross_attention", "mlp", "block_projection"}),
}
DEFAULT_LAYER_SET = "tcm-mlp"


# The opset an FP8 file declares (its default domain), whatever opset it was traced with (MIN_OPSET and up). ONNX
# Runtime's QDQPropagationTransformer moves the Q of an attention output projection back across the heads' Reshape
# and Transpose, and its QDQSelectorActionTransformer then drops the DQ -> Transpose -> Q pair, which leaves a
# Transpose on FLOAT8E4M3FN. Transpose has float8 types only from opset 21 (Transpose-13 refuses them: INVALID_GRAPH),
# and no placement of the pair avoids it (ORT moves a pair on either side of the Transpose across it; docs/fp8.md).
# Declared 21, the graph loads with ONNX Runtime's default session options, whose CPU provider has the float8
# Transpose. The nodes stay those traced: between 19 and 21 only the types of Cast, Reshape, Squeeze, Unsqueeze and
# Transpose grew, and QuantizeLinear / DequantizeLinear gained attributes whose defaults are opset 19's behaviour.
FILE_OPSET = 21
# The project's own ONNX Runtime sessions (ptdit-run, the export's checks) keep ORT from moving the Q/DQ pairs, so the
# graph runs as written, as the fake-quantized twin computes: moved, ORT's fp16 casts fall elsewhere (noise_pred
# rel L2 3.2e-3 between the two on tiny at 256, seeded weights). Not needed to load the graph.
ONNXRUNTIME_DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)


def has_fp8(model: Any) -> bool:
    """Whether an onnx.ModelProto holds FP8 initializers."""
    return any(i.data_type == FP8_ELEMENT_TYPE for i in model.graph.initializer)


def layer_kind(module_path: str) -> str | None:
    path = f".{module_path}."
    for kind, pattern in LAYER_KINDS:
        if pattern in path:
            return kind
    return None


def quantized_kind(module_path: str, layer_set: str = DEFAULT_LAYER_SET) -> bool:
    return layer_kind(module_path) in LAYER_SETS[layer_set]


def runs_fp8(compute_capability: str) -> bool:
    """Whether a GPU of this compute capability (MAJOR.MINOR) has FP8 tensor cores."""
    major, minor = (int(p) for p in compute_capability.split("."))
    return (major, minor) >= MIN_COMPUTE_CAPABILITY


@dataclass(frozen=True)
class Calibration(Record):
    """How the activation scales were obtained."""

    calibrator: str  # one of CALIBRATORS
    trajectories: int
    steps: int  # denoising steps per trajectory; every forward pass of each is observed
    timesteps: list[float]
    text: str  # "random (seed N)", or the features / prompts file and its sha256
    seed: int
    seconds: float | None = optional()  # read from older manifests, no longer written: two runs would differ
    percentile: float | None = optional()
    text_sha256: str | None = optional()  # of the --calibration-text / --calibration-prompts file


@dataclass(frozen=True)
class Quantization(Record):
    """An FP8 export's quantization: the scheme, which layers, and each one's scales."""

    format: str
    scheme: str
    quantized_kinds: list[str]
    kept_kinds: list[str]
    calibration: Calibration
    scales: dict[str, list[float]]  # module path -> [input scale, weight scale]
    layer_set: str = "all"  # a key of LAYER_SETS (--fp8-layers); FP8 exports made before the option quantized all
