"""The runtime's options, declared once (ptdit.contract.options): what opens a session (ptdit-run's and ptdit-diff's
flags, PTDiTPipeline.from_folder's and from_artifact's keywords) and what a sampling run takes (ptdit-run's flags;
PTDiTPipeline.__call__ names them as diffusers does: num_inference_steps, guidance_scale)."""

from __future__ import annotations

from pathlib import Path

from ptdit.contract.numbers import DEFAULT_GUIDANCE, DEFAULT_STEPS, GUIDANCE, SEED, SHIFT, STEPS, Range
from ptdit.contract.options import Option, Options

PathLike = str | Path | None
BACKENDS = ("auto", "tensorrt", "onnxruntime", "torch")
DEVICES = ("auto", "cpu", "cuda")

# What a TensorRT plan may need from the run (the other backends ignore it: backends.tensorrt.flavour.TensorRTOptions)
TENSORRT_RUN = Options(
    Option("runtime_cache_dir", PathLike, None, "TensorRT-RTX plans: where the JIT runtime cache is kept [default: "
           "next to the plan].", kind="folder"),
    Option("lean_runtime", PathLike, None, "libnvinfer_lean of the TensorRT that built a version-compatible plan "
           "with --exclude-lean-runtime.", kind="file"),
    Option("weight_budget", int | None, None, "Plans built with --weight-streaming: bytes of weights kept on the "
           "GPU (e.g. 2G); the rest stream from host memory.", kind="bytes", accepted=Range(1, None, integer=True)),
)
VERIFY = Option("verify", bool, True, "Skip the sha256 check of the artifact against its manifest.",
                flag="--no-verify")
SESSION = Options(
    Option("backend", str, "auto", "auto: tensorrt for a .plan, onnxruntime for an .onnx.", choices=BACKENDS,
           show_default=True),
    Option("device", str, "auto", "For onnxruntime and torch.", choices=DEVICES, show_default=True),
) + TENSORRT_RUN + Options(VERIFY)
SAMPLING = Options(
    Option("steps", int, DEFAULT_STEPS, "Sampling steps.", accepted=STEPS, show_default=True),
    Option("guidance", float, DEFAULT_GUIDANCE, "Classifier-free guidance scale.", flag="--cfg", accepted=GUIDANCE,
           show_default=True),
    Option("seed", int, 0, "Seed of the initial noise.", accepted=SEED, show_default=True),
    Option("shift", float | None, None, "Timestep shift [default: sqrt(H*W)/512, as published].", accepted=SHIFT),
    Option("cache", str | None, None, "Step caching [default: off]: every:N (compute every N-th step), "
           "calibrated:THRESHOLD (the artifact's calibrated change curve, ptdit-cache), default (calibrated at the "
           "calibration's threshold); METHOD+taylor extrapolates the prediction instead of reusing it. "
           "docs/caching.md.", metavar="METHOD[:VALUE]"),
)
# The size a pipeline folder's picture is given back at (ptdit-run's flags, PTDiTPipeline.__call__'s keywords).
SIDE = Range(8, 16384, integer=True)  # pixels; a multiple of 8 (runtime.pipeline.sizes)
IMAGE_SIZE = Options(
    Option("height", int | None, None, "A pipeline folder: the image height in pixels, a multiple of 8 [default: "
           "the folder's first size].", accepted=SIDE),
    Option("width", int | None, None, "A pipeline folder: the image width in pixels, a multiple of 8.",
           accepted=SIDE),
    Option("use_resolution_binning", bool, True, "Refuse a --height x --width the folder does not hold, in place "
           "of drawing the folder's size nearest in aspect ratio and resizing and centre-cropping it.",
           flag="--no-resolution-binning"),
)
