"""Load on the served pipeline (ptdit-bench serve): the tiny pipeline exported for the run (or a given folder), then
the runtime's load measurement (python -m runtime.serve.load) in a child process against a local tritonserver;
the table of requests per second, p50 / p95 latency per concurrency and the server's overhead at 1 client."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ptdit.contract.errors import InputError, option
from ptdit.contract.progress import Reporter

from .child import export_json, run_module

OVERHEAD_GOAL = 0.05  # the 5 % both tables say


def serve_rows(folder: Path | None, preset_name: str, res: int, concurrency: list[int], requests: int, steps: int,
               instances: int, backend: str, device: str, report: Reporter,
               layout: str | None = None, openai: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-serve-") as tmp:
        if folder is None:
            report(f"  exporting the {preset_name} pipeline at {res}")
            _, folders = export_json(["--preset", preset_name, "--res", str(res), "--pipeline", "--skip-checks",
                                      "--out", tmp])
            folder = Path(folders[0]["folder"])
        report(f"  serving {folder.name} on a local tritonserver: {requests} requests per concurrency "
               f"{', '.join(map(str, concurrency))} ({steps} steps each)")
        args = [str(folder), "--requests", str(requests), "--steps", str(steps), "--instances", str(instances)]
        for clients in concurrency:
            args += ["--concurrency", str(clients)]
        if openai:
            given = [option(name, value) for name, value, default in (("backend", backend, "onnxruntime"),
                                                                ("device", device, "cpu"), ("layout", layout, None))
                     if value != default]
            if given:
                raise InputError(f"{option('openai')} measures the front of the CPU pipeline: drop "
                                 f"{', '.join(given)}")
            return dict(json.loads(run_module(["runtime.serve.front_load", *args]).stdout))
        args = ["runtime.serve.load", *args, "--backend", backend, "--device", device]
        if layout:
            args += ["--layout", layout]
        return dict(json.loads(run_module(args).stdout))


def _cells(row: dict[str, Any]) -> str:
    """A row's requests, req/s, p50 and p95 as table cells (load._summary's)."""
    return f"{row['requests']} | {row['rps']:.2f} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f}"


def _verdict(overhead: float) -> str:
    return "within" if overhead < OVERHEAD_GOAL else "over"


def serve_table(data: dict[str, Any]) -> str:
    base = data["in_process"]
    lines = [f"{data['pipeline']}, {data['steps']} steps, {data['backend']} on {data['device']}, {data['layout']} "
             f"layout, {data['instances']} instance(s); server: {data['server']}", "",
             "| clients | requests | req/s | p50 ms | p95 ms | p50 vs in-process | pipeline p50 ms "
             "| outside p50 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |",
             f"| in-process (ptdit-run's pipeline) | {_cells(base)} | 1.00 | {base['pipeline_p50_ms']:.1f} | |"]
    for r in data["served"]:
        lines.append(f"| {r['clients']} | {_cells(r)} | {r['p50_ms'] / base['p50_ms']:.2f} | "
                     f"{r['pipeline_p50_ms']:.1f} | {r['outside_p50_ms']:.1f} |")
    verdict = _verdict(data["overhead_at_1"])
    outside = data["served"][0]["outside_p50_ms"]
    lines.append(
        f"\nServer overhead at 1 client: {data['overhead_at_1'] * 100:+.1f} % of the in-process p50 ({verdict} the 5 % "
        f"goal), of which {outside:.1f} ms ({outside / base['p50_ms'] * 100:.1f} %) outside the pipeline (gRPC, "
        "Triton, the Python backend's IPC); the rest is the pipeline's run in the server: its run-to-run spread, and "
        "in the components layout its calls to the component models. In-process and 1 client measured alternately, "
        "request by request; pipeline p50: the server's own encode + sample + decode; outside: the client's latency "
        "less that, per request.")
    return "\n".join(lines)


def front_table(data: dict[str, Any]) -> str:
    grpc, front = data["grpc_at_1"], data["front_at_1"]
    lines = [f"{data['pipeline']}, {data['steps']} steps, onnxruntime on cpu, {data['instances']} instance(s); the "
             "front as ptdit-serve front runs it, a process of its own", "",
             "| path | clients | requests | req/s | p50 ms | p95 ms | p50 vs gRPC |",
             "| --- | --- | --- | --- | --- | --- | --- |",
             f"| gRPC client (ptdit-run --server, PNG encoded) | 1 | {_cells(grpc)} | 1.00 |",
             f"| OpenAI front (JSON, base64 PNG decoded) | 1 | {_cells(front)} | "
             f"{front['p50_ms'] / grpc['p50_ms']:.3f} |"]
    for r in data["front"]:
        lines.append(f"| OpenAI front | {r['clients']} | {_cells(r)} | |")
    verdict = _verdict(data["overhead_at_1"])
    lines.append(f"\nFront overhead at 1 client: {data['overhead_at_1'] * 100:+.1f} % of the gRPC client's p50 "
                 f"({data['front_minus_grpc_p50_ms']:+.1f} ms; {verdict} the 5 % goal); the median of the paired "
                 f"differences (each seed both ways, one after the other): {data['paired_median_ms']:+.1f} ms "
                 f"({data['paired_median_ms'] / grpc['p50_ms'] * 100:+.1f} %). The two measured alternately, request "
                 "by request, against the same server.")
    return "\n".join(lines)
