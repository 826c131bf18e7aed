"""How far an artifact's numbers are from PyTorch's: the thresholds of the accuracy diff per precision, and the
metrics of one tensor against its reference. Element-wise statistics and the rtol/atol verdict come from
polygraphy's comparison function (SimpleCompareFunc); relative L2, cosine and the share of elements outside the
tolerance are added here. psnr for images."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ptdit.contract.errors import option
from ptdit.contract.numbers import Range

TOLERANCE = Range(0, 1e6)  # rtol, atol
GATE = Range(0, 1e6, low_open=True)  # a largest accepted error: finite and positive, or the gate would be off


@dataclass(frozen=True)
class Thresholds:
    rtol: float
    atol: float
    max_rel_l2: float  # of each output
    max_trajectory_rel_l2: float  # of the final latent after the sampling run

    def __post_init__(self) -> None:
        TOLERANCE.check(option("rtol"), self.rtol)
        TOLERANCE.check(option("atol"), self.atol)
        GATE.check(option("max_rel_l2"), self.max_rel_l2)
        GATE.check(option("max_trajectory_rel_l2"), self.max_trajectory_rel_l2)


def within(value: float, limit: float) -> bool:
    """value <= limit; a NaN or infinite metric never is, so it fails every gate."""
    return math.isfinite(value) and value <= limit


# Defaults per artifact precision, from measurement (docs/diff.md, "Thresholds"): 3-10x the largest errors
# measured through ONNX Runtime for the tiny model (256, 1024) and the xl model (256).
DEFAULT_THRESHOLDS = {
    "fp32": Thresholds(rtol=1e-3, atol=1e-4, max_rel_l2=1e-5, max_trajectory_rel_l2=1e-4),
    "fp16": Thresholds(rtol=2e-2, atol=5e-2, max_rel_l2=1e-2, max_trajectory_rel_l2=2e-2),
    "bf16": Thresholds(rtol=1e-1, atol=0.5, max_rel_l2=1e-1, max_trajectory_rel_l2=0.2),
    "fp8": Thresholds(rtol=0.25, atol=1.0, max_rel_l2=0.15, max_trajectory_rel_l2=0.3),
}


def diff_metrics(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float) -> dict[str, Any]:
    """Metrics of `actual` against `expected` (the reference)."""
    from polygraphy.comparator import IterationResult
    from polygraphy.comparator.compare import SimpleCompareFunc
    from polygraphy.logger import G_LOGGER

    G_LOGGER.module_severity = G_LOGGER.CRITICAL
    a, e = actual.astype(np.float32), expected.astype(np.float32)
    verdict = SimpleCompareFunc(rtol=rtol, atol=atol, check_error_stat="elemwise")(
        IterationResult({"t": a}, runner_name="artifact"), IterationResult({"t": e}, runner_name="reference"))["t"]
    a64, e64 = a.astype(np.float64).ravel(), e.astype(np.float64).ravel()
    diff = np.abs(a64 - e64)
    norm_e = float(np.linalg.norm(e64))
    return {
        "max_abs": verdict.max_absdiff,
        "mean_abs": verdict.mean_absdiff,
        "median_abs": verdict.median_absdiff,
        "max_rel": verdict.max_reldiff,
        "rel_l2": float(np.linalg.norm(a64 - e64)) / max(norm_e, 1e-30),
        "cosine": float(a64 @ e64) / max(float(np.linalg.norm(a64)) * norm_e, 1e-30),
        "outside_tolerance": float(np.mean(diff > atol + rtol * np.abs(e64))),
        "within_tolerance": bool(verdict),
    }


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Peak signal-to-noise ratio of two images (uint8 by default; `peak`: the range of other values), in dB (inf
    when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(peak**2 / mse)
