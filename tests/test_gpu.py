"""Tests that need a CUDA GPU (and TensorRT where they say so). They skip cleanly elsewhere."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.gpu


def gpu_count() -> int:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        return 0
    err, count = cudart.cudaGetDeviceCount()
    return int(count) if err == cudart.cudaError_t.cudaSuccess else 0


needs_gpu = pytest.mark.skipif(gpu_count() == 0, reason="no CUDA GPU visible (cuda-python)")
needs_tensorrt = pytest.mark.skipif(importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed")


@needs_gpu
@needs_tensorrt
def test_build_a_tiny_fp16_plan(tmp_path):
    subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "256", "--out", str(tmp_path)],
                   check=True, cwd=ROOT)
    onnx_path = tmp_path / "ptdit-tiny-256-b2-fp16.onnx"
    result = subprocess.run([sys.executable, "-m", "engines", str(onnx_path), "--json"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = json.loads(Path(summary["manifest"]).read_text())
    onnx_manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    assert manifest["inputs"] == onnx_manifest["inputs"] and manifest["outputs"] == onnx_manifest["outputs"]
    assert manifest["precision"] == "fp16" and manifest["tensorrt"]["strongly_typed"]
    again = subprocess.run([sys.executable, "-m", "engines", str(onnx_path)], cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 0 and "up to date" in again.stderr
