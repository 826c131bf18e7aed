"""The OpenAI front under load (python -m runtime.serve.front_load FOLDER --json; ptdit-bench serve --openai formats
it): its overhead at 1 client against the gRPC client ptdit-run --server uses, the same server answering both,
measured alternately in one run; then requests per second and p50 / p95 latency through the front at each client
concurrency. The front runs as ptdit-serve front does, a process of its own.

What each side does per image is what its user gets: the gRPC side receives the pixels and encodes the PNG
ptdit-run --server writes; the front's side receives the JSON and decodes its base64 PNG."""

from __future__ import annotations

import base64
import concurrent.futures
import http.client
import json
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cli_types import Number
from ptdit.contract.commands import exit_codes
from ptdit.contract.errors import Failure
from ptdit.contract.numbers import CLIENTS, DEFAULT_STEPS, INSTANCES, REQUESTS, STEPS
from ptdit.contract.progress import Reporter

from .client import PipelineClient
from .environment import find_server
from .load import PROMPT, _percentile, _summary
from .openai_front import png_bytes
from .repository import ServeOptions, write_repository
from .server import LocalServer, free_ports


class FrontConnection:
    """One kept HTTP connection to the front, as a client SDK keeps one."""

    def __init__(self, port: int) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)

    def generate(self, seed: int, steps: int) -> bytes:
        body = json.dumps({"prompt": PROMPT, "seed": seed, "num_inference_steps": steps})
        self.connection.request("POST", "/v1/images/generations", body, {"Content-Type": "application/json"})
        answer = self.connection.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise Failure(f"the front answered {answer.status}: {data[:200]!r}")
        return base64.b64decode(json.loads(data)["data"][0]["b64_json"])

    def close(self) -> None:
        self.connection.close()


def _start_front(grpc_url: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "runtime.cli.serve", "front", "--server", grpc_url, "--port",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready", timeout=2):
                return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.2)
    process.kill()
    raise Failure("ptdit-serve front did not become ready in 60 s")


def measure_front(folder: Path, concurrency: list[int], requests: int, steps: int, instances: int,
                  report: Reporter) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ptdit-front-load-") as tmp:
        repo = write_repository(folder, Path(tmp) / "repo",
                                ServeOptions(instances=instances, max_queue_size=max(concurrency) * 2))
        ports = free_ports()
        port = next(p for p in (free_ports().http for _ in range(10)) if p not in (ports.http, ports.grpc,
                                                                                ports.metrics))
        with LocalServer(find_server(), repo, ports) as server:
            front = _start_front(server.grpc_url, port)
            try:
                return _measure(folder, server.grpc_url, port, concurrency, requests, steps, instances, report)
            finally:
                front.terminate()
                front.wait(120)


def _measure(folder: Path, grpc_url: str, port: int, concurrency: list[int], requests: int, steps: int,
             instances: int, report: Reporter) -> dict[str, Any]:
    grpc, front = PipelineClient(grpc_url), FrontConnection(port)
    try:
        for seed in range(instances):  # warm-up: one request per instance, each way
            png_bytes(grpc.generate(PROMPT, seed=seed, steps=steps).pixels)
            front.generate(seed, steps)
        report(f"  gRPC client and OpenAI front, alternately: {requests} images each")
        direct, fronted = [], []
        for seed in range(requests):
            begin = time.perf_counter()
            png_bytes(grpc.generate(PROMPT, seed=seed, steps=steps, timeout_s=600).pixels)
            direct.append(time.perf_counter() - begin)
            time.sleep(0.1)  # the idle ONNX Runtime threads stop spinning before the other side runs
            begin = time.perf_counter()
            front.generate(seed, steps)
            fronted.append(time.perf_counter() - begin)
            time.sleep(0.1)
    finally:
        grpc.close()
        front.close()
    rows = []
    for clients in concurrency:
        report(f"  OpenAI front: {clients} concurrent clients, {requests} requests")
        latencies: list[float] = []
        lock = threading.Lock()

        def client(index: int) -> None:
            connection = FrontConnection(port)
            try:
                for seed in range(index, requests, clients):  # noqa: B023 (called within the iteration)
                    begin = time.perf_counter()
                    connection.generate(seed, steps)
                    with lock:  # noqa: B023 (called within the iteration)
                        latencies.append(time.perf_counter() - begin)  # noqa: B023 (called within the iteration)
            finally:
                connection.close()

        start = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            list(pool.map(client, range(clients)))
        rows.append({"clients": clients, **_summary(latencies, time.perf_counter() - start)})
    grpc_row, front_row = _summary(direct, sum(direct)), _summary(fronted, sum(fronted))
    return {"pipeline": folder.name, "steps": steps, "instances": instances, "grpc_at_1": grpc_row,
            "front_at_1": front_row, "overhead_at_1": round(front_row["p50_ms"] / grpc_row["p50_ms"] - 1, 4),
            "front_minus_grpc_p50_ms": round((_percentile(fronted, 0.5) - _percentile(direct, 0.5)) * 1000, 1),
            # the same seed both ways, one after the other: the median of the pairs' differences is the front's own
            # cost with the pipeline's run-to-run spread mostly cancelled
            "paired_median_ms": round(_percentile([f - d for f, d in zip(fronted, direct)], 0.5) * 1000, 1),
            "front": rows}


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--concurrency", type=Number(CLIENTS), multiple=True, default=[1, 4, 16],
              help="Concurrent clients through the front (repeat).")
@click.option("--requests", type=Number(REQUESTS), default=16, help="Requests per concurrency, and per side at 1.")
@click.option("--steps", type=Number(STEPS), default=DEFAULT_STEPS, help="Sampling steps per request.")
@click.option("--instances", type=Number(INSTANCES), default=1, help="Pipeline instances in the server.")
def main(folder: Path, concurrency: tuple[int, ...], requests: int, steps: int, instances: int) -> None:
    """The measurements as JSON on stdout, progress on stderr."""
    with exit_codes("ptdit-bench serve --openai", writes=False):
        data = measure_front(folder, sorted(set(concurrency)), requests, steps, instances,
                             lambda line: click.echo(line, err=True))
    click.echo(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
