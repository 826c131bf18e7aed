"""PT-DiT configuration: one frozen dataclass, named presets, JSON round trip."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .contract.errors import InputError

ProxyMode = Literal["random", "strided", "mean"]
PROXY_MODES: tuple[str, ...] = ("random", "strided", "mean")
INFERENCE_PROXY_MODES: tuple[str, ...] = ("strided", "mean")
PosEmbedAxes = Literal["hw", "wh"]
POS_EMBED_AXES: tuple[str, ...] = ("hw", "wh")
# Fields added after configs were first written: left out of to_dict() at their default, so that the dicts (and the
# hashes of the exports that record them) of configs that do not use them stay as they were.
OMITTED_AT_DEFAULT: tuple[str, ...] = ("pos_embed_axes",)


@dataclass(frozen=True)
class PTDiTConfig:
    """Everything that defines a PT-DiT network. Field names mirror the published PTDiTDiffuser config where
    one exists (see docs/differences.md)."""

    name: str = "custom"
    depth: int = 28
    num_heads: int = 16
    head_dim: int = 72
    in_channels: int = 4
    out_channels: int = 8
    patch_size: int = 2
    text_dim: int = 4096  # T5 feature width (caption_channels)
    mlp_ratio: int = 4
    norm_eps: float = 1e-6
    norm_affine: bool = False
    attention_bias: bool = True
    # "proxy": GIIM + TCM blocks (PT-DiT). "full": one global self-attention per block instead (the
    # PixArt-alpha style DiT of the same width and depth, the baseline PT-DiT is compared with).
    attention: Literal["proxy", "full"] = "proxy"
    shift_window: bool = True
    # Proxy tokens: `proxy_mode` is used in eval() and export, `train_proxy_mode` in train().
    proxy_mode: ProxyMode = "strided"
    train_proxy_mode: ProxyMode = "random"
    # Token picked by "strided" proxies, per axis inside its proxy window; None = the window centre.
    proxy_offset: tuple[int, int, int] | None = None
    # Attention window override in tokens (None = the resolution table) and proxy window (None = one proxy
    # per attention window; smaller = several interleaved proxies per window, as the published code does).
    window: tuple[int, int, int] | None = None
    proxy_window: tuple[int, int, int] | None = None
    # Additive bias for masked attention entries (shifted-window wrap-around and padded text tokens).
    # The published code uses -10000.
    mask_value: float = -10000.0
    # PixArt-alpha resolution / aspect-ratio embedders (the published code enables them iff sample_size == 128).
    size_conditioning: bool = False
    # Latent side the checkpoint was configured with; sets the stored position-embedding buffer and the
    # position interpolation scale max(sample_size // 64, 1), as in the published code.
    sample_size: int = 32
    # Spatial axes of the 3D sin-cos position embedding. "hw": the token grid's (row, column), as in the paper.
    # "wh": as the published code computes it, reading the size (H, W) as (W, H): the table of a W-row x H-column
    # grid laid onto the H x W tokens in raster order. The two are equal when H == W.
    pos_embed_axes: PosEmbedAxes = "hw"

    def __post_init__(self) -> None:
        self.validate()

    @property
    def hidden_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def pe_interpolation_scale(self) -> int:
        return max(self.sample_size // 64, 1)

    def validate(self) -> None:
        def bad(msg: str) -> InputError:
            return InputError(f"invalid PT-DiT config '{self.name}': {msg}")

        for field in ("depth", "num_heads", "head_dim", "in_channels", "out_channels", "patch_size", "text_dim",
                      "mlp_ratio", "sample_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(f"{field} must be a positive integer, got {value!r}")
        if self.hidden_size % 16:
            raise bad(f"hidden size {self.hidden_size} must be a multiple of 16 (3D sin-cos position embedding)")
        if self.size_conditioning and self.hidden_size % 3:
            raise bad(f"size_conditioning needs a hidden size divisible by 3, got {self.hidden_size}")
        if self.attention not in ("proxy", "full"):
            raise bad(f"attention must be 'proxy' or 'full', got {self.attention!r}")
        if self.proxy_mode not in INFERENCE_PROXY_MODES:
            raise bad(f"proxy_mode must be one of {INFERENCE_PROXY_MODES} (eval never draws random numbers), "
                      f"got {self.proxy_mode!r}")
        if self.train_proxy_mode not in PROXY_MODES:
            raise bad(f"train_proxy_mode must be one of {PROXY_MODES}, got {self.train_proxy_mode!r}")
        for field in ("proxy_offset", "window", "proxy_window"):
            value = getattr(self, field)
            if value is not None and (len(value) != 3 or any(not isinstance(v, int) for v in value)):
                raise bad(f"{field} must be three integers (t, h, w) or null, got {value!r}")
        if self.window is not None and any(w < 1 for w in self.window):
            raise bad(f"window sides must be >= 1, got {self.window}")
        if self.proxy_window is not None and any(p < 1 for p in self.proxy_window):
            raise bad(f"proxy_window sides must be >= 1, got {self.proxy_window}")
        if self.proxy_offset is not None and any(o < 0 for o in self.proxy_offset):
            raise bad(f"proxy_offset must be non-negative, got {self.proxy_offset}")
        if self.pos_embed_axes not in POS_EMBED_AXES:
            raise bad(f"pos_embed_axes must be one of {POS_EMBED_AXES}, got {self.pos_embed_axes!r}")
        if not self.mask_value < 0:
            raise bad(f"mask_value must be negative, got {self.mask_value}")

    def replace(self, **changes: Any) -> PTDiTConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                  if not (f.name in OMITTED_AT_DEFAULT and getattr(self, f.name) == f.default)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PTDiTConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"unknown PT-DiT config keys {unknown}; known keys: {sorted(known)}")
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json_file(cls, path: str | Path) -> PTDiTConfig:
        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise InputError(f"config file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"config file {path} is not readable JSON ({e})") from None
        if not isinstance(data, dict):
            raise InputError(f"config file {path} must hold a JSON object of PT-DiT config fields")
        return cls.from_dict(data)


PRESETS: dict[str, PTDiTConfig] = {
    # Small enough for CPU tests at real token grids.
    "tiny": PTDiTConfig(name="tiny", depth=2, num_heads=2, head_dim=32),
    # The published Qihoo-T2X image model (examples/qihoo_t2x/inference_model_image.json):
    # 28 blocks, 16 heads x 72, patch 2, 4 -> 8 channels, T5 width 4096, adaLN-single, shifted windows,
    # window-mean proxies (mean) at inference in the published code; strided is our deterministic default.
    "xl": PTDiTConfig(name="xl"),
    # The published Qihoo-T2X image model exactly as its code runs it: the xl sizes with fixed (1, 8, 8) attention
    # and proxy windows at every resolution (not the paper's table), window-mean proxies in training and in
    # inference, masks at -10000, sample_size 32, no size conditioning, the position embedding's (W, H) reading of
    # sizes that are not square. Published weights need this preset.
    "qihoo-t2x": PTDiTConfig(name="qihoo-t2x", window=(1, 8, 8), proxy_window=(1, 8, 8), proxy_mode="mean",
                             train_proxy_mode="mean", mask_value=-10000.0, sample_size=32, size_conditioning=False,
                             pos_embed_axes="wh"),
}


def preset(name: str) -> PTDiTConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"unknown preset '{name}': available presets are {', '.join(PRESETS)}") from None
