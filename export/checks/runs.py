"""One seeded run of an exported file through ONNX Runtime (CPU) and of its PyTorch module, and the error of the
first against the second. A bf16 graph runs as its fp32 twin (ptdit.contract.bf16): ONNX Runtime's CPU provider
has no bf16 arithmetic."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from ptdit.contract.bf16 import emulate_bf16, has_bf16
from ptdit.contract.fp8 import ONNXRUNTIME_DISABLED_OPTIMIZERS, has_fp8
from ptdit.contract.onnx_manifest import TensorSpec

if TYPE_CHECKING:
    import torch

SIGNIFICANT_DIGITS = 4  # errors are recorded rounded, so that the manifest is reproducible byte for byte


def parity_inputs(inputs: list[TensorSpec], seed: int) -> dict[str, np.ndarray]:
    """Seeded inputs: Gaussian latent and text features, a timestep per sample, and a text mask whose
    length differs per sample (the rest is padding). A step graph gets step 1 of a schedule going from
    t = 700 to t = -300: dt = 1, so its update latent_next - latent is the (guided) velocity itself."""
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for t in inputs:
        if t.name == "timestep":
            feeds[t.name] = rng.uniform(0, 1000, size=t.shape).astype(np.float32)
        elif t.name == "text_mask":
            batch, length = t.shape
            mask = np.zeros(t.shape, dtype=np.int64)
            for i in range(batch):
                mask[i, : max(1, length * (batch + 1 - i) // (batch + 2))] = 1
            feeds[t.name] = mask
        elif t.name == "step":
            feeds[t.name] = np.ones(t.shape, dtype=np.int64)
        elif t.name == "schedule":
            feeds[t.name] = np.zeros(t.shape, dtype=np.float32)
            feeds[t.name][:3] = (1000.0, 700.0, -300.0)
        elif t.name == "guidance":
            feeds[t.name] = np.full(t.shape, 4.0, dtype=np.float32)
        else:
            feeds[t.name] = rng.standard_normal(t.shape, dtype=np.float32)
    return feeds


def compared_output(outputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray]) -> np.ndarray:
    """What the parity check compares: noise_pred; for a step graph the update latent_next - latent (the
    carried latent would hide the model's error under its own magnitude), after checking that the step
    counter advanced by exactly one."""
    if "noise_pred" in outputs:
        return outputs["noise_pred"]
    if not np.array_equal(outputs["step_next"], feeds["step"] + 1):
        raise ValueError(f"step_next is {outputs['step_next'].tolist()}, expected {(feeds['step'] + 1).tolist()}")
    return outputs["latent_next"].astype(np.float64) - feeds["latent"]


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT_DIGITS}g}")


def error_metrics(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    a, e = actual.astype(np.float64).ravel(), expected.astype(np.float64).ravel()
    diff = a - e
    norm_a, norm_e = float(np.linalg.norm(a)), float(np.linalg.norm(e))
    return {
        "max_abs": _round(float(np.abs(diff).max())),
        "mean_abs": _round(float(np.abs(diff).mean())),
        "rel_l2": _round(float(np.linalg.norm(diff)) / max(norm_e, 1e-300)),
        "cosine": _round(float(a @ e) / max(norm_a * norm_e, 1e-300)),
    }


def run_onnxruntime(path: Path, feeds: dict[str, np.ndarray], inferred: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Run the file on ONNX Runtime's CPU provider (`inferred`: its shape-inferred graph, for bf16)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    disabled = list(ONNXRUNTIME_DISABLED_OPTIMIZERS) if has_fp8(inferred) else None
    target = path
    if has_bf16(inferred):
        target = path.with_name(path.stem + ".bf16-emulated.onnx")
        model = onnx.load(str(path))  # with weights
        model.graph.ClearField("value_info")
        model.graph.value_info.extend(inferred.graph.value_info)
        # onnx checks whether `location` exists relative to the working directory: a unique name.
        location = f"{target.parent.name}.{target.name}.data"
        onnx.save(emulate_bf16(model), str(target), save_as_external_data=True, location=location, size_threshold=1024)
        del model
    try:
        session = ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"],
                                       disabled_optimizers=disabled)
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds)))
    finally:
        if target != path:
            target.unlink(missing_ok=True)
            target.with_name(f"{target.parent.name}.{target.name}.data").unlink(missing_ok=True)


def run_torch(module: torch.nn.Module, feeds: dict[str, np.ndarray], inputs: list[TensorSpec],
              outputs: list[TensorSpec], device: str = "cpu") -> dict[str, np.ndarray]:
    """One forward of the PyTorch module (a PTDiT, a DenoisingStep for a step graph, or a component) on `device`
    (moved there and back); the outputs by the contract's names."""
    import torch

    args = [torch.from_numpy(feeds[t.name]).to(device) for t in inputs]
    module.to(device)
    try:
        with torch.no_grad():
            out = module(*args)
    finally:
        module.to("cpu")
    values = out if isinstance(out, tuple) else (out,)
    return {t.name: v.cpu().numpy() for t, v in zip(outputs, values)}


def against_references(onnx_out: np.ndarray, references: dict[str, np.ndarray],
                       thresholds: dict[str, float]) -> dict[str, Any]:
    """Metrics against each reference ("fp32", "same_precision"); `passed` when each rel L2 is within its
    threshold (a reference without a threshold is measured and recorded only)."""
    result: dict[str, Any] = {}
    passed = True
    for name, ref in references.items():
        metrics: dict[str, Any] = error_metrics(onnx_out, ref)
        if name in thresholds:
            metrics["max_rel_l2"] = thresholds[name]
            passed = passed and metrics["rel_l2"] <= thresholds[name]
        result[f"vs_torch_{name}"] = metrics
    result["passed"] = passed
    return result
