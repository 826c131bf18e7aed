"""The OpenAI-compatible front (ptdit-serve run --openai-port, ptdit-serve front) against a real tritonserver on
loopback, driven by the official `openai` client: the tiny pipeline on ONNX Runtime, on the CPU."""

from __future__ import annotations

import base64
import concurrent.futures
import io
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from runtime.serve import protocol
from runtime.serve.environment import default_env_dir, setup
from runtime.serve.openai_front import Front
from runtime.serve.repository import ServeOptions, write_repository
from runtime.serve.server import LocalServer, free_ports

ROOT = Path(__file__).resolve().parents[2]
openai = pytest.importorskip("openai")
pytest.importorskip("tritonclient.grpc")

pytestmark = pytest.mark.slow  # starts a server

STEPS = 2
PROMPT = "a red fox in the snow"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def folder(pipelines) -> Path:
    return pipelines[256]


@pytest.fixture(scope="module")
def server(folder, tmp_path_factory):
    triton = setup(default_env_dir(), progress=lambda line: None)
    repo = write_repository(folder, tmp_path_factory.mktemp("openai") / "repo",
                            ServeOptions(instances=2, max_queue_size=32))
    with LocalServer(triton, repo, free_ports(), log=repo.parent / "server.log") as local:
        yield local


@pytest.fixture(scope="module")
def front(server):
    with Front(server.grpc_url, request_timeout_s=120).start("127.0.0.1", free_port()) as running:
        yield running


@pytest.fixture(scope="module")
def client(front):
    with openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0, timeout=120) as made:
        yield made


def pixels(b64: str) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "PNG"
    return np.asarray(image)


