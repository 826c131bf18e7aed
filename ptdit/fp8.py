"""FP8 (E4M3) quantization of PT-DiT's Linear layers, on the PyTorch side: which layers are quantized, the
calibrators that set their per-tensor scales from real forward passes, and the fake-quantized twin of an FP8
export (the reference ptdit-export's checks, the torch backend and ptdit-diff compare an FP8 graph with).

The scheme is TensorRT's explicit quantization, as NVIDIA's diffusion demo uses it: per-tensor, symmetric
scales for both the input activation and the weight of each quantized Linear, y = DQ(Q(x)) @ DQ(Q(W)), the rest of
the network in the base precision (fp16). Attention matmuls are not quantized: TensorRT's FP8 attention needs a
head size that is a multiple of 16, and PT-DiT's is 72.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Iterator, cast

import torch
from torch import nn

from .contract.errors import Failure
from .contract.fp8 import CALIBRATORS, DEFAULT_LAYER_SET, DEFAULT_PERCENTILE, E4M3_MAX, layer_kind, quantized_kind

__all__ = ["CALIBRATORS", "E4M3_MAX", "LayerScales", "Observer", "fake_quantize", "fake_quantized", "layer_kind",
           "observe", "qdq", "quantize", "quantized_linears", "scale_of"]

MIN_SCALE = 2.0**-14  # fp16's smallest normal: the scales are fp16 in the graph


def quantized_linears(model: nn.Module, layer_set: str = DEFAULT_LAYER_SET) -> dict[str, nn.Linear]:
    """The Linear layers an FP8 export quantizes, by module path (ptdit.contract.fp8.LAYER_SETS)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and quantized_kind(name, layer_set)}


def scale_of(amax: float) -> float:
    """The per-tensor scale that maps |x| <= amax onto E4M3's range, rounded to fp16 (as the graph stores it)."""
    value = max(amax / E4M3_MAX, MIN_SCALE)
    return float(torch.tensor(value, dtype=torch.float16))


def quantize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """E4M3 values of x / scale, as QuantizeLinear computes them: saturated to +-448, rounded to nearest even."""
    return (x.float() / scale).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)


def qdq(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Quantize and dequantize (times scale, in fp32), returned in x's dtype."""
    return (quantize(x, scale).float() * scale).to(x.dtype)


@dataclass(frozen=True)
class LayerScales:
    input: float
    weight: float


class Observer:
    """Per-tensor amax of each quantized Linear's input over every forward pass it sees: the largest |x| (max),
    or the largest per-pass percentile of |x| (percentile), which ignores the rarest outliers of each pass."""

    def __init__(self, calibrator: str, percentile: float = DEFAULT_PERCENTILE):
        if calibrator not in CALIBRATORS:
            raise ValueError(f"unknown calibrator {calibrator!r}")
        self.calibrator, self.percentile = calibrator, percentile
        self.amax: dict[str, float] = {}
        self.passes = 0

    def record(self, name: str, x: torch.Tensor) -> None:
        values = x.detach().abs().float().flatten()
        if self.calibrator == "max":
            value = float(values.max())
        else:
            k = max(1, math.ceil(values.numel() * (1 - self.percentile / 100)))
            value = float(values.topk(k, sorted=True).values[-1])
        self.amax[name] = max(self.amax.get(name, 0.0), value)

    def scales(self, layers: dict[str, nn.Linear]) -> dict[str, LayerScales]:
        missing = sorted(set(layers) - set(self.amax))
        if missing:
            raise RuntimeError(f"calibration never reached {missing[0]} (and {len(missing) - 1} more)")
        bad = sorted(name for name in layers if not math.isfinite(self.amax[name]))
        if bad:
            raise Failure(f"calibration saw NaN or infinite values at the input of {bad[0]} (and {len(bad) - 1} "
                          f"more): the model does not give finite activations on this calibration text; check the "
                          f"checkpoint, or calibrate on other text")
        return {name: LayerScales(scale_of(self.amax[name]), scale_of(float(m.weight.detach().abs().max())))
                for name, m in layers.items()}


@contextlib.contextmanager
def observe(layers: dict[str, nn.Linear], observer: Observer) -> Iterator[dict[str, nn.Linear]]:
    """Record the input of each of these Linear layers while the block runs; yields them."""

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            observer.record(name, args[0])
        return hook

    handles = [m.register_forward_pre_hook(hook_for(name)) for name, m in layers.items()]
    try:
        yield layers
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def fake_quantized(model: nn.Module, scales: dict[str, LayerScales]) -> Iterator[nn.Module]:
    """The model computing as its FP8 export does, while the block runs (fake_quantize, undone afterwards)."""
    undo = fake_quantize(model, scales)
    try:
        yield model
    finally:
        undo()


def fake_quantize(model: nn.Module, scales: dict[str, LayerScales]) -> Callable[[], None]:
    """Make the model compute as its FP8 export does: each quantized Linear sees its input and weight rounded
    through E4M3 at the recorded scales. Returns the function that undoes it (restores weights and hooks)."""
    modules = dict(model.named_modules())
    unknown = sorted(n for n in scales if not isinstance(modules.get(n), nn.Linear))
    if unknown:
        raise ValueError(f"the FP8 scales name {unknown[0]}, which is no Linear layer of this model")
    layers = {name: cast(nn.Linear, modules[name]) for name in scales}
    saved = {name: m.weight.data for name, m in layers.items()}
    handles = []
    for name, m in layers.items():
        s = scales[name]
        m.weight.data = qdq(m.weight.data, s.weight)
        handles.append(m.register_forward_pre_hook(
            lambda module, args, s=s: (qdq(args[0], s.input), *args[1:])))

    def undo() -> None:
        for h in handles:
            h.remove()
        for name, m in layers.items():
            m.weight.data = saved[name]
    return undo
