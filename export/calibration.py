"""The activation scales of an FP8 export, from real forward passes: a few sampling trajectories at the export's
resolution, with the published schedule and guidance, through the fp32 model with the exported weights; every
forward pass of every step is observed (ptdit.fp8.Observer). The text is random by default, or T5 features from
a file (--calibration-text), or prompts through the pipeline's text encoder (--calibration-prompts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptdit.contract.arrays import read_arrays
from ptdit.contract.errors import InputError, option
from ptdit.contract.files import file_sha256
from ptdit.contract.fp8 import (
    DEFAULT_CALIBRATION_STEPS,
    DEFAULT_CALIBRATION_TRAJECTORIES,
    DEFAULT_CALIBRATOR,
    DEFAULT_LAYER_SET,
    DEFAULT_PERCENTILE,
    Calibration,
    Quantization,
)
from ptdit.contract.numbers import Range
from ptdit.contract.schedule import timestep_shift, timesteps
from ptdit.resolution import VAE_FACTOR

if TYPE_CHECKING:
    import numpy as np
    from torch import nn

    from ptdit import PTDiT
    from ptdit.fp8 import LayerScales

CALIBRATION_STEPS = Range(1, 100, integer=True)
CALIBRATION_TRAJECTORIES = Range(1, 64, integer=True)
PERCENTILE = Range(90.0, 100.0, low_open=True)
CALIBRATION_GUIDANCE = 4.0  # ptdit-run's default
CALIBRATION_SEED = 1  # not the parity check's seed 0: the checks do not see the calibration inputs


@dataclass(frozen=True)
class CalibrationText:
    """Conditional text features [N, L, D] and masks [N, L]: trajectory i uses row i % N."""

    embeds: np.ndarray
    mask: np.ndarray
    source: str  # what the manifest records: the file (and its sha256) or the prompts
    sha256: str  # of that file


@dataclass(frozen=True)
class CalibrationOptions:
    calibrator: str = DEFAULT_CALIBRATOR
    # --percentile as given; None: not given (DEFAULT_PERCENTILE with the percentile calibrator, see `quantile`)
    percentile: float | None = None
    steps: int = DEFAULT_CALIBRATION_STEPS
    trajectories: int = DEFAULT_CALIBRATION_TRAJECTORIES
    text_file: Path | None = None  # --calibration-text
    prompts_file: Path | None = None  # --calibration-prompts (with --pipeline)
    text: CalibrationText | None = field(default=None, compare=False)  # the loaded or encoded features
    layers: str = DEFAULT_LAYER_SET  # --fp8-layers: which Linear kinds are quantized (ptdit.contract.fp8.LAYER_SETS)

    @property
    def quantile(self) -> float | None:
        """The percentile the calibration uses: the one given, or the default; None with the max calibrator."""
        if self.calibrator != "percentile":
            return None
        return DEFAULT_PERCENTILE if self.percentile is None else self.percentile

    def check(self) -> None:
        """The rules between the calibration options (each value is checked against its declaration: EXPORT)."""
        if self.percentile is not None and self.calibrator != "percentile":
            raise InputError(f"{option('percentile')} applies to {option('calibrator', 'percentile')} only, and "
                             f"the calibrator is {self.calibrator}: add {option('calibrator', 'percentile')}, or "
                             f"drop {option('percentile')}")
        if self.text_file is not None and self.prompts_file is not None:
            raise InputError(f"{option('calibration_text')} and {option('calibration_prompts')} both name the "
                             f"calibration text: pass one")
        for name, path in (("calibration_text", self.text_file), ("calibration_prompts", self.prompts_file)):
            if path is not None and not Path(path).is_file():
                raise InputError(f"{option(name)} {path} does not exist")

    def wanted(self) -> dict[str, Any]:
        """What an existing FP8 export must have been calibrated with to be reused."""
        text = "random"
        for path in (self.text_file, self.prompts_file):
            if path is not None:
                text = file_sha256(path)
        return {"layers": self.layers, "calibrator": self.calibrator, "percentile": self.quantile,
                "steps": self.steps, "trajectories": self.trajectories, "text": text}


def recorded_calibration(quantization: Quantization) -> dict[str, Any]:
    """CalibrationOptions.wanted() of what a manifest records."""
    calibration = quantization.calibration
    text = calibration.text_sha256 or "random"
    return {"layers": quantization.layer_set, "calibrator": calibration.calibrator,
            "percentile": calibration.percentile,
            "steps": calibration.steps, "trajectories": calibration.trajectories, "text": text}


def load_calibration_text(path: Path, text_len: int, text_dim: int) -> CalibrationText:
    """T5 features [N, L, D] (.npy) or text_embeds [N, L, D] with an optional text_mask [N, L] (.npz, .safetensors)."""
    import numpy as np

    flag = option("calibration_text")
    if path.suffix not in (".npy", ".npz", ".safetensors"):
        raise InputError(f"{flag} must be a .npy, .npz or .safetensors file of T5 features, got {path.name}")
    data = read_arrays(path)
    embeds = data.get("" if path.suffix == ".npy" else "text_embeds")
    if embeds is None:
        raise InputError(f"{flag} {path} has no 'text_embeds' entry (found {sorted(data)})")
    if embeds.ndim == 2:
        embeds = embeds[None]
    if embeds.ndim != 3 or embeds.shape[1:] != (text_len, text_dim) or not np.issubdtype(embeds.dtype, np.floating):
        raise InputError(f"{flag} {path} holds {embeds.dtype} {list(embeds.shape)}; the export needs float features "
                         f"[N, {text_len}, {text_dim}] (N prompts at --text-len {text_len})")
    if not np.isfinite(embeds).all():
        raise InputError(f"{flag} {path} holds NaN or infinite features")
    mask = data.get("text_mask")
    mask = np.ones(embeds.shape[:2], np.int64) if mask is None else np.asarray(mask).astype(np.int64)
    if mask.shape != embeds.shape[:2]:
        raise InputError(f"{flag} {path}: text_mask is {list(mask.shape)}, the features need {list(embeds.shape[:2])}")
    sha = file_sha256(path)
    return CalibrationText(embeds.astype(np.float32), mask, f"{path.name} ({len(embeds)} prompts, sha256 {sha})", sha)


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (blank lines skipped)."""
    try:
        prompts = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    except (UnicodeDecodeError, OSError) as e:
        raise InputError(f"{option('calibration_prompts')} {path} is not a UTF-8 text file ({e})") from None
    if not prompts:
        raise InputError(f"{option('calibration_prompts')} {path} holds no prompt (one per line)")
    return prompts