def ptdit_run(folder: Path, seed: int, out: Path) -> np.ndarray:
    done = subprocess.run([sys.executable, "-m", "runtime", str(folder), "--prompt", PROMPT, "--seed", str(seed),
                           "--steps", str(STEPS), "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return np.asarray(Image.open(out))


def post(url: str, body: bytes, content_type: str = "application/json",
         path: str = "/v1/images/generations") -> tuple[int, dict, Any]:
    """A raw POST to the front at url: status, JSON body, headers."""
    request = urllib.request.Request(f"{url}{path}", data=body, method="POST",
                                     headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as answer:
            return answer.status, json.loads(answer.read()), answer.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def test_the_openai_client_gets_the_png_ptdit_run_writes_for_the_seed(client, folder, tmp_path):
    models = client.models.list()
    assert [m.id for m in models.data] == [folder.name]
    answer = client.images.generate(model=folder.name, prompt=PROMPT, size="256x256", response_format="b64_json",
                                    extra_body={"seed": 3, "num_inference_steps": STEPS})
    assert len(answer.data) == 1 and answer.created > 0
    assert np.array_equal(pixels(answer.data[0].b64_json), ptdit_run(folder, 3, tmp_path / "3.png"))


def test_n_images_come_from_seeds_seed_to_seed_plus_n_minus_one(client, folder, tmp_path):
    answer = client.images.generate(prompt=PROMPT, n=2, size="256x256",
                                    extra_body={"seed": 5, "num_inference_steps": STEPS})
    got = [pixels(image.b64_json) for image in answer.data]
    assert np.array_equal(got[0], ptdit_run(folder, 5, tmp_path / "5.png"))
    assert np.array_equal(got[1], ptdit_run(folder, 6, tmp_path / "6.png"))
    assert not np.array_equal(got[0], got[1])


@pytest.mark.parametrize("body, content_type, status, param, message", [
    ({"prompt": ""}, "application/json", 400, "prompt", "'prompt' is missing or empty"),
    ({"prompt": "a fox", "size": "512x512"}, "application/json", 400, "size", "'512x512' is not served: this model "
                                                                              "draws 256x256"),
    (b'{"prompt": "a fox", "guidance_scale": NaN}', "application/json", 400, "guidance_scale", "a finite number"),
    ({"prompt": "a fox", "num_inference_steps": 0}, "application/json", 400, "num_inference_steps",
     "num_inference_steps must be an integer in [1, 1000], got 0"),
    ({"prompt": "a" * 100_000}, "application/json", 400, "prompt", "100000 bytes; the server takes at most 4096"),
    ({"prompt": "a fox"}, "text/plain", 415, None, "the body must be application/json, got text/plain"),
    (b"{not json", "application/json", 400, None, "the body is not JSON"),
    ({"prompt": "a fox", "response_format": "url"}, "application/json", 400, "response_format", "keeps no files"),
    ({"prompt": "a fox", "n": 11}, "application/json", 400, "n", "'n' must be an integer in [1, 10]"),
    ({"prompt": "a fox", "n": 0}, "application/json", 400, "n", "'n' must be an integer in [1, 10], got 0"),
    ({"prompt": "a fox", "seed": 10**30}, "application/json", 400, "seed", "seed must be an integer in [0, 2^32 - 1]"),
    (b'{"prompt": "\\ud800"}', "application/json", 400, "prompt", "'prompt' is not valid Unicode text"),
    ({"prompt": "a" * 2_000_000}, "application/json", 413, None, "the body is over 1048576 bytes"),
    ({"prompt": "a fox", "seed": 1.5}, "application/json", 400, "seed", "'seed' must be an integer"),
    ({"prompt": "a fox", "model": "dall-e-3"}, "application/json", 404, "model", "'dall-e-3' is not served here"),
    ({"prompt": "a fox", "strength": 0.5}, "application/json", 400, "strength", "unknown field 'strength'"),
], ids=["empty-prompt", "unknown-size", "nan-guidance", "steps-0", "100kB-prompt", "content-type", "not-json",
        "url", "n-11", "n-0", "huge-seed", "lone-surrogate", "2MB-body", "float-seed", "other-model", "unknown-field"])
def test_a_bad_request_gets_openais_error_and_the_front_serves_the_next(front, client, body, content_type, status,
                                                                       param, message):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    code, answer, _ = post(front.url, raw, content_type)
    assert code == status
    assert set(answer["error"]) == {"message", "type", "param", "code"}
    assert answer["error"]["type"] == "invalid_request_error"
    assert answer["error"]["param"] == param and message in answer["error"]["message"]
    assert len(client.images.generate(prompt="a fox", extra_body={"num_inference_steps": 1}).data) == 1


def test_the_openai_client_raises_its_own_error_for_a_bad_request(client):
    with pytest.raises(openai.BadRequestError, match="num_inference_steps must be an integer in"):
        client.images.generate(prompt="a fox", extra_body={"num_inference_steps": 0})


def test_sixteen_concurrent_requests_are_all_answered_with_nothing_lost(client, server, folder):
    from runtime import PTDiTPipeline

    with PTDiTPipeline.from_folder(folder, backend="onnxruntime", device="cpu") as pipe:
        expected = {seed: np.asarray(pipe(PROMPT, num_inference_steps=STEPS, seed=seed).images[0])
                    for seed in range(4)}

    def one(seed: int) -> np.ndarray:
        answer = client.images.generate(prompt=PROMPT, size="256x256",
                                        extra_body={"seed": seed, "num_inference_steps": STEPS})
        return pixels(answer.data[0].b64_json)

    seeds = [i % 4 for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, seeds))
    assert len(results) == 16
    for seed, got in zip(seeds, results):
        assert np.array_equal(got, expected[seed]), f"seed {seed}"


def test_a_full_queue_is_503_with_retry_after_and_a_slow_triton_is_504(folder, tmp_path, server):
    triton = setup(default_env_dir(), progress=lambda line: None)
    repo = write_repository(folder, tmp_path / "repo", ServeOptions(instances=1, max_queue_size=1))
    body = json.dumps({"prompt": "a fox", "num_inference_steps": 30}).encode()
    with LocalServer(triton, repo, free_ports()) as small, \
            Front(small.grpc_url, request_timeout_s=120).start("127.0.0.1", free_port()) as busy:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda _: post(busy.url, body), range(6)))
        codes = sorted(code for code, _, _ in answers)
        assert codes.count(200) >= 2 and set(codes) <= {200, 503} and 503 in codes, codes
        for code, answer, headers in answers:
            if code == 503:
                assert headers["Retry-After"] == "1" and answer["error"]["code"] == "server_busy"
                assert answer["error"]["message"] == "the server is busy or not ready: Exceeds maximum queue size"
    with Front(server.grpc_url, request_timeout_s=0.05).start("127.0.0.1", free_port()) as hasty:
        code, answer, _ = post(hasty.url, json.dumps({"prompt": "a fox", "num_inference_steps": 200}).encode())
        assert code == 504 and answer["error"]["code"] == "timeout"
        assert "gave no answer in 0.05 s" in answer["error"]["message"]


def front_command(port: int, server_url: str, tmp_path: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "runtime.cli.serve", "front", "--server", server_url, "--port",
                             str(port)], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp_path)})


def test_the_front_without_triton_is_live_not_ready_answers_503_and_stops_on_sigterm(tmp_path):
    port, nothing = free_port(), f"127.0.0.1:{free_port()}"
    process = front_command(port, nothing, tmp_path)
    try:
        ready, _, _ = select.select([process.stdout], [], [], 60)
        assert ready and process.stdout.readline().startswith(f"serving the OpenAI API of {nothing}")
        url = f"http://127.0.0.1:{port}"
        with urllib.request.urlopen(f"{url}/health/live", timeout=10) as answer:
            assert answer.status == 200
        for path in ("/health/ready", "/v1/models"):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{url}{path}", timeout=30)
            assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
        code, answer, _ = post(url, b'{"prompt": "a fox"}')
        assert code == 503 and answer["error"]["code"] == "server_unavailable"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        process.kill()
    assert "ptdit-serve: stopped" in process.stderr.read()


