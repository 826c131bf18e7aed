"""The served pipeline against a real Triton Inference Server on the CPU: the tritonserver of the nvidia-pytriton
wheel (ptdit-serve setup), the tiny pipeline on ONNX Runtime, loopback ports picked by the tests."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import re
import select
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from ptdit.contract.errors import Failure, InputError
from runtime.pipeline.folder import load_pipeline
from runtime.serve import protocol
from runtime.serve.client import generate
from runtime.serve.environment import default_env_dir, find_server, setup
from runtime.serve.repository import ServeOptions, config_pbtxt, write_repository
from runtime.serve.server import LocalServer, free_ports

ROOT = Path(__file__).resolve().parents[2]
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow  # starts a server

STEPS = 2  # each request: a few tenths of a second on the tiny pipeline


def cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "runtime.cli.serve", *args], cwd=ROOT, capture_output=True, text=True,
                          **kwargs)


@pytest.fixture(scope="module")
def triton():
    """ptdit-serve setup's environment (made here on a fresh machine: a venv, pip install of two pinned wheels)."""
    return setup(default_env_dir(), progress=lambda line: None)


@pytest.fixture(scope="module")
def folder(pipelines) -> Path:
    return pipelines[256]


@pytest.fixture(scope="module")
def server(triton, folder, tmp_path_factory):
    """Two instances (two processes), a queue long enough for the concurrency test."""
    repo = write_repository(folder, tmp_path_factory.mktemp("serve") / "repo",
                            ServeOptions(instances=2, max_queue_size=32))
    with LocalServer(triton, repo, free_ports(), log=repo.parent / "server.log") as local:
        yield local


def reference(folder: Path, seed: int, prompt: str = "a red fox in the snow") -> np.ndarray:
    from runtime import PTDiTPipeline

    with PTDiTPipeline.from_folder(folder, backend="onnxruntime", device="cpu") as pipe:
        return np.asarray(pipe(prompt, num_inference_steps=STEPS, seed=seed).images[0])


def metric(server: LocalServer, name: str, model: str = protocol.MODEL) -> float:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    found = re.search(rf'^{name}{{model="{model}",version="1"}} (\S+)$', text, re.M)
    assert found, f"{name} not in the metrics"
    return float(found.group(1))


def counted(server: LocalServer, expected: float, within_s: float = 10.0, model: str = protocol.MODEL) -> float:
    """The success count once it reaches `expected` (Triton updates it after the response is sent)."""
    deadline = time.monotonic() + within_s
    while (value := metric(server, "nv_inference_request_success", model)) < expected and \
            time.monotonic() < deadline:
        time.sleep(0.2)
    return value


def infer(server: LocalServer, **values) -> object:
    """A raw request: values as (wire type, numpy array) per input."""
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, (wire, array) in values.items():
        tensor = grpcclient.InferInput(name, list(array.shape), wire)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    try:
        return client.infer(protocol.MODEL, inputs, client_timeout=60)
    finally:
        client.close()


def test_the_config_is_valid_for_triton(folder):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    for options in (ServeOptions(), ServeOptions("onnxruntime", "cuda", 2), ServeOptions(queue_timeout_s=1.5)):
        config = text_format.Parse(config_pbtxt(load_pipeline(folder), options), model_config_pb2.ModelConfig())
        assert [i.name for i in config.input] == [t.name for t in protocol.INPUTS]
        assert list(config.output[0].dims) == [-1, -1, 3]  # the folder's size, or any other with binning
        assert config.instance_group[0].count == options.instances
        assert config.dynamic_batching.default_queue_policy.max_queue_size == options.max_queue_size
        assert config.dynamic_batching.default_queue_policy.default_timeout_microseconds == \
            int(options.queue_timeout_s * 1e6)
        assert config.parameters["pipeline"].string_value == folder.name


def test_health_and_readiness(server):
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{protocol.MODEL}/ready"):
        with urllib.request.urlopen(f"http://{server.http_url}{path}", timeout=10) as answer:
            assert answer.status == 200
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and client.is_model_ready(protocol.MODEL)
    client.close()


