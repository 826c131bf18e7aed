"""The CausalVAE decoder of the Qihoo-T2X pipeline (Open-Sora-Plan v1.2's VAE), written here as the PyTorch
reference the VAE-decoder artifact is exported from and compared against.

Parameter names are the published checkpoint's (`post_quant_conv.conv.weight`, `decoder.up.3.block.0.conv1.
conv.weight`, ...), so its state dict (encoder keys dropped) loads with strict=True. Execution: post_quant_conv,
conv_in, mid (resnet, single-head attention per frame, resnet), then the levels up.3, up.2 (each: resnets, then
2x in space and time), up.1 (resnets, then nearest 2x in space), up.0 (resnets), GroupNorm, swish, conv_out.
Every convolution is causal in time: the first frame is repeated kt - 1 times in front, nothing behind.

Images are one latent frame. A 4D latent [B, 4, H, W] runs the same network in 2D: with the causal padding,
every frame a 3D kernel sees is the same frame, so each CausalConv3d is a Conv2d whose kernel is summed over
time, and the space-time upsampling is bilinear 2x in space. The exported image decoder is that 2D network.
A 5D latent [B, 4, T, H, W] gives 1 + 4 (T - 1) frames.

The published decode (Open-Sora-Plan v1.2's `decode` with tiling on) cuts a latent larger than 64 x 64 or 8 frames
into causal chunks of 8 latent frames overlapping by one, and each chunk into 64 x 64 tiles overlapping by 1/8,
blended (where: ptdit.contract.vae_decode); published_decode is the PyTorch reference of that whole decode.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract.vae_decode import temporal_chunks, tile_plan
from .resolution import VAE_FACTOR

LATENT_SCALE = 0.18215  # latents are divided by it before decoding (no shift)
UPSAMPLES = ("", "SpatialUpsample2x", "Spatial2xTime2x3DUpsample", "Spatial2xTime2x3DUpsample")  # per level


@dataclass(frozen=True)
class VAEConfig:
    name: str = "causalvae-v1.2"
    hidden_size: int = 128
    hidden_size_mult: tuple[int, ...] = (1, 2, 4, 4)
    z_channels: int = 4
    num_res_blocks: int = 2
    out_channels: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "hidden_size_mult": list(self.hidden_size_mult)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VAEConfig:
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        if "hidden_size_mult" in fields:
            fields["hidden_size_mult"] = tuple(fields["hidden_size_mult"])
        return cls(**fields)


VAE_PRESETS = {
    "causalvae-v1.2": VAEConfig(),  # Open-Sora-Plan v1.2.0's VAE: 144.8 M decoder parameters
    "tiny": VAEConfig(name="causalvae-tiny", hidden_size=32, hidden_size_mult=(1, 1, 2, 2), num_res_blocks=1),
}


class CausalConv3d(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int, int], padding: int = 0):
        super().__init__()
        kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
        self.conv = nn.Conv3d(cin, cout, kernel, padding=(0, padding, padding))
        self.padding = padding

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:  # one frame: the kernel summed over time, as a Conv2d
            return F.conv2d(x, self.conv.weight.sum(2), self.conv.bias, padding=self.padding)
        kt = self.conv.kernel_size[0]
        if kt > 1:
            x = torch.cat([x[:, :, :1].expand(-1, -1, kt - 1, -1, -1), x], dim=2)
        return self.conv(x)


class GroupNorm(nn.GroupNorm):
    """GroupNorm computed in fp32 whatever the model dtype: the fp32 island of a low-precision decoder."""

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight.float(), self.bias.float()
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def normalize(channels: int) -> nn.GroupNorm:
    return GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock3D(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = normalize(cin), CausalConv3d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = normalize(cout), CausalConv3d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = CausalConv3d(cin, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock3D(nn.Module):
    """Single-head attention over the spatial tokens of each frame, scaled by channels^-1/2."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = normalize(channels)
        self.q, self.k, self.v = (CausalConv3d(channels, channels, 1) for _ in range(3))
        self.proj_out = CausalConv3d(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        video = x.ndim == 5
        b, c = int(x.shape[0]), int(x.shape[1])
        frames = int(x.shape[2]) if video else 1
        hw = [int(d) for d in x.shape[-2:]]

        def tokens(t: Tensor) -> Tensor:  # -> [B T, H W, C]
            t = t.transpose(1, 2) if video else t.unsqueeze(1)
            return t.reshape(b * frames, c, hw[0] * hw[1]).transpose(1, 2)

        weights = torch.softmax((tokens(q) * c**-0.5) @ tokens(k).transpose(1, 2), dim=-1)
        out = (weights @ tokens(v)).transpose(1, 2).reshape(b, frames, c, *hw)
        out = out.transpose(1, 2) if video else out[:, 0]
        return x + self.proj_out(out)


class Spatial2xTime2x3DUpsample(nn.Module):
    """2x in space (and in time for every frame after the first), trilinear, then a causal 3x3x3 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim == 4:
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        elif x.shape[2] > 1:
            first = F.interpolate(x[:, :, :1], scale_factor=(1.0, 2.0, 2.0), mode="trilinear", align_corners=False)
            rest = F.interpolate(x[:, :, 1:], scale_factor=(2.0, 2.0, 2.0), mode="trilinear", align_corners=False)
            x = torch.cat([first, rest], dim=2)
        else:
            x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="trilinear", align_corners=False)
        return self.conv(x)


class SpatialUpsample2x(nn.Module):
    """Nearest 2x in space per frame, then a (1, 3, 3) conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = CausalConv3d(channels, channels, (1, 3, 3), padding=1)

    def forward(self, x: Tensor) -> Tensor:
        scale = 2.0 if x.ndim == 4 else (1.0, 2.0, 2.0)
        return self.conv(F.interpolate(x, scale_factor=scale, mode="nearest"))


class Level(nn.Module):
    def __init__(self, cin: int, cout: int, blocks: int, upsample: str):
        super().__init__()
        self.block = nn.ModuleList([ResnetBlock3D(cin if i == 0 else cout, cout) for i in range(blocks)])
        if upsample:
            self.upsample = {"SpatialUpsample2x": SpatialUpsample2x,
                             "Spatial2xTime2x3DUpsample": Spatial2xTime2x3DUpsample}[upsample](cout)

    def forward(self, x: Tensor) -> Tensor:
        for block in self.block:
            x = block(x)
        return self.upsample(x) if hasattr(self, "upsample") else x


class Mid(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock3D(channels, channels), AttnBlock3D(channels), \
            ResnetBlock3D(channels, channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        widths = [cfg.hidden_size * m for m in cfg.hidden_size_mult]
        self.conv_in = CausalConv3d(cfg.z_channels, widths[-1], 3, padding=1)
        self.mid = Mid(widths[-1])
        # up[k] is level k; they run from the last level down, each taking the previous level's width
        self.up = nn.ModuleList([Level(widths[min(k + 1, len(widths) - 1)], widths[k], cfg.num_res_blocks + 1,
                                       UPSAMPLES[k]) for k in range(len(widths))])
        self.norm_out = normalize(widths[0])
        self.conv_out = CausalConv3d(widths[0], cfg.out_channels, 3, padding=1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.mid(self.conv_in(z))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class CausalVAEDecoder(nn.Module):
    """image [B, 3, 8H, 8W] in about [-1, 1] = CausalVAEDecoder(cfg)(latent [B, 4, H, W]) (the sampler's latent,
    divided by LATENT_SCALE here); a video latent [B, 4, T, H, W] gives [B, 3, 1 + 4 (T - 1), 8H, 8W]."""

    def __init__(self, cfg: VAEConfig, seed: int = 0):
        super().__init__()
        self.cfg, self.seed = cfg, seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.post_quant_conv = CausalConv3d(cfg.z_channels, cfg.z_channels, 1)
            self.decoder = Decoder(cfg)

    def forward(self, latent: Tensor) -> Tensor:
        """fp32 in and out at every precision: the graph casts on entry and exit (GroupNorm stays fp32)."""
        x = self.decoder(self.post_quant_conv((latent.float() / LATENT_SCALE).to(self.dtype)))
        return x.float()

    @property
    def dtype(self) -> torch.dtype:
        return self.post_quant_conv.conv.weight.dtype


def decoder_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The decoder's entries of a whole-VAE state dict (the encoder, quant_conv and loss entries dropped)."""
    return {k: v for k, v in state.items() if k.startswith(("post_quant_conv.", "decoder."))}


def load_vae(path: str | Path) -> CausalVAEDecoder:
    """The published CausalVAE's decoder from its checkpoint (the whole VAE's state dict, possibly nested)."""
    from .checkpoint import read_state_dict
    from .contract.errors import InputError

    decoder = CausalVAEDecoder(VAE_PRESETS["causalvae-v1.2"]).eval()
    missing, _ = decoder.load_state_dict(decoder_state(read_state_dict(path)), strict=False)
    if missing:
        raise InputError(f"{path} lacks {sorted(missing)[:3]} ({len(missing)} in all): not the Open-Sora-Plan v1.2 "
                         f"CausalVAE")
    return decoder



def published_decode(decoder: Callable[[Tensor], Tensor], latent: Tensor) -> Tensor:
    """The PyTorch reference of the published decode with tiling on: latent [1, 4, H, W] -> [1, 3, 8H, 8W], or
    [1, 4, T, H, W] -> [1, 3, 1 + 4 (T - 1), 8H, 8W], chunk by chunk, each chunk tile by tile, every tile blended
    in place into its right and lower neighbours over the plan's blend (weight y / blend), then cropped."""
    video = latent.ndim == 5
    frames = int(latent.shape[2]) if video else None
    plan = tile_plan(int(latent.shape[-2]), int(latent.shape[-1]), frames, VAE_FACTOR)

    def tiled(z: Tensor) -> Tensor:
        rows = [[decoder(z[..., i:i + plan.tile, j:j + plan.tile]) for j in plan.column_starts] for i in plan.starts]
        for i, row in enumerate(rows):
            for j, tile in enumerate(row):
                for earlier, axis in ((rows[i - 1][j] if i else None, -2), (row[j - 1] if j else None, -1)):
                    if earlier is None:
                        continue
                    extent = min(earlier.shape[axis], tile.shape[axis], plan.blend)
                    for y in range(extent):
                        mixed = earlier.narrow(axis, earlier.shape[axis] - extent + y, 1) * (1 - y / extent) + \
                            tile.narrow(axis, y, 1) * (y / extent)
                        tile.narrow(axis, y, 1).copy_(mixed)
        return torch.cat([torch.cat([t[..., :plan.keep, :plan.keep] for t in row], dim=-1) for row in rows], dim=-2)

    if not video:
        return tiled(latent)
    chunks = [tiled(latent[:, :, a:b]) for a, b in temporal_chunks(int(latent.shape[2]))]
    return torch.cat([chunks[0], *[c[:, :, 1:] for c in chunks[1:]]], dim=2)