def test_ptdit_serve_run_with_the_front_drains_both_on_sigterm_and_exits_0(folder, tmp_path):
    ports, port = free_ports(), free_port()
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli.serve", "run", str(folder), "--http-port",
                                str(ports.http), "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics),
                                "--openai-port", str(port), "--env", str(default_env_dir())], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        ready, _, _ = select.select([process.stdout], [], [], 120)
        assert ready, "ptdit-serve run printed nothing in 120 s"
        assert f"openai http://127.0.0.1:{port}/v1" in process.stdout.readline()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=120)

        def slow(seed: int) -> int:  # about a second each on the tiny pipeline
            answer = client.images.generate(prompt="a fox", extra_body={"seed": seed, "num_inference_steps": 100})
            return pixels(answer.data[0].b64_json).shape

        metrics = LocalServer(setup(default_env_dir(), progress=lambda line: None), tmp_path, ports).metrics_url
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            running = [pool.submit(slow, seed) for seed in range(3)]
            deadline = time.monotonic() + 60  # one running in Triton, two queued (pending counts those): all three
            while pending(metrics) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert pending(metrics) == 2
            process.send_signal(signal.SIGTERM)
            # the front stops listening at once (Triton, still serving the three, would otherwise queue a fourth)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/health/live", timeout=1).close()
                    time.sleep(0.05)
                except urllib.error.URLError:
                    break
            with pytest.raises(openai.APIConnectionError):
                client.images.generate(prompt="a fox", extra_body={"num_inference_steps": 1})
            assert pending(metrics) >= 1  # the front went first: Triton still holds what it was sent
            assert [r.result() for r in running] == [(256, 256, 3)] * 3
        assert process.wait(90) == 0
        with pytest.raises(openai.APIConnectionError):  # the front is gone with the server
            client.models.list()
    finally:
        process.kill()
    assert "stopped (tritonserver exit code 0)" in process.stderr.read()
    assert not list(tmp_path.glob("ptdit-serve-*")) and not list(tmp_path.glob("tritonserver-*.log"))


def pending(metrics_url: str) -> float:
    with urllib.request.urlopen(metrics_url, timeout=10) as answer:
        text = answer.read().decode()
    line = next(line for line in text.splitlines()
                if line.startswith(f'nv_inference_pending_request_count{{model="{protocol.MODEL}"'))
    return float(line.split()[-1])


