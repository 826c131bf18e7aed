"""ptdit-export's options, declared once (`EXPORT`: the command's flags, export_model's and export_pipeline's
keywords, and the check of each value come from it), what one run is asked for (ExportOptions), and the check of
all of it before any work starts."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from ptdit.config import INFERENCE_PROXY_MODES, PRESETS, PTDiTConfig
from ptdit.contract.errors import InputError, option
from ptdit.contract.fp8 import (
    CALIBRATORS,
    DEFAULT_CALIBRATION_STEPS,
    DEFAULT_CALIBRATION_TRAJECTORIES,
    DEFAULT_CALIBRATOR,
    DEFAULT_LAYER_SET,
    DEFAULT_PERCENTILE,
    FP8,
    LAYER_SETS,
    MIN_OPSET,
)
from ptdit.contract.numbers import SEED
from ptdit.contract.options import Option, Options, as_list
from ptdit.contract.sizes import Size, parse_size
from ptdit.resolution import (
    CLASS_WINDOWS,
    SUPPORTED_RESOLUTIONS,
    Geometry,
    geometry,
    grid_pixels,
    size_bins,
    window_for,
)

from .calibration import (
    CALIBRATION_STEPS,
    CALIBRATION_TRAJECTORIES,
    PERCENTILE,
    CalibrationOptions,
    load_calibration_text,
)
from .spec import (
    BATCH,
    CHECK_LEVELS,
    DEFAULT_BATCH,
    DEFAULT_OPSET,
    DEFAULT_TEXT_LEN,
    FLOAT_PRECISIONS,
    FRAMES,
    OPSETS,
    PRECISIONS,
    TEXT_LEN,
    ExportSpec,
)

TORCH_DEVICES = ("auto", "cpu", "cuda")
PathLike = str | Path | None

EXPORT = Options(
    Option("resolution", int | Sequence[int] | None, None, "Square image resolution in pixels (N x N); repeat for "
           "several sizes [default: 1024 unless --size is given].", flag="--res", choices=SUPPORTED_RESOLUTIONS,
           multiple=True),
    Option("size", str | Size | Sequence[str | Size] | None, None, f"Image size WIDTHxHEIGHT, each side a multiple "
           f"of its class's grid (one attention window: {', '.join(str(grid_pixels(c)) for c in CLASS_WINDOWS)} px "
           f"at the {', '.join(map(str, CLASS_WINDOWS))} classes), e.g. 1280x768; CLASS:common: that class's 1:1, "
           f"16:9, 9:16, 4:3 and 3:4 bins. Repeat for several (after the --res sizes); several sizes share one "
           f"weights file.", kind="size", multiple=True, metavar="WxH"),
    Option("frames", int | None, None, "Video: latent frame count (a multiple of 4).", accepted=FRAMES),
    Option("preset", str | None, None, "Model preset [default: xl]; qihoo-t2x for the published weights.",
           choices=tuple(sorted(PRESETS))),
    Option("config", PTDiTConfig | str | Path | None, None,
           "Model config JSON (PTDiTConfig fields) instead of a preset.", kind="file"),
    Option("checkpoint", PathLike, None, "Weights (.safetensors/.pt/.pth); default: seeded synthetic weights.",
           kind="file"),
    Option("checkpoint_key", str | None, None, "Key of the state dict inside a nested checkpoint (a.b)."),
    Option("precision", str, "fp16", "Weights and activations; LayerNorm and the timestep sinusoids stay fp32. fp8: "
           "the blocks' Linear layers in FP8 (E4M3, scales calibrated: see --calibrator), the rest fp16.",
           choices=PRECISIONS, show_default=True),
    Option("batch", int, DEFAULT_BATCH, "Static batch (2 = CFG pair).", accepted=BATCH, show_default=True),
    Option("text_len", int, DEFAULT_TEXT_LEN, "Static text length.", accepted=TEXT_LEN, show_default=True),
    Option("proxy", str | None, None, "Proxy tokens [default: the preset's: strided, mean for qihoo-t2x].",
           choices=INFERENCE_PROXY_MODES),
    Option("proxy_offset", tuple[int, int, int] | None, None, "Strided proxy offset inside each window.",
           kind="triple", metavar="T,H,W"),
    Option("opset", int | None, None, f"ONNX opset written [default: {DEFAULT_OPSET}; {MIN_OPSET} with --precision "
           f"fp8].", accepted=OPSETS, note="the exporter writes these; LayerNormalization needs >= 17"),
    Option("seed", int, 0, "Seed of the synthetic weights.", accepted=SEED, show_default=True),
    Option("out_dir", str | Path, "artifacts", "Output directory.", flag="--out", kind="folder",
           show_default=True),
    Option("force", bool, False, "Overwrite existing artifacts."),
    Option("checks", str, "auto", "fast: structural checks, TensorRT's parser, ONNX Runtime vs PyTorch on the graph "
           "cut to block 0; full: ONNX Runtime vs PyTorch on the whole model (fp32 and the export precision); auto: "
           "full when torch sees a CUDA GPU, else fast; none: no checks.", choices=CHECK_LEVELS, show_default=True),
    Option("skip_checks", bool, False, "Same as --checks none.", python=False),
    Option("step", bool, False, "Also export the whole denoising step (<stem>-step.onnx): guidance and the Euler "
           "update inside the graph, the latent carried in fp32, so a runtime keeps the sampler state on the "
           "device."),
    Option("pipeline", bool, False, "Write a pipeline folder: the transformer, the T5 text encoder, the CausalVAE "
           "decoder tiles (with --frames: per causal chunk), the tokenizer and the negative prompt's embedding "
           "(ptdit-run FOLDER --prompt ...).", python=False),
    Option("text_encoder", PathLike, None, "With --pipeline: a Hugging Face T5 encoder folder [default: a seeded "
           "tiny stand-in].", kind="folder"),
    Option("vae", PathLike, None, "With --pipeline: the CausalVAE weights [default: a seeded tiny stand-in].",
           kind="file"),
    Option("fp8_layers", str, DEFAULT_LAYER_SET, "fp8: the Linear kinds quantized. tcm-mlp: window and "
           "shifted-window attention and the MLP (the lowest FP8 error, 16 of a block's 22 token-sized GEMMs); all: "
           "every Linear of the blocks and the caption projection.", choices=tuple(LAYER_SETS), show_default=True),
    Option("calibrator", str, DEFAULT_CALIBRATOR, "fp8: each activation scale from the largest |x| seen (max), or "
           "from the largest per-pass percentile of |x| (percentile, see --percentile).", choices=CALIBRATORS,
           show_default=True),
    Option("percentile", float | None, None, f"fp8 with --calibrator percentile: the percentile of |x| that maps to "
           f"E4M3's largest value [default: {DEFAULT_PERCENTILE}].", accepted=PERCENTILE),
    Option("calibration_steps", int, DEFAULT_CALIBRATION_STEPS, "fp8: denoising steps of each calibration "
           "trajectory (the published schedule).", accepted=CALIBRATION_STEPS, show_default=True),
    Option("calibration_trajectories", int, DEFAULT_CALIBRATION_TRAJECTORIES, "fp8: sampling trajectories observed "
           "(each a guidance pair, one text each).", accepted=CALIBRATION_TRAJECTORIES, show_default=True),
    Option("calibration_text", PathLike, None, "fp8: T5 features to calibrate on (.npy [N, L, D], or .npz / "
           ".safetensors with text_embeds and text_mask) [default: random features].", kind="file"),
    Option("calibration_prompts", PathLike, None, "fp8 with --pipeline: prompts to calibrate on (one per line), "
           "encoded by the text encoder.", kind="file"),
    Option("text_encoder_precision", str, "fp16", "With --pipeline: the text encoder's precision (fp16 keeps fp32 "
           "islands where T5 overflows).", choices=FLOAT_PRECISIONS, show_default=True),
    Option("vae_precision", str, "fp32", "fp16 keeps GroupNorm in fp32 (bf16 convolutions need opset 22: not "
           "offered).", choices=("fp32", "fp16"), show_default=True,
           note="bf16 convolutions need opset 22: not offered"),
    Option("torch_device", str, "auto", "Where the PyTorch references of the parity check run (auto: cuda when "
           "available).", choices=TORCH_DEVICES, show_default=True),
)
# What only a pipeline folder has (export_pipeline's keywords, and ptdit-export's flags that need --pipeline).
PIPELINE_ONLY = ("text_encoder", "vae", "text_encoder_precision", "vae_precision", "calibration_prompts")
EXPORT_MODEL = EXPORT.without(*PIPELINE_ONLY)


@dataclass
class ExportOptions:
    cfg: PTDiTConfig
    sizes: list[Size]
    frames: int | None = None
    precision: str = "fp16"
    batch: int = 2
    text_len: int = 200
    opset: int = DEFAULT_OPSET
    out_dir: Path = Path("artifacts")
    checkpoint: str | None = None
    checkpoint_key: str | None = None
    seed: int = 0
    force: bool = False
    checks: str = "auto"  # one of CHECK_LEVELS
    torch_device: str = "auto"  # where the PyTorch references of the parity check run
    step: bool = False  # also export the whole denoising step (guidance and Euler update in the graph)
    calibration: CalibrationOptions = field(default_factory=CalibrationOptions)  # fp8's activation scales


@dataclass
class PipelineOptions:
    """What ptdit-export --pipeline adds: the text encoder's and the VAE's weights and precisions."""

    text_encoder: Path | None = None  # a Hugging Face T5 encoder folder (config.json, weights, tokenizer.json)
    vae: Path | None = None  # CausalVAE weights
    text_encoder_precision: str = "fp16"
    vae_precision: str = "fp32"


def spec_for(opts: ExportOptions, size: Size, step: bool = False) -> ExportSpec:
    return ExportSpec(opts.cfg.name, size, opts.frames, opts.batch, opts.text_len, opts.precision, opts.opset, step)


def specs_for(opts: ExportOptions, size: Size) -> list[ExportSpec]:
    """The graphs one size gets: the noise prediction, and with --step the denoising step next to it."""
    return [spec_for(opts, size), *([spec_for(opts, size, step=True)] if opts.step else [])]


def all_specs(opts: ExportOptions) -> list[ExportSpec]:
    """Every graph the options ask for, size by size."""
    return [spec for size in opts.sizes for spec in specs_for(opts, size)]


def geometry_for(opts: ExportOptions, size: Size) -> Geometry:
    latent = spec_for(opts, size).latent
    return geometry((opts.frames or 1, *latent), opts.cfg.patch_size, opts.cfg.window)


# The common aspect ratios (height / width) a CLASS:common size names: 1:1, 16:9, 9:16, 4:3, 3:4.
COMMON_RATIOS = (1.0, 9 / 16, 16 / 9, 3 / 4, 4 / 3)


def sizes_of(resolutions: Any, sizes: Any) -> list[Size]:
    """The sizes asked for, in order, each once: --res N (N x N), then --size WxH or CLASS:common; none: 1024 x 1024."""
    EXPORT["resolution"].check(resolutions)
    wanted = [Size(res, res) for res in as_list(resolutions)] if resolutions is not None else []
    for value in as_list(sizes) if sizes is not None else []:
        text = value.strip() if isinstance(value, str) else ""
        if text.endswith(":common"):
            res_class = text.removesuffix(":common")
            if not res_class.isdigit() or int(res_class) not in SUPPORTED_RESOLUTIONS:
                raise InputError(f"{option('size')} {value!r}: CLASS:common takes a class of "
                                 f"{', '.join(map(str, SUPPORTED_RESOLUTIONS))} (e.g. 1024:common)")
            bins = size_bins(int(res_class))
            wanted += [min(bins, key=lambda b: (abs(math.log(b.ratio / ratio)), b.height)) for ratio in COMMON_RATIOS]
        else:
            wanted.append(parse_size(value))
    return list(dict.fromkeys(wanted)) or [Size(1024, 1024)]


def artifact_files(out_dir: Path, stem: str) -> list[Path]:
    """The files of one graph, in the order they are published: the graph, its weights (when external), the
    manifest last (a reader who finds the manifest finds everything it lists)."""
    return [out_dir / f"{stem}.onnx", out_dir / f"{stem}.onnx.data", out_dir / f"{stem}.json"]


def export_options(values: Mapping[str, Any]) -> ExportOptions:
    """The options of one export from the declared options' values (of export_model, export_pipeline or
    ptdit-export); the rules between them are checked later, in check_export_options, before anything is written."""
    from ptdit.config import preset as get_preset

    if values["preset"] is not None and values["config"] is not None:
        raise InputError(f"pass {option('preset')} or {option('config')}, not both")
    config = values["config"]
    if isinstance(config, PTDiTConfig):
        cfg = config
    elif config is not None:
        cfg = PTDiTConfig.from_json_file(config)
    else:
        cfg = get_preset(values["preset"] or "xl")
    changes = {key: values[name] for key, name in (("proxy_mode", "proxy"), ("proxy_offset", "proxy_offset"))
               if values[name]}
    cfg = cfg.replace(**changes) if changes else cfg
    precision, opset = values["precision"], values["opset"]
    if opset is None:
        opset = MIN_OPSET if precision == FP8 else DEFAULT_OPSET
    path = {name: Path(values[name]) if values.get(name) is not None else None
            for name in ("calibration_text", "calibration_prompts", "checkpoint")}
    calibration = CalibrationOptions(values["calibrator"], values["percentile"], values["calibration_steps"],
                                     values["calibration_trajectories"], path["calibration_text"],
                                     path["calibration_prompts"], layers=values["fp8_layers"])
    sizes = sizes_of(values["resolution"], values["size"])
    return ExportOptions(cfg, sizes, values["frames"], precision, values["batch"], values["text_len"], opset,
                         Path(values["out_dir"]), str(path["checkpoint"]) if path["checkpoint"] is not None else None,
                         values["checkpoint_key"], values["seed"], values["force"], values["checks"],
                         values["torch_device"], values["step"], calibration)


def pipeline_options(values: Mapping[str, Any]) -> PipelineOptions:
    def path(name: str) -> Path | None:
        return Path(values[name]) if values[name] is not None else None

    return PipelineOptions(path("text_encoder"), path("vae"), values["text_encoder_precision"],
                           values["vae_precision"])


def check_export_options(opts: ExportOptions) -> None:
    """Every bad input is reported before any work starts."""
    if not opts.sizes:
        raise InputError(f"no size given: pass {option('resolution', 1024)} or {option('size', '1280x768')}")
    calibration = opts.calibration
    EXPORT.check({"opset": opts.opset, "frames": opts.frames,
                  "precision": opts.precision, "batch": opts.batch, "text_len": opts.text_len, "seed": opts.seed,
                  "checks": opts.checks, "torch_device": opts.torch_device, "fp8_layers": calibration.layers,
                  "calibrator": calibration.calibrator, "percentile": calibration.percentile,
                  "calibration_steps": calibration.steps, "calibration_trajectories": calibration.trajectories})

    from ptdit.windows import strided_offset

    for size in opts.sizes:
        if not isinstance(size, Size):
            raise InputError(f"{option('size')} takes WIDTHxHEIGHT sizes, got {size!r}")
        window_for(size.height, size.width, frames=opts.frames)
        strided_offset(geometry_for(opts, size), opts.cfg.proxy_window, opts.cfg.proxy_offset)
    if opts.step and opts.batch not in (1, 2):
        raise InputError(f"{option('step')} needs {option('batch', 2)} (the guidance pair) or 1 (unguided), got "
                         f"{opts.batch}")
    if opts.precision == FP8:
        if opts.opset < MIN_OPSET:
            raise InputError(f"{option('precision', FP8)} needs {option('opset')} {MIN_OPSET} or later (QuantizeLinear "
                             f"of FLOAT8E4M3FN), got {opts.opset}")
        opts.calibration.check()
        if opts.calibration.text_file is not None:  # read now, so that a bad file is refused before any work
            load_calibration_text(opts.calibration.text_file, opts.text_len, opts.cfg.text_dim)
    elif opts.calibration != CalibrationOptions():
        raise InputError(f"the calibration options set the scales of an FP8 export: add {option('precision', FP8)}, "
                         f"or drop them")
    if opts.checks != "none":
        torch_device(opts.torch_device)
    if opts.checkpoint is not None and not Path(opts.checkpoint).is_file():
        raise InputError(f"{option('checkpoint')} {opts.checkpoint} does not exist")
    if opts.checkpoint_key is not None and opts.checkpoint is None:
        checkpoint = option("checkpoint")
        raise InputError(f"{option('checkpoint_key')} names a state dict inside {checkpoint}: pass {checkpoint} too, "
                         f"or drop it")


def check_level(choice: str) -> str:
    """--checks auto: full where torch sees a CUDA GPU, fast elsewhere."""
    if choice != "auto":
        return choice
    import torch

    return "full" if torch.cuda.is_available() else "fast"


def torch_device(choice: str) -> str:
    """--torch-device: where the PyTorch references of the checks run."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise InputError(f"{option('torch_device', 'cuda')} needs a CUDA build of torch and a GPU; use "
                         f"{option('torch_device', 'cpu')}")
    return choice
