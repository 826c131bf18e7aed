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


@needs_gpu
def test_cuda_device_buffers_and_pinned_round_trip():
    import numpy as np

    from runtime import cuda

    device = cuda.current_device()
    assert device.name and "." in device.compute_capability
    stream = cuda.Stream()
    src = cuda.PinnedArray((3, 5), np.dtype(np.float32))
    dst = cuda.PinnedArray((3, 5), np.dtype(np.float32))
    a, b = cuda.DeviceBuffer(src.nbytes), cuda.DeviceBuffer(src.nbytes)
    src.array[:] = np.arange(15, dtype=np.float32).reshape(3, 5)
    stream.copy_to_device(a.ptr, src)
    stream.copy_on_device(b.ptr, a.ptr, src.nbytes)
    stream.copy_to_host(dst, b.ptr)
    stream.synchronize()
    np.testing.assert_array_equal(dst.array, src.array)
    for r in (a, b, src, dst, stream):
        r.close()


@needs_gpu
def test_cuda_graph_capture_replays_and_falls_back():
    import numpy as np

    from runtime import cuda

    stream = cuda.Stream()
    host = cuda.PinnedArray((1024,), np.dtype(np.float32))
    a, b = cuda.DeviceBuffer(host.nbytes), cuda.DeviceBuffer(host.nbytes)
    graph = cuda.GraphCapture(stream)

    def enqueue() -> bool:
        stream.copy_on_device(b.ptr, a.ptr, host.nbytes)
        return True

    assert graph.capture(enqueue)
    for value in (1.0, 2.0):  # the graph replays the copy from the same addresses
        host.array[:] = value
        stream.copy_to_device(a.ptr, host)
        graph.launch()
        host.array[:] = 0
        stream.copy_to_host(host, b.ptr)
        stream.synchronize()
        assert np.all(host.array == value)

    broken = cuda.GraphCapture(stream)

    def illegal_while_capturing() -> bool:
        stream.synchronize()
        return True

    assert not broken.capture(illegal_while_capturing)
    assert broken.failure
    stream.copy_to_device(a.ptr, host)  # the stream still works after the failed capture
    stream.synchronize()
    for r in (graph, a, b, host, stream):
        r.close()


@needs_gpu
@needs_tensorrt
def test_tensorrt_session_samples_like_onnxruntime(tmp_path):
    import numpy as np

    from runtime.sampler import Sampler, make_conditioning
    from runtime.session import open_session

    subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "256", "--out", str(tmp_path)],
                   check=True, cwd=ROOT)
    onnx_path = tmp_path / "ptdit-tiny-256-b2-fp16.onnx"
    built = subprocess.run([sys.executable, "-m", "engines", str(onnx_path), "--json"], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    plan = json.loads(built.stdout)["plan"]
    text = make_conditioning(200, 4096, random_seed=0)
    latents = {}
    for artifact in (plan, str(onnx_path)):
        session = open_session(artifact)
        latents[artifact] = Sampler(session, steps=4).sample(text).latent
        if artifact == plan:
            assert session.graph_captured and session.backend.endswith(", CUDA graph")  # type: ignore[attr-defined]
        session.close()
    rel = np.linalg.norm(latents[plan] - latents[str(onnx_path)]) / np.linalg.norm(latents[str(onnx_path)])
    assert rel < 2e-2


@needs_gpu
def test_gpu_benchmark_runs_on_tiny():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    from export.benchmarks import gpu_rows, gpu_table

    data = gpu_rows("tiny", (256,), compile_model=False, report=lambda line: None)
    assert {r["attention"] for r in data["rows"]} == {"proxy", "full"}
    assert all(r["eager_ms"] > 0 and 0 < r["eager_fraction_of_floor"] and r["peak_memory_bytes"] > 0 for r in data["rows"])
    assert "PT-DiT" in gpu_table(data)
