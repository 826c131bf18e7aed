"""How much FP8 costs each kind of Linear layer, and which layer set an FP8 export should quantize: PyTorch's
fake-quantized model (ptdit.fp8, the same E4M3 rounding as the exported graph) against fp32 on held-out inputs,
with the scales of ptdit-export's own calibration; and the same with NVIDIA ModelOpt's calibration (its
FP8_DEFAULT_CFG on the same layers and passes), where nvidia-modelopt is installed. Measures, writes nothing."""

from __future__ import annotations

import copy
import importlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ptdit.contract.errors import InputError
from ptdit.contract.fp8 import CALIBRATORS, LAYER_KINDS, LAYER_SETS, layer_kind
from ptdit.contract.progress import Reporter

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ptdit import PTDiT

TIMESTEPS = (900.0, 500.0, 100.0)  # held-out inputs across the trajectory (calibration saw other latents and text)
TEXT_LEN = 32
HELD_OUT_SEED = 123


def modelopt_quantization() -> Any:
    try:
        return importlib.import_module("modelopt.torch.quantization")
    except ImportError as error:
        raise InputError(f"--modelopt needs NVIDIA ModelOpt ({error}): pip install nvidia-modelopt, "
                         f"or drop --modelopt") from None


def fp8_accuracy_rows(preset_name: str, res: int, with_modelopt: bool, report: Reporter,
                      timesteps: tuple[float, ...] = TIMESTEPS, checkpoint: Path | None = None) -> list[dict[str, Any]]:
    """Rows of rel L2 of noise_pred against fp32 at each held-out timestep: one per layer kind alone (max
    calibration), per layer set and calibrator, and per layer set with ModelOpt's calibration."""
    import torch

    from export.calibration import CalibrationOptions, calibrate
    from ptdit import PTDiT, preset
    from ptdit.fp8 import fake_quantized

    mtq = modelopt_quantization() if with_modelopt else None
    cfg = preset(preset_name)
    model = PTDiT(cfg).eval()
    if checkpoint is not None:
        from ptdit import load_checkpoint

        load_checkpoint(model, checkpoint)
    latent_shape = (2, cfg.in_channels, res // 8, res // 8)
    every = {name: m for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and layer_kind(name)}
    inputs = held_out_inputs(model, latent_shape, timesteps)
    with torch.no_grad():
        references = [model(*x) for x in inputs]

    def errors(m: nn.Module) -> list[float]:
        with torch.no_grad():
            return [float((m(*x) - ref).norm() / ref.norm()) for x, ref in zip(inputs, references)]

    rows: list[dict[str, Any]] = []
    scales = {}
    for calibrator in CALIBRATORS:
        report(f"  calibrating {cfg.name} at {res} ({calibrator})")
        start = time.perf_counter()
        scales[calibrator], _ = calibrate(model, CalibrationOptions(calibrator=calibrator), latent_shape, TEXT_LEN,
                                          None, layers=every)
        seconds = time.perf_counter() - start
        groups = {f"set {s}": LAYER_SETS[s] for s in LAYER_SETS}
        if calibrator == "max":
            groups = {**{f"kind {k}": frozenset({k}) for k, _ in LAYER_KINDS}, **groups,
                      "every kind": frozenset(k for k, _ in LAYER_KINDS)}
        for what, kinds in groups.items():
            chosen = {n: s for n, s in scales[calibrator].items() if layer_kind(n) in kinds}
            with fake_quantized(model, chosen):
                rows.append({"what": what, "calibration": f"ptdit ({calibrator})", "layers": len(chosen),
                             "rel_l2": errors(model), "calibration_seconds": round(seconds, 1)})
    if mtq is not None:
        for layer_set, kinds in LAYER_SETS.items():
            report(f"  ModelOpt FP8 (its default recipe's quantizer settings) on set {layer_set}")
            wanted = sorted(n for n in every if layer_kind(n) in kinds)
            start = time.perf_counter()
            quantized = mtq.quantize(copy.deepcopy(model), modelopt_config(mtq, wanted), lambda m: calibrate(
                m, CalibrationOptions(), latent_shape, TEXT_LEN, None, layers={}))
            seconds = time.perf_counter() - start
            rows.append({"what": f"set {layer_set}", "calibration": "ModelOpt (FP8, max)", "layers": len(wanted),
                         "rel_l2": errors(quantized), "calibration_seconds": round(seconds, 1),
                         "input_amax_vs_ptdit": amax_ratio(quantized, wanted, scales["max"])})
    weights = checkpoint.name if checkpoint is not None else "seeded"
    return [{"preset": preset_name, "weights": weights, "res": res, "timesteps": list(timesteps), **r} for r in rows]


def held_out_inputs(model: PTDiT, latent_shape: tuple[int, ...],
                    timesteps: tuple[float, ...]) -> list[tuple[torch.Tensor, ...]]:
    import torch

    g = torch.Generator().manual_seed(HELD_OUT_SEED)
    return [(torch.randn(latent_shape, generator=g), torch.full((latent_shape[0],), t),
             torch.randn(latent_shape[0], TEXT_LEN, model.cfg.text_dim, generator=g),
             torch.ones(latent_shape[0], TEXT_LEN, dtype=torch.int64)) for t in timesteps]


def modelopt_config(mtq: Any, wanted: list[str]) -> dict[str, Any]:
    """FP8_DEFAULT_CFG's quantizer settings (E4M3, per tensor, max) on exactly these Linear layers. Its own name
    patterns would not do: they switch off '*visual*' (vision towers) and '*proj_out.*', which here are the proxy
    cross-attention (pvisual_attn2), the GIIM projection (linear_1_visual) and the final layer."""
    config = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    settings = {entry["quantizer_name"]: entry["cfg"] for entry in config["quant_cfg"] if "cfg" in entry}
    config["quant_cfg"] = [{"quantizer_name": "*", "enable": False}] + [
        {"quantizer_name": f"{name}.{quantizer}", "cfg": settings[f"*{quantizer}"]}
        for name in wanted for quantizer in ("input_quantizer", "weight_quantizer")]
    return config


def amax_ratio(quantized: nn.Module, wanted: list[str], ours: dict[str, Any]) -> list[float]:
    """The range of ModelOpt's input amax over ours on these layers (ours: the fp16-rounded scale times 448)."""
    from ptdit.fp8 import E4M3_MAX

    modules = dict(quantized.named_modules())
    ratios = [float(modules[n].input_quantizer.amax) / (ours[n].input * E4M3_MAX) for n in wanted]
    return [round(min(ratios), 4), round(max(ratios), 4)]


def fp8_accuracy_table(rows: list[dict[str, Any]]) -> str:
    timesteps = rows[0]["timesteps"] if rows else list(TIMESTEPS)
    ts = " | ".join(f"t={t:g}" for t in timesteps)
    lines = [f"| preset | res | quantized | calibration | Linears | {ts} | max | calibration s | "
             "input amax / ptdit's |",
             "| --- " * (8 + len(timesteps)) + "|"]
    for r in rows:
        errs = " | ".join(f"{e:.2%}" for e in r["rel_l2"])
        lines.append(f"| {r['preset']} | {r['res']} | {r['what']} | {r['calibration']} | {r['layers']} | {errs} | "
                     f"{max(r['rel_l2']):.2%} | {r['calibration_seconds']} | "
                     f"{'-'.join(map(str, r['input_amax_vs_ptdit'])) if 'input_amax_vs_ptdit' in r else ''} |")
    weights = rows[0].get("weights", "seeded") if rows else "seeded"
    lines.append(f"Relative L2 of noise_pred against fp32 ({weights} weights, held-out latents and text); PyTorch "
                 "fake-quantized with the E4M3 rounding of the exported graph.")
    return "\n".join(lines)
