"""Attention cost: the paper's analytic ratio, and exact multiply-add counts of the real model."""

from __future__ import annotations

from dataclasses import dataclass

from .config import PTDiTConfig
from .contract.sizes import Size
from .resolution import Geometry, geometry, latent_size
from .windows import proxy_split

DEFAULT_TEXT_LEN = 200  # model_max_length of the published Qihoo-T2X config


def _geometry(cfg: PTDiTConfig | None, res: int | Size, frames: int | None) -> Geometry:
    size = res if isinstance(res, Size) else Size(res, res)
    latent = latent_size(size.height, size.width)
    return geometry((frames or 1, *latent), cfg.patch_size if cfg else 2, cfg.window if cfg else None)


def attention_cost_ratio(res: int | Size, frames: int | None = None) -> float:
    """The paper's PT-DiT / full-attention cost ratio 1/P^2 + 1/P + 2P/N (P tokens per window, N tokens):
    proxy self-attention, proxy-to-token cross-attention, window and shifted-window attention, against N^2."""
    geo = _geometry(None, res, frames)
    p, n = geo.window_size, geo.num_tokens
    return 1 / p**2 + 1 / p + 2 * p / n


@dataclass(frozen=True)
class MacCount:
    """Multiply-adds of one forward pass: `linear` counts every Linear and the patchify conv, `attention` the
    two attention matmuls (Q K^T and A V). FLOPs = 2 x MACs."""

    linear: int
    attention: int

    @property
    def total(self) -> int:
        return self.linear + self.attention

    def __add__(self, other: MacCount) -> MacCount:
        return MacCount(self.linear + other.linear, self.attention + other.attention)

    def __mul__(self, k: int) -> MacCount:
        return MacCount(self.linear * k, self.attention * k)


def _attention(dim: int, queries: int, keys: int) -> MacCount:
    """q/k/v/out projections (context already at model width) plus Q K^T and A V."""
    return MacCount(linear=2 * queries * dim * dim + 2 * keys * dim * dim, attention=2 * queries * keys * dim)


def count_macs(
    cfg: PTDiTConfig, res: int | Size, frames: int | None = None, batch: int = 1, text_len: int = DEFAULT_TEXT_LEN
) -> MacCount:
    """Exact multiply-add count of PTDiT(cfg) at this resolution, or size (cfg.attention="full" counts the
    full-attention DiT of the same width and depth)."""
    geo = _geometry(cfg, res, frames)
    d, n, p, n_windows = cfg.hidden_size, geo.num_tokens, geo.window_size, geo.num_windows
    _, groups = proxy_split(geo.window, cfg.proxy_window)
    n_proxies = n_windows * groups[0] * groups[1] * groups[2]

    if cfg.attention == "proxy":
        block = (
            _attention(d, n_proxies, n_proxies)  # proxy self-attention
            + _attention(d, n, n_proxies)  # every token queries the proxies
            + MacCount(n * d * d, 0)  # linear_1_visual
            + _attention(d, p, p) * n_windows  # window attention
        )
        if cfg.shift_window:
            block = block + _attention(d, p, p) * n_windows + MacCount(n * d * d, 0)  # + linear_2
    else:
        block = _attention(d, n, n)
    block = block + _attention(d, n, text_len) + MacCount(2 * n * d * d * cfg.mlp_ratio, 0)

    per_sample = (
        block * cfg.depth
        + MacCount(n * cfg.in_channels * cfg.patch_size**2 * d, 0)  # patchify conv
        + MacCount(text_len * (cfg.text_dim * d + d * d), 0)  # caption projection
        + MacCount(256 * d + d * d + 6 * d * d, 0)  # timestep MLP + adaLN-single
        + MacCount(n * d * cfg.patch_size**2 * cfg.out_channels, 0)  # proj_out
    )
    total = per_sample * batch
    if cfg.size_conditioning:  # resolution (2 values) and aspect ratio (1 value), shared by the batch
        d3 = d // 3
        total = total + MacCount(3 * (256 * d3 + d3 * d3), 0)
    return total
