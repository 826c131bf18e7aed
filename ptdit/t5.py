"""The T5 text encoder of the Qihoo-T2X pipeline (T5 v1.1: RMSNorm, gated-GELU, relative position bias), written
here as the PyTorch reference that the text-encoder artifact is exported from and compared against.

Parameter names are those of transformers' T5EncoderModel, so a Hugging Face T5 encoder loads with
strict=True (`shared.weight`, `encoder.block.N.layer.0.SelfAttention.q.weight`, ...).

Precision policy. fp32 runs everything in fp32. fp16 and bf16 keep the weights and the matmuls in the low
precision except these fp32 islands, chosen because T5 in fp16 is known to overflow with real weights
(activations above 65504 in the FFN output projection):
- the residual stream: the hidden state between sublayers is fp32, each sublayer's output is added in fp32;
- every RMSNorm (computed in fp32, the normalised value cast down for the next matmul);
- the FFN output projection `wo` (its input and weight cast up: the matmul runs in fp32);
- the attention softmax, with the relative position bias and the mask added in fp32.
`fp32_islands=False` gives the all-low-precision model, for showing what the islands prevent.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .contract.errors import InputError

MASK_VALUE = -1e9  # added to the attention logits (fp32) of padded keys


@dataclass(frozen=True)
class T5Config:
    """The fields of a Hugging Face T5 config that the encoder uses, under the same names."""

    name: str = "custom"
    vocab_size: int = 32128
    d_model: int = 4096
    d_kv: int = 64
    num_heads: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> T5Config:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    @classmethod
    def from_hf_dir(cls, directory: str | Path) -> T5Config:
        """The config.json of a Hugging Face T5 encoder (T5 v1.1 / gated-gelu only)."""
        path = Path(directory) / "config.json"
        try:
            d = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InputError(f"cannot read the text encoder's {path} ({e}): pass a Hugging Face T5 encoder "
                             f"folder") from None
        if d.get("model_type") != "t5" or d.get("feed_forward_proj", "gated-gelu") != "gated-gelu":
            raise InputError(f"{path} is not a T5 v1.1 config (model_type {d.get('model_type')!r}, feed_forward_proj "
                             f"{d.get('feed_forward_proj')!r}): the Qihoo-T2X text encoder is T5 v1.1 with gated-gelu")
        return cls.from_dict({**d, "name": Path(directory).name})

    @property
    def parameters(self) -> int:
        attention = 4 * self.d_model * self.num_heads * self.d_kv
        ffn = 3 * self.d_model * self.d_ff
        norms = (2 * self.num_layers + 1) * self.d_model
        bias = self.relative_attention_num_buckets * self.num_heads
        return self.vocab_size * self.d_model + self.num_layers * (attention + ffn) + norms + bias


T5_PRESETS = {
    # google/t5-v1_1-xxl's encoder, as the published pipeline uses it: ~4.76 B parameters.
    "t5-v1_1-xxl": T5Config(name="t5-v1_1-xxl"),
    # A stand-in of the same architecture at test size; d_model stays 4096, the width PT-DiT's text input has.
    "tiny": T5Config(name="t5-tiny", vocab_size=512, d_kv=16, num_heads=4, d_ff=128, num_layers=2),
}


def relative_position_buckets(length: int, num_buckets: int, max_distance: int) -> Tensor:
    """[length, length] bucket index of key position - query position (T5's bidirectional bucketing): half the
    buckets per direction, exact below num_buckets / 4, logarithmic up to max_distance."""
    position = torch.arange(length)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    buckets = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return buckets + torch.where(distance < exact, distance, large)


class T5LayerNorm(nn.Module):
    """RMSNorm without a bias, computed in fp32; the output in `dtype`."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d_model))
        self.variance_epsilon = eps

    def forward(self, x: Tensor, dtype: torch.dtype) -> Tensor:
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return (self.weight.float() * x).to(dtype)


class T5Attention(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        inner = cfg.num_heads * cfg.d_kv
        self.heads, self.d_kv = cfg.num_heads, cfg.d_kv
        self.q = nn.Linear(cfg.d_model, inner, bias=False)
        self.k = nn.Linear(cfg.d_model, inner, bias=False)
        self.v = nn.Linear(cfg.d_model, inner, bias=False)
        self.o = nn.Linear(inner, cfg.d_model, bias=False)
        if has_relative_attention_bias:
            self.relative_attention_bias = nn.Embedding(cfg.relative_attention_num_buckets, cfg.num_heads)

    def forward(self, h: Tensor, bias: Tensor, fp32_softmax: bool) -> Tensor:
        """h: [B, L, d_model] (compute dtype); bias: [B, heads, L, L] fp32 (position bias + mask). T5 does not
        scale the logits by 1/sqrt(d_kv): the scale is learnt into the weights."""
        b, length = int(h.shape[0]), int(h.shape[1])

        def heads(x: Tensor) -> Tensor:
            return x.reshape(b, length, self.heads, self.d_kv).transpose(1, 2)

        q, k, v = heads(self.q(h)), heads(self.k(h)), heads(self.v(h))
        logits = q @ k.transpose(-1, -2)
        if fp32_softmax:
            weights = torch.softmax(logits.float() + bias, dim=-1).to(h.dtype)
        else:
            weights = torch.softmax(logits + bias.to(h.dtype), dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(b, length, self.heads * self.d_kv)
        return self.o(out)


class T5DenseGatedActDense(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.wi_0 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wi_1 = nn.Linear(cfg.d_model, cfg.d_ff, bias=False)
        self.wo = nn.Linear(cfg.d_ff, cfg.d_model, bias=False)

    def forward(self, h: Tensor, fp32_output: bool) -> Tensor:
        gated = F.gelu(self.wi_0(h), approximate="tanh") * self.wi_1(h)  # T5 v1.1's "gelu_new"
        if fp32_output:  # the projection known to overflow fp16: input and weight in fp32
            return F.linear(gated.float(), self.wo.weight.float())
        return self.wo(gated)


class T5LayerSelfAttention(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.SelfAttention = T5Attention(cfg, has_relative_attention_bias)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)


class T5LayerFF(nn.Module):
    def __init__(self, cfg: T5Config):
        super().__init__()
        self.DenseReluDense = T5DenseGatedActDense(cfg)
        self.layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)


class T5Block(nn.Module):
    def __init__(self, cfg: T5Config, has_relative_attention_bias: bool):
        super().__init__()
        self.layer = nn.ModuleList([T5LayerSelfAttention(cfg, has_relative_attention_bias), T5LayerFF(cfg)])

    def forward(self, x: Tensor, bias: Tensor, dtype: torch.dtype, islands: bool) -> Tensor:
        attention, ff = self.layer
        assert isinstance(attention, T5LayerSelfAttention) and isinstance(ff, T5LayerFF)
        x = x + attention.SelfAttention(attention.layer_norm(x, dtype), bias, islands).to(x.dtype)
        return x + ff.DenseReluDense(ff.layer_norm(x, dtype), islands).to(x.dtype)


class T5Stack(nn.Module):
    def __init__(self, cfg: T5Config, embed_tokens: nn.Embedding):
        super().__init__()
        self.embed_tokens = embed_tokens  # tied to T5Encoder.shared, as in transformers (both names in the state dict)
        self.block = nn.ModuleList([T5Block(cfg, has_relative_attention_bias=i == 0) for i in range(cfg.num_layers)])
        self.final_layer_norm = T5LayerNorm(cfg.d_model, cfg.layer_norm_epsilon)


class T5Encoder(nn.Module):
    """last_hidden_state [B, L, d_model] fp32 = T5Encoder(cfg)(input_ids [B, L] int64, attention_mask [B, L])"""

    def __init__(self, cfg: T5Config, seed: int = 0, fp32_islands: bool = True):
        super().__init__()
        self.cfg, self.seed, self.fp32_islands = cfg, seed, fp32_islands
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.shared = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.encoder = T5Stack(cfg, self.shared)
            for name, p in self.named_parameters():  # T5's own init scale: unit embeddings, d^-1/2 projections
                if name.endswith("layer_norm.weight"):
                    continue
                fan_in = p.shape[-1] if p.ndim == 2 and not name.endswith(("shared.weight", "bias.weight")) else 1
                nn.init.normal_(p, std=fan_in**-0.5)

    @property
    def dtype(self) -> torch.dtype:
        return self.shared.weight.dtype

    def forward(self, input_ids: Tensor, attention_mask: Tensor, upcast_layers: bool = False) -> Tensor:
        """upcast_layers: compute in fp32 one layer at a time, each upcast on its own and dropped after use: the
        fp32 result of low-precision weights without an fp32 copy of the whole model (the export encodes the
        negative prompt this way)."""
        cfg = self.cfg
        dtype = torch.float32 if upcast_layers else self.dtype
        islands = self.fp32_islands or dtype == torch.float32
        length = int(input_ids.shape[1])
        buckets = relative_position_buckets(length, cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance).to(input_ids.device)
        block = self.encoder.block[0]
        assert isinstance(block, T5Block)
        first = block.layer[0]
        assert isinstance(first, T5LayerSelfAttention)
        relative = first.SelfAttention.relative_attention_bias
        position_bias = relative(buckets).float().permute(2, 0, 1)[None]  # [1, H, L, L]
        mask_bias = (1 - attention_mask.float())[:, None, None, :] * MASK_VALUE
        bias = position_bias + mask_bias
        x = self.shared(input_ids)
        x = x.float() if islands else x
        for block in self.encoder.block:
            layer = copy.deepcopy(block).float() if upcast_layers else block
            x = layer(x, bias, dtype, islands)
        return self.encoder.final_layer_norm(x, torch.float32)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # the tied embedding once


def load_hf_t5(directory: str | Path) -> T5Encoder:
    """The encoder of a Hugging Face T5 folder (config.json and model.safetensors, its shards, or
    pytorch_model.bin), built on the meta device and given the weights in the dtype they are stored in: no fp32
    copy of a large model is ever made."""
    from .checkpoint import read_state_dict

    directory = Path(directory)
    cfg = T5Config.from_hf_dir(directory)
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = [directory / s for s in sorted(set(json.loads(index.read_text())["weight_map"].values()))]
    else:
        files = [f for f in (directory / "model.safetensors", directory / "pytorch_model.bin") if f.is_file()][:1]
    if not files:
        raise InputError(f"{directory} has no model.safetensors, shards or pytorch_model.bin")
    state: dict[str, Tensor] = {}
    for f in files:
        state.update(read_state_dict(f))
    if "shared.weight" in state:
        state.setdefault("encoder.embed_tokens.weight", state["shared.weight"])  # tied in T5
    with torch.device("meta"):
        model = T5Encoder(cfg)
    missing, _ = model.load_state_dict(state, strict=False, assign=True)
    if missing:
        raise InputError(f"{directory}'s weights lack {sorted(missing)[:3]} ({len(missing)} in all): not the encoder "
                         f"of this config")
    model.encoder.embed_tokens = model.shared
    return model.eval()


def first_layer(encoder: T5Encoder) -> T5Encoder:
    """The encoder cut to its first layer (embedding, layer 0 with the position bias, final norm), sharing the
    weights' storage: what a check runs to test every operator at 1/num_layers of the cost."""
    with torch.device("meta"):
        cut = T5Encoder(replace(encoder.cfg, num_layers=1), fp32_islands=encoder.fp32_islands)
    state = {k: v for k, v in encoder.state_dict().items()
             if not k.startswith("encoder.block.") or k.startswith("encoder.block.0.")}
    cut.load_state_dict(state, strict=True, assign=True)
    cut.encoder.embed_tokens = cut.shared
    return cut.eval()
