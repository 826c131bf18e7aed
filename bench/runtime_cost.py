"""Runtime cost: each artifact exported (with its step graph) to a temporary directory, then the runtime's own
benchmark (python -m runtime.bench) run on it in a child process: per-step latency of ONNX Runtime and PyTorch,
the runtime's overhead around the backend call, and the host loop against the step loop."""

from __future__ import annotations

import json
import tempfile
from typing import Any

from ptdit.contract.progress import Reporter

from .child import export_json, run_module


def runtime_rows(artifacts: list[tuple[str, int, str]], latency_steps: int, report: Reporter,
                 overhead_steps: int = 10, overhead_rounds: int = 10, loops_backend: str = "onnxruntime",
                 loop_steps: int = 30) -> dict[str, Any]:
    """Export each (preset, res, precision) with its step graph to a temporary directory and run the runtime's
    benchmark on it: overhead and latency on the noise-prediction ONNX, and the host loop against the step loop
    on `loops_backend` (tensorrt: both graphs are built into plans first, with ptdit-build's default target)."""
    with tempfile.TemporaryDirectory(prefix="ptdit-bench-") as tmp:
        paths, loops = [], []
        for preset_name, res, precision in artifacts:
            report(f"  exporting {preset_name} at {res} ({precision}, with --step)")
            _, graphs = export_json(["--preset", preset_name, "--res", str(res), "--precision", precision, "--out", tmp,
                                     "--skip-checks", "--step"])
            pair = [graph["onnx"] for graph in graphs]  # the noise prediction, then its step graph
            noise = pair[0]
            if loops_backend == "tensorrt":
                report(f"  building both graphs of {preset_name} at {res} with ptdit-build")
                fp32 = ["--allow-fp32"] if precision == "fp32" else []
                pair = [json.loads(run_module(["engines", p, "--json", *fp32]).stdout)["plan"] for p in pair]
            paths.append(noise)
            loops += ["--loops", *pair]
        report("  timing the runtime (overhead, per-step latency per backend, host loop against step loop)")
        args = ["runtime.bench", *paths, *loops,
                "--loops-backend", "auto" if loops_backend == "tensorrt" else loops_backend, "--loop-steps",
                str(loop_steps), "--latency", "onnxruntime", "--latency", "torch", "--latency-steps",
                str(latency_steps), "--steps", str(overhead_steps), "--rounds", str(overhead_rounds), "--json"]
        return dict(json.loads(run_module(args).stdout))


def runtime_table(data: dict[str, Any]) -> str:
    lines = ["| artifact | ONNX Runtime CPU ms/step | PyTorch CPU ms/step | PyTorch / ONNX Runtime | "
             "runtime overhead |",
             "| --- | --- | --- | --- | --- |"]
    overhead = {r["artifact"]: r["overhead_ratio"] for r in data["overhead"]}
    by_artifact: dict[str, dict[str, float]] = {}
    for r in data["latency"]:
        by_artifact.setdefault(r["artifact"], {})[r["backend"].split(" ")[0]] = r["ms_per_step"]
    for name, times in by_artifact.items():
        ort_ms, torch_ms = times.get("onnxruntime"), times.get("torch")
        ratio = f"{torch_ms / ort_ms:.2f}" if ort_ms and torch_ms else "n/a"
        lines.append(f"| {name} | {ort_ms} | {torch_ms} | {ratio} | {overhead.get(name, 0) * 100:+.2f} % |")
    if data.get("loops_table"):  # formatted by the runtime's benchmark (stages share files, not code)
        lines += ["", data["loops_table"]]
    return "\n".join(lines)
