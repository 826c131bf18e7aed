"""Tests that need a CUDA GPU (and TensorRT where they say so). They skip cleanly elsewhere."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

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
needs_rtx = pytest.mark.skipif(importlib.util.find_spec("tensorrt_rtx") is None, reason="TensorRT-RTX is not installed")
RTX_GPUS = ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1")  # compute capabilities TensorRT-RTX runs on (not Hopper)


def gpu_compute_capability() -> tuple[str, str] | None:
    if gpu_count() == 0:
        return None
    from runtime.backends.tensorrt import cuda

    device = cuda.current_device()
    return device.name, device.compute_capability


def rtx_gpu_reason() -> str:
    found = gpu_compute_capability()
    if found is None:
        return "no CUDA GPU visible (cuda-python)"
    name, cc = found
    return f"{name} (compute capability {cc}) is not a TensorRT-RTX GPU ({', '.join(RTX_GPUS)})"


needs_rtx_gpu = pytest.mark.skipif((gpu_compute_capability() or ("", ""))[1] not in RTX_GPUS, reason=rtx_gpu_reason())


def export_tiny(directory: Path) -> Path:
    subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "256", "--out", str(directory)],
                   check=True, cwd=ROOT)
    return directory / "ptdit-tiny-256-b2-fp16.onnx"


def build(onnx_path: Path, *args: str) -> Path:
    result = subprocess.run([sys.executable, "-m", "engines", str(onnx_path), "--json", *args], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return Path(json.loads(result.stdout)["plan"])


def sample_rel_l2(plan: Path, onnx_path: Path, steps: int = 4) -> tuple[float, list[str]]:
    """Relative L2 between the latents of the plan and of the ONNX (ONNX Runtime), same seed and text; and the
    plan session's backend descriptions of two consecutive sessions."""
    import numpy as np

    from runtime.sampling.host_loop import Sampler
    from runtime.sampling.text import make_conditioning
    from runtime.session import open_session

    text = make_conditioning(200, 4096, random_seed=0)
    latents, backends = {}, []
    for artifact in (plan, onnx_path, plan):
        session = open_session(str(artifact))
        latents[artifact] = Sampler(session, steps=steps).sample(text).latent
        if artifact == plan:
            backends.append(session.backend)
        session.close()
    rel = np.linalg.norm(latents[plan] - latents[onnx_path]) / np.linalg.norm(latents[onnx_path])
    return float(rel), backends


