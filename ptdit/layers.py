"""Building blocks of PT-DiT. Module and parameter names follow the published PTDiTDiffuser checkpoint
(diffusers naming), so a published state dict loads with strict=True."""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._subclasses.fake_tensor import unset_fake_temporarily


def shape_of(x: Tensor) -> list[int]:
    """The shape as python ints, so that an ONNX trace records constants instead of Shape ops."""
    return [int(d) for d in x.shape]


def layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """LayerNorm computed in fp32 whatever the model dtype: an fp32 island of the low-precision policy."""
    weight = norm.weight.float() if norm.weight is not None else None
    bias = norm.bias.float() if norm.bias is not None else None
    return F.layer_norm(x.float(), norm.normalized_shape, weight, bias, norm.eps).to(x.dtype)


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    return x * (1 + scale) + shift


class Attention(nn.Module):
    """Multi-head attention (self or cross) on [..., tokens, dim] inputs.

    Goes through scaled_dot_product_attention; the ONNX exporters lower it to MatMul -> Softmax -> MatMul with
    the scale folded into Q and K before the first MatMul, the pattern TensorRT fuses.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, context_dim: int | None = None, bias: bool = True):
        super().__init__()
        inner = heads * head_dim
        context_dim = context_dim or dim
        self.heads, self.head_dim, self.scale = heads, head_dim, head_dim**-0.5
        self.to_q = nn.Linear(dim, inner, bias=bias)
        self.to_k = nn.Linear(context_dim, inner, bias=bias)
        self.to_v = nn.Linear(context_dim, inner, bias=bias)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim)])

    def _split_heads(self, x: Tensor) -> Tensor:  # [N, L, H*D] -> [N, H, L, D]
        n, length, _ = shape_of(x)
        return x.reshape(n, length, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: Tensor, context: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
        """x: [*batch, Lq, dim]; context: [*batch, Lk, context_dim] (None = self-attention);
        bias: additive, broadcastable to [prod(batch), heads, Lq, Lk]."""
        *batch, lq, dim = shape_of(x)
        n = math.prod(batch)
        x = x.reshape(n, lq, dim)
        context = x if context is None else context.reshape(n, *shape_of(context)[-2:])
        q = self._split_heads(self.to_q(x))
        k = self._split_heads(self.to_k(context))
        v = self._split_heads(self.to_v(context))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=self.scale)
        out = out.transpose(1, 2).reshape(n, lq, self.heads * self.head_dim)
        return self.to_out[0](out).reshape(*batch, lq, dim)


class GELUProj(nn.Module):
    """diffusers' GELU(approximate="tanh") layer: a projection followed by tanh-GELU."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int):
        super().__init__()
        # net.1 is the (parameter-free) dropout of the diffusers layout; keeping the slot keeps the names.
        self.net = nn.Sequential(GELUProj(dim, dim * mult), nn.Identity(), nn.Linear(dim * mult, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


@functools.lru_cache(maxsize=None)
def sinusoid_frequencies(half: int, max_period: float) -> np.ndarray:
    """exp(-log(max_period) * k / half) in float32, computed as the published code does (torch's float32 exp, in
    that order of operations); numpy's exp differs from torch's in the last bit, which the published weights'
    outputs show at the 1e-6 level. Cached as numpy, so a trace sees a constant, never a tracer's fake tensor."""
    with torch.no_grad(), unset_fake_temporarily():  # real values even when first asked for inside a trace
        exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device="cpu")
        return torch.exp(exponent / half).numpy()


sinusoid_frequencies(128, 10000.0)  # the model's own sinusoids, computed once at import, outside any trace


def timestep_sinusoid(t: Tensor, channels: int = 256, max_period: float = 10000.0) -> Tensor:
    """diffusers Timesteps(flip_sin_to_cos=True, downscale_freq_shift=0), always in fp32 (precision island:
    t reaches 1000, which fp16 cannot resolve)."""
    freqs = torch.from_numpy(sinusoid_frequencies(channels // 2, max_period)).to(t.device)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepEmbedding(nn.Module):
    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_channels, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class CombinedTimestepSizeEmbeddings(nn.Module):
    """Timestep embedding, plus PixArt-alpha resolution / aspect-ratio embeddings when size conditioning is on."""

    def __init__(self, dim: int, size_conditioning: bool):
        super().__init__()
        self.timestep_embedder = TimestepEmbedding(256, dim)
        self.size_conditioning = size_conditioning
        if size_conditioning:
            self.resolution_embedder = TimestepEmbedding(256, dim // 3)
            self.aspect_ratio_embedder = TimestepEmbedding(256, dim // 3)

    def forward(self, timestep: Tensor, dtype: torch.dtype, image_hw: tuple[int, int]) -> Tensor:
        emb = self.timestep_embedder(timestep_sinusoid(timestep).to(dtype))
        if not self.size_conditioning:
            return emb
        batch = timestep.shape[0]
        # Static per export: pixel height/width and aspect ratio of this resolution (PixArt-alpha convention).
        hw = torch.tensor([float(image_hw[0]), float(image_hw[1])], device=timestep.device)
        aspect = torch.tensor([image_hw[0] / image_hw[1]], device=timestep.device)
        res_emb = self.resolution_embedder(timestep_sinusoid(hw).to(dtype)).reshape(1, -1).expand(batch, -1)
        ar_emb = self.aspect_ratio_embedder(timestep_sinusoid(aspect).to(dtype)).expand(batch, -1)
        return emb + torch.cat([res_emb, ar_emb], dim=1)


class AdaLayerNormSingle(nn.Module):
    """adaLN-single (PixArt-alpha): one timestep MLP shared by every block; returns the 6*dim modulation
    vector and the timestep embedding (used by the final layer)."""

    def __init__(self, dim: int, size_conditioning: bool):
        super().__init__()
        self.emb = CombinedTimestepSizeEmbeddings(dim, size_conditioning)
        self.linear = nn.Linear(dim, 6 * dim)

    def forward(self, timestep: Tensor, dtype: torch.dtype, image_hw: tuple[int, int]) -> tuple[Tensor, Tensor]:
        embedded = self.emb(timestep, dtype, image_hw)
        return self.linear(F.silu(embedded)), embedded


class CaptionProjection(nn.Module):
    """PixArt-alpha text projection: T5 features -> model width."""

    def __init__(self, in_features: int, dim: int):
        super().__init__()
        self.linear_1 = nn.Linear(in_features, dim)
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


def _sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.outer(pos.reshape(-1).astype(np.float64), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_pos_embed_3d(dim: int, grid: tuple[int, int, int], interpolation_scale: float = 1.0) -> Tensor:
    """[F*H*W, dim] fixed 3D sin-cos position embedding, laid out as the published PatchEmbed2D_3DsincosPE:
    dim/4 channels encode the frame, then 3*dim/8 the column and 3*dim/8 the row."""
    frames, height, width = grid
    spatial_dim, temporal_dim = 3 * dim // 4, dim // 4
    rows, cols = np.meshgrid(np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32), indexing="ij")
    spatial = np.concatenate(
        [_sincos_1d(spatial_dim // 2, cols / interpolation_scale),
         _sincos_1d(spatial_dim // 2, rows / interpolation_scale)],
        axis=1,
    )  # [H*W, 3dim/4]
    temporal = _sincos_1d(temporal_dim, np.arange(frames, dtype=np.float32))  # [F, dim/4]
    emb = np.concatenate(
        [np.repeat(temporal[:, None], height * width, axis=1), np.repeat(spatial[None], frames, axis=0)], axis=-1
    )
    return torch.from_numpy(emb.reshape(frames * height * width, dim).astype(np.float32))


class PatchEmbed(nn.Module):
    """Per-frame 2D patchify conv plus the 3D sin-cos position embedding (added in fp32)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, sample_size: int, interpolation_scale: float,
                 axes: str = "hw"):
        super().__init__()
        self.patch_size = patch_size
        self.interpolation_scale = interpolation_scale
        self.axes = axes  # PTDiTConfig.pos_embed_axes
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        # Stored in published checkpoints (a persistent buffer there); always equal to the formula.
        base = (1, sample_size // patch_size, sample_size // patch_size)
        self.register_buffer("pos_embed", sincos_pos_embed_3d(dim, base, interpolation_scale)[None, None])

    def forward(self, latent: Tensor) -> Tensor:
        """[B, C, F, H, W] -> [B, F, H/p, W/p, dim]"""
        b, c, f, h, w = shape_of(latent)
        p, dim = self.patch_size, self.proj.out_channels
        grid = (f, h // p, w // p)
        # The stride-p conv as one matmul over (C, p, p) patches: identical maths, and valid for bf16 in every
        # opset (ONNX Conv accepts bf16 only from opset 22).
        patches = latent.reshape(b, c, f, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)
        x = F.linear(patches.reshape(b, *grid, c * p * p), self.proj.weight.reshape(dim, -1), self.proj.bias)
        table = grid if self.axes == "hw" else (f, w // p, h // p)  # "wh": the W x H table, in H x W raster order
        pos = sincos_pos_embed_3d(dim, table, self.interpolation_scale).to(x.device)
        return (x.float() + pos.reshape(*grid, dim)).to(latent.dtype)
