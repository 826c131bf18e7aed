"""The served pipeline under load (python -m runtime.serve.load FOLDER --json; ptdit-bench serve formats it):
requests per second and p50 / p95 latency at each client concurrency against a local tritonserver (ptdit-serve
setup's), and the server's overhead against the same pipeline run in-process (what ptdit-run does per image),
measured in the same run on the same machine."""

from __future__ import annotations

import concurrent.futures
import json
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click

from ptdit.contract.cli_types import Number
from ptdit.contract.commands import exit_codes
from ptdit.contract.numbers import CLIENTS, DEFAULT_STEPS, INSTANCES, REQUESTS, STEPS
from ptdit.contract.progress import Reporter

from ..pipeline.ptdit_pipeline import PTDiTPipeline
from .client import PipelineClient
from .environment import find_server
from .repository import ServeOptions, write_repository
from .server import LocalServer, free_ports

PROMPT = "a red fox in the snow"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _summary(latencies: list[float], wall_s: float) -> dict[str, float]:
    return {"requests": len(latencies), "rps": round(len(latencies) / wall_s, 3),
            "p50_ms": round(_percentile(latencies, 0.5) * 1000, 1),
            "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1)}


def _outside(latencies: list[float], on_server: list[float]) -> float:
    """p50 of the time a request spends outside the pipeline: gRPC, Triton's queue, the Python backend's IPC."""
    return round(_percentile([a - b for a, b in zip(latencies, on_server)], 0.5) * 1000, 1)


def measure_load(folder: Path, concurrency: list[int], requests: int, steps: int, instances: int, backend: str,
                 device: str, report: Reporter, layout: str | None = None) -> dict[str, Any]:
    """In-process and 1 client alternately (the overhead), then each concurrency > 1 against the server."""
    server = find_server()
    with tempfile.TemporaryDirectory(prefix="ptdit-serve-load-") as tmp:
        repo = write_repository(folder, Path(tmp) / "repo",
                                ServeOptions(backend, device, instances, max_queue_size=max(concurrency) * 2,
                                             layout=layout))
        rows = []
        with PTDiTPipeline.from_folder(folder, backend, device) as pipe, \
                LocalServer(server, repo, free_ports()) as local_server:
            url = local_server.grpc_url
            pipe(PROMPT, num_inference_steps=steps, seed=0)  # warm-up
            with PipelineClient(url) as warm:
                for seed in range(instances):  # warm-up: one request per instance
                    warm.generate(PROMPT, seed=seed, steps=steps)
            report(f"  in-process and 1 client, alternately: {requests} images each")
            local, stages, served, on_server = [], [], [], []
            with PipelineClient(url) as connection:
                for seed in range(requests):  # alternately, so that the machine's drift hits both alike
                    begin = time.perf_counter()
                    out = pipe(PROMPT, num_inference_steps=steps, seed=seed)
                    local.append(time.perf_counter() - begin)
                    stages.append(sum(out.timings.values()))
                    time.sleep(0.1)  # the idle ONNX Runtime threads stop spinning before the other side runs
                    begin = time.perf_counter()
                    answer = connection.generate(PROMPT, seed=seed, steps=steps, timeout_s=600)
                    served.append(time.perf_counter() - begin)
                    on_server.append(sum(answer.timings.values()))
                    time.sleep(0.1)
            baseline = {**_summary(local, sum(local)), "pipeline_p50_ms": round(_percentile(stages, 0.5) * 1000, 1)}
            rows.append({"clients": 1, **_summary(served, sum(served)),
                         "pipeline_p50_ms": round(_percentile(on_server, 0.5) * 1000, 1),
                         "outside_p50_ms": _outside(served, on_server)})
            for clients in [c for c in concurrency if c > 1]:
                report(f"  server: {clients} concurrent clients, {requests} requests")
                latencies: list[float] = []
                on_server = []  # the server's own encode + sample + decode
                lock = threading.Lock()

                def client(index: int) -> None:  # a connection per client, kept, as a real client keeps it
                    with PipelineClient(url) as connection:
                        for seed in range(index, requests, clients):  # noqa: B023 (called within the iteration)
                            begin = time.perf_counter()
                            answer = connection.generate(PROMPT, seed=seed, steps=steps, timeout_s=600)
                            with lock:  # the two lists stay paired request by request  # noqa: B023 (called within the iteration)
                                latencies.append(time.perf_counter() - begin)  # noqa: B023 (called within the iteration)
                                on_server.append(sum(answer.timings.values()))  # noqa: B023 (called within the iteration)

                start = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(clients) as pool:
                    list(pool.map(client, range(clients)))
                rows.append({"clients": clients, **_summary(latencies, time.perf_counter() - start),
                             "pipeline_p50_ms": round(_percentile(on_server, 0.5) * 1000, 1),
                             "outside_p50_ms": _outside(latencies, on_server)})
    overhead = round(rows[0]["p50_ms"] / baseline["p50_ms"] - 1, 4)
    return {"pipeline": folder.name, "backend": backend, "device": device, "instances": instances, "steps": steps,
            "layout": ServeOptions(backend, layout=layout).chosen_layout,
            "server": server.source, "in_process": baseline, "served": rows, "overhead_at_1": overhead}


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--concurrency", type=Number(CLIENTS), multiple=True, default=[1, 2, 4, 8],
              help="Concurrent clients (repeat); 1 is always measured.")
@click.option("--requests", type=Number(REQUESTS), default=16, help="Requests per concurrency.")
@click.option("--steps", type=Number(STEPS), default=DEFAULT_STEPS, help="Sampling steps per request.")
@click.option("--instances", type=Number(INSTANCES), default=1, help="Pipeline instances in the server.")
@click.option("--backend", type=click.Choice(["onnxruntime", "tensorrt"]), default="onnxruntime",
              help="What runs the pipeline.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", help="Where it runs.")
@click.option("--layout", type=click.Choice(["pipeline", "components"]), default=None,
              help="The repository's layout [default: its default].")
def main(folder: Path, concurrency: tuple[int, ...], requests: int, steps: int, instances: int, backend: str,
         device: str, layout: str | None) -> None:
    """The measurements as JSON on stdout, progress on stderr."""
    with exit_codes("ptdit-bench serve", writes=False):
        data = measure_load(folder, sorted(set(concurrency)), requests, steps, instances, backend, device,
                            lambda line: click.echo(line, err=True), layout)
    click.echo(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