@needs_gpu
@needs_tensorrt
def test_build_a_tiny_fp16_plan(tmp_path):
    onnx_path = export_tiny(tmp_path)
    result = subprocess.run([sys.executable, "-m", "engines", str(onnx_path), "--target", "tensorrt", "--json"],
                            cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    manifest = json.loads(Path(summary["manifest"]).read_text())
    onnx_manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    assert manifest["inputs"] == onnx_manifest["inputs"] and manifest["outputs"] == onnx_manifest["outputs"]
    assert manifest["precision"] == "fp16" and manifest["builder"]["strongly_typed"]
    assert manifest["builder"]["target"] == "tensorrt" and manifest["build"]["io_checked_from"] == "plan"
    again = subprocess.run([sys.executable, "-m", "engines", str(onnx_path), "--target", "tensorrt"], cwd=ROOT,
                           capture_output=True, text=True)
    assert again.returncode == 0 and "up to date" in again.stderr


@needs_gpu
def test_cuda_device_buffers_and_pinned_round_trip():
    import numpy as np

    from runtime.backends.tensorrt import cuda

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

    from runtime.backends.tensorrt import cuda

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
    onnx_path = export_tiny(tmp_path)
    rel, backends = sample_rel_l2(build(onnx_path, "--target", "tensorrt"), onnx_path)
    assert backends[0].endswith(", CUDA graph")
    assert rel < 2e-2  # the fp16 trajectory threshold of ptdit-diff


@needs_rtx_gpu
@needs_rtx
def test_rtx_plan_samples_like_onnxruntime_and_keeps_its_runtime_cache(tmp_path):
    """A TensorRT-RTX plan built ahead of time for this GPU, JIT-compiled at first use into the runtime cache
    next to the plan; the second session loads that cache."""
    onnx_path = export_tiny(tmp_path)
    plan = build(onnx_path, "--target", "rtx", "--compute-capability", "current")
    rel, backends = sample_rel_l2(plan, onnx_path)
    assert rel < 2e-2
    assert "tensorrt_rtx" in backends[0] and "(new)" in backends[0] and "(loaded)" in backends[1]
    assert list(tmp_path.glob(f"{plan.stem}.sm*.rtcache"))


@needs_gpu
@needs_rtx
def test_an_rtx_plan_for_other_gpus_is_refused_in_one_line(tmp_path):
    from ptdit.contract.errors import InputError
    from runtime.session import open_session

    found = gpu_compute_capability()
    assert found is not None
    name, cc = found
    other = "8.6" if cc != "8.6" else "8.9"
    plan = build(export_tiny(tmp_path), "--target", "rtx", "--compute-capability", other)
    with pytest.raises(InputError, match=f"built for compute capability {other}; this GPU is {name} \\({cc}\\)"):
        open_session(str(plan))


@needs_gpu
def test_gpu_benchmark_runs_on_tiny():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    from bench.gpu import gpu_rows, gpu_table

    data = gpu_rows("tiny", (256,), compile_model=False, report=lambda line: None)
    assert {r["attention"] for r in data["rows"]} == {"proxy", "full"}
    assert all(r["eager_ms"] > 0 and 0 < r["eager_fraction_of_floor"] and r["peak_memory_bytes"] > 0
               for r in data["rows"])
    assert "PT-DiT" in gpu_table(data)


def plan_latent(plan: Path, options: Any = None) -> Any:
    """The latent of a 2-step sampling run on a plan."""
    from runtime.sampling.host_loop import Sampler
    from runtime.sampling.text import make_conditioning
    from runtime.session import open_session

    session = open_session(str(plan), tensorrt=options)
    try:
        return Sampler(session, steps=2).sample(make_conditioning(200, 4096, random_seed=0)).latent
    finally:
        session.close()


@needs_gpu
@needs_tensorrt
def test_weightless_plans_are_refit_and_budgets_are_set(tmp_path):
    """--strip-plan plans are refit from their ONNX on load; --weight-streaming plans run under a budget; both
    sample what the plain plan samples."""
    import numpy as np

    from runtime.backends.tensorrt.flavour import TensorRTOptions

    onnx_path = export_tiny(tmp_path)
    plain = plan_latent(build(onnx_path, "--target", "tensorrt"))
    stripped = plan_latent(build(onnx_path, "--target", "tensorrt", "--strip-plan", "--force", "--out",
                                 str(tmp_path / "stripped")))
    streamed = plan_latent(build(onnx_path, "--target", "tensorrt", "--weight-streaming", "--force", "--out",
                                 str(tmp_path / "streamed")), TensorRTOptions(weight_budget=1 << 20))
    np.testing.assert_allclose(stripped, plain, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(streamed, plain, rtol=1e-3, atol=1e-3)


@needs_gpu
@needs_tensorrt
def test_device_inputs_wait_for_their_producer_stream(tmp_path):
    """Text features handed over as a CUDA tensor still being written on another stream: the session's copy
    waits for that stream, so the result equals the one from host inputs."""
    import numpy as np

    from runtime.session import open_session

    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    plan = build(export_tiny(tmp_path), "--target", "tensorrt")
    rng = np.random.default_rng(0)
    feeds = {"latent": rng.standard_normal((2, 4, 32, 32), dtype=np.float32),
             "timestep": np.full(2, 500.0, np.float32),
             "text_embeds": rng.standard_normal((2, 200, 4096), dtype=np.float32),
             "text_mask": np.ones((2, 200), np.int64)}
    session = open_session(str(plan))
    try:
        session.set_inputs(feeds)
        expected = session.run()["noise_pred"]
        side = torch.cuda.Stream()
        with torch.cuda.stream(side):
            busy = torch.randn(4096, 4096, device="cuda")
            for _ in range(8):  # queue work ahead of the copy, so that a session that did not wait reads too early
                busy = torch.tanh(busy @ busy)
            text = torch.from_numpy(feeds["text_embeds"]).cuda(non_blocking=True)
        session.set_inputs({"text_embeds": text})
        got = session.run()["noise_pred"]
    finally:
        session.close()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def plan_target_args() -> list[str]:
    """ptdit-build arguments for a plan this GPU runs: full TensorRT when installed, else TensorRT-RTX on its GPUs."""
    if importlib.util.find_spec("tensorrt") is not None:
        return ["--target", "tensorrt"]
    if importlib.util.find_spec("tensorrt_rtx") is not None and (gpu_compute_capability() or ("", ""))[1] in RTX_GPUS:
        return ["--target", "rtx", "--compute-capability", "current"]
    pytest.skip(f"no TensorRT builder for this GPU (tensorrt, or tensorrt_rtx on {', '.join(RTX_GPUS)})")


def export_tiny_step(directory: Path, res: int = 256) -> tuple[Path, Path]:
    """The noise-prediction graph and the step graph of --step, tiny fp16."""
    subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", str(res), "--step", "--out",
                    str(directory)], check=True, cwd=ROOT)
    return directory / f"ptdit-tiny-{res}-b2-fp16.onnx", directory / f"ptdit-tiny-{res}-b2-fp16-step.onnx"


