"""PT-DiT: the proxy-token diffusion transformer of Qihoo-T2X.

One block = GIIM (proxy self-attention, then every token queries the proxies) -> TCM (window attention, then
shifted-window attention) -> text cross-attention -> MLP, modulated by adaLN-single.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
from torch import Tensor, nn

from .config import PTDiTConfig
from .contract.errors import InputError
from .layers import (
    AdaLayerNormSingle,
    Attention,
    CaptionProjection,
    FeedForward,
    PatchEmbed,
    layer_norm,
    modulate,
    shape_of,
)
from .resolution import VAE_FACTOR, Geometry, geometry
from .windows import proxy_split, proxy_tokens, shift_windows, shifted_window_bias, window_partition, window_reverse


class PTDiTBlock(nn.Module):
    def __init__(self, cfg: PTDiTConfig):
        super().__init__()
        dim, heads, head_dim, bias = cfg.hidden_size, cfg.num_heads, cfg.head_dim, cfg.attention_bias

        def norm() -> nn.LayerNorm:
            return nn.LayerNorm(dim, eps=cfg.norm_eps, elementwise_affine=cfg.norm_affine)

        self.use_proxies = cfg.attention == "proxy"
        self.shift_window = self.use_proxies and cfg.shift_window
        if self.use_proxies:  # GIIM
            self.proxy_norm1 = norm()
            self.proxy_attn1 = Attention(dim, heads, head_dim, bias=bias)
            self.proxy_cross_norm = norm()
            self.norm_before = norm()
            self.pvisual_attn2 = Attention(dim, heads, head_dim, context_dim=dim, bias=bias)
            self.linear_1_visual = nn.Linear(dim, dim)
        self.norm1 = norm()  # window attention (TCM), or global attention in the full-attention baseline
        self.attn1 = Attention(dim, heads, head_dim, bias=bias)
        if self.shift_window:
            self.shift_window_norm = norm()
            self.attn3 = Attention(dim, heads, head_dim, bias=bias)
            self.linear_2 = nn.Linear(dim, dim)
            self.proxy_scale_shift_table = nn.Parameter(torch.zeros(3, dim))
        self.attn2 = Attention(dim, heads, head_dim, context_dim=dim, bias=bias)  # text (already projected)
        self.norm2 = norm()
        self.ff = FeedForward(dim, cfg.mlp_ratio)
        self.scale_shift_table = nn.Parameter(torch.zeros(6, dim))

    def forward(
        self,
        x: Tensor,
        t6: Tensor,
        text: Tensor,
        text_bias: Tensor,
        geo: Geometry,
        shift_bias: Tensor | None,
        proxies_of: Callable[[Tensor], Tensor],
    ) -> Tensor:
        """x: [B, nW, P, C] window-major tokens; t6: [B, 6, C] adaLN-single vector; text: [B, L, C]."""
        b, nw, p, c = shape_of(x)
        mod = (self.scale_shift_table + t6)[:, :, None, None, :]  # [B, 6, 1, 1, C], broadcasts over tokens
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.unbind(1)

        if self.use_proxies:
            # GIIM: global context through one proxy per window, carried back to every token.
            proxies = proxies_of(x)
            proxies = proxies + self.proxy_attn1(layer_norm(proxies, self.proxy_norm1))
            queries = layer_norm(x.reshape(b, nw * p, c), self.norm_before)
            context = self.pvisual_attn2(queries, layer_norm(proxies, self.proxy_cross_norm))
            x = x + self.linear_1_visual(context).reshape(b, nw, p, c)
            # TCM: window attention, then attention in windows shifted by half a window.
            h = modulate(layer_norm(x, self.norm1), shift_msa, scale_msa)
            x = x + gate_msa * self.attn1(h)
            if self.shift_window:
                shift_sw, scale_sw, gate_sw = (self.proxy_scale_shift_table + t6[:, :3])[:, :, None, None, :].unbind(1)
                h = modulate(layer_norm(x, self.shift_window_norm), shift_sw, scale_sw)
                h = shift_windows(self.attn3(shift_windows(h, geo), bias=shift_bias), geo, reverse=True)
                x = x + self.linear_2(gate_sw * h)
        else:
            h = modulate(layer_norm(x, self.norm1), shift_msa, scale_msa)
            x = x + gate_msa * self.attn1(h.reshape(b, nw * p, c)).reshape(b, nw, p, c)

        x = x + self.attn2(x.reshape(b, nw * p, c), text, bias=text_bias).reshape(b, nw, p, c)
        h = modulate(layer_norm(x, self.norm2), shift_mlp, scale_mlp)
        return x + gate_mlp * self.ff(h)


class PTDiT(nn.Module):
    """noise_pred = PTDiT(cfg)(latent, timestep, text_embeds, text_mask)

    latent: [B, in_channels, H, W] (image) or [B, in_channels, F, H, W] (video), any float dtype
    timestep: [B] float in [0, 1000]; text_embeds: [B, L, text_dim]; text_mask: [B, L] (1 = keep)
    returns noise_pred: [B, out_channels, (F,) H, W] in fp32. The compute dtype is the parameters' dtype.
    """

    def __init__(self, cfg: PTDiTConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        dim = cfg.hidden_size
        if cfg.proxy_window is not None and cfg.window is not None:
            proxy_split(cfg.window, cfg.proxy_window)  # fail at construction when both are fixed
        self.pos_embed = PatchEmbed(cfg.in_channels, dim, cfg.patch_size, cfg.sample_size, cfg.pe_interpolation_scale,
                                    cfg.pos_embed_axes)
        self.adaln_single = AdaLayerNormSingle(dim, cfg.size_conditioning)
        self.caption_projection = CaptionProjection(cfg.text_dim, dim)
        self.transformer_blocks = nn.ModuleList([PTDiTBlock(cfg) for _ in range(cfg.depth)])
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.zeros(2, dim))
        self.proj_out = nn.Linear(dim, cfg.patch_size * cfg.patch_size * cfg.out_channels)
        self.seed = seed
        self.weights_source = f"seeded init (seed {seed}, no checkpoint)"
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """Deterministic synthetic weights for pipeline tests and benchmarks (not a training init: every path,
        including the ones the published code zero-initialises, gets non-zero weights so that it is exercised)."""
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            if p.ndim >= 2 and "scale_shift_table" not in name:
                fan_out, fan_in = p.shape[0], p[0].numel()
                bound = math.sqrt(6.0 / (fan_in + fan_out))  # xavier uniform
                p.copy_(torch.rand(p.shape, generator=gen) * 2 * bound - bound)
            elif "scale_shift_table" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))  # as published
            elif name.endswith("weight"):  # LayerNorm affine
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)

    @property
    def dtype(self) -> torch.dtype:
        return self.pos_embed.proj.weight.dtype

    def geometry_of(self, latent_shape: tuple[int, ...]) -> Geometry:
        dims = [int(d) for d in latent_shape[2:]]  # python ints: a trace records constants, not Shape ops
        fhw = (dims[0], dims[1], dims[2]) if len(dims) == 3 else (1, dims[0], dims[1])
        return geometry(fhw, self.cfg.patch_size, self.cfg.window)

    def _check_inputs(self, latent: Tensor, timestep: Tensor, text_embeds: Tensor, text_mask: Tensor) -> None:
        cfg = self.cfg
        if latent.ndim not in (4, 5) or latent.shape[1] != cfg.in_channels:
            raise InputError(f"latent must be [B, {cfg.in_channels}, H, W] or [B, {cfg.in_channels}, F, H, W], "
                             f"got {list(latent.shape)}")
        b = latent.shape[0]
        if tuple(timestep.shape) != (b,):
            raise InputError(f"timestep must be [{b}] (one per batch element), got {list(timestep.shape)}")
        if text_embeds.ndim != 3 or text_embeds.shape[0] != b or text_embeds.shape[2] != cfg.text_dim:
            raise InputError(f"text_embeds must be [{b}, L, {cfg.text_dim}], got {list(text_embeds.shape)}")
        if tuple(text_mask.shape) != tuple(text_embeds.shape[:2]):
            raise InputError(f"text_mask must be {list(text_embeds.shape[:2])}, got {list(text_mask.shape)}")
        for name, t in (("latent", latent), ("timestep", timestep), ("text_embeds", text_embeds)):
            if not t.is_floating_point():
                raise InputError(f"{name} must be a floating-point tensor, got {t.dtype}")

    def forward(
        self,
        latent: Tensor,
        timestep: Tensor,
        text_embeds: Tensor,
        text_mask: Tensor,
        generator: torch.Generator | None = None,
        return_block_outputs: bool = False,
    ) -> Tensor | tuple[Tensor, list[Tensor]]:
        self._check_inputs(latent, timestep, text_embeds, text_mask)
        cfg, dtype = self.cfg, self.dtype
        video = latent.ndim == 5
        x5 = latent if video else latent.unsqueeze(2)
        b, _, f, h, w = shape_of(x5)
        geo = self.geometry_of(tuple(latent.shape))

        x = window_partition(self.pos_embed(x5.to(dtype)), geo.window)  # [B, nW, P, C]
        t6, t_emb = self.adaln_single(timestep, dtype, (h * VAE_FACTOR, w * VAE_FACTOR))
        t6 = t6.reshape(b, 6, -1)
        text = self.caption_projection(text_embeds.to(dtype))
        text_bias = ((1 - text_mask.to(dtype)) * cfg.mask_value)[:, None, None, :]
        shift_bias = None
        if cfg.attention == "proxy" and cfg.shift_window:
            shift_bias = shifted_window_bias(geo, cfg.mask_value, dtype, x.device)
            shift_bias = shift_bias.expand(b, -1, -1, -1).reshape(-1, 1, geo.window_size, geo.window_size)
        mode = cfg.train_proxy_mode if self.training else cfg.proxy_mode
        proxies_of = partial(proxy_tokens, geo=geo, proxy_window=cfg.proxy_window, mode=mode,
                             offset=cfg.proxy_offset, generator=generator)

        block_outputs = []
        for block in self.transformer_blocks:
            x = block(x, t6, text, text_bias, geo, shift_bias, proxies_of)
            block_outputs.append(x)

        shift, scale = (self.scale_shift_table + t_emb[:, None])[:, :, None, None, :].unbind(1)
        x = self.proj_out(modulate(layer_norm(x, self.norm_out), shift, scale))
        x = window_reverse(x, geo.grid, geo.window)  # [B, F, H/p, W/p, p*p*C_out]
        p, c_out = cfg.patch_size, cfg.out_channels
        x = x.reshape(b, *geo.grid, p, p, c_out).permute(0, 6, 1, 2, 4, 3, 5)  # [B, C_out, F, H/p, p, W/p, p]
        out = x.reshape(b, c_out, f, h, w).float()
        if not video:
            out = out.squeeze(2)
        return (out, block_outputs) if return_block_outputs else out

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