def test_one_request_gives_the_png_ptdit_run_gives(server, folder, tmp_path):
    local, served = tmp_path / "local.png", tmp_path / "served.png"
    args = ["--prompt", "a red fox in the snow", "--seed", "3", "--steps", str(STEPS)]
    done = subprocess.run([sys.executable, "-m", "runtime", str(folder), *args, "--out", str(local)], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run([sys.executable, "-m", "runtime", "--server", server.grpc_url, *args, "--out",
                           str(served)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert served.read_bytes() == local.read_bytes()
    assert "(on the server)" in done.stderr


def test_sixteen_concurrent_requests_are_all_answered_deterministically(server, folder):
    seeds = [i % 4 for i in range(16)]
    expected = {seed: reference(folder, seed) for seed in set(seeds)}
    before = metric(server, "nv_inference_request_success")
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda s: generate(server.grpc_url, "a red fox in the snow", seed=s, steps=STEPS,
                                                   timeout_s=120), seeds))
    assert time.monotonic() - start < 120
    assert len(results) == 16
    for seed, result in zip(seeds, results):
        assert np.array_equal(result.pixels, expected[seed]), f"seed {seed}"
        assert set(result.timings) == set(protocol.TIMINGS) and result.timings["sample"] > 0
    assert not np.array_equal(expected[0], expected[1])
    assert counted(server, before + 16) == before + 16


@pytest.mark.parametrize("values, message", [
    ({"prompt": ("BYTES", np.array([b"a fox"], dtype=object)), "seed": ("FP32", np.array([1.0], np.float32))},
     "data-type is 'FP32', but model 'ptdit' expects 'INT64'"),
    ({"seed": ("INT64", np.array([1], np.int64))}, "prompt is missing: send the text to draw"),
    ({"prompt": ("BYTES", np.array([b"a fox"], dtype=object)), "steps": ("INT32", np.array([0], np.int32))},
     "steps must be an integer in [1, 1000], got 0"),
    ({"prompt": ("BYTES", np.array([b"a" * 100_000], dtype=object))}, "100000 bytes; the server takes at most"),
    ({"prompt": ("BYTES", np.array([b"\xff\xfe"], dtype=object))}, "not UTF-8"),
    ({"prompt": ("BYTES", np.array([b"a", b"b"], dtype=object))}, "shape"),
], ids=["wrong-type", "no-prompt", "steps-0", "100kB-prompt", "not-utf8", "two-prompts"])
def test_a_bad_request_gets_an_error_and_the_server_serves_the_next(server, values, message):
    with pytest.raises(InferenceServerException, match=re.escape(message)):
        infer(server, **values)
    assert server.ready()
    assert generate(server.grpc_url, "a fox", steps=1, timeout_s=60).pixels.shape == (256, 256, 3)


def test_a_request_may_ask_for_step_caching_and_gets_the_pipelines_image(server, folder):
    from runtime import PTDiTPipeline

    with PTDiTPipeline.from_folder(folder, backend="onnxruntime", device="cpu") as pipe:
        local = pipe("a red fox in the snow", num_inference_steps=STEPS, seed=2, cache="every:2")
    served = generate(server.grpc_url, "a red fox in the snow", seed=2, steps=STEPS, cache="every:2", timeout_s=120)
    assert np.array_equal(served.pixels, np.asarray(local.images[0]))
    assert served.transformer_calls == local.transformer_calls == (STEPS + 1) // 2
    assert generate(server.grpc_url, "a fox", seed=2, steps=STEPS, timeout_s=120).transformer_calls == STEPS


@pytest.mark.parametrize("cache, message", [
    (b"every:0", "cache='every:0': N of every:N is a whole number"), (b"sometimes", "is not a cache method"),
    (b"default", "needs this artifact's change curve, and pipeline has no calibration: run ptdit-cache calibrate"),
])
def test_a_bad_cache_request_is_refused_and_the_server_serves_the_next(server, cache, message):
    with pytest.raises(InferenceServerException, match=re.escape(message)):
        infer(server, prompt=("BYTES", np.array([b"a fox"], dtype=object)), cache=("BYTES", np.array([cache], object)))
    assert generate(server.grpc_url, "a fox", steps=2, cache="every:2", timeout_s=60).transformer_calls == 1


def one_of(server: LocalServer, seed: int) -> str:
    """One 30-step request: "answered", or the error it got."""
    try:
        generate(server.grpc_url, "a fox", seed=seed, steps=30, timeout_s=120)
        return "answered"
    except Exception as e:  # noqa: BLE001 - the answer is what is tested
        return str(e)


def test_a_full_queue_rejects_cleanly_and_the_server_stays_up(triton, folder, tmp_path):
    repo = write_repository(folder, tmp_path / "repo", ServeOptions(instances=1, max_queue_size=1))
    with LocalServer(triton, repo, free_ports(), log=tmp_path / "server.log") as local:
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda seed: one_of(local, seed), range(8)))
        assert time.monotonic() - start < 120
        rejected = [o for o in outcomes if o != "answered"]
        assert 2 <= outcomes.count("answered") < 8, outcomes
        assert all("Exceeds maximum queue size" in o for o in rejected), rejected
        assert counted(local, outcomes.count("answered")) == outcomes.count("answered")
        assert generate(local.grpc_url, "a fox", steps=1, timeout_s=60).pixels.shape == (256, 256, 3)
    repo = write_repository(folder, tmp_path / "timed",
                            ServeOptions(instances=1, max_queue_size=8, queue_timeout_s=0.3))
    with LocalServer(triton, repo, free_ports(), log=tmp_path / "timed.log") as local:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            outcomes = list(pool.map(lambda seed: one_of(local, seed), range(4)))
        assert 1 <= outcomes.count("answered") < 4, outcomes
        assert all("Request timeout expired" in o for o in outcomes if o != "answered"), outcomes