@needs_gpu
@pytest.mark.parametrize("res", [256, 1024])
def test_step_plan_samples_like_the_noise_plan_and_moves_nothing_per_step(tmp_path, res):
    """The step engine with its latent on the device: after step 0 (the warm-up and the loop's one
    synchronisation), each step is one CUDA graph launch with no copy and no wait; one copy out at the end."""
    import numpy as np

    from runtime.sampling.host_loop import Sampler
    from runtime.sampling.step_sampler import StepSampler
    from runtime.sampling.text import make_conditioning
    from runtime.session import open_session

    args = plan_target_args()
    noise_plan, step_plan = (build(p, *args) for p in export_tiny_step(tmp_path, res))
    text = make_conditioning(200, 4096, random_seed=0)
    session = open_session(str(noise_plan))
    host = Sampler(session, steps=30).sample(text)
    session.close()
    session = open_session(str(step_plan))
    result = StepSampler(session, steps=30).sample(text)
    mode = session.loop_mode
    session.close()
    assert mode == "step loop, one CUDA graph per step parity"
    rel = np.linalg.norm(result.latent - host.latent) / np.linalg.norm(host.latent)
    assert rel < 2e-2  # two fp16 engines built apart: the fp16 trajectory threshold of ptdit-diff
    zero = {"to_device_bytes": 0, "from_device_bytes": 0, "syncs": 0}
    assert result.steps[0].transfers.to_dict() == {**zero, "syncs": 1}
    assert all(s.transfers.to_dict() == zero for s in result.steps[1:])
    assert result.finish.to_dict() == {"to_device_bytes": 0, "from_device_bytes": result.latent.nbytes, "syncs": 1}
    assert host.transfers()["per_step_after_first_max"]["syncs"] == 1


@needs_gpu
def test_loops_benchmark_row_on_plans(tmp_path):
    """The GPU benchmark row: step engine against the noise-prediction engine and the host loop, one run."""
    args = plan_target_args()
    plans = [build(p, *args) for p in export_tiny_step(tmp_path)]
    result = subprocess.run([sys.executable, "-m", "runtime.bench", "--loops", str(plans[0]), str(plans[1]),
                             "--loop-steps", "30", "--rounds", "6", "--json"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["loops"]
    assert row["host_loop_ms_per_step"] > 0 and row["step_loop_ms_per_step"] > 0 and row["step_over_host"] > 0
    assert row["step_loop_transfers"]["per_step_after_first_max"] == {"to_device_bytes": 0, "from_device_bytes": 0,
                                                                      "syncs": 0}
    print(result.stdout)


@needs_gpu
def test_pytorch_step_loop_keeps_the_latent_on_the_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    import numpy as np

    from runtime.sampling.host_loop import Sampler
    from runtime.sampling.step_sampler import StepSampler
    from runtime.sampling.text import make_conditioning
    from runtime.session import open_session

    noise, step = export_tiny_step(tmp_path)
    text = make_conditioning(200, 4096, random_seed=0)
    host_session, step_session = (open_session(str(p), "torch", "cuda") for p in (noise, step))
    host = Sampler(host_session, steps=30).sample(text)
    result = StepSampler(step_session, steps=30).sample(text)
    assert "cuda" in step_session.backend
    none = {"to_device_bytes": 0, "from_device_bytes": 0, "syncs": 0}
    assert all(s.transfers.to_dict() == none for s in result.steps)
    assert result.finish.syncs == 1 and result.finish.from_device_bytes == result.latent.nbytes
    assert np.linalg.norm(result.latent - host.latent) / np.linalg.norm(host.latent) < 1e-5
    host_session.close()
    step_session.close()


@needs_gpu
def test_pipeline_folder_on_tensorrt_draws_what_onnxruntime_draws(tmp_path):
    """Every component of a tiny pipeline built into the folder, then prompt to PNG on TensorRT."""
    import numpy as np

    from runtime import PTDiTPipeline
    from runtime.diff.metrics import psnr

    args = plan_target_args()
    subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "1024", "--pipeline", "--out",
                    str(tmp_path)], check=True, cwd=ROOT)
    folder = tmp_path / "ptdit-tiny-1024-pipeline"
    for onnx_path in sorted(folder.glob("*.onnx")):
        fp32 = ["--allow-fp32"] if "-fp32" in onnx_path.name else []
        build(onnx_path, *args, *fp32)
    images = {}
    for backend in ("tensorrt", "onnxruntime"):
        with PTDiTPipeline.from_folder(folder, backend) as pipe:
            images[backend] = np.asarray(pipe("a red fox", num_inference_steps=10, seed=0).images[0])
    assert images["tensorrt"].shape == (1024, 1024, 3) and images["tensorrt"].dtype == np.uint8
    assert psnr(images["tensorrt"], images["onnxruntime"]) > 30