def test_run_refuses_an_openai_port_that_is_one_of_the_servers(folder):
    done = subprocess.run([sys.executable, "-m", "runtime.cli.serve", "run", str(folder), "--grpc-port", "18001",
                           "--openai-port", "18001"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip() == "ptdit-serve run: error: --openai-port 18001 is one of the server's ports: pass " \
                                  "another"


@pytest.fixture(scope="module")
def video_folder(tmp_path_factory) -> Path:
    """A tiny video pipeline that ptdit-serve serves: 4 latent frames (13 frames out), no step graph."""
    out = tmp_path_factory.mktemp("served-video")
    done = subprocess.run([sys.executable, "-m", "export", "--preset", "tiny", "--res", "256", "--frames", "4",
                           "--pipeline", "--skip-checks", "--out", str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out / "ptdit-tiny-256-f4-pipeline"


@pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning")  # the SDK marks its video calls so
def test_a_video_folder_serves_openais_videos_api_with_the_clip_ptdit_run_writes(video_folder, tmp_path):
    triton = setup(default_env_dir(), progress=lambda line: None)
    repo = write_repository(video_folder, tmp_path / "repo", ServeOptions(max_queue_size=1))  # it holds 2 requests
    local = tmp_path / "local.mp4"
    done = subprocess.run([sys.executable, "-m", "runtime", str(video_folder), "--prompt", PROMPT, "--seed", "3",
                           "--steps", str(STEPS), "--out", str(local)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    with LocalServer(triton, repo, free_ports()) as server, \
            Front(server.grpc_url, request_timeout_s=120).start("127.0.0.1", free_port()) as front, \
            openai.OpenAI(base_url=f"{front.url}/v1", api_key="unused", max_retries=0, timeout=120) as client:
        job = client.videos.create(prompt=PROMPT, extra_body={"seed": 3, "num_inference_steps": STEPS})
        assert (job.object, job.model, job.size, job.seconds) == ("video", video_folder.name, "256x256", "0.54")
        deadline = time.monotonic() + 120
        while job.status in ("queued", "in_progress") and time.monotonic() < deadline:
            time.sleep(0.2)
            job = client.videos.retrieve(job.id)
        assert job.status == "completed" and job.progress == 100 and job.completed_at >= job.created_at
        assert client.videos.download_content(job.id).read() == local.read_bytes()
        assert [v.id for v in client.videos.list().data] == [job.id]
        # the same server's gRPC client writes the same clip (ptdit-run --server)
        served = tmp_path / "served.mp4"
        done = subprocess.run([sys.executable, "-m", "runtime", "--server", server.grpc_url, "--prompt", PROMPT,
                               "--seed", "3", "--steps", str(STEPS), "--out", str(served)], cwd=ROOT,
                              capture_output=True, text=True)
        assert done.returncode == 0 and served.read_bytes() == local.read_bytes(), done.stderr
        # refusals: the images endpoint, a clip length it does not draw, an image to start from, a job it lacks
        with pytest.raises(openai.BadRequestError, match="is a video pipeline: POST /v1/videos"):
            client.images.generate(prompt=PROMPT)
        with pytest.raises(openai.BadRequestError, match="'seconds' '4' is not served: this model's clips are 13 "
                                                         "frames at 24 fps, 0.54 s"):
            client.videos.create(prompt=PROMPT, seconds="4")
        with pytest.raises(openai.BadRequestError, match="'num_inference_steps' must be an integer, got 'many'"):
            client.videos.create(prompt=PROMPT, extra_body={"num_inference_steps": "many"})
        with pytest.raises(openai.BadRequestError, match="'input_reference' is not served"):
            client.videos.create(prompt=PROMPT, input_reference=("first.png", b"\x89PNG", "image/png"))
        with pytest.raises(openai.NotFoundError, match="no video 'video_0'"):
            client.videos.retrieve("video_0")
        assert client.videos.delete(job.id).deleted
        with pytest.raises(openai.NotFoundError):
            client.videos.download_content(job.id)
        # a form field sent as a file is refused by name; the front holds no more jobs than the server does
        boundary = "ptdit-test"
        form = (f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"; filename="p.txt"\r\n\r\na fox\r\n'
                f"--{boundary}--\r\n").encode()
        code, answer, _ = post(front.url, form, f"multipart/form-data; boundary={boundary}", "/v1/videos")
        assert code == 400 and answer["error"]["message"] == "'prompt' is a file; it takes text"
        jobs = [client.videos.create(prompt=PROMPT, extra_body={"seed": s, "num_inference_steps": 30}) for s in (1, 2)]
        with pytest.raises(openai.APIStatusError, match="2 video jobs are in flight, all the server holds") as busy:
            client.videos.create(prompt=PROMPT)
        assert busy.value.status_code == 503
        with pytest.raises(openai.ConflictError, match="is (queued|in_progress), not completed"):
            client.videos.download_content(jobs[1].id)


def test_the_front_command_refuses_a_bad_address_or_a_taken_port_in_one_line(tmp_path):
    def front(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "runtime.cli.serve", "front", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=60)

    done = front("--server", "localhost")
    assert done.returncode == 2 and done.stderr.strip() == (
        "ptdit-serve front: error: the server address 'localhost' has no port: pass the gRPC address of ptdit-serve "
        "run as HOST:PORT, e.g. localhost:8001")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = front("--port", str(port))
    assert done.returncode == 2
    assert done.stderr.strip() == f"ptdit-serve front: error: port {port} on 127.0.0.1 is taken: pass --port with a " \
                                  f"free one, or stop what listens there"
    done = front("--request-timeout", "0")
    assert done.returncode == 2 and "--request-timeout" in done.stderr


def test_ptdit_bench_serve_openai_reports_the_fronts_overhead_and_each_concurrency(folder):
    bench = [sys.executable, "-c", "from bench.cli import main; main()", "serve", "--openai", "--folder", str(folder)]
    done = subprocess.run([*bench, "--concurrency", "1", "--concurrency", "2", "--requests", "2", "--steps", "1",
                           "--json"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["serve-openai"]
    assert [r["clients"] for r in data["front"]] == [1, 2]
    for row in (data["grpc_at_1"], data["front_at_1"], *data["front"]):
        assert row["requests"] == 2 and row["rps"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0
    assert data["overhead_at_1"] == round(data["front_at_1"]["p50_ms"] / data["grpc_at_1"]["p50_ms"] - 1, 4)
    assert "| OpenAI front (JSON, base64 PNG decoded) | 1 | 2 |" in done.stderr
    assert "Front overhead at 1 client" in done.stderr
    done = subprocess.run([*bench, "--backend", "tensorrt"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.strip().endswith("--openai measures the front of the CPU pipeline: drop --backend tensorrt")