def test_a_server_that_cannot_start_says_why_in_one_line(triton, folder, tmp_path):
    repo = write_repository(folder, tmp_path / "repo", ServeOptions())
    ports = free_ports()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports.grpc))
        taken.listen()
        with pytest.raises(Exception, match=rf"port {ports.grpc} \(grpc\) on 127.0.0.1 is taken: pass --grpc-port"):
            LocalServer(triton, repo, ports).start()
    (tmp_path / "empty").mkdir()
    no_backend = dataclasses.replace(triton, backend_dir=tmp_path / "empty")
    start = time.monotonic()
    with pytest.raises(Exception, match="unable to find backend library for backend 'python'") as failure:
        LocalServer(no_backend, repo, free_ports(), log=tmp_path / "log").start()
    assert time.monotonic() - start < 60 and "\n" not in str(failure.value)


def test_a_model_that_fails_to_load_names_the_reason(triton, folder, tmp_path):
    repo = write_repository(folder, tmp_path / "repo", ServeOptions())
    transformer = next((repo / protocol.MODEL / "1" / "pipeline").glob("ptdit-*.onnx"))
    transformer.unlink()
    transformer.write_bytes(b"not an onnx")  # a new file, not the hard-linked original
    reason = r"Failed to create instance: InputError: .*fp16.onnx does not match pipeline.json \(sha256 differs\)"
    with pytest.raises(Exception, match=reason) as failure:
        LocalServer(triton, repo, free_ports(), log=tmp_path / "log").start()
    assert "\n" not in str(failure.value) and "At:" not in str(failure.value)


def test_ptdit_serve_run_stops_on_sigterm_after_the_requests_in_flight(triton, folder, tmp_path):
    ports = free_ports()
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli.serve", "run", str(folder), "--http-port",
                                str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics),
                                "--env", str(default_env_dir())], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "ptdit-serve run printed nothing in 120 s"
        line = process.stdout.readline()
        assert line.startswith(f"serving {protocol.MODEL}: http 127.0.0.1:{ports.http}  grpc 127.0.0.1:{ports.grpc}")
        server = LocalServer(triton, tmp_path, ports)  # for its addresses only: it is not started
        with concurrent.futures.ThreadPoolExecutor(3) as pool:  # about a second each
            running = [pool.submit(generate, server.grpc_url, "a fox", seed=s, steps=100, timeout_s=120)
                       for s in range(3)]
            deadline = time.monotonic() + 60  # one request running, the others queued behind it: all in flight
            while metric(server, "nv_inference_pending_request_count") < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert metric(server, "nv_inference_pending_request_count") >= 1
            process.send_signal(signal.SIGTERM)
            assert [r.result().pixels.shape for r in running] == [(256, 256, 3)] * 3
        assert process.wait(90) == 0
    finally:
        process.kill()
    stderr = process.stderr.read()
    assert "stopped (tritonserver exit code 0)" in stderr
    assert not list(tmp_path.glob("ptdit-serve-*")) and not list(tmp_path.glob("tritonserver-*.log"))