def calibrate(model: PTDiT, opts: CalibrationOptions, latent_shape: tuple[int, ...], text_len: int,
              frames: int | None, layers: dict[str, nn.Linear] | None = None,
              ) -> tuple[dict[str, LayerScales], Calibration]:
    """Run the trajectories (all at once, as one batch of guidance pairs) through `model` (fp32) and return the
    scales of each Linear quantized by `opts.layers` (or of each of `layers`), with how they were obtained."""
    import numpy as np
    import torch

    from ptdit.fp8 import Observer, observe, quantized_linears
    from ptdit.step import euler_update, guided_velocity

    n, cfg = opts.trajectories, model.cfg
    rng = np.random.default_rng(CALIBRATION_SEED)
    if opts.text is None:
        cond = rng.standard_normal((n, text_len, cfg.text_dim), dtype=np.float32)
        cond_mask = np.ones((n, text_len), np.int64)
        source = f"random (seed {CALIBRATION_SEED})"
    else:
        rows = [i % len(opts.text.embeds) for i in range(n)]
        cond, cond_mask, source = opts.text.embeds[rows], opts.text.mask[rows], opts.text.source
    uncond_mask = np.zeros((n, text_len), np.int64)
    uncond_mask[:, 0] = 1  # ptdit-run's unconditional branch without a negative prompt: zero features, one token
    text = torch.from_numpy(np.concatenate([cond, np.zeros_like(cond)]))
    mask = torch.from_numpy(np.concatenate([cond_mask, uncond_mask]))
    latent = torch.from_numpy(rng.standard_normal((n, *latent_shape[1:]), dtype=np.float32))
    height, width = (side * VAE_FACTOR for side in latent_shape[-2:])
    ts = timesteps(opts.steps, timestep_shift(height, width, frames))
    observer = Observer(opts.calibrator, opts.quantile or DEFAULT_PERCENTILE)
    guidance = torch.tensor([CALIBRATION_GUIDANCE])
    layers = quantized_linears(model, opts.layers) if layers is None else layers
    with torch.no_grad(), observe(layers, observer):
        for k, t in enumerate(ts):
            t_next = ts[k + 1] if k + 1 < len(ts) else 0.0
            pred = model(torch.cat([latent, latent]), torch.full((2 * n,), t, dtype=torch.float32), text, mask)
            pred = pred[:, : latent.shape[1]].float()
            velocity = torch.cat([guided_velocity(torch.stack([pred[i], pred[n + i]]), guidance) for i in range(n)])
            latent = euler_update(latent, velocity, torch.tensor([t]), torch.tensor([t_next]))
    scales = observer.scales(layers)
    record = Calibration(calibrator=opts.calibrator, trajectories=n, steps=opts.steps,
                         timesteps=[round(t, 4) for t in ts], text=source, seed=CALIBRATION_SEED,
                         percentile=opts.quantile,
                         text_sha256=opts.text.sha256 if opts.text is not None else None)
    return scales, record
