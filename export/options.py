"""What one ptdit-export run is asked for, and the check of all of it before any work starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ptdit.config import PTDiTConfig
from ptdit.contract.errors import InputError, option
from ptdit.contract.fp8 import FP8, MIN_OPSET
from ptdit.contract.numbers import SEED
from ptdit.resolution import Geometry, geometry, latent_hw, window_for
from ptdit.windows import strided_offset

from .calibration import CalibrationOptions, load_calibration_text
from .spec import BATCH, CHECK_LEVELS, DEFAULT_OPSET, FRAMES, SUPPORTED_OPSETS, TEXT_LEN, ExportSpec


@dataclass
class ExportOptions:
    cfg: PTDiTConfig
    resolutions: list[int]
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


def spec_for(opts: ExportOptions, res: int, step: bool = False) -> ExportSpec:
    return ExportSpec(opts.cfg.name, res, opts.frames, opts.batch, opts.text_len, opts.precision, opts.opset, step)


def specs_for(opts: ExportOptions, res: int) -> list[ExportSpec]:
    """The graphs one resolution gets: the noise prediction, and with --step the denoising step next to it."""
    return [spec_for(opts, res), *([spec_for(opts, res, step=True)] if opts.step else [])]


def geometry_for(opts: ExportOptions, res: int) -> Geometry:
    side = latent_hw(res)
    return geometry((opts.frames or 1, side, side), opts.cfg.patch_size, opts.cfg.window)


def artifact_files(out_dir: Path, stem: str) -> list[Path]:
    """The files of one graph, in the order they are published: the graph, its weights (when external), the
    manifest last (a reader who finds the manifest finds everything it lists)."""
    return [out_dir / f"{stem}.onnx", out_dir / f"{stem}.onnx.data", out_dir / f"{stem}.json"]


def check_export_options(opts: ExportOptions) -> None:
    """Every bad input is reported before any work starts."""
    if not opts.resolutions:
        raise InputError(f"no resolution given: pass {option('resolution', 1024)}")
    for res in opts.resolutions:
        window_for(res, opts.frames)
        strided_offset(geometry_for(opts, res), opts.cfg.proxy_window, opts.cfg.proxy_offset)
    if opts.opset not in SUPPORTED_OPSETS:
        raise InputError(f"{option('opset')} {opts.opset} is not supported: the exporter writes opsets "
                         f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} (LayerNormalization needs >= 17)")
    BATCH.check(option("batch"), opts.batch)
    TEXT_LEN.check(option("text_len"), opts.text_len)
    SEED.check(option("seed"), opts.seed)
    if opts.frames is not None:
        FRAMES.check(option("frames"), opts.frames)
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
    if opts.torch_device not in ("auto", "cpu", "cuda"):
        raise InputError(f"{option('torch_device')} must be auto, cpu or cuda, got {opts.torch_device!r}")
    if opts.checks not in CHECK_LEVELS:
        raise InputError(f"{option('checks')} must be one of {', '.join(CHECK_LEVELS)}, got {opts.checks!r}")
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