@pytest.mark.parametrize("args, message", [
    (["--backend", "tensorrt"], "ptdit-serve repository: error: --backend tensorrt runs on the GPU: pass --device "
                                "cuda"),
    (["--backend", "tensorrt", "--device", "cuda"], "ptdit-serve repository: error: no plan of"),
    (["--instances", "0"], "Invalid value for '--instances': '0' is not an integer in [1, 64]"),
])
def test_repository_refusals_leave_nothing(folder, tmp_path, args, message):
    done = cli("repository", str(folder), "--out", str(tmp_path / "repo"), *args)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr
    assert not (tmp_path / "repo").exists()


def test_a_folder_that_is_not_a_pipeline_is_refused(tmp_path):
    (tmp_path / "junk").mkdir()
    done = cli("repository", str(tmp_path / "junk"), "--out", str(tmp_path / "repo"))
    assert done.returncode == 2 and "pipeline.json" in done.stderr
    assert not (tmp_path / "repo").exists()


def test_no_server_anywhere_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(Exception, match="no Triton Inference Server: run ptdit-serve setup"):
        find_server(tmp_path / "no-env")


def test_a_served_folder_of_two_sizes_draws_the_size_asked_for(triton, sized_pipeline, tmp_path):
    """height and width go to the served pipeline as to ptdit-run: the PNG of ptdit-run --server --height 720
    --width 1280 is the local one, byte for byte (drawn at the folder's 16:9 size, resized and cropped)."""
    from runtime.serve.repository import component_models

    transformers = {name for name in component_models(load_pipeline(sized_pipeline)).values() if "transformer" in name}
    assert transformers == {"transformer", "transformer_768x1408"}  # the components layout: a model per size
    repo = write_repository(sized_pipeline, tmp_path / "repo", ServeOptions())
    local, served = tmp_path / "local.png", tmp_path / "served.png"
    args = ["--prompt", "a fox", "--seed", "2", "--steps", "1", "--height", "720", "--width", "1280"]
    done = subprocess.run([sys.executable, "-m", "runtime", str(sized_pipeline), *args, "--out", str(local)],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with LocalServer(triton, repo, free_ports(), log=tmp_path / "server.log") as server:
        tall = generate(server.grpc_url, "a fox", steps=1, height=1408, width=768, timeout_s=120)
        assert tall.pixels.shape == (1408, 768, 3)
        done = subprocess.run([sys.executable, "-m", "runtime", "--server", server.grpc_url, *args, "--out",
                               str(served)], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with pytest.raises(InputError, match="1280x720 is not a size of this pipeline"):
            generate(server.grpc_url, "a fox", steps=1, height=720, width=1280, use_resolution_binning=False)
    assert served.read_bytes() == local.read_bytes()


def test_the_components_layout_drives_component_models_and_draws_the_same_image(triton, folder, tmp_path):
    """Each component a Triton model of its own, called by `ptdit` (business-logic scripting): on the CPU the
    components are Python-backend ONNX Runtime models; the GPU layout makes them tensorrt_plan models."""
    repo = write_repository(folder, tmp_path / "repo", ServeOptions(layout="components"))
    assert sorted(p.name for p in repo.iterdir()) == ["ptdit", "text_encoder", "transformer", "vae_32x32"]
    assert not list((repo / protocol.MODEL / "1" / "pipeline").glob("*.onnx"))
    with LocalServer(triton, repo, free_ports(), log=tmp_path / "server.log") as local:
        assert np.array_equal(generate(local.grpc_url, "a red fox in the snow", seed=3, steps=STEPS).pixels,
                              reference(folder, 3))
        # one encode (the negative prompt is stored), one transformer call per step (both halves of the guidance
        # in one batch), one decoder call for the one tile at 256
        assert counted(local, STEPS, model="transformer") == STEPS
        assert metric(local, "nv_inference_request_success", "text_encoder") == 1
        assert metric(local, "nv_inference_request_success", "vae_32x32") == 1
        cached = generate(local.grpc_url, "a red fox in the snow", seed=3, steps=STEPS, cache="every:2")
        assert cached.transformer_calls == (STEPS + 1) // 2
        assert counted(local, STEPS + cached.transformer_calls, model="transformer") == STEPS + cached.transformer_calls
        with pytest.raises(InferenceServerException, match="steps must be an integer"):
            infer(local, prompt=("BYTES", np.array([b"a fox"], dtype=object)), steps=("INT32", np.array([0], np.int32)))
        assert generate(local.grpc_url, "a fox", steps=1, timeout_s=60).pixels.shape == (256, 256, 3)


def test_the_tensorrt_repository_makes_every_component_a_plan_model_on_every_gpu(folder, tmp_path):
    """The GPU layout, checked against Triton's schema (this machine's server has no TensorRT backend and no GPU:
    it cannot load these; plans of any bytes stand in for ptdit-build's)."""
    import shutil

    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from conftest import plan_manifest_for
    from ptdit.contract.manifests import write_manifest

    shutil.copytree(folder, tmp_path / "p")
    for onnx in (tmp_path / "p").glob("*.onnx"):
        plan = onnx.with_name(f"{onnx.stem}-sm90-trt10.13.plan")
        plan.write_bytes(onnx.stem.encode())
        write_manifest(plan.with_suffix(".json"), plan_manifest_for(onnx, plan))
    repo = write_repository(tmp_path / "p", tmp_path / "repo", ServeOptions("tensorrt", "cuda", instances=2))
    configs = {}
    for model in sorted(repo.iterdir()):
        configs[model.name] = text_format.Parse((model / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
        assert configs[model.name].instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU
        assert configs[model.name].instance_group[0].count == 2
    assert sorted(configs) == ["ptdit", "text_encoder", "transformer", "vae_32x32"]
    for name in ("text_encoder", "transformer", "vae_32x32"):
        assert configs[name].platform == "tensorrt_plan"
        assert (repo / name / "1" / "model.plan").read_bytes().endswith(b"fp16") or \
            (repo / name / "1" / "model.plan").read_bytes().endswith(b"fp32")
    assert configs["ptdit"].parameters["layout"].string_value == "components"
    kept = sorted(p.suffix for p in (repo / protocol.MODEL / "1" / "pipeline").iterdir())
    assert ".onnx" not in kept and ".plan" not in kept
    plan = next((tmp_path / "p").glob("ptdit-*.plan"))
    onnx = next((tmp_path / "p").glob("ptdit-*.onnx"))
    for kind, message in (({"target": "rtx"}, "is a TensorRT-RTX plan, which Triton's tensorrt_plan backend does not "
                                              "run"),
                          ({"strip_plan": True}, "was built with --strip-plan")):
        write_manifest(plan.with_suffix(".json"), plan_manifest_for(onnx, plan, **kind))
        with pytest.raises(Exception, match=message):
            write_repository(tmp_path / "p", tmp_path / "refused", ServeOptions("tensorrt", "cuda"))
        assert not (tmp_path / "refused").exists()


def test_ptdit_bench_serve_reports_every_concurrency_and_the_overhead(triton, folder):
    import json

    done = subprocess.run([sys.executable, "-c", "from bench.cli import main; main()", "serve", "--folder",
                           str(folder),
                           "--concurrency", "2", "--requests", "2", "--steps", "1", "--json"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["serve"]
    assert [r["clients"] for r in data["served"]] == [1, 2]  # 1 always: the overhead is measured there
    assert all(r["requests"] == 2 and r["rps"] > 0 and r["p95_ms"] >= r["p50_ms"] > 0 for r in data["served"])
    assert data["in_process"]["requests"] == 2
    assert data["overhead_at_1"] == round(data["served"][0]["p50_ms"] / data["in_process"]["p50_ms"] - 1, 4)
    assert "| in-process (ptdit-run's pipeline) | 2 |" in done.stderr and "Server overhead at 1 client" in done.stderr


def test_setup_refuses_a_folder_that_is_not_its_own_and_run_refuses_options_a_repository_has(folder, tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    done = cli("setup", "--env", str(tmp_path / "mine"))
    assert done.returncode == 2 and "exists and is not a server environment" in done.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    repo = write_repository(folder, tmp_path / "repo", ServeOptions())
    done = cli("run", str(repo), "--instances", "2", "--max-queue-size", "4")
    assert done.returncode == 2
    assert "is a repository, whose config says how it serves: drop --instances, --max-queue-size" in done.stderr
    (tmp_path / "tritonserver").write_text("not a program")
    done = cli("run", str(repo), "--tritonserver", str(tmp_path / "tritonserver"))
    assert done.returncode == 2 and "is not an executable tritonserver" in done.stderr


def serve_process(folder: Path, ports, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime.cli.serve", "run", str(folder), "--http-port",
                             str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics),
                             "--env", str(default_env_dir())], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})


def tritonservers_on(port: int) -> list[str]:
    """The tritonserver processes (the binary, or a stand-in script run by Python) serving gRPC on `port`; not
    ptdit-serve itself, whose own command line may name a tritonserver (--env, --tritonserver)."""
    listing = subprocess.run(["pgrep", "-af", "tritonserver"], capture_output=True, text=True).stdout
    return [line for line in listing.splitlines() if f"--grpc-port {port}" in line
            and any(word.endswith("/tritonserver") for word in line.split()[1:3])]


def test_a_sigterm_while_the_models_load_leaves_no_server(folder, tmp_path):
    """A stand-in tritonserver that never becomes ready: the signal always comes during the start."""
    slow = tmp_path / "bin" / "tritonserver"
    slow.parent.mkdir()
    slow.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    slow.chmod(0o755)
    ports = free_ports()
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli.serve", "run", str(folder), "--grpc-port",
                                str(ports.grpc), "--http-port", str(ports.http), "--metrics-port", str(ports.metrics),
                                "--tritonserver", str(slow)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        ready, _, _ = select.select([process.stderr], [], [], 120)
        assert ready and "starting" in process.stderr.readline()
        deadline = time.monotonic() + 30
        while not tritonservers_on(ports.grpc) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert tritonservers_on(ports.grpc), "the stand-in server did not start"
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 143
    finally:
        process.kill()
    assert "ptdit-serve run: error: terminated" in process.stderr.read()
    assert tritonservers_on(ports.grpc) == [] and not list(tmp_path.glob("ptdit-serve-*"))
    assert not list(tmp_path.glob("tritonserver-*.log"))  # no empty log of a server that never served


def test_a_server_that_dies_while_serving_ends_the_command_with_one_line(triton, folder, tmp_path):
    ports = free_ports()
    process = serve_process(folder, ports, tmp_path)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready and process.stdout.readline().startswith("serving")
        (server,) = tritonservers_on(ports.grpc)
        os.kill(int(server.split()[0]), signal.SIGKILL)
        assert process.wait(60) == 1
    finally:
        process.kill()
    error = [line for line in process.stderr.read().splitlines() if "error" in line]
    assert len(error) == 1 and "tritonserver exited on its own with code -9" in error[0]
    assert not list(tmp_path.glob("ptdit-serve-*"))


def test_an_environment_that_lost_its_server_or_belongs_to_another_checkout_is_refused(tmp_path):
    from runtime.serve.environment import MARKER, PTH

    env = tmp_path / "env"
    site = env / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"
    binary = site / "pytriton" / "tritonserver" / "bin" / "tritonserver"
    binary.parent.mkdir(parents=True)
    (env / MARKER).write_text("{}")
    with pytest.raises(Exception, match="has no tritonserver any more: run ptdit-serve setup --force"):
        find_server(env)
    binary.write_text("")
    (site / PTH).write_text("/somewhere/else\n")
    with pytest.raises(Exception, match=r"was set up for another checkout or environment \(its ptdit-main-env.pth "
                                        r"lists /somewhere/else\): run ptdit-serve setup --env .* --force"):
        find_server(env)


def test_a_server_never_ready_is_stopped_after_the_timeout(folder, tmp_path):
    slow = tmp_path / "tritonserver"
    slow.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    slow.chmod(0o755)
    ports = free_ports()
    local = LocalServer(find_server(tritonserver=slow), tmp_path, ports, log=tmp_path / "log")
    with pytest.raises(Exception, match="tritonserver was not ready after 2 s"):
        local.start(timeout_s=2)
    assert local.process is None and tritonservers_on(ports.grpc) == []


def test_ptdit_run_server_refusals_before_any_request(tmp_path):
    out = tmp_path / "x.png"
    port = free_ports().grpc
    run = [sys.executable, "-m", "runtime", "--server", f"127.0.0.1:{port}", "--prompt", "a fox", "--out", str(out)]
    done = subprocess.run(run + ["--shift", "2"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--shift applies to a local run" in done.stderr
    done = subprocess.run(run, cwd=ROOT, capture_output=True, text=True)  # nothing listens there
    assert done.returncode == 2 and f"no server answers at 127.0.0.1:{port}: start one with ptdit-serve run" in \
        done.stderr
    done = subprocess.run(run[:3] + ["some.onnx"] + run[3:], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2 and "--server takes the place of ARTIFACT" in done.stderr
    assert not out.exists()
    # addresses gRPC would take for names to resolve (and log its own lines about): refused in one line
    for address, why in (("", "is empty"), ("localhost", "has no port"),
                         ("localhost:99999", "has port 99999, outside 1-65535"), ("local host:8001", "holds spaces"),
                         ("http://localhost:8001", "is not HOST:PORT")):
        done = subprocess.run(run[:4] + [address] + run[5:], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            f"ptdit-run: error: the server address {address!r} {why}: pass the gRPC address of ptdit-serve run as "
            f"HOST:PORT, e.g. localhost:8001"], done.stderr
    assert not out.exists()


def test_ptdit_serve_refuses_one_port_twice_and_a_file_for_a_folder_before_any_start(folder, tmp_path):
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    done = cli("run", str(folder), "--http-port", "9000", "--grpc-port", "9000", "--metrics-port", "9002", env=env)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "ptdit-serve run: error: --http-port and --grpc-port are both 9000: the HTTP, gRPC and metrics endpoints "
        "each need a port of their own"], done.stderr
    onnx = folder / "ptdit-tiny-256-b2-fp16.onnx"
    for command in (["run", str(onnx)], ["repository", str(onnx), "--out", str(tmp_path / "repo")]):
        done = cli(*command, env=env)
        assert done.returncode == 2 and done.stderr.strip().splitlines() == [
            f"ptdit-serve {command[0]}: error: {onnx} is a transformer ONNX, not a pipeline folder: pass a folder "
            f"written by ptdit-export --pipeline (the folder that holds pipeline.json)"], done.stderr
    assert not (tmp_path / "repo").exists() and not list(tmp_path.iterdir())


def test_a_server_stopped_before_it_is_ready_leaves_no_log(tmp_path, monkeypatch):
    """A Ctrl-C while the models load: the log of our own, empty or not, is named by no error, so it goes too."""
    import tempfile

    slow = tmp_path / "bin" / "tritonserver"
    slow.parent.mkdir()
    slow.write_text(f"#!{sys.executable}\nimport time\ntime.sleep(300)\n")
    slow.chmod(0o755)
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    local = LocalServer(find_server(tritonserver=slow), tmp_path, free_ports())

    def interrupted() -> bool:
        raise KeyboardInterrupt

    monkeypatch.setattr(local, "ready", interrupted)
    with pytest.raises(KeyboardInterrupt):
        local.start(timeout_s=30)
    assert local.process is None and list(logs.iterdir()) == []


def test_a_log_an_error_names_is_kept_whatever_the_server_exits_with(tmp_path, monkeypatch):
    """A server never ready in time is stopped (SIGTERM; it exits 0) and the Failure names its log: the log stays,
    and still holds what the server wrote."""
    import tempfile

    slow = tmp_path / "bin" / "tritonserver"
    slow.parent.mkdir()
    slow.write_text(f"#!{sys.executable}\nimport signal, sys, time\nprint('loading models', flush=True)\n"
                    f"signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\ntime.sleep(300)\n")
    slow.chmod(0o755)
    logs = tmp_path / "tmp"
    logs.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(logs))
    local = LocalServer(find_server(tritonserver=slow), tmp_path, free_ports())
    monkeypatch.setattr(local, "ready", lambda: False)
    with pytest.raises(Failure, match=r"tritonserver was not ready after 1 s \(its log: (.*)\)") as error:
        local.start(timeout_s=1)
    named = Path(re.search(r"its log: (.*)\)", str(error.value))[1])
    assert local.process is None and named.parent == logs and "loading models" in named.read_text()


def test_a_repository_copies_onnx_weights_files_which_onnx_runtime_refuses_hard_linked(sized_pipeline, tmp_path):
    """After a repository of the folder is written, the folder's graphs still load in ONNX Runtime (a weights file
    with a second hard link is refused by it as a possible attack)."""
    from runtime.session import open_session

    write_repository(sized_pipeline, tmp_path / "repo", ServeOptions())
    write_repository(sized_pipeline, tmp_path / "linked", ServeOptions(), symlinks=True)
    for weights in sized_pipeline.glob("*.onnx.data"):
        assert weights.stat().st_nlink == 1
    for onnx_path in (sized_pipeline, tmp_path / "repo" / protocol.MODEL / "1" / "pipeline"):
        [transformer] = [p for p in onnx_path.glob("ptdit-tiny-768x1408-*.onnx")]
        with open_session(str(transformer), "onnxruntime", "cpu") as session:
            assert session.artifact.spec("latent").shape[-2:] == (176, 96)
